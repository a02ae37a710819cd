//! ensure_host over fake edges: what runs, in which order, and what is left alone.

use super::commands::{CommandError, CommandOutput, HostCommands};
use super::lxd_host::{Devices, LxdHostOps};
use super::*;
use crate::charm::testing::hook_context;
use crate::config::{validate, BaseImage, ConfigContext, RunnerStorage};
use crate::host::timer::{Systemd, SystemdError};
use crate::juju::memory::MemoryHookTools;
use crate::juju::StorageInfo;
use crate::lxd::{
    ExecOutput, ExecSpec, Instance, InstanceType, LaunchSpec, Lxd, ProfileSpec, PushSpec,
    ServerInfo,
};
use crate::paths::HostPaths;
use crate::runner::storage::StoragePlan;
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const GIB: u64 = 1 << 30;

/// Records every effect as a line, in order.
#[derive(Default)]
struct Fake {
    log: Mutex<Vec<String>>,
    lxc_installed: RefCell<bool>,
    snap_installed: bool,
    pools: RefCell<usize>,
    bridge: RefCell<Option<BTreeMap<String, String>>>,
    default_devices: RefCell<Option<Devices>>,
    image_present: RefCell<bool>,
    build_fails: bool,
    timer_active: RefCell<bool>,
    storage_total: u64,
    lxd_down: bool,
}

impl Fake {
    fn ready() -> Fake {
        Fake {
            lxc_installed: RefCell::new(true),
            snap_installed: true,
            pools: RefCell::new(1),
            image_present: RefCell::new(true),
            storage_total: 100 * GIB,
            ..Fake::default()
        }
    }

    fn note(&self, line: impl Into<String>) {
        self.log.lock().unwrap().push(line.into());
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    /// Effects only (reads filtered out).
    fn changes(&self) -> Vec<String> {
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
struct FakeLxd {
    calls: Mutex<Vec<String>>,
    image_present: Mutex<bool>,
}

impl Lxd for FakeLxd {
    fn list_owned_instances(&self, _owner: &str) -> Result<Vec<Instance>, LxdError> {
        unused("list")
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
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("profile {}", spec.name));
        Ok(())
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

struct Edges {
    fake: Fake,
    lxd: FakeLxd,
}

impl Edges {
    fn new(fake: Fake) -> Edges {
        let lxd = FakeLxd::default();
        *lxd.image_present.lock().unwrap() = *fake.image_present.borrow();
        Edges { fake, lxd }
    }
    fn lxd_calls(&self) -> Vec<String> {
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
        _ctx: &Context<'_>,
        alias: &str,
        t: InstanceType,
    ) -> Result<(), ImageError> {
        self.fake.note(format!("build image {alias} {t:?}"));
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

struct Unit {
    tools: MemoryHookTools,
    root: tempfile::TempDir,
    charm_dir: tempfile::TempDir,
}

impl Unit {
    fn new() -> Unit {
        let tools = MemoryHookTools::default();
        {
            let mut s = tools.lock();
            s.config.insert("path".into(), "org".into());
            s.config.insert("token".into(), "ghp_secret".into());
            s.config.insert("virtual-machines".into(), 2.into());
            s.config.insert("vm-disk".into(), "10GiB".into());
            s.storage.insert(
                "runner/0".into(),
                StorageInfo {
                    kind: "filesystem".into(),
                    location: "/storage/juju".into(),
                },
            );
        }
        Unit {
            tools,
            root: tempfile::tempdir().unwrap(),
            charm_dir: tempfile::tempdir().unwrap(),
        }
    }

    fn set(&self, key: &str, value: serde_json::Value) {
        self.tools.lock().config.insert(key.into(), value);
    }

    fn config(&self) -> CharmConfig {
        let raw = self.tools.lock().config.clone();
        validate(
            &raw,
            &ConfigContext {
                app_name: "github-runner",
                juju_proxy_configured: false,
            },
        )
        .expect("valid test config")
    }

    fn ensure(&self, edges: &Edges) -> Result<HostReadiness, SetupError> {
        let mut hook = hook_context();
        hook.charm_dir = self.charm_dir.path().to_path_buf();
        let paths = HostPaths::new(self.root.path());
        let ctx = Context {
            tools: &self.tools,
            hook: &hook,
            paths: &paths,
        };
        ensure_host(&ctx, &self.config(), edges)
    }
}

#[test]
fn a_ready_machine_gets_pool_profiles_timer_and_deploy_record() {
    let unit = Unit::new();
    let edges = Edges::new(Fake::ready());
    let ready = unit.ensure(&edges).unwrap();
    assert!(!ready.lxd_installed);
    assert_eq!(ready.image, ImageState::AlreadyPresent);
    assert_eq!(ready.timer, InstallOutcome::Updated);
    assert_eq!(ready.pool, "runner");
    assert_eq!(
        ready.profiles,
        ["default", "runner", "cpu-2-mem-7GiB-disk-10GiB"]
    );
    assert_eq!(
        edges.lxd_calls(),
        [
            "pool runner dir /storage/juju",
            "profile runner",
            "profile cpu-2-mem-7GiB-disk-10GiB",
            "get image jammy"
        ]
    );
    assert!(
        !edges.fake.log().iter().any(|l| l.starts_with("run ")),
        "nothing installed: {:?}",
        edges.fake.log()
    );
    let state = unit.tools.lock().unit_state.clone();
    assert_eq!(
        state.get(DEPLOY_SETTINGS_KEY).map(String::as_str),
        Some("runner-storage=juju-storage;base-image=jammy")
    );
    let root = unit.root.path();
    assert!(root
        .join("etc/systemd/system/ghro.reconcile-runners.timer")
        .exists());
    assert!(root.join("etc/logrotate.d/github-runner-metrics").exists());
}

#[test]
fn running_twice_converges_with_no_new_change() {
    let unit = Unit::new();
    let fake = Fake::ready();
    *fake.bridge.borrow_mut() = Some(BTreeMap::from([("ipv6.address".into(), "auto".into())]));
    *fake.default_devices.borrow_mut() = Some(BTreeMap::from([(
        "eth0".to_string(),
        BTreeMap::from([("type".to_string(), "nic".to_string())]),
    )]));
    *fake.image_present.borrow_mut() = false;
    let edges = Edges::new(fake);
    let first = unit.ensure(&edges).unwrap();
    assert_eq!(first.image, ImageState::Built);
    assert!(edges
        .fake
        .changes()
        .iter()
        .any(|l| l.starts_with("set network lxdbr0")));
    assert!(edges
        .fake
        .changes()
        .contains(&"set profile default eth0 4".to_string()));
    edges.fake.clear();
    unit.tools.lock().calls.clear();

    let second = unit.ensure(&edges).unwrap();
    assert_eq!(second.image, ImageState::AlreadyPresent);
    assert_eq!(second.timer, InstallOutcome::Unchanged);
    assert_eq!(edges.fake.changes(), Vec::<String>::new());
    let calls = unit.tools.lock().calls.clone();
    assert!(
        !calls.iter().any(|c| c == "state-set" || c == "status-set"),
        "{calls:?}"
    );
}

#[test]
fn a_missing_image_is_built_under_its_status_then_cron_is_written() {
    let unit = Unit::new();
    let fake = Fake::ready();
    *fake.image_present.borrow_mut() = false;
    let edges = Edges::new(fake);
    unit.ensure(&edges).unwrap();
    assert_eq!(
        unit.tools.statuses(),
        [Status::Maintenance(BUILDING_IMAGE_STATUS.into())]
    );
    let log = edges.fake.log();
    let build = log
        .iter()
        .position(|l| l == "build image jammy VirtualMachine");
    let cron = log.iter().position(|l| l == "get cron jammy");
    assert!(build.is_some() && cron > build, "{log:?}");
}

#[test]
fn a_failed_image_build_waits_and_records_nothing() {
    let unit = Unit::new();
    let fake = Fake {
        build_fails: true,
        ..Fake::ready()
    };
    *fake.image_present.borrow_mut() = false;
    let edges = Edges::new(fake);
    let err = unit.ensure(&edges).unwrap_err();
    assert!(
        matches!(err.status(), Some(Status::Waiting(m)) if m.contains("runner image not ready"))
    );
    assert!(!unit
        .tools
        .lock()
        .unit_state
        .contains_key(DEPLOY_SETTINGS_KEY));
    // The timer is in place, so the periodic event retries.
    assert!(unit
        .root
        .path()
        .join("etc/systemd/system/ghro.reconcile-runners.timer")
        .exists());
}

#[test]
fn no_lxc_means_snap_install_then_lxd_init() {
    let unit = Unit::new();
    let fake = Fake {
        lxc_installed: RefCell::new(false),
        pools: RefCell::new(0),
        ..Fake::ready()
    };
    let edges = Edges::new(fake);
    let ready = unit.ensure(&edges).unwrap();
    assert!(ready.lxd_installed);
    let runs: Vec<String> = edges
        .fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("run "))
        .collect();
    assert_eq!(
        runs,
        [
            "run /bin/snap install lxd --channel=latest/stable",
            "run /bin/lxd init --auto"
        ]
    );
    assert_eq!(
        unit.tools.statuses(),
        [
            Status::Maintenance("Installing LXD".into()),
            Status::Maintenance("Initialising LXD".into())
        ]
    );
}

#[test]
fn a_rerun_after_a_kill_between_snap_install_and_init_still_initialises() {
    let unit = Unit::new();
    // lxc is there (the snap was installed) but no pool: init never ran.
    let fake = Fake {
        pools: RefCell::new(0),
        ..Fake::ready()
    };
    let edges = Edges::new(fake);
    let ready = unit.ensure(&edges).unwrap();
    assert!(!ready.lxd_installed);
    let runs: Vec<String> = edges
        .fake
        .log()
        .into_iter()
        .filter(|l| l.starts_with("run "))
        .collect();
    assert_eq!(runs, ["run /bin/lxd init --auto"]);
}

#[test]
fn no_lxc_and_no_snap_blocks() {
    let unit = Unit::new();
    let fake = Fake {
        lxc_installed: RefCell::new(false),
        snap_installed: false,
        ..Fake::ready()
    };
    let edges = Edges::new(fake);
    let err = unit.ensure(&edges).unwrap_err();
    assert!(matches!(err, SetupError::LxdNotInstallable));
    assert!(err.is_blocked());
}

#[test]
fn lxd_not_answering_is_waiting() {
    let unit = Unit::new();
    let edges = Edges::new(Fake {
        lxd_down: true,
        ..Fake::ready()
    });
    let err = unit.ensure(&edges).unwrap_err();
    assert!(
        matches!(err.status(), Some(Status::Waiting(m)) if m.contains("LXD is not answering") && m.contains("connection refused"))
    );
}

#[test]
fn an_lxd_profile_outside_test_mode_blocks_before_anything_is_created() {
    let unit = Unit::new();
    std::fs::write(
        unit.charm_dir.path().join("lxd-profile.yaml"),
        "config: {}\n",
    )
    .unwrap();
    let edges = Edges::new(Fake {
        lxc_installed: RefCell::new(false),
        ..Fake::ready()
    });
    let err = unit.ensure(&edges).unwrap_err();
    assert!(matches!(
        err,
        SetupError::Guard(GuardError::LxdProfileOutsideTestMode)
    ));
    assert!(matches!(err.status(), Some(Status::Blocked(m)) if m.contains("lxd-profile.yaml")));
    assert!(edges.fake.log().is_empty(), "{:?}", edges.fake.log());
    assert!(edges.lxd_calls().is_empty());
    assert_eq!(
        std::fs::read_dir(unit.root.path()).unwrap().count(),
        0,
        "no file written"
    );
    // Allowed in test-mode=insecure.
    unit.set("test-mode", "insecure".into());
    let edges = Edges::new(Fake::ready());
    unit.ensure(&edges).unwrap();
}

#[test]
fn a_changed_runner_storage_or_base_image_blocks_saying_so() {
    let unit = Unit::new();
    let edges = Edges::new(Fake::ready());
    unit.ensure(&edges).unwrap();
    unit.set("base-image", "noble".into());
    let edges = Edges::new(Fake::ready());
    let err = unit.ensure(&edges).unwrap_err();
    match err.status() {
        Some(Status::Blocked(m)) => {
            assert!(
                m.starts_with("base-image config cannot be changed after deployment"),
                "{m}"
            );
            assert!(m.contains("jammy") && m.contains("noble"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(edges.lxd_calls().is_empty(), "nothing touched");
    // Back to the deployed value: fine again.
    unit.set("base-image", "jammy".into());
    unit.ensure(&Edges::new(Fake::ready())).unwrap();
    assert_eq!(
        unit.config().base_image,
        BaseImage::Jammy,
        "sanity: config parsed"
    );
}

#[test]
fn too_little_storage_blocks_with_both_numbers() {
    let unit = Unit::new();
    unit.set("virtual-machines", 5.into());
    let edges = Edges::new(Fake {
        storage_total: 20 * GIB,
        ..Fake::ready()
    });
    let err = unit.ensure(&edges).unwrap_err();
    assert_eq!(
        err.status(),
        Some(Status::Blocked(
            "Required disk space for runners 51200MiB is greater than storage total size 20480MiB"
                .into()
        ))
    );
}

#[test]
fn juju_storage_missing_blocks_and_memory_storage_needs_none() {
    let unit = Unit::new();
    unit.tools.lock().storage.clear();
    let err = unit.ensure(&Edges::new(Fake::ready())).unwrap_err();
    assert!(matches!(
        err,
        SetupError::Storage(StorageError::JujuStorageMissing)
    ));
    assert!(err.is_blocked());

    unit.set("runner-storage", "memory".into());
    let edges = Edges::new(Fake::ready());
    unit.ensure(&edges).unwrap();
    let ram = unit.root.path().join("storage/ram");
    assert_eq!(
        edges.lxd_calls()[0],
        format!("pool runner dir {}", ram.display())
    );
    assert_eq!(unit.config().runner_storage, RunnerStorage::Memory);
}

#[test]
fn the_storage_hook_location_wins_over_storage_get() {
    let unit = Unit::new();
    let mut hook = hook_context();
    hook.storage = Some(crate::juju::context::StorageContext {
        storage_id: "runner/7".into(),
        location: Some("/mnt/fresh".into()),
        kind: Some("filesystem".into()),
    });
    let paths = HostPaths::new(unit.root.path());
    let ctx = Context {
        tools: &unit.tools,
        hook: &hook,
        paths: &paths,
    };
    assert_eq!(
        juju_storage_location(&ctx).unwrap(),
        Some(PathBuf::from("/mnt/fresh"))
    );
    assert!(unit.tools.lock().calls.is_empty(), "no storage-get needed");
    hook.storage = None;
    let ctx = Context {
        tools: &unit.tools,
        hook: &hook,
        paths: &paths,
    };
    assert_eq!(
        juju_storage_location(&ctx).unwrap(),
        Some(PathBuf::from("/storage/juju"))
    );
}

#[test]
fn setup_errors_map_to_the_status_precedence() {
    let blocked = SetupError::Guard(GuardError::LxdProfileOutsideTestMode);
    assert!(blocked.is_blocked());
    let waiting = SetupError::LxdUnavailable(LxdError::LxcMissing);
    assert!(matches!(waiting.status(), Some(Status::Waiting(_))));
    let binary = SetupError::RunnerBinary("HTTP 500".into());
    assert_eq!(
        binary.status(),
        Some(Status::Maintenance(
            "Failed to update runner binary: HTTP 500".into()
        ))
    );
    let limited = SetupError::RunnerBinaryLookup(GitHubError::RateLimited {
        method: "GET".into(),
        path: "/x".into(),
        reset_epoch: 3600 * 13 + 60 * 5,
    });
    assert!(matches!(limited.status(), Some(Status::Maintenance(m)) if m.contains("13:05 UTC")));
    let tool = SetupError::HookTool(HookToolError::Missing {
        tool: "state-get".into(),
    });
    assert_eq!(tool.status(), None, "a broken hook tool fails the hook");
}
