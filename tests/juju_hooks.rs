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
     token=<token or secret URI> (or the three github-app-* options; see the README)";

/// The status of a unit with a valid config on a host whose LXD project is missing.
const NO_PROJECT: &str = "the LXD project juju-harness-no-lxd does not exist \
     (GITHUB_RUNNER_LXD_PROJECT names it; create it first)";

/// Hooks that read the config and set the unit's status.
const STATUS_HOOKS: [&str; 12] = [
    "install",
    "start",
    "upgrade-charm",
    "config-changed",
    "update-status",
    "runner-storage-attached",
    // The tmate servers changed: the ACL and idle runners follow (src/charm/relations.rs).
    "debug-ssh-relation-changed",
    "debug-ssh-relation-departed",
    "debug-ssh-relation-broken",
    // The broker's connection data changed or went: the runners converge (mode switch).
    "mongodb-relation-changed",
    "mongodb-relation-broken",
    // A new revision of the relation's credentials secret: the same converge.
    "secret-changed",
];

/// Hooks that take runners down: they read the config (and unit state) but, with nothing
/// set up, change nothing and show no status.
const CLEANUP_HOOKS: [&str; 3] = ["stop", "remove", "runner-storage-detaching"];

/// Relation hooks that (re)publish the cos-agent unit data.
const COS_AGENT_PUBLISHING: [&str; 2] = ["cos-agent-relation-joined", "cos-agent-relation-changed"];

#[test]
fn every_hook_exits_0_with_empty_config() {
    let mut h = Harness::new();
    let names = Event::known_hook_names();
    assert_eq!(names.len(), 10 + 3 * 5 + 2);
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
        } else if COS_AGENT_PUBLISHING.contains(&name.as_str()) {
            // The cos-agent data needs no config: published on every cos-agent relation.
            let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
            assert_eq!(tools, ["relation-ids", "relation-set"], "{name}");
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
            // The harness names an LXD project that does not exist: the unit waits for it,
            // says what is missing and how to fix it, and the hook does not fail.
            assert_eq!(
                h.last_status(),
                Some(("waiting".into(), NO_PROJECT.into())),
                "{name}"
            );
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
    let run = h.hook("secret-expired");
    run.assert_ok();
    let logs = h.logs();
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0].level, "INFO");
    assert!(
        logs[0].message.contains("no handler for this hook"),
        "{logs:?}"
    );
    assert!(logs[0].message.contains("secret-expired"), "{logs:?}");
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
    // the host can be ready (src/charm/tests/config_changed.rs, tests/e2e_*); here the host
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

/// Harness self-test: Juju drops what a failed hook or action set in unit state.
#[test]
fn harness_self_test_a_failed_hook_discards_its_unit_state() {
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
    // The charm: it fails the action (so Juju reports it) and says which tool failed.
    let logs = h.logs();
    assert!(
        logs.iter().any(|l| l.level == "ERROR"
            && l.message
                .contains("action-fail exited with 1: ERROR connection is shut down")),
        "{logs:?}"
    );
}

/// Harness self-test: a juju-exec run keeps what its hook tools set whatever its exit code
/// (as real juju-exec does); a hook's changes go with its failure.
#[test]
fn harness_self_test_juju_exec_keeps_state_changes_of_a_failed_run() {
    let mut h = Harness::new();
    let script = h.state_dir.join("set-then-fail.sh");
    std::fs::write(&script, "#!/bin/sh\nstate-set ran=yes || exit 3\nexit 1\n").unwrap();
    executable::copy_executable(&script, &h.charm_dir.join("dispatch"));
    let run = h.dispatch_path("reconcile-runners");
    assert_eq!(run.code, 1, "{run:#?}");
    assert_eq!(h.unit_state().get("ran").map(String::as_str), Some("yes"));

    let mut h = Harness::new();
    executable::copy_executable(&script, &h.charm_dir.join("dispatch"));
    assert_eq!(h.hook("update-status").code, 1);
    assert!(h.unit_state().is_empty(), "{:?}", h.unit_state());
}

/// The timer's reconcile (juju-exec) remembers its status in unit state even when the run
/// fails afterwards; update-status then shows it without reconciling.
#[test]
fn a_reconcile_by_juju_exec_remembers_its_status() {
    let mut h = Harness::new();
    h.valid_config();
    h.dispatch_path("reconcile-runners").assert_ok();
    let remembered = h.unit_state().get("last-status").cloned();
    assert_eq!(remembered, Some(format!("waiting: {NO_PROJECT}")));
}

/// The harness kills a hook only after the charm's own bounds on one hook have run out.
#[test]
fn harness_deadline_exceeds_the_charms_own_timeouts() {
    use github_runner::github::retry::RetryPolicy;
    use std::time::Duration;
    let lock_wait = github_runner::host::lock::LockWait::default().max;
    let lxc_call = github_runner::lxd::cli::DEFAULT_COMMAND_TIMEOUT;
    let github_call = Duration::from_secs(30) + RetryPolicy::default().sleep_budget;
    let longest_single = [
        github_runner::juju::process::HOOK_TOOL_TIMEOUT,
        github_runner::host::timer::SYSTEMCTL_TIMEOUT,
        github_runner::runner::CreateTimeouts::default().ready_deadline,
        lxc_call,
        lock_wait,
    ]
    .into_iter()
    .max()
    .unwrap();
    assert!(juju_harness::HOOK_DEADLINE > longest_single);
    assert!(
        juju_harness::HOOK_DEADLINE > lock_wait + lxc_call + github_call,
        "a hook waiting for the lock, then for a slow lxc call, then for GitHub must reach \
         the charm's own timeout first"
    );
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
    let run = h.hook("secret-expired");
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

/// After `juju refresh` a running exporter still executes the old binary file; its unit
/// text names the file, so the next converge (here update-status) restarts it even when
/// upgrade-charm's own restart never happened.
#[test]
fn another_charm_binary_file_restarts_the_running_exporter() {
    let mut h = Harness::new();
    h.valid_config();
    let service = "ghro.metrics-exporter.github-runner-0.service";
    let unit_file = h.host_root.join("etc/systemd/system").join(service);
    std::fs::create_dir_all(unit_file.parent().unwrap()).unwrap();
    std::fs::write(&unit_file, "a unit file of an earlier revision\n").unwrap();
    let calls_file = h.tools_dir.join("calls");
    let calls = || std::fs::read_to_string(&calls_file).unwrap_or_default();
    h.hook("update-status").assert_ok();
    assert!(
        calls().contains(&format!("restart {service}")),
        "{}",
        calls()
    );

    // The same binary again: asked, not restarted.
    std::fs::remove_file(&calls_file).unwrap();
    h.hook("update-status").assert_ok();
    assert!(!calls().contains("restart"), "{}", calls());

    // A refresh puts another file where the binary was (a copy, not the symlinked build).
    let bin = h.charm_dir.join("bin/github-runner-charm");
    let next = h.charm_dir.join("bin/github-runner-charm.next");
    std::fs::copy(&bin, &next).unwrap();
    std::fs::rename(&next, &bin).unwrap();
    h.hook("update-status").assert_ok();
    assert!(
        calls().contains(&format!("restart {service}")),
        "{}",
        calls()
    );
}

/// Issue 23: scale-set mode's options that cannot hold block naming both options and the
/// fix, and change nothing (no runtime, so no runner is touched; no listener folder).
#[test]
fn scale_set_options_that_cannot_hold_block_naming_both_and_change_nothing() {
    let cases: [(&[(&str, serde_json::Value)], &str); 3] = [
        (
            &[
                ("scale-set-name", serde_json::Value::from("linux")),
                (
                    "mq-uri",
                    serde_json::Value::from("redis://:pw@127.0.0.1:6379/0"),
                ),
            ],
            "invalid config: scale-set-name: cannot be set together with mq-uri (scale-set \
             mode takes jobs from GitHub, reactive mode from the queue): unset one of the two",
        ),
        (
            &[
                ("virtual-machines", serde_json::Value::from(2)),
                ("min-idle-runners", serde_json::Value::from(3)),
            ],
            "invalid config: min-idle-runners 3: more than virtual-machines (2), the most \
             runners at once: lower min-idle-runners or raise virtual-machines",
        ),
        (
            &[("scale-set-name", serde_json::Value::from("n".repeat(43)))],
            "too long: the unit's scale set",
        ),
    ];
    for (options, expected) in cases {
        // Unit 10: a 43-character name fits "-0" but not "-10".
        let mut h = Harness::with_unit("github-runner/10");
        h.valid_config();
        h.hook("config-changed").assert_ok();
        let before = h.unit_state();
        for (key, value) in options {
            h.set_config(key, value.clone());
        }
        h.hook("config-changed").assert_ok();
        let (kind, message) = h.last_status().unwrap();
        assert_eq!(kind, "blocked", "{options:?}");
        assert!(message.contains(expected), "{options:?}: {message}");
        assert!(!message.contains("pw@"), "the URI is a secret: {message}");
        assert_eq!(h.unit_state(), before, "{options:?}");
        assert!(!h.calls().iter().any(|c| c.tool.starts_with("state-")));
    }
}
