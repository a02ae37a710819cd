//! config-changed through the whole pipeline over the in-memory world (host setup
//! counted, not run: it has its own tests).

use crate::charm::credentials::{credentials_path, load};
use crate::charm::fake_world::{FakeWorld, WorldHost};
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::setup::SetupError;
use crate::juju::event::Event;
use crate::juju::memory::MemoryHookTools;
use crate::juju::state::{DEPLOY_SETTINGS_KEY, TOKEN_FINGERPRINT_KEY};
use crate::juju::Status;
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
    host: WorldHost,
    world: FakeWorld,
}

impl Unit {
    fn new() -> Self {
        let world = FakeWorld::new();
        world.lock().valid_tokens = vec!["ghp_secret".into(), "ghp_new".into()];
        Unit {
            tools: MemoryHookTools::default(),
            host: WorldHost::over(world.clone(), Edges::new(Fake::ready())).skipping_setup(),
            world,
        }
    }

    fn set(&self, pairs: &[(&str, Value)]) {
        let mut state = self.tools.lock();
        for (k, v) in base_raw().into_iter().chain(pairs.iter().cloned()) {
            state.config.insert(k.to_string(), v);
        }
    }

    fn paths(&self) -> HostPaths {
        self.host.paths()
    }

    fn config_changed(&self) {
        self.host.run(&self.tools, &Event::ConfigChanged).unwrap();
    }

    fn last_status(&self) -> Status {
        self.tools.statuses().last().cloned().expect("a status")
    }
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
    assert_eq!(
        creds.credential.fingerprint(),
        Secret::new("ghp_secret").fingerprint()
    );
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
    assert_eq!(unit.host.host_setups.get(), 1);
}

#[test]
fn a_token_change_alone_keeps_the_runners_and_acts_with_the_new_token() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    unit.world.bring_online();
    let old = unit.world.instance_names();
    unit.world.lock().github_calls.clear();
    // The old token is revoked at once: nothing after the switch may need it.
    unit.world.lock().valid_tokens = vec!["ghp_new".into()];

    unit.set(&[("token", json!("ghp_new"))]);
    unit.config_changed();

    // A registration belongs to the path, not to the token that made it: nothing flushed.
    assert_eq!(unit.world.instance_names(), old);
    let calls = unit.world.lock().github_calls.clone();
    assert!(!calls.iter().any(|c| c.starts_with("delete")), "{calls:?}");
    assert!(calls.iter().all(|c| c.ends_with("ghp_new")), "{calls:?}");
    assert!(!unit.tools.statuses().contains(&Status::Maintenance(
        crate::messages::config_change_flush(&["token"])
    )));
    assert_eq!(
        load(&unit.paths())
            .unwrap()
            .unwrap()
            .credential
            .fingerprint(),
        Secret::new("ghp_new").fingerprint()
    );
}

/// A path change while a runner is busy: the old idle runner goes with the old
/// credentials, the busy one keeps its job through this and later reconciles (the new
/// scope cannot see it: a lookup there answers 404), then goes once it ended; the new
/// scope gets its `virtual-machines` runners meanwhile. (A token change alone keeps every
/// runner: `a_token_change_alone_keeps_the_runners_and_acts_with_the_new_token`.)
#[test]
fn a_scope_change_keeps_a_busy_runner_until_its_job_ends() {
    {
        let change = ("path", json!("other-org"));
        let unit = Unit::new();
        // The tarball GitHub lists is the one in place: the periodic event downloads nothing.
        unit.tools.lock().unit_state.insert(
            crate::github::download::STATE_URL_KEY.into(),
            crate::charm::fake_world::RUNNER_URL.into(),
        );
        unit.set(&[]);
        unit.config_changed();
        unit.world.bring_online();
        let old = unit.world.instance_names();
        let (busy, idle) = (old[0].clone(), old[1].clone());
        unit.world.take_job(&busy);

        unit.set(std::slice::from_ref(&change));
        unit.config_changed();
        let now = unit.world.instance_names();
        assert!(
            now.contains(&busy),
            "{change:?}: busy runner killed: {now:?}"
        );
        assert!(!now.contains(&idle), "{change:?}: {now:?}");
        assert_eq!(
            now.len(),
            3,
            "{change:?}: two new runners beside it: {now:?}"
        );

        unit.world.bring_online();
        unit.host
            .run(&unit.tools, &Event::ReconcileRunners)
            .unwrap();
        assert!(unit.world.instance_names().contains(&busy), "{change:?}");
        assert!(
            matches!(unit.last_status(), Status::Active(m)
                if m.contains("1 waiting for its job to end before replacement")),
            "{change:?}: {:?}",
            unit.last_status()
        );

        unit.world.finish_job(&busy);
        unit.host
            .run(&unit.tools, &Event::ReconcileRunners)
            .unwrap();
        let end = unit.world.instance_names();
        assert_eq!(end.len(), 2, "{change:?}: {end:?}");
        assert!(!end.contains(&busy), "{change:?}");
    }
}

#[test]
fn a_revoked_old_token_still_removes_the_old_instances_on_a_path_change() {
    let unit = Unit::new();
    unit.set(&[]);
    unit.config_changed();
    let old = unit.world.instance_names();
    unit.world.lock().valid_tokens = vec!["ghp_new".into()];

    unit.set(&[("token", json!("ghp_new")), ("path", json!("other-org"))]);
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
        vec!["default", "ghr-runner", "cpu-4-mem-7GiB-disk-10GiB"]
    );
    assert!(w.instances[&before[0]]
        .profiles
        .contains(&"cpu-2-mem-7GiB-disk-10GiB".to_string()));
}

#[test]
fn a_host_that_is_not_ready_stops_before_the_runners() {
    let mut unit = Unit::new();
    unit.host.setup_answer =
        Some(|| Err(SetupError::LxdUnavailable(crate::lxd::LxdError::LxcMissing)));
    unit.set(&[]);
    unit.config_changed();
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
