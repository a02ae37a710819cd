//! The four actions through the whole pipeline over the in-memory world, with the
//! Python charm's result keys; failures go to action-fail.

use crate::charm::act::actions::ActionResults;
use crate::charm::context::Context;
use crate::charm::fake_world::{FakeWorld, WorldHost};
use crate::charm::report::finish_action;
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::testing::{hook_context, run as run_event};
use crate::juju::event::{Action, Event};
use crate::juju::memory::MemoryHookTools;
use crate::juju::Status;
use crate::paths::HostPaths;
use std::collections::BTreeMap;

fn in_action() -> MemoryHookTools {
    let tools = MemoryHookTools::default();
    tools.lock().action_params = Some(Default::default());
    tools
}

struct Setup {
    tools: MemoryHookTools,
    host: WorldHost,
    world: FakeWorld,
}

impl Setup {
    fn new() -> Self {
        let tools = in_action();
        // The tarball GitHub lists is the one in place: no download.
        tools.lock().unit_state.insert(
            crate::github::download::STATE_URL_KEY.into(),
            crate::charm::fake_world::RUNNER_URL.into(),
        );
        let world = FakeWorld::new();
        Setup {
            tools,
            host: WorldHost::over(world.clone(), Edges::new(Fake::ready())),
            world,
        }
    }

    /// Runs `action` through the pipeline with a configuration that wants `vms` runners.
    fn act(&self, action: Action, vms: u32) -> Result<ActionResults, String> {
        {
            let mut s = self.tools.lock();
            crate::charm::fake_world::insert_world_config(&mut s.config);
            s.config.insert("virtual-machines".into(), vms.into());
            s.action_results.clear();
            s.action_failure = None;
        }
        self.host.run(&self.tools, &Event::Action(action)).unwrap();
        let s = self.tools.lock();
        match &s.action_failure {
            Some(failure) => Err(failure.clone()),
            None => Ok(s.action_results.clone()),
        }
    }
}

fn get<'r>(r: &'r ActionResults, k: &str) -> &'r str {
    r.get(k).map(String::as_str).unwrap_or("<missing>")
}

#[test]
fn invalid_config_blocks_and_fails_the_action() {
    for action in Action::ALL {
        let tools = in_action();
        run_event(&tools, &Event::Action(action)).unwrap();
        let failure = tools.lock().action_failure.clone().unwrap();
        assert!(
            failure.starts_with("invalid config: path: missing"),
            "{failure}"
        );
        assert!(matches!(&tools.statuses()[..], [Status::Blocked(_)]));
    }
}

#[test]
fn reconcile_runners_reports_the_delta_and_the_check_keys() {
    let s = Setup::new();
    let results = s.act(Action::ReconcileRunners, 3).unwrap();
    assert_eq!(get(&results, "delta.virtual-machines"), "3");
    // Just created: registered, offline on GitHub.
    assert_eq!(get(&results, "online"), "0");
    assert_eq!(get(&results, "offline"), "3");
    assert_eq!(get(&results, "unknown"), "0");
    assert_eq!(s.world.instance_names().len(), 3);
    let logs = s.tools.lock().action_logs.clone();
    assert!(
        logs.iter().filter(|l| l.contains("created")).count() >= 3,
        "{logs:?}"
    );
    // Steady state: nothing to do.
    s.world.bring_online();
    let again = s.act(Action::ReconcileRunners, 3).unwrap();
    assert_eq!(get(&again, "delta.virtual-machines"), "0");
    assert_eq!(get(&again, "online"), "3");
    let names = get(&again, "runners");
    assert_eq!(names.split(", ").count(), 3, "{names}");
    assert!(
        matches!(s.tools.statuses().last(), Some(Status::Active(m)) if m.starts_with("3/3 runners: 3 idle"))
    );
}

#[test]
fn check_runners_counts_without_changing_anything() {
    let s = Setup::new();
    s.act(Action::ReconcileRunners, 2).unwrap();
    s.world.bring_online();
    let before = s.world.instance_names();
    let results = s.act(Action::CheckRunners, 5).unwrap();
    assert_eq!(get(&results, "online"), "2");
    assert_eq!(get(&results, "offline"), "0");
    assert!(!results.contains_key("delta.virtual-machines"));
    assert_eq!(s.world.instance_names(), before);
}

#[test]
fn flush_runners_replaces_every_runner() {
    let s = Setup::new();
    s.act(Action::ReconcileRunners, 2).unwrap();
    s.world.bring_online();
    let before = s.world.instance_names();
    let results = s.act(Action::FlushRunners, 2).unwrap();
    let after = s.world.instance_names();
    assert_eq!(after.len(), 2);
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} {after:?}"
    );
    assert_eq!(get(&results, "delta.virtual-machines"), "2");
    assert_eq!(s.world.runner_names(), after);
}

/// The last status the unit showed.
fn last_status(s: &Setup) -> Status {
    s.tools.statuses().last().cloned().expect("a status")
}

/// flush-runners with a busy runner: the idle one is replaced at once, the busy one keeps
/// its job through the flush and later reconciles (the status counts it), and once its job
/// ended the next reconcile refills the fleet to `virtual-machines`.
#[test]
fn flush_runners_keeps_a_busy_runner_until_its_job_ends() {
    let s = Setup::new();
    s.act(Action::ReconcileRunners, 2).unwrap();
    s.world.bring_online();
    let before = s.world.instance_names();
    let (busy, idle) = (before[0].clone(), before[1].clone());
    s.world.take_job(&busy);

    s.act(Action::FlushRunners, 2).unwrap();
    let after = s.world.instance_names();
    assert!(
        after.contains(&busy),
        "the busy runner was killed: {after:?}"
    );
    assert!(!after.contains(&idle), "the idle runner was not flushed");
    assert_eq!(flush_waits(&s), 0, "nothing to wait for");
    let mark = s.world.lock().instances[&busy]
        .config
        .get(crate::manager::replacement::REPLACE_CONFIG_KEY)
        .cloned();
    assert!(mark.is_some(), "the busy runner is marked for replacement");
    // It is no runner of the fleet any more: two fresh ones beside it.
    assert_eq!(after.len(), 3, "{after:?}");
    let logs = s.tools.lock().action_logs.clone();
    assert!(
        logs.iter()
            .any(|l| l.contains(&busy) && l.contains("replaced once it ends")),
        "{logs:?}"
    );

    s.world.bring_online();
    s.act(Action::ReconcileRunners, 2).unwrap();
    assert!(s.world.instance_names().contains(&busy));
    let shown = last_status(&s);
    assert!(
        matches!(&shown, Status::Active(m)
            if m.contains("1 waiting for its job to end before replacement")),
        "{shown:?}"
    );

    s.world.finish_job(&busy);
    s.act(Action::ReconcileRunners, 2).unwrap();
    let end = s.world.instance_names();
    assert_eq!(end.len(), 2, "{end:?}");
    assert!(!end.contains(&busy));
    assert_eq!(s.world.runner_names(), end);
    assert!(
        matches!(last_status(&s), Status::Active(m) if m.starts_with("2/2 runners: 2 idle")),
        "{:?}",
        last_status(&s)
    );
}

/// How many times the flush waited for a runner in its pre-job phase. Other sleeps on the
/// clock are the parallel creations polling the machine-wide creation lock.
fn flush_waits(s: &Setup) -> usize {
    let sleeps = s.world.clock.sleeps();
    sleeps
        .iter()
        .filter(|d| **d == crate::manager::flush::WAIT_INTERVAL)
        .count()
}

/// force=true: the operator kills the running job (a leaked token): the busy runner goes
/// at once, with no wait.
#[test]
fn flush_runners_force_removes_a_busy_runner_at_once() {
    let s = Setup::new();
    s.act(Action::ReconcileRunners, 2).unwrap();
    s.world.bring_online();
    let before = s.world.instance_names();
    s.world.take_job(&before[0]);
    s.tools.lock().action_params = Some(serde_json::Map::from_iter([(
        "force".to_string(),
        serde_json::Value::Bool(true),
    )]));

    let results = s.act(Action::FlushRunners, 2).unwrap();
    let after = s.world.instance_names();
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|n| !before.contains(n)),
        "{before:?} {after:?}"
    );
    assert_eq!(flush_waits(&s), 0, "force waits for nothing");
    assert_eq!(get(&results, "delta.virtual-machines"), "2");
}

#[test]
fn github_refusing_the_token_fails_the_action_and_blocks() {
    let s = Setup::new();
    s.world.lock().valid_tokens.clear();
    let err = s.act(Action::ReconcileRunners, 1).unwrap_err().to_string();
    assert!(err.contains("401") || err.contains("token"), "{err}");
    assert!(matches!(
        s.tools.statuses().last(),
        Some(Status::Blocked(_))
    ));
    assert!(s.world.instance_names().is_empty());
    assert!(s.act(Action::CheckRunners, 1).is_err());
}

#[test]
fn update_dependencies_reports_no_flush_when_nothing_changed() {
    let s = Setup::new();
    let results = s.act(Action::UpdateDependencies, 1).unwrap();
    assert_eq!(get(&results, "flush"), "False");
}

#[test]
fn unknown_action_fails_with_the_list() {
    let tools = in_action();
    run_event(&tools, &Event::UnknownAction("dance".into())).unwrap();
    let failure = tools.lock().action_failure.clone().unwrap();
    assert!(
        failure.contains("\"dance\"") && failure.contains("check-runners"),
        "{failure}"
    );
}

#[test]
fn a_rejected_result_becomes_an_action_failure() {
    let tools = in_action();
    let hook = hook_context();
    let paths = HostPaths::new("/x");
    let ctx = Context {
        tools: &tools,
        hook: &hook,
        paths: &paths,
    };
    let results = BTreeMap::from([("Bad Key".to_string(), "1".to_string())]);
    finish_action(&ctx, Ok(results)).unwrap();
    let failure = tools.lock().action_failure.clone().unwrap();
    assert!(
        failure.contains("invalid action result key \"Bad Key\""),
        "{failure}"
    );
}

#[test]
fn only_a_failing_action_fail_fails_the_hook() {
    let tools = in_action();
    tools.fail_tool("action-fail", 1, "ERROR not running an action");
    assert!(run_event(&tools, &Event::Action(Action::CheckRunners)).is_err());
}
