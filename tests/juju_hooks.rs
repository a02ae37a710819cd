//! Every hook through the real binary and `dispatch`, as Juju runs it.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;

use github_runner::juju::event::Event;
use juju_harness::{run_with_deadline, Harness, CHARM_BIN};
use std::process::Command;

const BOTH_MISSING: &str = "invalid config: path: missing, set it with juju config github-runner \
     path=<org> or <owner>/<repo>; token: missing, set it with juju config github-runner \
     token=<token>";

/// Hooks that read the config and set the unit's status.
const STATUS_HOOKS: [&str; 8] = [
    "install",
    "start",
    "upgrade-charm",
    "config-changed",
    "update-status",
    "runner-storage-attached",
    // The broker's connection data changed or went: the runners converge (mode switch).
    "mongodb-relation-changed",
    "mongodb-relation-broken",
];

/// Hooks that take runners down: they read the config (and unit state) but, with nothing
/// set up, change nothing and show no status.
const CLEANUP_HOOKS: [&str; 3] = ["stop", "remove", "runner-storage-detaching"];

#[test]
fn every_hook_exits_0_with_empty_config() {
    let mut h = Harness::new();
    let names = Event::known_hook_names();
    assert_eq!(names.len(), 9 + 3 * 5 + 2);
    for name in names {
        let run = h.hook(&name);
        assert_eq!(run.code, 0, "{name}: {run:#?}");
        let calls = h.calls();
        if STATUS_HOOKS.contains(&name.as_str()) {
            assert_eq!(
                h.last_status(),
                Some(("blocked".into(), BOTH_MISSING.into())),
                "{name}"
            );
        } else if CLEANUP_HOOKS.contains(&name.as_str()) {
            let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
            assert_eq!(tools, ["config-get", "state-get"], "{name}");
        } else if MONGODB_REQUEST_HOOKS.contains(&name.as_str()) {
            // Only the leader writes the relation's request; this unit is not leader.
            let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
            assert_eq!(tools, ["is-leader"], "{name}");
        } else {
            // Nothing to do yet for these: no tool at all (debug logs are not forwarded).
            assert!(calls.is_empty(), "{name}: {calls:?}");
        }
        assert!(calls.iter().all(|c| c.exit == 0), "{name}: {calls:?}");
    }
}

/// Hooks in which the leader asks the mongodb provider for the router's database.
const MONGODB_REQUEST_HOOKS: [&str; 2] = ["mongodb-relation-created", "mongodb-relation-joined"];

#[test]
fn the_leader_requests_the_router_database_and_secrets_on_the_mongodb_relation() {
    let mut h = Harness::new();
    h.world.leader = true;
    let run = h.hook("mongodb-relation-created");
    assert_eq!(run.code, 0, "{run:#?}");
    let world = h.read_world();
    let relation = world
        .relations
        .iter()
        .find(|r| r.endpoint() == "mongodb")
        .expect("mongodb relation");
    assert_eq!(
        relation.local_app_data.get("database").map(String::as_str),
        Some("github-runner-webhook-router")
    );
    assert_eq!(
        relation
            .local_app_data
            .get("requested-secrets")
            .map(String::as_str),
        Some(r#"["username", "password", "tls", "tls-ca", "uris"]"#)
    );
}

#[test]
fn every_hook_exits_0_with_valid_config() {
    let mut h = Harness::new();
    h.valid_config();
    for name in Event::known_hook_names() {
        h.hook(&name).assert_ok();
        if STATUS_HOOKS.contains(&name.as_str()) {
            // This harness has no runner storage, GitHub or systemd: the unit cannot be
            // ready, and says why without failing the hook.
            let (status, message) = h.last_status().expect("a status");
            assert!(
                ["maintenance", "waiting", "blocked"].contains(&status.as_str()),
                "{name}: {status} {message}"
            );
            assert!(!message.is_empty(), "{name}");
        }
    }
}

#[test]
fn install_and_upgrade_set_the_application_version() {
    let mut h = Harness::new();
    h.hook("install").assert_ok();
    assert_eq!(h.app_versions(), [env!("CARGO_PKG_VERSION")]);
    h.hook("upgrade-charm").assert_ok();
    assert_eq!(h.app_versions(), [env!("CARGO_PKG_VERSION")]);
}

#[test]
fn old_juju_hooks_reach_dispatch_without_dispatch_path() {
    let mut h = Harness::new();
    for name in ["install", "start", "upgrade-charm"] {
        h.legacy_hook(name).assert_ok();
        assert_eq!(
            h.last_status().map(|s| s.0),
            Some("blocked".into()),
            "{name}"
        );
    }
    h.legacy_hook("install").assert_ok();
    assert_eq!(h.app_versions().len(), 1, "install ran as install");
}

#[test]
fn unknown_hook_is_logged_and_exits_0() {
    let mut h = Harness::new();
    let run = h.hook("secret-changed");
    run.assert_ok();
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].level, "INFO");
    assert!(
        logs[0].message.contains("no handler for this hook"),
        "{logs:?}"
    );
    assert!(logs[0].message.contains("secret-changed"), "{logs:?}");
    assert!(h.statuses().is_empty());
}

#[test]
fn unrecognised_dispatch_path_warns_and_exits_0() {
    let mut h = Harness::new();
    h.dispatch_path("nonsense/x/y").assert_ok();
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].level, "WARNING");
    assert!(logs[0].message.contains("nonsense/x/y"), "{logs:?}");
}

#[test]
fn reconcile_runners_custom_event() {
    let mut h = Harness::new();
    h.dispatch_path("reconcile-runners").assert_ok();
    assert_eq!(
        h.last_status(),
        Some(("blocked".into(), BOTH_MISSING.into()))
    );
    h.valid_config();
    h.dispatch_path("reconcile-runners").assert_ok();
    // The harness names an LXD project that does not exist: the host is not ready.
    let (status, message) = h.last_status().expect("a status");
    assert_eq!(status, "waiting");
    assert!(message.contains(juju_harness::NO_LXD_PROJECT), "{message}");
    let logs = h.logs();
    assert!(
        logs.iter().any(|l| l.level == "WARNING"
            && l.message.contains("host setup")
            && l.message.contains(juju_harness::NO_LXD_PROJECT)),
        "{logs:?}"
    );
}

#[test]
fn debug_logs_are_forwarded_only_in_debug_sessions() {
    let mut h = Harness::new();
    h.hook("stop").assert_ok();
    assert!(h.logs().is_empty());
    h.env.insert("JUJU_DEBUG".into(), "/tmp/juju-debug".into());
    h.hook("stop").assert_ok();
    let logs = h.logs();
    assert!(
        logs.iter()
            .any(|l| l.level == "DEBUG" && l.message.contains("handling event event=stop")),
        "{logs:?}"
    );
}

#[test]
fn config_changed_never_leaks_the_token() {
    // The fingerprint the charm records once it acted on a configuration is covered where
    // the host can be ready (charm::config_changed unit tests, tests/e2e_*); here the host
    // is not, and the token still reaches no argument, log, status or unit state.
    let mut h = Harness::new();
    h.valid_config();
    h.hook("config-changed").assert_ok();
    h.set_config("token", "ghp_OTHERTOKEN");
    h.hook("config-changed").assert_ok();
    for token in ["ghp_TESTTOKEN0123456789", "ghp_OTHERTOKEN"] {
        let argv: Vec<String> = h.calls().into_iter().flat_map(|c| c.args).collect();
        assert!(!argv.iter().any(|a| a.contains(token)), "{argv:?}");
        assert!(!format!("{:?}", h.unit_state()).contains(token));
        assert!(!format!("{:?}", h.logs()).contains(token));
        assert!(!format!("{:?}", h.statuses()).contains(token));
    }
}

#[test]
fn invalid_config_changes_no_state() {
    let mut h = Harness::new();
    h.valid_config();
    h.hook("config-changed").assert_ok();
    let before = h.unit_state();
    h.set_config("token", "ghp_NEW").set_config("vm-cpu", 0);
    h.hook("config-changed").assert_ok();
    assert_eq!(h.last_status().map(|s| s.0), Some("blocked".into()));
    assert_eq!(h.unit_state(), before);
    assert!(!h.calls().iter().any(|c| c.tool.starts_with("state-")));
}

#[test]
fn a_failed_hook_discards_its_unit_state() {
    let mut h = Harness::new();
    h.valid_config();
    // The reconcile-runners action remembers its status (state-set succeeds), then the
    // final action-fail fails: Juju drops the state change.
    h.fail_tool("action-fail", 1, "ERROR connection is shut down");
    let run = h.action("reconcile-runners");
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(h
        .calls()
        .iter()
        .any(|c| c.tool == "state-set" && c.exit == 0));
    assert!(h.unit_state().is_empty());
}

#[test]
fn a_failing_hook_tool_fails_the_hook_with_its_stderr() {
    let mut h = Harness::new();
    h.fail_tool("config-get", 1, "ERROR permission denied");
    let run = h.hook("update-status");
    assert_eq!(run.code, 1, "{run:#?}");
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].level, "ERROR");
    assert_eq!(
        logs[0].message,
        "update-status failed: config-get exited with 1: ERROR permission denied"
    );
}

#[test]
fn a_failing_juju_log_never_fails_the_hook() {
    let mut h = Harness::new();
    h.fail_tool("juju-log", 1, "ERROR cannot log");
    let run = h.hook("secret-changed");
    run.assert_ok();
    assert!(run.stderr.contains("no handler for this hook"), "{run:#?}");
    assert!(run.stderr.contains("juju-log failed"), "{run:#?}");
}

#[test]
fn hooks_write_nothing_in_the_charm_dir() {
    let mut h = Harness::new();
    h.valid_config();
    for name in [
        "install",
        "config-changed",
        "update-status",
        "stop",
        "remove",
    ] {
        h.hook(name).assert_ok();
    }
    // Nothing written in the charm dir (Juju may replace it on upgrade).
    let mut entries: Vec<String> = std::fs::read_dir(&h.charm_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        [
            "actions.yaml",
            "bin",
            "config.yaml",
            "dispatch",
            "hooks",
            "metadata.yaml"
        ]
    );
}

#[test]
fn outside_juju_the_binary_explains_itself() {
    let run = run_with_deadline(Command::new(CHARM_BIN).env_clear());
    assert_eq!(run.code, 1);
    assert!(
        run.stderr
            .contains("JUJU_UNIT_NAME is not set: this program runs only as a Juju hook"),
        "{run:#?}"
    );
}

#[test]
fn timing_line_on_request() {
    let mut h = Harness::new();
    h.env.insert("GITHUB_RUNNER_HOOK_TIMING".into(), "1".into());
    let run = h.hook("update-status");
    run.assert_ok();
    let line: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("one JSON line");
    let timing = &line["hook_timing"];
    assert_eq!(timing["event"], "update-status");
    assert_eq!(timing["tool_calls"], 2);
    assert!(timing["total_us"].as_u64().unwrap() >= timing["tool_us"].as_u64().unwrap());
    h.env.clear();
    assert_eq!(h.hook("update-status").stdout, "");
}
