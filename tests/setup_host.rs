//! `charm::setup::ensure_host` against the real LXD daemon, in a project of its own, with a
//! recording `systemctl` (tests/support/fake_systemctl.sh) and a temporary host root.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use github_runner::charm::setup::{self, HostEdges, HostReadiness, SetupError};
use github_runner::charm::Context;
use github_runner::config::{validate, CharmConfig, ConfigContext};
use github_runner::host::timer::{InstallOutcome, TIMER_UNIT};
use github_runner::juju::context::HookContext;
use github_runner::juju::memory::MemoryHookTools;
use github_runner::juju::StorageInfo;
use github_runner::paths::HostPaths;
use github_runner::runner::image::ImageState;
use lxd_fixture::LxdFixture;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const FAKE_SYSTEMCTL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/fake_systemctl.sh"
);

/// A unit's machine: host root, charm dir, Juju storage dir, a bin dir with the fake
/// systemctl, the hook tools, and the fixture's LXD project.
struct Machine {
    fx: LxdFixture,
    pool: String,
    tools: MemoryHookTools,
    dir: tempfile::TempDir,
    hook: HookContext,
}

impl Machine {
    fn new() -> Machine {
        let mut fx = LxdFixture::new();
        let pool = fx.scratch_pool_name();
        let dir = tempfile::tempdir().unwrap();
        for sub in ["root", "charm", "storage", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        executable::copy_executable(Path::new(FAKE_SYSTEMCTL), &dir.path().join("bin/systemctl"));
        let tools = MemoryHookTools::default();
        {
            let mut s = tools.lock();
            for (k, v) in [
                ("path", "org"),
                ("token", "ghp_secret"),
                ("test-mode", "insecure"),
                ("vm-disk", "64MiB"),
                ("vm-memory", "256MiB"),
                ("vm-cpu", "1"),
            ] {
                let value = if k == "vm-cpu" {
                    serde_json::json!(1)
                } else {
                    serde_json::json!(v)
                };
                s.config.insert(k.into(), value);
            }
            s.config.insert("virtual-machines".into(), 2.into());
            s.storage.insert(
                "runner/0".into(),
                StorageInfo {
                    kind: "filesystem".into(),
                    location: dir.path().join("storage").display().to_string(),
                },
            );
        }
        let vars: BTreeMap<String, String> = [
            ("JUJU_UNIT_NAME", "github-runner/0".to_string()),
            ("JUJU_MODEL_UUID", "uuid".to_string()),
            (
                "JUJU_CHARM_DIR",
                dir.path().join("charm").display().to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let hook = HookContext::from_vars(&vars).unwrap();
        Machine {
            fx,
            pool,
            tools,
            dir,
            hook,
        }
    }

    fn paths(&self) -> HostPaths {
        HostPaths::new(self.dir.path().join("root"))
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
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
        .unwrap()
    }

    fn ensure(&self) -> Result<HostReadiness, SetupError> {
        let paths = self.paths();
        let edges = HostEdges::new(
            &paths,
            Some(self.bin().to_str().unwrap()),
            Some(self.fx.project.clone()),
        )
        .with_pool(self.pool.clone());
        let ctx = Context {
            tools: &self.tools,
            hook: &self.hook,
            paths: &paths,
        };
        let result = setup::ensure_host(&ctx, &self.config(), &edges);
        if result.is_ok() {
            self.fx.claim_pool(&self.pool);
        }
        result
    }

    fn systemctl_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.bin().join("calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn profiles(&self) -> Vec<String> {
        let out = self.fx.lxc_ok(&["profile", "list", "--format", "csv"]);
        let mut names: Vec<String> = out
            .lines()
            .filter_map(|l| l.split(',').next())
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn ensure_host_twice_converges_on_real_lxd() {
    let m = Machine::new();
    let default_before = m.fx.lxc_ok(&["profile", "show", "default"]);

    let first = m.ensure().unwrap();
    assert!(!first.lxd_installed);
    assert_eq!(
        first.image,
        ImageState::AlreadyPresent,
        "the fixture's jammy"
    );
    assert_eq!(first.timer, InstallOutcome::Updated);
    assert_eq!(
        first.profiles,
        ["default", "ghr-runner", "cpu-1-mem-256MiB-disk-64MiB"]
    );
    let source = m.fx.lxc_ok(&["storage", "get", &m.pool, "source"]);
    assert_eq!(
        source.trim(),
        m.dir.path().join("storage").display().to_string()
    );
    assert_eq!(
        m.profiles(),
        ["cpu-1-mem-256MiB-disk-64MiB", "default", "ghr-runner"]
    );
    let resource =
        m.fx.lxc_ok(&["profile", "show", "cpu-1-mem-256MiB-disk-64MiB"]);
    assert!(
        resource.contains(&format!("pool: {}", m.pool)),
        "{resource}"
    );
    assert!(resource.contains("limits.memory: 256MiB"), "{resource}");
    let root = m.paths();
    let timer = read(&root.systemd_dir().join(TIMER_UNIT));
    assert!(timer.contains("\nOnUnitInactiveSec=10m\n"), "{timer}");
    let service = read(&root.systemd_dir().join("ghro.reconcile-runners.service"));
    assert!(
        service.contains(&format!(
            "WorkingDirectory={}\n",
            m.dir.path().join("charm").display()
        )),
        "{service}"
    );
    assert!(root.metrics_logrotate_rule().is_file());
    let cron = root.cron_dir().join("github-runner-image");
    let mode = std::fs::metadata(&cron).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the cron file carries the proxy settings");
    assert!(read(&cron).contains("--alias jammy --type container"));
    let exporter = "ghro.metrics-exporter.github-runner-0.service";
    assert_eq!(
        m.systemctl_calls(),
        [
            "daemon-reload",
            &format!("enable --now {TIMER_UNIT}"),
            &format!("restart {TIMER_UNIT}"),
            "daemon-reload",
            &format!("enable --now {exporter}"),
            &format!("restart {exporter}"),
        ]
    );
    let unit = read(&root.systemd_dir().join(exporter));
    assert!(
        unit.contains("metrics-exporter --listen 127.0.0.1:9470 --unit github-runner/0\n"),
        "{unit}"
    );
    assert_eq!(
        m.tools
            .lock()
            .unit_state
            .get(setup::DEPLOY_SETTINGS_KEY)
            .map(String::as_str),
        Some("runner-storage=juju-storage;base-image=jammy")
    );

    // The second run finds everything in place: nothing rewritten, nothing restarted.
    let second = m.ensure().unwrap();
    assert_eq!(second.timer, InstallOutcome::Unchanged);
    assert_eq!(second.profiles, first.profiles);
    assert_eq!(
        m.systemctl_calls()[6..],
        [
            format!("is-active --quiet {TIMER_UNIT}"),
            format!("is-active --quiet {exporter}")
        ]
    );
    assert_eq!(
        m.fx.lxc_ok(&["profile", "show", "default"]),
        default_before,
        "the project's default profile has no eth0: left as it was"
    );
}

#[test]
fn a_vm_setting_change_adds_a_resource_profile_and_drops_the_old_one_once_unused() {
    let m = Machine::new();
    m.ensure().unwrap();
    // A runner made with the first setting (created, not started: it uses the profile all
    // the same).
    m.fx.lxc_ok(&[
        "init",
        "jammy",
        "keeper",
        "-p",
        "default",
        "-p",
        "cpu-1-mem-256MiB-disk-64MiB",
    ]);
    m.tools
        .lock()
        .config
        .insert("vm-memory".into(), "512MiB".into());
    let after = m.ensure().unwrap();
    assert_eq!(
        after.profiles,
        ["default", "ghr-runner", "cpu-1-mem-512MiB-disk-64MiB"]
    );
    assert_eq!(
        m.profiles(),
        [
            "cpu-1-mem-256MiB-disk-64MiB",
            "cpu-1-mem-512MiB-disk-64MiB",
            "default",
            "ghr-runner"
        ],
        "a runner still uses the old profile: kept"
    );
    m.fx.lxc_ok(&["delete", "--force", "keeper"]);
    m.tools
        .lock()
        .config
        .insert("vm-memory".into(), "768MiB".into());
    m.ensure().unwrap();
    assert_eq!(
        m.profiles(),
        ["cpu-1-mem-768MiB-disk-64MiB", "default", "ghr-runner"],
        "old profiles nothing uses are dropped"
    );
}

#[test]
fn too_little_storage_blocks_with_both_numbers_and_makes_no_pool() {
    let m = Machine::new();
    m.tools
        .lock()
        .config
        .insert("vm-disk".into(), "16TiB".into());
    let err = m.ensure().unwrap_err();
    let status = format!("{:?}", err.status());
    assert!(
        status.starts_with("Some(Blocked(\"the runner storage has ")
            && status.contains("MiB free, not enough for one runner's disk (vm-disk 16777216MiB"),
        "{status}"
    );
    assert!(
        !m.fx.lxc(&["storage", "show", &m.pool]).status.success(),
        "no pool"
    );
}

#[test]
fn an_inactive_timer_is_repaired_by_the_next_run() {
    let m = Machine::new();
    m.ensure().unwrap();
    std::fs::remove_file(m.bin().join("active").join(TIMER_UNIT)).unwrap();
    let again = m.ensure().unwrap();
    assert_eq!(again.timer, InstallOutcome::Repaired);
    assert!(m.bin().join("active").join(TIMER_UNIT).exists());
}

#[test]
fn lxc_query_ops_read_and_merge_profile_device_keys_in_the_project() {
    use github_runner::charm::setup::commands::SystemCommands;
    use github_runner::charm::setup::lxd_host::{LxcQueryOps, LxdHostOps};
    let m = Machine::new();
    m.fx.lxc_ok(&[
        "profile",
        "device",
        "add",
        "default",
        "scratch",
        "disk",
        "source=/tmp",
        "path=/mnt/scratch",
    ]);
    m.fx.lxc_ok(&["profile", "set", "default", "user.keep", "me"]);
    let commands = SystemCommands::new(None, &m.fx.conf);
    let ops = LxcQueryOps::new(commands, Some(m.fx.project.clone())).unwrap();

    assert!(ops.storage_pool_count().unwrap() >= 1);
    assert_eq!(
        ops.network_config("lxdbr0").unwrap(),
        None,
        "a test project never touches the daemon's networks"
    );
    assert_eq!(ops.profile_devices("no-such-profile").unwrap(), None);
    let devices = ops.profile_devices("default").unwrap().unwrap();
    assert_eq!(devices["scratch"]["path"], "/mnt/scratch");
    assert_eq!(devices["root"]["pool"], m.fx.pool);

    let keys = BTreeMap::from([("readonly".to_string(), "true".to_string())]);
    ops.set_profile_device_keys("default", "scratch", &keys)
        .unwrap();
    let after = ops.profile_devices("default").unwrap().unwrap();
    assert_eq!(after["scratch"]["readonly"], "true");
    assert_eq!(after["scratch"]["source"], "/tmp", "other keys kept");
    assert_eq!(after["root"], devices["root"], "other devices kept");
    assert_eq!(
        m.fx.lxc_ok(&["profile", "get", "default", "user.keep"])
            .trim(),
        "me",
        "profile config kept"
    );
    assert!(ops
        .set_profile_device_keys("default", "no-such-device", &keys)
        .is_err());
}

#[test]
fn a_project_that_does_not_exist_creates_nothing_not_even_a_global_pool() {
    let m = Machine::new();
    let paths = m.paths();
    let missing = format!("{}-missing", m.fx.project);
    let edges = HostEdges::new(
        &paths,
        Some(m.bin().to_str().unwrap()),
        Some(missing.clone()),
    )
    .with_pool(m.pool.clone());
    let ctx = Context {
        tools: &m.tools,
        hook: &m.hook,
        paths: &paths,
    };
    let err = setup::ensure_host(&ctx, &m.config(), &edges).unwrap_err();
    assert!(
        matches!(&err, SetupError::LxdProjectMissing(p) if *p == missing),
        "{err}"
    );
    assert!(
        !m.fx.lxc(&["storage", "show", &m.pool]).status.success(),
        "LXD would have made this global pool in any project's name"
    );
}

#[test]
fn a_storage_root_with_lost_and_found_gets_the_pool_in_a_subdirectory() {
    let m = Machine::new();
    let storage = m.dir.path().join("storage");
    std::fs::create_dir_all(storage.join("lost+found")).unwrap();
    m.ensure().unwrap();
    let source = m.fx.lxc_ok(&["storage", "get", &m.pool, "source"]);
    assert_eq!(
        source.trim(),
        storage.join("lxd-runner-pool").display().to_string(),
        "LXD refuses a dir pool on a non-empty directory"
    );
    // And it stays there on the next run.
    m.ensure().unwrap();
}
