//! JIT registrations on a scale set and runner look-up and removal (`pools/0/agents`).

use super::client::{Failure, ScaleSetClient};
use super::wire::{JitJson, Listing, ScaleSetJitConfig, ScaleSetRunner};
use super::ScaleSetError;
use crate::github::DeleteOutcome;
use crate::secret::Secret;
use serde_json::json;

impl ScaleSetClient {
    /// Register runner `name` in scale set `scale_set_id` and get the config it starts with.
    pub fn generate_jit_config(
        &self,
        scale_set_id: u64,
        name: &str,
        work_folder: &str,
    ) -> Result<ScaleSetJitConfig, ScaleSetError> {
        let path = format!("_apis/runtime/runnerscalesets/{scale_set_id}/generatejitconfig");
        let body = json!({"name": name, "workFolder": work_folder});
        match self.admin("generate-jitconfig", "POST", &path, &[], Some(body))? {
            Ok((_, value)) => {
                let jit: JitJson = Self::decode(value, "POST", &path)?;
                if jit.encoded_jit_config.is_empty() {
                    return Err(ScaleSetError::Protocol {
                        method: "POST".into(),
                        path,
                        reason: "no encodedJITConfig in the answer".into(),
                    });
                }
                Ok(ScaleSetJitConfig {
                    runner: jit.runner,
                    encoded_jit_config: Secret::new(jit.encoded_jit_config),
                })
            }
            Err(f) if f.status == 409 || f.is("AgentExistsException") => {
                Err(ScaleSetError::RunnerExists { name: name.into() })
            }
            Err(f) if f.status == 404 => Err(f.scale_set_gone(scale_set_id)),
            Err(f) => Err(f.into_error()),
        }
    }

    pub fn runner(&self, id: u64) -> Result<Option<ScaleSetRunner>, ScaleSetError> {
        let path = format!("_apis/distributedtask/pools/0/agents/{id}");
        match self.admin("get-runner", "GET", &path, &[], None)? {
            Ok((_, value)) => Ok(Some(Self::decode(value, "GET", &path)?)),
            Err(f) if f.status == 404 || f.is("AgentNotFoundException") => Ok(None),
            Err(f) => Err(f.into_error()),
        }
    }

    pub fn runner_by_name(&self, name: &str) -> Result<Option<ScaleSetRunner>, ScaleSetError> {
        Ok(self
            .runners(&[("agentName", name)])?
            .into_iter()
            .find(|r| r.name.eq_ignore_ascii_case(name)))
    }

    /// Every runner registration of the scope (`runner_scale_set_id` 0: not a scale set's).
    pub fn list_runners(&self) -> Result<Vec<ScaleSetRunner>, ScaleSetError> {
        self.runners(&[])
    }

    fn runners(&self, query: &[(&str, &str)]) -> Result<Vec<ScaleSetRunner>, ScaleSetError> {
        let path = "_apis/distributedtask/pools/0/agents";
        let (_, value) = self
            .admin("list-runners", "GET", path, query, None)?
            .map_err(Failure::into_error)?;
        if value.is_null() {
            return Ok(Vec::new());
        }
        Ok(Self::decode::<Listing<ScaleSetRunner>>(value, "GET", path)?.value)
    }

    /// Remove a registration: gone already is done; a runner on a job is `Busy` (retry
    /// after the job).
    pub fn remove_runner(&self, id: u64) -> Result<DeleteOutcome, ScaleSetError> {
        let path = format!("_apis/distributedtask/pools/0/agents/{id}");
        match self.admin("remove-runner", "DELETE", &path, &[], None)? {
            Ok(_) => Ok(DeleteOutcome::Deleted),
            Err(f) if f.status == 404 || f.is("AgentNotFoundException") => {
                Ok(DeleteOutcome::AlreadyGone)
            }
            Err(f) if f.is("JobStillRunningException") => Ok(DeleteOutcome::Busy),
            Err(f) => Err(f.into_error()),
        }
    }
}
