use super::*;
use crate::charm::credentials::{credentials_path, load};
use crate::charm::fake_world::{config, FakeWorld};
use crate::charm::testing::hook_context;
use crate::juju::memory::MemoryHookTools;
use crate::juju::state::{DEPLOY_SETTINGS_KEY, TOKEN_FINGERPRINT_KEY};
use crate::paths::HostPaths;
use crate::secret::Secret;
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;

fn base_raw() -> Vec<(&'static str, Value)> {
    vec![
        ("path", json!("org")),
        ("token", json!("ghp_secret")),
        ("test-mode", json!("insecure")),
        ("github-url", json!("http://127.0.0.1:1")),
        ("virtual-machines", json!(2)),
    ]
}

struct Unit {
    tools: MemoryHookTools,
    world: FakeWorld,
    root: tempfile::TempDir,
    /// Host setups asked for (the real one is tested in tests/setup_host.rs).
    host_setups: std::cell::Cell<u32>,
}

impl Unit {
    fn new() -> Self {
        let world = FakeWorld::new();
        world.lock().valid_tokens = vec!["ghp_secret".into(), "ghp_new".into()];
        Unit {
            tools: MemoryHookTools::default(),
            world,
            root: tempfile::tempdir().unwrap(),
            host_setups: std::cell::Cell::new(0),
        }
    }

    fn set(&self, pairs: &[(&str, Value)]) {
        let mut state = self.tools.lock();
        for (k, v) in base_raw().into_iter().chain(pairs.iter().cloned()) {
            state.config.insert(k.to_string(), v);
        }
    }

    fn paths(&self) -> HostPaths {
        HostPaths::new(self.root.path())
    }

    fn config_changed(&self) {
        let hook = hook_context();
        let paths = self.paths();
        let ctx = Context {
            tools: &self.tools,
            hook: &hook,
            paths: &paths,
        };
        let world = self.world.clone();
        let root = self.root.path().to_path_buf();
        let make = move |_: &Context<'_>, config: CharmConfig| Ok(world.runtime(&root, config));
        let ensure_host = |_: &Context<'_>, _: &Runtime| {
            self.host_setups.set(self.host_setups.get() + 1);
            Ok(true)
        };
        handle_with(&ctx, &make, &ensure_host).unwrap();
    }

    fn last_status(&self) -> Status {
        self.tools.statuses().last().cloned().expect("a status")
    }
}

fn state_with(config: &CharmConfig) -> UnitState {
    let mut state = UnitState::default();
    state.set_acted_scope(ActedScope::of(config));
    state
}

#[test]
fn plan_table() {
    let base = config(&[]);
    let acted = state_with(&base);
    let cases: Vec<(&str, UnitState, CharmConfig, Vec<&str>)> = vec![
        ("first config", UnitState::default(), base.clone(), vec![]),
        ("unchanged", acted.clone(), base.clone(), vec![]),
        (
            "token",
            acted.clone(),
            config(&[("token", json!("ghp_new"))]),
            vec!["token"],
        ),
        (
            "path",
            acted.clone(),
            config(&[("path", json!("o/r"))]),
            vec!["path"],
        ),
        (
            "group",
            acted.clone(),
            config(&[("group", json!("gpu"))]),
            vec!["group"],
        ),
        (
            "labels",
            acted.clone(),
            config(&[("labels", json!("a,b"))]),
            vec!["labels"],
        ),
        (
            "github-url",
            acted.clone(),
            config(&[("github-url", json!("http://127.0.0.1:2"))]),
            vec!["github-url"],
        ),
        (
            "token and path",
            acted.clone(),
            config(&[("token", json!("ghp_new")), ("path", json!("o/r"))]),
            vec!["token", "path"],
        ),
        (
            "every scope option",
            acted.clone(),
            config(&[
                ("token", json!("ghp_new")),
                ("path", json!("o/r")),
                ("group", json!("g")),
                ("labels", json!("x")),
                ("github-url", json!("http://127.0.0.1:2")),
            ]),
            vec!["token", "path", "group", "labels", "github-url"],
        ),
        (
            "vm-cpu",
            acted.clone(),
            config(&[("vm-cpu", json!(4))]),
            vec![],
        ),
        (
            "vm-memory",
            acted.clone(),
            config(&[("vm-memory", json!("8GiB"))]),
            vec![],
        ),
        (
            "vm-disk",
            acted.clone(),
            config(&[("vm-disk", json!("20GiB"))]),
            vec![],
        ),
        (
            "vm-cpu and labels",
            acted.clone(),
            config(&[("vm-cpu", json!(4)), ("labels", json!("x"))]),
            vec!["labels"],
        ),
        (
            "reconcile-interval",
            acted.clone(),
            config(&[("reconcile-interval", json!(5))]),
            vec![],
        ),
        (
            "virtual-machines",
            acted.clone(),
            config(&[("virtual-machines", json!(9))]),
            vec![],
        ),
        (
            "dockerhub-mirror",
            acted.clone(),
            config(&[("dockerhub-mirror", json!("https://m.example"))]),
            vec![],
        ),
        (
            "denylist",
            acted.clone(),
            config(&[("denylist", json!("10.0.0.0/8"))]),
            vec![],
        ),
        (
            "same labels in another order",
            state_with(&config(&[("labels", json!("a,b"))])),
            config(&[("labels", json!("b,a"))]),
            vec!["labels"],
        ),
    ];
    for (name, state, now, flush_for) in cases {
        let plan = plan_change(&state, &now);
        assert_eq!(plan.flush_for, flush_for, "{name}");
        assert_eq!(plan.flushes(), !flush_for.is_empty(), "{name}");
    }
}

#[test]
fn a_scope_recorded_by_an_older_charm_without_some_keys_flushes_only_on_known_ones() {
    let base = config(&[]);
    let mut state = UnitState {
        token_fingerprint: Some(base.token.fingerprint()),
        ..UnitState::default()
    };
    assert!(!plan_change(&state, &config(&[("path", json!("o/r"))])).flushes());
    state.token_fingerprint = Some("other".into());
    assert_eq!(plan_change(&state, &base).flush_for, vec!["token"]);
}

#[test]
fn first_config_creates_runners_and_records_only_a_fingerprint() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    assert_eq!(unit.world.instance_names().len(), 2);
    let stored = unit.tools.lock().unit_state.clone();
    assert_eq!(
        stored.get(TOKEN_FINGERPRINT_KEY),
        Some(&Secret::new("ghp_secret").fingerprint())
    );
    assert!(stored.contains_key(DEPLOY_SETTINGS_KEY));
    assert!(
        !stored.values().any(|v| v.contains("ghp_secret")),
        "{stored:?}"
    );
    let creds = load(&unit.paths()).unwrap().unwrap();
    assert_eq!(creds.token.expose(), "ghp_secret");
    let mode = std::fs::metadata(credentials_path(&unit.paths()))
        .unwrap()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        matches!(unit.last_status(), Status::Active(m) if m.contains("2 creating")),
        "{:?}",
        unit.last_status()
    );
    assert!(unit
        .tools
        .logs()
        .iter()
        .all(|(_, l)| !l.contains("ghp_secret")));
    assert_eq!(unit.host_setups.get(), 1);
}

#[test]
fn a_token_change_flushes_with_the_old_token_then_reconciles_with_the_new() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    unit.world.bring_online();
    let old = unit.world.instance_names();
    unit.world.lock().github_calls.clear();

    unit.set(&[("token", json!("ghp_new"))]);
    unit.config_changed();

    let now = unit.world.instance_names();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|n| !old.contains(n)), "{old:?} -> {now:?}");
    let calls = unit.world.lock().github_calls.clone();
    let deletes: Vec<&String> = calls.iter().filter(|c| c.starts_with("delete")).collect();
    assert_eq!(deletes.len(), 2, "{calls:?}");
    assert!(
        deletes.iter().all(|c| c.ends_with("ghp_secret")),
        "{calls:?}"
    );
    assert!(calls
        .iter()
        .filter(|c| c.starts_with("jit"))
        .all(|c| c.ends_with("ghp_new")));
    // Only the new runners are registered now, all with the new token.
    assert_eq!(unit.world.runner_names(), now);
    assert!(unit
        .world
        .lock()
        .runners
        .values()
        .all(|(_, t)| t == "ghp_new"));
    assert!(unit
        .tools
        .statuses()
        .contains(&Status::Maintenance(flush_reason(&["token"]))));
    assert_eq!(
        load(&unit.paths()).unwrap().unwrap().token.expose(),
        "ghp_new"
    );
}

#[test]
fn a_revoked_old_token_still_removes_the_old_instances() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let old = unit.world.instance_names();
    unit.world.lock().valid_tokens = vec!["ghp_new".into()];

    unit.set(&[("token", json!("ghp_new"))]);
    unit.config_changed();

    let now = unit.world.instance_names();
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|n| !old.contains(n)), "{old:?} -> {now:?}");
}

#[test]
fn a_labels_change_replaces_the_runners() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let old = unit.world.instance_names();
    unit.set(&[("labels", json!("gpu"))]);
    unit.config_changed();
    let now = unit.world.instance_names();
    assert!(now.iter().all(|n| !old.contains(n)));
    let w = unit.world.lock();
    assert!(w
        .runners
        .values()
        .all(|(r, _)| r.labels.contains(&"gpu".to_string())));
}

#[test]
fn an_immutable_change_blocks_and_touches_nothing() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let before = unit.world.instance_names();
    let state_before = unit.tools.lock().unit_state.clone();
    unit.set(&[("base-image", json!("noble")), ("token", json!("ghp_new"))]);
    unit.config_changed();
    assert!(
        matches!(unit.last_status(), Status::Blocked(m) if m.contains("base-image config cannot be changed after deployment")),
        "{:?}",
        unit.last_status()
    );
    assert_eq!(unit.world.instance_names(), before);
    let state_after = unit.tools.lock().unit_state.clone();
    assert_eq!(
        state_after.get(TOKEN_FINGERPRINT_KEY),
        state_before.get(TOKEN_FINGERPRINT_KEY)
    );
}

#[test]
fn invalid_config_blocks_and_touches_nothing() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let before = unit.world.instance_names();
    unit.tools.lock().calls.clear();
    unit.set(&[("vm-cpu", json!(0))]);
    unit.config_changed();
    assert!(matches!(unit.last_status(), Status::Blocked(m) if m.contains("vm-cpu")));
    assert_eq!(unit.world.instance_names(), before);
    assert!(!unit
        .tools
        .lock()
        .calls
        .iter()
        .any(|c| c.starts_with("state-")));
}

#[test]
fn a_vm_change_leaves_running_runners_and_new_ones_use_the_new_profile() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    unit.world.bring_online();
    let before = unit.world.instance_names();
    unit.set(&[("vm-cpu", json!(4))]);
    unit.config_changed();
    assert_eq!(unit.world.instance_names(), before);
    unit.set(&[("vm-cpu", json!(4)), ("virtual-machines", json!(3))]);
    unit.config_changed();
    let w = unit.world.lock();
    let newest = w
        .instances
        .values()
        .find(|i| !before.contains(&i.name))
        .expect("a new runner");
    assert_eq!(
        newest.profiles,
        vec!["default", "runner", "cpu-4-mem-7GiB-disk-10GiB"]
    );
    assert!(w.instances[&before[0]]
        .profiles
        .contains(&"cpu-2-mem-7GiB-disk-10GiB".to_string()));
}

#[test]
fn a_host_that_is_not_ready_stops_before_the_runners() {
    let unit = Unit::new();
    unit.set(&[]);
    let hook = hook_context();
    let paths = unit.paths();
    let ctx = Context {
        tools: &unit.tools,
        hook: &hook,
        paths: &paths,
    };
    let world = unit.world.clone();
    let root = unit.root.path().to_path_buf();
    let make = move |_: &Context<'_>, config: CharmConfig| Ok(world.runtime(&root, config));
    handle_with(&ctx, &make, &|_, _| Ok(false)).unwrap();
    assert!(unit.world.instance_names().is_empty());
    assert!(!unit
        .tools
        .lock()
        .unit_state
        .contains_key(TOKEN_FINGERPRINT_KEY));
}

#[test]
fn github_down_keeps_every_runner_and_says_maintenance() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let before = unit.world.instance_names();
    unit.world.lock().github_5xx = true;
    unit.set(&[("virtual-machines", json!(0))]);
    unit.config_changed();
    assert_eq!(unit.world.instance_names(), before);
    assert!(
        matches!(unit.last_status(), Status::Maintenance(m) if m.contains("502")),
        "{:?}",
        unit.last_status()
    );
}

#[test]
fn lxd_down_is_waiting() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.world.lock().lxd_down = true;
    unit.config_changed();
    assert!(
        matches!(unit.last_status(), Status::Waiting(m) if m.contains("LXD")),
        "{:?}",
        unit.last_status()
    );
}

#[test]
fn a_missing_image_is_waiting_and_names_it() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.world.lock().image_present = false;
    unit.config_changed();
    assert!(unit.world.instance_names().is_empty());
    assert!(
        unit.world.runner_names().is_empty(),
        "registrations are cleaned up"
    );
    assert!(
        matches!(unit.last_status(), Status::Waiting(m) if m.contains("runner image jammy")),
        "{:?}",
        unit.last_status()
    );
}
