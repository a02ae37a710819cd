//! The thin adapter through which `CharmRunnerOps` puts the runner id and scope of a
//! registration made before launch on the instance.

use std::time::Duration;

use crate::lxd::{
    ExecOutput, ExecSpec, Instance, LaunchSpec, Lxd, LxdError, ProfileSpec, ProfileUse, PushSpec,
    ServerInfo,
};
use crate::manager::planner::{RUNNER_ID_CONFIG_KEY, SCALE_SET_ID_CONFIG_KEY};
use crate::manager::replacement::SCOPE_CONFIG_KEY;

/// Launches with the runner id, the scale set (if any) and the scope in the instance
/// config; everything else passes through.
pub(super) struct LaunchWithRunnerId<'l> {
    pub inner: &'l dyn Lxd,
    pub runner_id: u64,
    pub scale_set_id: Option<u64>,
    pub scope: &'l str,
}

impl Lxd for LaunchWithRunnerId<'_> {
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError> {
        self.inner.list_owned_instances(owner_value)
    }
    fn list_machine_instances(&self) -> Result<Vec<crate::lxd::MachineInstance>, LxdError> {
        self.inner.list_machine_instances()
    }
    fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError> {
        self.inner.list_project_instances()
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
        let mut spec = spec.clone();
        spec.config
            .insert(RUNNER_ID_CONFIG_KEY.to_string(), self.runner_id.to_string());
        spec.config
            .insert(SCOPE_CONFIG_KEY.to_string(), self.scope.to_string());
        if let Some(id) = self.scale_set_id {
            spec.config
                .insert(SCALE_SET_ID_CONFIG_KEY.to_string(), id.to_string());
        }
        self.inner.launch(&spec)
    }
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        self.inner.exec(instance, spec)
    }
    fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
        self.inner.push_file(instance, spec)
    }
    fn stop(&self, instance: &str, force: bool, timeout: Duration) -> Result<(), LxdError> {
        self.inner.stop(instance, force, timeout)
    }
    fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError> {
        self.inner.delete(instance, force)
    }
    fn set_instance_config(&self, instance: &str, key: &str, value: &str) -> Result<(), LxdError> {
        self.inner.set_instance_config(instance, key, value)
    }
    fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
        self.inner.image_exists(alias)
    }
    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError> {
        self.inner.ensure_storage_pool(name, driver, source)
    }
    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError> {
        self.inner.delete_storage_pool(name)
    }
    fn storage_pool_free_bytes(&self, name: &str) -> Result<Option<u64>, LxdError> {
        self.inner.storage_pool_free_bytes(name)
    }
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        self.inner.ensure_profile(spec)
    }
    fn list_profiles(&self) -> Result<Vec<ProfileUse>, LxdError> {
        self.inner.list_profiles()
    }
    fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
        self.inner.delete_profile(name)
    }
    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        self.inner.server_info()
    }
    fn project(&self) -> Option<&str> {
        self.inner.project()
    }
}
