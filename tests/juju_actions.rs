//! Action dispatch through the real binary: results and failures as `juju run` shows them.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;

use github_runner::juju::event::Action;
use juju_harness::Harness;

#[test]
fn actions_yaml_lists_exactly_the_actions_the_charm_knows() {
    let text =
        std::fs::read_to_string(format!("{}/actions.yaml", juju_harness::REPO_ROOT)).unwrap();
    let yaml: serde_yaml::Mapping = serde_yaml::from_str(&text).unwrap();
    let mut declared: Vec<&str> = yaml.keys().map(|k| k.as_str().unwrap()).collect();
    declared.sort();
    let mut known: Vec<&str> = Action::ALL.iter().map(|a| a.name()).collect();
    known.sort();
    assert_eq!(declared, known);
}

#[test]
fn invalid_config_blocks_and_fails_every_action() {
    let mut h = Harness::new();
    h.set_config("vm-memory", "7XB");
    for action in Action::ALL {
        h.action(action.name()).assert_ok();
        let record = h.action_record();
        assert_eq!(
            record.failure.as_deref(),
            Some(
                "invalid config: vm-memory \"7XB\": expected a whole number with KiB, MiB, GiB, \
                 TiB, PiB or EiB; path: missing, set it with juju config github-runner \
                 path=<org> or <owner>/<repo>; token: missing, set it with juju config \
                 github-runner token=<token or secret URI> (or the three github-app-* \
                 options; see the README)"
            ),
            "{}",
            action.name()
        );
        assert!(record.results.is_empty());
        assert_eq!(h.last_status().map(|s| s.0), Some("blocked".into()));
    }
}

#[test]
fn valid_config_actions_say_what_they_could_not_reach() {
    // GitHub: a closed loopback port. LXD: a project of its own that does not exist (it
    // lists empty), so nothing on the shared daemon is seen or touched.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut h = Harness::new();
    h.valid_config()
        .set_config("test-mode", "insecure")
        .set_config("github-url", format!("http://127.0.0.1:{closed_port}"));
    h.env.insert(
        "GITHUB_RUNNER_LXD_PROJECT".into(),
        "ghr-juju-actions-no-such-project".into(),
    );
    for (action, expected) in [
        (
            Action::CheckRunners,
            "could not list the runners: could not reach GitHub",
        ),
        (
            Action::ReconcileRunners,
            "could not list this unit's runners on GitHub, so no runner was touched",
        ),
        (
            Action::FlushRunners,
            "could not list this unit's runners on GitHub, so the flush touched no runner",
        ),
        (
            Action::UpdateDependencies,
            "Failed to update runner binary: could not reach GitHub",
        ),
    ] {
        h.action(action.name()).assert_ok();
        let failure = h.action_record().failure.unwrap_or_default();
        assert!(
            failure.starts_with(expected),
            "{}: {failure}",
            action.name()
        );
        assert!(!failure.contains("unavailable"), "{failure}");
        assert!(!failure.contains("ghp_TESTTOKEN"), "{failure}");
    }
    assert!(h
        .logs()
        .iter()
        .all(|l| !l.message.contains("ghp_TESTTOKEN")));
    assert!(h.action_logs().iter().all(|l| !l.contains("ghp_TESTTOKEN")));
}

#[test]
fn unknown_action_fails_with_the_list_of_actions() {
    let mut h = Harness::new();
    h.action("dance").assert_ok();
    assert_eq!(
        h.action_record().failure.as_deref(),
        Some(
            "unknown action \"dance\": this charm's actions are check-runners, \
             reconcile-runners, flush-runners and update-dependencies"
        )
    );
}

#[test]
fn a_failing_action_fail_makes_the_action_exit_1() {
    let mut h = Harness::new();
    h.fail_tool("action-fail", 1, "ERROR connection is shut down");
    let run = h.action("check-runners");
    assert_eq!(run.code, 1, "{run:#?}");
    let logs = h.logs();
    assert!(
        logs.iter().any(|l| l.level == "ERROR"
            && l.message == "check-runners failed: action-fail exited with 1: ERROR connection is shut down"),
        "{logs:?}"
    );
}

#[test]
fn action_tools_run_with_action_context() {
    let mut h = Harness::new();
    h.action("flush-runners").assert_ok();
    let calls = h.calls();
    let tools: Vec<&str> = calls.iter().map(|c| c.tool.as_str()).collect();
    assert_eq!(tools, ["config-get", "status-set", "action-fail"]);
    assert!(calls.iter().all(|c| c.exit == 0), "{calls:?}");
}
