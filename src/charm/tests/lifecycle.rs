//! install, start, upgrade-charm, stop, remove and the storage hooks through the whole
//! pipeline, over fake setup edges, the in-memory LXD/GitHub world and MemoryHookTools.

use crate::charm::fake_world::{self, FakeWorld, WorldHost};
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::setup::{DEPLOY_SETTINGS_KEY, HOST_READY_KEY};
use crate::charm::testing::hook_context;
use crate::charm::Intent;
use crate::github::download::{STATE_SHA256_KEY, STATE_URL_KEY};
use crate::juju::event::Event;
use crate::juju::memory::MemoryHookTools;
use crate::juju::{Status, StorageInfo};
use crate::messages;
use crate::paths::HostPaths;
use std::cell::RefCell;

/// The URL the fake world's downloads list names (it lists no checksum).
const WORLD_RUNNER_URL: &str = "http://127.0.0.1:1/runner.tar.gz";

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

#[test]
fn install_sets_up_the_host_then_waits_for_the_first_reconcile() {
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Install).unwrap();
    assert_eq!(
        tools.lock().app_versions,
        [crate::charm::context::CHARM_VERSION]
    );
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
        Status::Maintenance(messages::SETTING_UP.into())
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
    let host = WorldHost::new();
    let tools = tools();
    host.run(&tools, &Event::Install).unwrap();
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
    let host = WorldHost::new();
    let tools = tools();
    tools.lock().config.remove("token");
    host.run(&tools, &Event::Install).unwrap();
    assert!(matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("token")));
    assert!(host.edges.fake.log().is_empty());
    assert!(host.edges.lxd_calls().is_empty());
    assert_eq!(host.prepared.get(), 0);
}

#[test]
fn an_lxd_profile_outside_test_mode_blocks_install_before_lxd_is_touched() {
    let host = WorldHost::new();
    let tools = tools();
    {
        let mut s = tools.lock();
        s.config.remove("test-mode");
        s.config.remove("github-url");
    }
    let charm = host.root.path().join("charm");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::write(charm.join("lxd-profile.yaml"), "config: {}\n").unwrap();
    host.run(&tools, &Event::Install).unwrap();
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
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Install).unwrap();
    host.run(&tools, &Event::Start).unwrap();
    assert_eq!(host.world.instance_names().len(), 2);
    assert_eq!(host.world.runner_names().len(), 2);
    let statuses = tools.statuses();
    assert!(statuses.contains(&Status::Maintenance(messages::STARTING.into())));

    // Start again in the same boot (runners newer than the boot): nothing is churned.
    host.world.bring_online();
    let before = host.world.instance_names();
    host.run(&tools, &Event::Start).unwrap();
    assert_eq!(host.world.instance_names(), before);

    // A start after a reboot (runners older than the boot) replaces the idle runners:
    // same count, new names.
    host.boot_epoch.set(Some(fake_world::NOW + 1));
    host.run(&tools, &Event::Start).unwrap();
    let after = host.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} {after:?}"
    );
}

#[test]
fn upgrade_sets_the_version_and_replaces_idle_runners() {
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Install).unwrap();
    host.run(&tools, &Event::Start).unwrap();
    host.world.bring_online();
    let before = host.world.instance_names();
    host.run(&tools, &Event::UpgradeCharm).unwrap();
    assert_eq!(tools.lock().app_versions.len(), 2);
    let after = host.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|n| !before.contains(n)));
}

#[test]
fn stop_removes_the_timer_then_every_runner() {
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Install).unwrap();
    host.run(&tools, &Event::Start).unwrap();
    host.world.bring_online();
    assert_eq!(host.world.instance_names().len(), 2);
    host.run(&tools, &Event::Stop).unwrap();
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
    host.run(&tools, &Event::Remove).unwrap();
    assert!(host.world.instance_names().is_empty());
}

#[test]
fn remove_with_invalid_config_still_removes_timer_and_cron() {
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Install).unwrap();
    let cron = host.root.path().join("etc/cron.d/github-runner-image");
    std::fs::create_dir_all(cron.parent().unwrap()).unwrap();
    std::fs::write(&cron, "x").unwrap();
    tools.lock().config.remove("token");
    host.run(&tools, &Event::Remove).unwrap();
    assert!(!cron.exists());
    assert!(!host
        .root
        .path()
        .join("etc/systemd/system/ghro.reconcile-runners.service")
        .exists());
}

#[test]
fn start_does_not_reconcile_when_the_host_is_not_ready() {
    let host = WorldHost::over(
        FakeWorld::new(),
        Edges::new(Fake {
            lxd_down: true,
            ..Fake::ready()
        }),
    );
    let tools = tools();
    binary_in_place(&tools);
    host.run(&tools, &Event::Start).unwrap();
    assert!(host.world.instance_names().is_empty());
    assert!(
        matches!(tools.statuses().last(), Some(Status::Waiting(m)) if m.starts_with("LXD is not answering"))
    );
}

fn run_storage_hook(host: &WorldHost, tools: &MemoryHookTools, event: Event, location: &str) {
    let mut hook = hook_context();
    hook.charm_dir = host.root.path().join("charm");
    hook.storage = Some(crate::juju::context::StorageContext {
        storage_id: "runner/1".into(),
        location: Some(location.into()),
        kind: Some("filesystem".into()),
    });
    host.as_unit_in(tools, hook, |ctx| {
        crate::charm::run(ctx, host, &Intent::of(&event))
    })
    .unwrap();
}

#[test]
fn storage_attached_makes_the_pool_there_and_reconciles() {
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    tools.lock().storage.clear();
    host.run(&tools, &Event::Install).unwrap();
    assert!(
        matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("juju add-storage")),
        "{:?}",
        tools.statuses()
    );
    run_storage_hook(
        &host,
        &tools,
        Event::RunnerStorageAttached,
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
    let host = WorldHost::new();
    let tools = tools();
    binary_in_place(&tools);
    tools
        .lock()
        .config
        .insert("runner-storage".into(), "memory".into());
    host.run(&tools, &Event::Install).unwrap();
    host.run(&tools, &Event::Start).unwrap();
    host.world.bring_online();
    run_storage_hook(
        &host,
        &tools,
        Event::RunnerStorageDetaching,
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
        Event::RunnerStorageDetaching,
        "/storage/juju",
    );
    assert!(host.world.instance_names().is_empty());
    assert!(host.world.runner_names().is_empty());
    assert!(tools
        .statuses()
        .contains(&Status::Maintenance(messages::DETACHING.into())));
}

#[test]
fn without_lxd_the_guards_still_come_before_snap_install() {
    let host = WorldHost::over(
        FakeWorld::new(),
        Edges::new(Fake {
            lxc_installed: RefCell::new(false),
            ..Fake::ready()
        }),
    );
    let tools = tools();
    {
        let mut s = tools.lock();
        s.config.remove("test-mode");
        s.config.remove("github-url");
    }
    let charm = host.root.path().join("charm");
    std::fs::create_dir_all(&charm).unwrap();
    std::fs::write(charm.join("lxd-profile.yaml"), "config: {}\n").unwrap();
    host.run(&tools, &Event::Install).unwrap();
    assert!(
        matches!(tools.statuses().last(), Some(Status::Blocked(m)) if m.contains("lxd-profile.yaml"))
    );
    assert!(
        host.edges.fake.log().is_empty(),
        "{:?}",
        host.edges.fake.log()
    );
    assert_eq!(host.prepared.get(), 0, "no runtime without LXD");

    // Without the file, the same install installs LXD before building the runtime.
    std::fs::remove_file(charm.join("lxd-profile.yaml")).unwrap();
    host.run(&tools, &Event::Install).unwrap();
    assert!(host
        .edges
        .fake
        .log()
        .contains(&"run /bin/snap install lxd --channel=latest/stable".to_string()));
    assert_eq!(host.prepared.get(), 1);
}
