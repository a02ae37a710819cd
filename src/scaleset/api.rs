//! The two edges the listener works through: [`ScaleSetApi`], exactly the service calls it
//! makes (implemented by [`ScaleSetClient`], doubled in tests), and [`ListenerRunners`],
//! the runner side (implemented over the charm's runner engine by the mode that uses it).

use super::scaling::RunnerState;
use super::{
    NewScaleSet, ScaleSet, ScaleSetClient, ScaleSetError, ScaleSetJitConfig, ScaleSetMessage,
    ScaleSetRunner, ScaleSetUpdate, Session,
};
use crate::github::DeleteOutcome;
use crate::secret::Secret;

/// The Actions service calls of a listener.
pub trait ScaleSetApi: Send + Sync {
    fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError>;
    fn scale_set_by_name(
        &self,
        group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScaleSetError>;
    fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet, ScaleSetError>;
    /// Give scale set `id` another name (retiring it frees its name).
    fn rename_scale_set(&self, id: u64, name: &str) -> Result<(), ScaleSetError>;
    /// Delete scale set `id`; one already gone is done.
    fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError>;
    fn create_session(&self, scale_set_id: u64, owner: &str) -> Result<Session, ScaleSetError>;
    fn refresh_session(&self, session: &Session) -> Result<Session, ScaleSetError>;
    fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError>;
    fn get_message(
        &self,
        session: &Session,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ScaleSetError>;
    fn delete_message(&self, session: &Session, message_id: i64) -> Result<(), ScaleSetError>;
    fn acquire_jobs(&self, session: &Session, ids: &[i64]) -> Result<Vec<i64>, ScaleSetError>;
    fn generate_jit_config(
        &self,
        scale_set_id: u64,
        name: &str,
        work_folder: &str,
    ) -> Result<ScaleSetJitConfig, ScaleSetError>;
    fn remove_runner(&self, runner_id: u64) -> Result<DeleteOutcome, ScaleSetError>;
    /// Every runner registration of the scope, of any scale set or none (repair tells
    /// this scale set's from the others').
    fn registrations(&self) -> Result<Vec<ScaleSetRunner>, ScaleSetError>;
}

impl ScaleSetApi for ScaleSetClient {
    fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError> {
        ScaleSetClient::runner_group_id(self, name)
    }
    fn scale_set_by_name(
        &self,
        group_id: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ScaleSetError> {
        ScaleSetClient::scale_set_by_name(self, group_id, name)
    }
    fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet, ScaleSetError> {
        ScaleSetClient::create_scale_set(self, new)
    }
    fn rename_scale_set(&self, id: u64, name: &str) -> Result<(), ScaleSetError> {
        let update = ScaleSetUpdate {
            name: Some(name.to_string()),
            runner_group_id: None,
        };
        ScaleSetClient::update_scale_set(self, id, &update).map(|_| ())
    }
    fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        ScaleSetClient::delete_scale_set(self, id)
    }
    fn create_session(&self, scale_set_id: u64, owner: &str) -> Result<Session, ScaleSetError> {
        ScaleSetClient::create_session(self, scale_set_id, owner)
    }
    fn refresh_session(&self, session: &Session) -> Result<Session, ScaleSetError> {
        ScaleSetClient::refresh_session(self, session)
    }
    fn delete_session(&self, session: &Session) -> Result<(), ScaleSetError> {
        ScaleSetClient::delete_session(self, session)
    }
    fn get_message(
        &self,
        session: &Session,
        last_message_id: i64,
        max_capacity: u32,
    ) -> Result<Option<ScaleSetMessage>, ScaleSetError> {
        ScaleSetClient::get_message(self, session, last_message_id, max_capacity)
    }
    fn delete_message(&self, session: &Session, message_id: i64) -> Result<(), ScaleSetError> {
        ScaleSetClient::delete_message(self, session, message_id)
    }
    fn acquire_jobs(&self, session: &Session, ids: &[i64]) -> Result<Vec<i64>, ScaleSetError> {
        ScaleSetClient::acquire_jobs(self, session, ids)
    }
    fn generate_jit_config(
        &self,
        scale_set_id: u64,
        name: &str,
        work_folder: &str,
    ) -> Result<ScaleSetJitConfig, ScaleSetError> {
        ScaleSetClient::generate_jit_config(self, scale_set_id, name, work_folder)
    }
    fn remove_runner(&self, runner_id: u64) -> Result<DeleteOutcome, ScaleSetError> {
        ScaleSetClient::remove_runner(self, runner_id)
    }
    fn registrations(&self) -> Result<Vec<ScaleSetRunner>, ScaleSetError> {
        self.list_runners()
    }
}

/// One of this listener's runner instances, as the runner side sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInstance {
    pub name: String,
    /// The registration id its JIT config made (to remove the registration).
    pub runner_id: u64,
    pub state: RunnerState,
    /// When the instance was made (0: unknown, counts as old).
    pub created_at_epoch: u64,
    /// The scale set it was made for (0: none recorded, e.g. a pull-mode runner).
    pub scale_set_id: u64,
}

/// A runner-side failure, with the runner side's own explanation.
#[derive(Debug, thiserror::Error)]
#[error("runner {name:?}: {reason}")]
pub struct RunnerSideError {
    pub name: String,
    pub reason: String,
}

/// The runner side of a listener: instances started from JIT configs.
pub trait ListenerRunners: Send + Sync {
    /// A fresh runner name (`<app>-<unit>-<12 hex>`, as pull-mode runners are named); it
    /// fails only when the machine has no randomness to give.
    fn new_runner_name(&self) -> Result<String, RunnerSideError>;
    /// Start runner `name` (registration `runner_id` in scale set `scale_set_id`) from its
    /// JIT config.
    fn create(
        &self,
        name: &str,
        scale_set_id: u64,
        runner_id: u64,
        jit_config: &Secret,
    ) -> Result<(), RunnerSideError>;
    /// Remove instance `name`; one already gone is done.
    fn remove(&self, name: &str) -> Result<(), RunnerSideError>;
    /// This listener's instances and where each is.
    fn list(&self) -> Result<Vec<ListenerInstance>, RunnerSideError>;
}
