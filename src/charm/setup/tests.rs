//! ensure_host over fake edges: what runs, in which order, and what is left alone.

use super::fakes::{Edges, Fake, GIB};
use super::*;
use crate::charm::testing::hook_context;
use crate::config::{validate, BaseImage, ConfigContext, RunnerStorage};
use crate::juju::memory::MemoryHookTools;
use crate::juju::StorageInfo;
use crate::paths::HostPaths;
use crate::runner::image::BUILDING_IMAGE_STATUS;
use std::cell::RefCell;
use std::path::PathBuf;

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
        ["default", "ghr-runner", "cpu-2-mem-7GiB-disk-10GiB"]
    );
    assert_eq!(
        edges.lxd_calls(),
        [
            "pool runner dir /storage/juju",
            "profile ghr-runner",
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
fn shared_lxd_objects_are_set_up_under_the_machine_lock_and_it_is_released() {
    let unit = Unit::new();
    let fake = Fake::ready();
    *fake.image_present.borrow_mut() = false;
    let edges = Edges::new(fake);
    unit.ensure(&edges).unwrap();
    let log = edges.fake.log();
    let build = log.iter().position(|l| l.starts_with("build image"));
    assert_eq!(
        log.get(build.unwrap() + 1).map(String::as_str),
        Some("machine lock held"),
        "{log:?}"
    );
    let lock = HostPaths::new(unit.root.path()).machine_lock_file();
    let file = std::fs::File::open(&lock).unwrap();
    assert!(file.try_lock().is_ok(), "released after setup");
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

#[test]
fn the_periodic_check_skips_a_setup_whose_inputs_did_not_change() {
    let unit = Unit::new();
    let mut hook = hook_context();
    hook.charm_dir = unit.charm_dir.path().to_path_buf();
    let paths = HostPaths::new(unit.root.path());
    let ctx = Context {
        tools: &unit.tools,
        hook: &hook,
        paths: &paths,
    };
    let edges = Edges::new(Fake::ready());
    assert!(ensure_host_when(&ctx, &unit.config(), &edges, When::IfChanged).is_ok());
    assert!(!edges.lxd_calls().is_empty(), "never set up: runs");

    let edges = Edges::new(Fake::ready());
    assert!(ensure_host_when(&ctx, &unit.config(), &edges, When::IfChanged).is_ok());
    assert!(edges.lxd_calls().is_empty(), "same inputs: skipped");
    assert!(edges.fake.log().is_empty());

    assert!(ensure_host_when(&ctx, &unit.config(), &edges, When::Always).is_ok());
    assert!(!edges.lxd_calls().is_empty(), "Always runs");

    unit.set("vm-cpu", 4.into());
    let edges = Edges::new(Fake::ready());
    assert!(ensure_host_when(&ctx, &unit.config(), &edges, When::IfChanged).is_ok());
    assert!(
        edges
            .lxd_calls()
            .contains(&"profile cpu-4-mem-7GiB-disk-10GiB".to_string()),
        "changed inputs: runs"
    );
}

#[test]
fn a_missing_lxd_project_waits_before_anything_is_created() {
    let unit = Unit::new();
    let edges = Edges::new(Fake {
        project_missing: true,
        ..Fake::ready()
    });
    let err = unit.ensure(&edges).unwrap_err();
    assert!(matches!(err, SetupError::LxdProjectMissing(_)), "{err}");
    assert!(matches!(err.status(), Some(Status::Waiting(_))));
    assert!(edges.lxd_calls().is_empty(), "no pool, profile or image");
    assert!(!edges.fake.log().iter().any(|l| l.starts_with("run ")));
}

/// `getent` that knows one name; records what it was asked.
struct Resolver {
    asked: RefCell<Vec<String>>,
}

impl commands::HostCommands for Resolver {
    fn find(&self, program: &str) -> Option<PathBuf> {
        (program == "getent").then(|| PathBuf::from("/usr/bin/getent"))
    }

    fn run(
        &self,
        _program: &std::path::Path,
        args: &[&str],
        _timeout: Duration,
    ) -> Result<commands::CommandOutput, CommandError> {
        self.asked.borrow_mut().push(args.join(" "));
        let (code, stdout) = match args {
            ["ahostsv4", "tmate.example"] => (
                0,
                "203.0.113.7     STREAM tmate.example\n203.0.113.7     DGRAM  \n\
                 203.0.113.8     STREAM \n",
            ),
            _ => (2, ""),
        };
        Ok(commands::CommandOutput {
            code,
            stdout: stdout.into(),
            stderr: String::new(),
        })
    }
}

#[test]
fn tmate_servers_named_by_host_name_are_exempted_by_their_resolved_addresses() {
    let server = |host: &str| crate::network::debug_ssh::TmateServer {
        host: host.into(),
        port: 10022,
        rsa_fingerprint: "SHA256:a".into(),
        ed25519_fingerprint: "SHA256:b".into(),
    };
    let resolver = Resolver {
        asked: RefCell::new(Vec::new()),
    };
    let servers = [
        server("10.1.2.3"),
        server("tmate.example"),
        server("gone.example"),
    ];
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    assert_eq!(
        tmate_endpoints(&servers, &resolver),
        vec![
            (ip("10.1.2.3"), 10022),
            (ip("203.0.113.7"), 10022),
            (ip("203.0.113.8"), 10022)
        ]
    );
    // An address is never looked up; a name is, once.
    assert_eq!(
        *resolver.asked.borrow(),
        vec!["ahostsv4 tmate.example", "ahostsv4 gone.example"]
    );
    // And the resolved addresses leave the denylist; the rest of it stays.
    let unit = Unit::new();
    unit.tools
        .lock()
        .config
        .insert("denylist".into(), "203.0.113.0/24".into());
    let inputs = crate::network::acl_inputs(
        &unit.config(),
        Default::default(),
        tmate_endpoints(&servers, &resolver)
            .into_iter()
            .map(|(addr, _)| addr)
            .collect(),
        vec![],
    );
    let denied: Vec<crate::network::cidr::Ipv4Net> = crate::network::acl::egress_rules(&inputs)
        .iter()
        .flat_map(|r| r.destination.split(','))
        .filter_map(crate::network::cidr::Ipv4Net::parse)
        .collect();
    let is_denied = |a: &str| denied.iter().any(|n| n.contains(ip(a)));
    assert!(!is_denied("203.0.113.7") && !is_denied("203.0.113.8"));
    assert!(is_denied("203.0.113.6") && is_denied("203.0.113.9"));
}
