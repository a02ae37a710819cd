//! The lifecycle handlers over fake edges, the in-memory LXD/GitHub world and MemoryHookTools.

use super::*;
use crate::charm::fake_world::{self, FakeWorld};
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::setup::{DEPLOY_SETTINGS_KEY, HOST_READY_KEY};
use crate::charm::testing::hook_context;
use crate::config::{validate, ConfigContext};
use crate::github::download::{STATE_SHA256_KEY, STATE_URL_KEY};
use crate::juju::context::HookContext;
use crate::juju::memory::MemoryHookTools;
use crate::juju::StorageInfo;
use crate::paths::HostPaths;
use std::cell::{Cell, RefCell};

/// The URL the fake world's downloads list names (it lists no checksum).
const WORLD_RUNNER_URL: &str = "http://127.0.0.1:1/runner.tar.gz";

struct TestHost {
    world: FakeWorld,
    edges: Edges,
    root: tempfile::TempDir,
    /// Runtimes handed out (prepare / cleanup).
    prepared: RefCell<u32>,
    /// The machine's boot time as start sees it.
    boot_epoch: Cell<Option<u64>>,
}

impl TestHost {
    fn new() -> TestHost {
        TestHost {
            world: FakeWorld::new(),
            edges: Edges::new(Fake::ready()),
            root: tempfile::tempdir().unwrap(),
            prepared: RefCell::new(0),
            // Booted a day before the world's clock: runners made in tests are newer.
            boot_epoch: Cell::new(Some(fake_world::NOW - 86_400)),
        }
    }

    fn runtime(&self, ctx: &Context<'_>) -> Option<Runtime> {
        let raw = ctx.tools.config_get().unwrap();
        let config = validate(
            &raw,
            &ConfigContext {
                app_name: "github-runner",
                juju_proxy_configured: false,
            },
        )
        .ok()?;
        *self.prepared.borrow_mut() += 1;
        Some(self.world.runtime(self.root.path(), config))
    }
}

impl HostAccess for TestHost {
    fn edges(&self) -> &dyn SetupEdges {
        &self.edges
    }
    fn edges_for<'a>(&'a self, _rt: &'a Runtime) -> Box<dyn SetupEdges + 'a> {
        Box::new(&self.edges)
    }
    fn prepare(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError> {
        Ok(self.runtime(ctx))
    }
    fn cleanup_runtime(&self, ctx: &Context<'_>) -> Result<Option<Runtime>, CharmError> {
        Ok(self.runtime(ctx))
    }
    fn boot_time_epoch(&self) -> Option<u64> {
        self.boot_epoch.get()
    }
}

fn tools() -> MemoryHookTools {
    let tools = MemoryHookTools::default();
    {
        let mut s = tools.lock();
        for (k, v) in [
            ("path", "org"),
            ("token", "ghp_secret"),
            ("test-mode", "insecure"),
            ("github-url", "http://127.0.0.1:1"),
        ] {
            s.config.insert(k.into(), v.into());
        }
        s.config.insert("virtual-machines".into(), 2.into());
        s.storage.insert(
            "runner/0".into(),
            StorageInfo {
                kind: "filesystem".into(),
                location: "/storage/juju".into(),
            },
        );
    }
    tools
}

/// The runner binary the world lists is already in place (no download).
fn binary_in_place(tools: &MemoryHookTools) {
    let mut s = tools.lock();
    s.unit_state
        .insert(STATE_URL_KEY.into(), WORLD_RUNNER_URL.into());
    s.unit_state.insert(STATE_SHA256_KEY.into(), String::new());
}

fn hook(host: &TestHost) -> HookContext {
    let mut hook = hook_context();
    hook.charm_dir = host.root.path().join("charm");
    std::fs::create_dir_all(&hook.charm_dir).unwrap();
    hook
}

fn run(
    host: &TestHost,
    tools: &MemoryHookTools,
    handler: fn(&Context<'_>, &dyn HostAccess) -> Result<(), CharmError>,
) {
    let hook = hook(host);
    let paths = HostPaths::new(host.root.path());
    let ctx = Context {
        tools,
        hook: &hook,
        paths: &paths,
    };
    handler(&ctx, host).unwrap();
}

fn stop_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    take_down(ctx, host, false)
}

fn remove_with(ctx: &Context<'_>, host: &dyn HostAccess) -> Result<(), CharmError> {
    take_down(ctx, host, true)
}

#[test]
fn install_sets_up_the_host_then_waits_for_the_first_reconcile() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    assert_eq!(tools.lock().app_versions, [CHARM_VERSION]);
    let state = tools.lock().unit_state.clone();
    assert!(state.contains_key(DEPLOY_SETTINGS_KEY));
    assert!(state.contains_key(HOST_READY_KEY));
    assert_eq!(
        host.edges.lxd_calls()[0],
        "pool runner dir /storage/juju",
        "storage from storage-get"
    );
    assert!(host
        .edges
        .fake
        .log()
        .contains(&"systemctl enable --now ghro.reconcile-runners.timer".to_string()));
    assert_eq!(
        tools.statuses()[0],
        Status::Maintenance(SETTING_UP_STATUS.into())
    );
    assert!(
        matches!(tools.statuses().last(), Some(Status::Waiting(m)) if m.contains("first reconcile")),
        "{:?}",
        tools.statuses()
    );
    assert!(
        host.world.instance_names().is_empty(),
        "install creates no runner"
    );
}

#[test]
fn a_failed_binary_download_leaves_maintenance_and_the_old_tarball() {
    let host = TestHost::new();
    let tools = tools();
    run(&host, &tools, install_with);
    let last = tools.statuses().last().cloned();
    match last {
        Some(Status::Maintenance(m)) => {
            assert!(m.starts_with("Failed to update runner binary: "), "{m}");
            assert!(m.contains("sha256_checksum"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    let tarball = crate::github::download::tarball_path(&HostPaths::new(host.root.path()));
    assert_eq!(std::fs::read(tarball).unwrap(), b"tarball", "old one kept");
}

#[test]
fn install_with_invalid_config_blocks_and_touches_nothing() {
    let host = TestHost::new();
    let tools = tools();
    tools.lock().config.remove("token");
    run(&host, &tools, install_with);
    assert!(matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("token")));
    assert!(host.edges.fake.log().is_empty());
    assert!(host.edges.lxd_calls().is_empty());
    assert_eq!(*host.prepared.borrow(), 0);
}

#[test]
fn an_lxd_profile_outside_test_mode_blocks_install_before_lxd_is_touched() {
    let host = TestHost::new();
    let tools = tools();
    {
        let mut s = tools.lock();
        s.config.remove("test-mode");
        s.config.remove("github-url");
    }
    let charm = host.root.path().join("charm");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::write(charm.join("lxd-profile.yaml"), "config: {}\n").unwrap();
    run(&host, &tools, install_with);
    assert!(
        matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("lxd-profile.yaml"))
    );
    assert!(
        host.edges.fake.log().is_empty(),
        "{:?}",
        host.edges.fake.log()
    );
    assert!(host.edges.lxd_calls().is_empty());
    assert!(!host.root.path().join("etc").exists(), "no file written");
}

#[test]
fn start_flushes_idle_runners_only_when_they_predate_the_boot() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    run(&host, &tools, start_with);
    assert_eq!(host.world.instance_names().len(), 2);
    assert_eq!(host.world.runner_names().len(), 2);
    let statuses = tools.statuses();
    assert!(statuses.contains(&Status::Maintenance(STARTING_STATUS.into())));

    // Start again in the same boot (runners newer than the boot): nothing is churned.
    host.world.bring_online();
    let before = host.world.instance_names();
    run(&host, &tools, start_with);
    assert_eq!(host.world.instance_names(), before);

    // A start after a reboot (runners older than the boot) replaces the idle runners:
    // same count, new names.
    host.boot_epoch.set(Some(fake_world::NOW + 1));
    run(&host, &tools, start_with);
    let after = host.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} {after:?}"
    );
}

#[test]
fn upgrade_sets_the_version_and_replaces_idle_runners() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    run(&host, &tools, start_with);
    host.world.bring_online();
    let before = host.world.instance_names();
    run(&host, &tools, upgrade_charm_with);
    assert_eq!(tools.lock().app_versions.len(), 2);
    let after = host.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|n| !before.contains(n)));
}

#[test]
fn stop_removes_the_timer_then_every_runner() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    run(&host, &tools, start_with);
    host.world.bring_online();
    assert_eq!(host.world.instance_names().len(), 2);
    run(&host, &tools, stop_with);
    assert!(host.world.instance_names().is_empty());
    assert!(host.world.runner_names().is_empty());
    let log = host.edges.fake.log();
    assert!(log.contains(&"systemctl disable --now ghro.reconcile-runners.timer".to_string()));
    assert!(!host
        .root
        .path()
        .join("etc/systemd/system/ghro.reconcile-runners.timer")
        .exists());
    // Idempotent: a second stop (or remove) finds nothing to do.
    run(&host, &tools, remove_with);
    assert!(host.world.instance_names().is_empty());
}

#[test]
fn remove_leaves_no_credentials_record_timer_cron_profile_or_pool() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    run(&host, &tools, start_with);
    let paths = HostPaths::new(host.root.path());
    let rt = host
        .world
        .runtime(host.root.path(), fake_world::config(&[]));
    crate::runner::resources::ensure_profiles(
        &*rt.lxd,
        &crate::runner::resources::Resources::from_config(&rt.config),
        crate::lxd::InstanceType::Container,
        &rt.storage_pool,
        &[],
    )
    .unwrap();
    rt.lxd
        .ensure_storage_pool(&rt.storage_pool, "dir", "/x")
        .unwrap();
    let files = [
        credentials::credentials_path(&paths),
        crate::charm::runner_metrics::record_path(&paths),
        paths.rebuild_cron_file(),
    ];
    for f in &files {
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, "x").unwrap();
    }
    assert!(!host.world.lock().profiles.is_empty());
    run(&host, &tools, remove_with);
    for f in &files {
        assert!(!f.exists(), "{} left behind", f.display());
    }
    let w = host.world.lock();
    assert!(w.profiles.is_empty(), "{:?}", w.profiles.keys());
    assert!(w.pools.is_empty(), "{:?}", w.pools);
    assert!(w.instances.is_empty());
    assert!(!paths
        .systemd_dir()
        .join("ghro.reconcile-runners.timer")
        .exists());
}

#[test]
fn remove_with_invalid_config_still_removes_timer_and_cron() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, install_with);
    let cron = host.root.path().join("etc/cron.d/github-runner-image");
    std::fs::create_dir_all(cron.parent().unwrap()).unwrap();
    std::fs::write(&cron, "x").unwrap();
    tools.lock().config.remove("token");
    run(&host, &tools, remove_with);
    assert!(!cron.exists());
    assert!(!host
        .root
        .path()
        .join("etc/systemd/system/ghro.reconcile-runners.service")
        .exists());
}

#[test]
fn start_does_not_reconcile_when_the_host_is_not_ready() {
    let host = TestHost {
        edges: Edges::new(Fake {
            lxd_down: true,
            ..Fake::ready()
        }),
        ..TestHost::new()
    };
    let tools = tools();
    binary_in_place(&tools);
    run(&host, &tools, start_with);
    assert!(host.world.instance_names().is_empty());
    assert!(
        matches!(tools.statuses().last(), Some(Status::Waiting(m)) if m.starts_with("LXD is not answering"))
    );
}

fn run_storage_hook(
    host: &TestHost,
    tools: &MemoryHookTools,
    handler: fn(&Context<'_>, &dyn HostAccess) -> Result<(), CharmError>,
    location: &str,
) {
    let mut hook = hook(host);
    hook.storage = Some(crate::juju::context::StorageContext {
        storage_id: "runner/1".into(),
        location: Some(location.into()),
        kind: Some("filesystem".into()),
    });
    let paths = HostPaths::new(host.root.path());
    let ctx = Context {
        tools,
        hook: &hook,
        paths: &paths,
    };
    handler(&ctx, host).unwrap();
}

#[test]
fn storage_attached_makes_the_pool_there_and_reconciles() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    tools.lock().storage.clear();
    run(&host, &tools, install_with);
    assert!(
        matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("juju add-storage")),
        "{:?}",
        tools.statuses()
    );
    run_storage_hook(
        &host,
        &tools,
        crate::charm::storage::attached_with,
        "/srv/runner-disks",
    );
    assert!(host
        .edges
        .lxd_calls()
        .contains(&"pool runner dir /srv/runner-disks".to_string()));
    assert_eq!(host.world.instance_names().len(), 2);
}

#[test]
fn storage_detaching_flushes_every_runner_only_for_juju_storage() {
    let host = TestHost::new();
    let tools = tools();
    binary_in_place(&tools);
    tools
        .lock()
        .config
        .insert("runner-storage".into(), "memory".into());
    run(&host, &tools, install_with);
    run(&host, &tools, start_with);
    host.world.bring_online();
    run_storage_hook(
        &host,
        &tools,
        crate::charm::storage::detaching_with,
        "/storage/juju",
    );
    assert_eq!(host.world.instance_names().len(), 2, "memory: not on it");

    tools
        .lock()
        .config
        .insert("runner-storage".into(), "juju-storage".into());
    run_storage_hook(
        &host,
        &tools,
        crate::charm::storage::detaching_with,
        "/storage/juju",
    );
    assert!(host.world.instance_names().is_empty());
    assert!(host.world.runner_names().is_empty());
    assert!(tools.statuses().contains(&Status::Maintenance(
        crate::charm::storage::DETACHING_STATUS.into()
    )));
}

#[test]
fn without_lxd_the_guards_still_come_before_snap_install() {
    let host = TestHost {
        edges: Edges::new(Fake {
            lxc_installed: RefCell::new(false),
            ..Fake::ready()
        }),
        ..TestHost::new()
    };
    let tools = tools();
    {
        let mut s = tools.lock();
        s.config.remove("test-mode");
        s.config.remove("github-url");
    }
    let charm = host.root.path().join("charm");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::write(charm.join("lxd-profile.yaml"), "config: {}\n").unwrap();
    run(&host, &tools, install_with);
    assert!(
        matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("lxd-profile.yaml"))
    );
    assert!(
        host.edges.fake.log().is_empty(),
        "{:?}",
        host.edges.fake.log()
    );
    assert_eq!(*host.prepared.borrow(), 0, "no runtime without LXD");

    // Without the file, the same install installs LXD before building the runtime.
    std::fs::remove_file(charm.join("lxd-profile.yaml")).unwrap();
    run(&host, &tools, install_with);
    assert!(host
        .edges
        .fake
        .log()
        .contains(&"run /bin/snap install lxd --channel=latest/stable".to_string()));
    assert_eq!(*host.prepared.borrow(), 1);
}

#[test]
fn cleanup_falls_back_to_the_credentials_the_charm_last_acted_on() {
    let ctx = ConfigContext {
        app_name: "github-runner",
        juju_proxy_configured: false,
    };
    let raw = tools().lock().config.clone();
    let current = cleanup_config(&raw, None, &ctx).unwrap();
    assert_eq!(current.token.expose(), "ghp_secret");

    let mut previous = PreviousCredentials::of(&current);
    previous.token = crate::secret::Secret::new("ghp_previous");
    let mut cleared = raw.clone();
    cleared.remove("token");
    cleared.insert("path".into(), "".into());
    assert!(cleanup_config(&cleared, None, &ctx).is_none());
    let fallback = cleanup_config(&cleared, Some(&previous), &ctx).unwrap();
    assert_eq!(fallback.token.expose(), "ghp_previous");
    assert_eq!(fallback.path, current.path);
    assert_eq!(
        cleanup_config(&raw, Some(&previous), &ctx)
            .unwrap()
            .token
            .expose(),
        "ghp_secret",
        "a valid configuration wins"
    );

    let mut broken = cleared.clone();
    broken.insert("vm-cpu".into(), 0.into());
    assert!(
        cleanup_config(&broken, Some(&previous), &ctx).is_none(),
        "other problems are not papered over"
    );
}

#[test]
fn only_runners_from_before_the_boot_are_suspect() {
    assert!(!runners_predate_boot(&[], Some(100)));
    assert!(!runners_predate_boot(&[], None));
    assert!(!runners_predate_boot(&[100, 150], Some(100)));
    assert!(runners_predate_boot(&[99, 150], Some(100)));
    // Unknown boot time: any runner may predate it.
    assert!(runners_predate_boot(&[150], None));
}
