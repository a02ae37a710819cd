//! [`LxdListenerRunners`]: the listener's runner side over the charm's one runner engine
//! (`CharmRunnerOps::create_named_with_jit`), so scale-set runners get what pull runners
//! get: profiles, network ACL MAC, proxies, debug-ssh, the owner key, capacity admission and
//! the runner id recorded on the instance. Registrations are the listener's (it made them
//! through the scale set and removes them through it); only instances are handled here.

use super::api::{ListenerInstance, ListenerRunners, RunnerSideError};
use super::scaling::RunnerState;
use crate::charm::fleet::CharmRunnerOps;
use crate::charm::runtime::Runtime;
use crate::identity::RunnerName;
use crate::lxd::Instance;
use crate::manager::planner::{RUNNER_ID_CONFIG_KEY, SCALE_SET_ID_CONFIG_KEY};
use crate::secret::Secret;

pub struct LxdListenerRunners<'a> {
    pub rt: &'a Runtime,
    pub ops: &'a CharmRunnerOps<'a>,
}

impl LxdListenerRunners<'_> {
    fn owned(&self) -> Result<Vec<Instance>, RunnerSideError> {
        self.rt
            .lxd
            .list_owned_instances(&self.rt.identity.owner_value())
            .map_err(|e| RunnerSideError {
                name: String::new(),
                reason: format!("cannot list the unit's instances: {e}"),
            })
    }
}

/// The registration id an instance was launched with (0: none recorded).
pub fn recorded_runner_id(instance: &Instance) -> u64 {
    recorded(instance, RUNNER_ID_CONFIG_KEY)
}

fn recorded(instance: &Instance, key: &str) -> u64 {
    instance
        .config
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The listener's view of one of the unit's instances. LXD cannot tell an online runner
/// from one still starting, nor see its job: every instance is `Starting` here (the first
/// to go when there are too many). A busy runner is kept all the same: a JobStarted marks
/// it in the listener, and the service refuses to remove a busy registration, which the
/// listener removes before the instance.
pub fn listener_instance(instance: &Instance) -> ListenerInstance {
    ListenerInstance {
        name: instance.name.clone(),
        runner_id: recorded_runner_id(instance),
        state: RunnerState::Starting,
        created_at_epoch: instance.created_at_epoch,
        scale_set_id: recorded(instance, SCALE_SET_ID_CONFIG_KEY),
    }
}

impl ListenerRunners for LxdListenerRunners<'_> {
    fn new_runner_name(&self) -> Result<String, RunnerSideError> {
        self.rt
            .identity
            .new_runner_name()
            .map(|n| n.0)
            .map_err(|e| RunnerSideError {
                name: String::new(),
                reason: e.to_string(),
            })
    }

    fn create(
        &self,
        name: &str,
        scale_set_id: u64,
        runner_id: u64,
        jit: &Secret,
    ) -> Result<(), RunnerSideError> {
        self.ops
            .create_named_with_jit(RunnerName(name.to_string()), scale_set_id, runner_id, jit)
            .map(|_| ())
            .map_err(|e| RunnerSideError {
                name: name.to_string(),
                reason: e.message,
            })
    }

    /// Only an instance carrying this unit's owner key is deleted; one already gone (or
    /// never made) is done.
    fn remove(&self, name: &str) -> Result<(), RunnerSideError> {
        let owned = self.owned()?;
        let Some(instance) = owned.iter().find(|i| i.name == name) else {
            return Ok(());
        };
        let target = crate::runner::remove::RemovalTarget {
            name,
            instance: Some(instance),
            github_id: None,
        };
        crate::runner::remove_runner(
            &*self.rt.lxd,
            &*self.rt.github,
            &self.rt.identity.owner_value(),
            &target,
            true,
        )
        .map(|_| ())
        .map_err(|e| RunnerSideError {
            name: name.to_string(),
            reason: e.to_string(),
        })
    }

    fn list(&self) -> Result<Vec<ListenerInstance>, RunnerSideError> {
        Ok(self.owned()?.iter().map(listener_instance).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxd::{InstanceState, InstanceType};
    use std::collections::BTreeMap;

    fn instance(config: &[(&str, &str)]) -> Instance {
        Instance {
            name: "app-0-0123456789ab".into(),
            state: InstanceState::Running,
            instance_type: InstanceType::Container,
            created_at_epoch: 1_800_000_000,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            profiles: vec![],
        }
    }

    #[test]
    fn an_instance_shows_the_registration_it_was_launched_with_or_none() {
        let with = listener_instance(&instance(&[
            (RUNNER_ID_CONFIG_KEY, "42"),
            (SCALE_SET_ID_CONFIG_KEY, "7"),
        ]));
        assert_eq!(
            with,
            ListenerInstance {
                name: "app-0-0123456789ab".into(),
                runner_id: 42,
                state: RunnerState::Starting,
                created_at_epoch: 1_800_000_000,
                scale_set_id: 7,
            }
        );
        let none = listener_instance(&instance(&[]));
        assert_eq!((none.runner_id, none.scale_set_id), (0, 0));
        let garbage = instance(&[(RUNNER_ID_CONFIG_KEY, "forty-two")]);
        assert_eq!(listener_instance(&garbage).runner_id, 0);
    }
}
