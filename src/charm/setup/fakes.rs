//! Fake edges for tests of host setup and the lifecycle hooks: every effect recorded as a
//! line, in order; LXD, snap and systemd as plain flags.

use super::commands::{CommandError, CommandOutput, HostCommands};
use super::lxd_host::{Devices, LxdHostOps};
use super::SetupEdges;
use crate::charm::context::Context;
use crate::host::timer::{Systemd, SystemdError};
use crate::lxd::{
    ExecOutput, ExecSpec, Instance, InstanceType, LaunchSpec, Lxd, LxdError, ProfileSpec, PushSpec,
    ServerInfo,
};
use crate::runner::image::ImageError;
use crate::runner::storage::{self, StorageError, StoragePlan};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub const GIB: u64 = 1 << 30;

/// Records every effect as a line, in order.
#[derive(Default)]
pub struct Fake {
    pub log: Mutex<Vec<String>>,
    pub lxc_installed: RefCell<bool>,
    pub snap_installed: bool,
    pub pools: RefCell<usize>,
    pub bridge: RefCell<Option<BTreeMap<String, String>>>,
    pub default_devices: RefCell<Option<Devices>>,
    pub image_present: RefCell<bool>,
    pub build_fails: bool,
    pub timer_active: RefCell<bool>,
    pub storage_total: u64,
    pub lxd_down: bool,
    pub project_missing: bool,
    /// Source of the existing runner pool, if any.
    pub pool_source: RefCell<Option<String>>,
}

impl Fake {
    pub fn ready() -> Fake {
        Fake {
            lxc_installed: RefCell::new(true),
            snap_installed: true,
            pools: RefCell::new(1),
            image_present: RefCell::new(true),
            storage_total: 100 * GIB,
            ..Fake::default()
        }
    }

    pub fn note(&self, line: impl Into<String>) {
        self.log.lock().unwrap().push(line.into());
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Effects only (reads filtered out).
    pub fn changes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !l.starts_with("get ") && !l.starts_with("is-active"))
            .collect()
    }
}

impl HostCommands for Fake {
    fn find(&self, program: &str) -> Option<PathBuf> {
        let present = match program {
            "lxc" | "lxd" => *self.lxc_installed.borrow(),
            "snap" => self.snap_installed,
            _ => false,
        };
        present.then(|| PathBuf::from(format!("/bin/{program}")))
    }

    fn run(
        &self,
        program: &Path,
        args: &[&str],
        _timeout: Duration,
    ) -> Result<CommandOutput, CommandError> {
        self.note(format!("run {} {}", program.display(), args.join(" ")));
        match (program.to_str(), args.first()) {
            (Some("/bin/snap"), Some(&"install")) => *self.lxc_installed.borrow_mut() = true,
            (Some("/bin/lxd"), Some(&"init")) => *self.pools.borrow_mut() = 1,
            _ => {}
        }
        Ok(CommandOutput {
            code: 0,
            stdout: String::new(),
            stderr: String::new(),
        })
    }
}

impl LxdHostOps for Fake {
    fn network_config(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, LxdError> {
        self.note(format!("get network {name}"));
        Ok(self.bridge.borrow().clone())
    }
    fn set_network_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        self.note(format!("set network {name} {config:?}"));
        self.bridge
            .borrow_mut()
            .as_mut()
            .expect("set on an existing network")
            .extend(config.clone());
        Ok(())
    }
    fn profile_devices(&self, profile: &str) -> Result<Option<Devices>, LxdError> {
        self.note(format!("get profile {profile}"));
        Ok(self.default_devices.borrow().clone())
    }
    fn set_profile_device_keys(
        &self,
        profile: &str,
        device: &str,
        keys: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        self.note(format!("set profile {profile} {device} {}", keys.len()));
        if let Some(d) = self.default_devices.borrow_mut().as_mut() {
            d.get_mut(device).expect("device").extend(keys.clone());
        }
        Ok(())
    }
    fn storage_pool_source(&self, name: &str) -> Result<Option<String>, LxdError> {
        self.note(format!("get pool {name}"));
        Ok(self.pool_source.borrow().clone())
    }
    fn project_exists(&self) -> Result<bool, LxdError> {
        Ok(!self.project_missing)
    }
    fn storage_pool_count(&self) -> Result<usize, LxdError> {
        self.note("get pools");
        if self.lxd_down {
            return Err(LxdError::Command {
                operation: "storage pools".into(),
                message: "connection refused".into(),
            });
        }
        Ok(*self.pools.borrow())
    }
}

fn unused<T>(what: &str) -> Result<T, LxdError> {
    Err(LxdError::Command {
        operation: what.into(),
        message: "not used by setup".into(),
    })
}

/// The Lxd trait requires Send + Sync: the fake keeps its LXD view behind a Mutex.
#[derive(Default)]
pub struct FakeLxd {
    pub calls: Mutex<Vec<String>>,
    pub image_present: Mutex<bool>,
}

impl Lxd for FakeLxd {
    fn list_owned_instances(&self, _owner: &str) -> Result<Vec<Instance>, LxdError> {
        unused("list")
    }
    fn list_machine_instances(&self) -> Result<Vec<crate::lxd::MachineInstance>, LxdError> {
        unused("list machine instances")
    }
    fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError> {
        unused("list project instances")
    }
    fn launch(&self, _spec: &LaunchSpec) -> Result<(), LxdError> {
        unused("launch")
    }
    fn exec(&self, _i: &str, _spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        unused("exec")
    }
    fn push_file(&self, _i: &str, _spec: &PushSpec) -> Result<(), LxdError> {
        unused("push")
    }
    fn stop(&self, _i: &str, _f: bool, _t: Duration) -> Result<(), LxdError> {
        unused("stop")
    }
    fn delete(&self, _i: &str, _f: bool) -> Result<(), LxdError> {
        unused("delete")
    }
    fn set_instance_config(&self, _i: &str, _k: &str, _v: &str) -> Result<(), LxdError> {
        unused("set_instance_config")
    }
    fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("get image {alias}"));
        Ok(*self.image_present.lock().unwrap())
    }
    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("pool {name} {driver} {source}"));
        Ok(())
    }
    fn storage_pool_free_bytes(&self, _name: &str) -> Result<Option<u64>, LxdError> {
        Ok(None)
    }
    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("delete pool {name}"));
        Ok(())
    }
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("profile {}", spec.name));
        Ok(())
    }
    /// No profile here but those setup ensures, so nothing is ever stale.
    fn list_profiles(&self) -> Result<Vec<crate::lxd::ProfileUse>, LxdError> {
        Ok(Vec::new())
    }
    fn delete_profile(&self, _name: &str) -> Result<(), LxdError> {
        unused("delete profile")
    }
    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        Ok(ServerInfo {
            server_version: "5.0.2".into(),
            instance_types: vec![InstanceType::Container],
        })
    }
}

impl Systemd for Fake {
    fn daemon_reload(&self) -> Result<(), SystemdError> {
        self.note("systemctl daemon-reload");
        Ok(())
    }
    fn enable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.note(format!("systemctl enable --now {unit}"));
        *self.timer_active.borrow_mut() = true;
        Ok(())
    }
    fn restart(&self, unit: &str) -> Result<(), SystemdError> {
        self.note(format!("systemctl restart {unit}"));
        Ok(())
    }
    fn is_active(&self, unit: &str) -> Result<bool, SystemdError> {
        self.note(format!("is-active {unit}"));
        Ok(*self.timer_active.borrow())
    }
    fn disable_now(&self, unit: &str) -> Result<(), SystemdError> {
        self.note(format!("systemctl disable --now {unit}"));
        *self.timer_active.borrow_mut() = false;
        Ok(())
    }
}

pub struct Edges {
    pub fake: Fake,
    pub lxd: FakeLxd,
}

impl Edges {
    pub fn new(fake: Fake) -> Edges {
        let lxd = FakeLxd::default();
        *lxd.image_present.lock().unwrap() = *fake.image_present.borrow();
        Edges { fake, lxd }
    }
    pub fn lxd_calls(&self) -> Vec<String> {
        self.lxd.calls.lock().unwrap().clone()
    }
}

impl SetupEdges for Edges {
    fn commands(&self) -> &dyn HostCommands {
        &self.fake
    }
    fn systemd(&self) -> &dyn Systemd {
        &self.fake
    }
    fn lxd(&self) -> Result<&dyn Lxd, LxdError> {
        if *self.fake.lxc_installed.borrow() {
            Ok(&self.lxd)
        } else {
            Err(LxdError::LxcMissing)
        }
    }
    fn host_ops(&self) -> Result<&dyn LxdHostOps, LxdError> {
        if *self.fake.lxc_installed.borrow() {
            Ok(&self.fake)
        } else {
            Err(LxdError::LxcMissing)
        }
    }
    fn pool_name(&self) -> String {
        "runner".into()
    }
    fn apply_storage(&self, plan: &StoragePlan, lxd: &dyn Lxd) -> Result<(), StorageError> {
        storage::check_capacity(plan.required_bytes, self.fake.storage_total)?;
        lxd.ensure_storage_pool(&plan.pool, plan.driver, &plan.source.to_string_lossy())?;
        Ok(())
    }
    fn build_image(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        t: InstanceType,
    ) -> Result<(), ImageError> {
        self.fake.note(format!("build image {alias} {t:?}"));
        // Another open file description: flock conflicts with the holder, even in-process.
        let held = std::fs::File::open(ctx.paths.machine_lock_file())
            .is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        if held {
            self.fake.note("machine lock held");
        }
        if self.fake.build_fails {
            return Err(ImageError::BuildFailed {
                alias: alias.into(),
                exit_code: 1,
                log: "/var/log/build.log".into(),
            });
        }
        *self.lxd.image_present.lock().unwrap() = true;
        Ok(())
    }
    fn install_rebuild_cron(
        &self,
        _ctx: &Context<'_>,
        alias: &str,
        _t: InstanceType,
    ) -> Result<(), ImageError> {
        self.fake.note(format!("get cron {alias}"));
        Ok(())
    }
}
