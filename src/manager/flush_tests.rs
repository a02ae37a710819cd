//! The flush modes over the in-memory fleet, and the per-runner decision over every case.

use super::*;
use crate::clock::ManualClock;
use crate::manager::executor::no_progress;
use crate::manager::fake_fleet::{FakeFleet, SCOPE};
use crate::manager::replacement::SCOPE_CONFIG_KEY;
use std::sync::Arc;

const NOW: u64 = 1_700_000_000;

fn fleet() -> FakeFleet {
    FakeFleet::new(Arc::new(ManualClock::at(NOW)))
}

fn run(fleet: &FakeFleet, mode: FlushMode) -> Result<FlushOutcome, FlushError> {
    run_in(fleet, mode, true)
}

fn run_in(fleet: &FakeFleet, mode: FlushMode, github: bool) -> Result<FlushOutcome, FlushError> {
    let clock = fleet.clock.clone();
    let scope = FlushScope {
        fingerprint: SCOPE.into(),
        github_sees_runners: github,
    };
    flush(
        fleet,
        &*clock,
        mode,
        &scope,
        Concurrency::Default,
        &no_progress,
    )
}

fn names(list: &[RunnerName]) -> Vec<&str> {
    list.iter().map(|n| n.as_str()).collect()
}

fn removed(outcome: &FlushOutcome) -> Vec<&str> {
    outcome
        .report
        .removed
        .iter()
        .map(|r| r.name.as_str())
        .collect()
}

#[test]
fn mode_names_round_trip() {
    for mode in FlushMode::ALL {
        assert_eq!(mode.name().parse::<FlushMode>(), Ok(mode));
    }
    assert!("flush_idle".parse::<FlushMode>().is_err());
}

#[test]
fn flush_idle_keeps_busy_runners_and_never_waits() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 5);
    let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
    assert_eq!(removed(&outcome), vec!["idle"]);
    assert_eq!(fleet.names(), vec!["busy".to_string()]);
    assert!(fleet.clock.sleeps().is_empty());
}

/// The listing skipped the busy runner (a page shifted under it): its removal still
/// deletes the recorded registration first, GitHub answers 422, and it is kept.
#[test]
fn flush_idle_keeps_a_busy_runner_the_listing_missed() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, true);
    fleet.state().unlisted_once.insert("busy".into());
    let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
    assert_eq!(removed(&outcome), vec!["idle"]);
    assert_eq!(names(&outcome.report.kept_busy), vec!["busy"]);
    assert!(fleet.state().instances.contains_key("busy"));
}

#[test]
fn flush_busy_removes_everything_at_once() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 5);
    let outcome = run(&fleet, FlushMode::FlushBusy).unwrap();
    assert_eq!(removed(&outcome), vec!["busy", "idle"]);
    assert!(fleet.names().is_empty());
    assert!(fleet.clock.sleeps().is_empty());
}

#[test]
fn waits_while_a_job_is_in_its_first_minute() {
    let fleet = fleet();
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 10);
    let outcome = run(&fleet, FlushMode::FlushIdleWaitRepoCheck).unwrap();
    // Ages 10 s and 40 s are in pre-job; at 70 s it is past, so two waits.
    assert_eq!(fleet.clock.sleeps(), vec![WAIT_INTERVAL; 2]);
    assert_eq!(outcome.waited, Duration::from_secs(60));
    assert!(!outcome.wait_exhausted);
    assert!(removed(&outcome).is_empty());
    assert_eq!(fleet.names(), vec!["busy".to_string()]);
}

#[test]
fn does_not_wait_for_jobs_past_their_pre_job_phase() {
    // The Python charm's inverted check slept 150 s exactly here.
    let fleet = fleet();
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 300);
    fleet.add_runner("idle", 3600, false);
    let outcome = run(&fleet, FlushMode::FlushIdleWaitRepoCheck).unwrap();
    assert!(fleet.clock.sleeps().is_empty());
    assert_eq!(removed(&outcome), vec!["idle"]);
}

#[test]
fn a_job_that_never_shows_up_is_waited_for_boundedly() {
    let fleet = fleet();
    fleet.add_runner("assigned", 3600, true); // busy on GitHub, nothing started inside
    let outcome = run(&fleet, FlushMode::FlushIdleWaitRepoCheck).unwrap();
    assert_eq!(fleet.clock.sleeps().len(), WAIT_ROUNDS as usize);
    assert_eq!(outcome.waited, WAIT_INTERVAL * WAIT_ROUNDS);
    assert!(outcome.wait_exhausted);
    assert_eq!(fleet.names(), vec!["assigned".to_string()]);
}

/// flush-runners: the idle runner goes, the busy one keeps its job (even one past its
/// first minute, which the old FLUSH_BUSY_WAIT_REPO_CHECK killed) and is marked.
#[test]
fn flush_busy_wait_keeps_busy_runners_and_marks_them() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 300);
    let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
    assert_eq!(removed(&outcome), vec!["idle"]);
    assert_eq!(fleet.names(), vec!["busy".to_string()]);
    assert_eq!(names(&outcome.awaiting_job), vec!["busy"]);
    assert_eq!(fleet.mark("busy").as_deref(), Some(SCOPE));
    assert!(fleet.clock.sleeps().is_empty(), "nothing to wait for");
    // A second flush marks nothing twice and kills nothing.
    let again = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
    assert!(removed(&again).is_empty());
    assert_eq!(names(&again.awaiting_job), vec!["busy"]);
}

#[test]
fn a_runner_taking_a_job_during_a_replacing_flush_is_marked() {
    let fleet = fleet();
    fleet.add_runner("a", 3600, false);
    fleet.state().take_job_on_delete.insert("a".into());
    let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
    assert_eq!(names(&outcome.report.kept_busy), vec!["a"]);
    assert_eq!(names(&outcome.awaiting_job), vec!["a"]);
    assert_eq!(fleet.mark("a").as_deref(), Some(SCOPE));
}

/// A mark that cannot be set leaves the runner and its job alone, and says so.
#[test]
fn a_failed_mark_keeps_the_runner_and_is_reported() {
    let fleet = fleet();
    fleet.add_runner("busy", 3600, true);
    fleet.state().mark_broken = true;
    let outcome = run(&fleet, FlushMode::FlushBusyWaitRepoCheck).unwrap();
    assert!(outcome.awaiting_job.is_empty());
    assert_eq!(outcome.mark_failed.len(), 1);
    assert_eq!(fleet.names(), vec!["busy".to_string()]);
}

/// A runner of a previous scope (still on its job) is no flush's but FLUSH_BUSY's: not
/// listed with these credentials, an unforced removal would delete it as gone.
#[test]
fn another_scopes_runner_is_left_alone_by_every_mode_but_flush_busy() {
    for mode in FlushMode::ALL {
        let fleet = fleet();
        fleet.add_runner("old", 3600, true);
        fleet.set_config("old", SCOPE_CONFIG_KEY, "scope-before");
        fleet.state().registrations.clear();
        let outcome = run(&fleet, mode).unwrap();
        if mode == FlushMode::FlushBusy {
            assert!(fleet.state().instances.is_empty(), "{mode}");
        } else {
            assert!(removed(&outcome).is_empty(), "{mode}");
            assert!(fleet.state().instances.contains_key("old"), "{mode}");
            assert_eq!(fleet.mark("old"), None, "{mode}");
        }
        assert!(
            fleet.state().deleted_registrations.is_empty(),
            "{mode}: another scope's id is never deleted here"
        );
    }
}

#[test]
fn flush_idle_wait_waits_but_keeps_busy_runners() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 45);
    let outcome = run(&fleet, FlushMode::FlushIdleWaitRepoCheck).unwrap();
    assert_eq!(fleet.clock.sleeps(), vec![WAIT_INTERVAL]);
    assert_eq!(removed(&outcome), vec!["idle"]);
    assert_eq!(fleet.names(), vec!["busy".to_string()]);
}

#[test]
fn a_runner_taking_a_job_during_flush_idle_is_kept() {
    let fleet = fleet();
    fleet.add_runner("a", 3600, false);
    fleet.state().take_job_on_delete.insert("a".into());
    let outcome = run(&fleet, FlushMode::FlushIdle).unwrap();
    assert_eq!(names(&outcome.report.kept_busy), vec!["a"]);
    assert_eq!(fleet.names(), vec!["a".to_string()]);
}

#[test]
fn a_runner_taking_a_job_during_flush_busy_is_removed_in_the_busy_phase() {
    let fleet = fleet();
    fleet.add_runner("a", 3600, false);
    fleet.state().take_job_on_delete.insert("a".into());
    let outcome = run(&fleet, FlushMode::FlushBusy).unwrap();
    assert_eq!(names(&outcome.report.kept_busy), vec!["a"]);
    assert_eq!(removed(&outcome), vec!["a"]);
    assert!(fleet.names().is_empty());
}

#[test]
fn non_force_modes_touch_nothing_when_github_refuses() {
    for mode in FlushMode::ALL.into_iter().filter(|m| !m.is_force()) {
        let fleet = fleet();
        fleet.add_runner("a", 3600, false);
        fleet.state().github_down = true;
        let err = run(&fleet, mode).unwrap_err();
        assert!(matches!(err, FlushError::GitHub(_)), "{mode}");
        assert_eq!(fleet.names(), vec!["a".to_string()], "{mode}");
    }
}

/// A scope change whose old credentials GitHub refuses: the job probe tells the busy
/// runner (kept, marked) from the idle one (removed, its registration left to expire).
#[test]
fn force_flush_without_github_removes_jobless_instances_and_marks_busy_ones() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.add_runner("unsure", 3600, false);
    fleet.start_job("busy", NOW - 20);
    fleet.state().job_probe_fails.insert("unsure".into());
    fleet.state().github_down = true;
    let outcome = run(&fleet, FlushMode::ForceFlushWaitRepoCheck).unwrap();
    assert!(outcome.github_error.is_some());
    assert!(fleet.clock.sleeps().is_empty());
    let state = fleet.state();
    let left: Vec<&str> = state.instances.keys().map(String::as_str).collect();
    assert_eq!(
        left,
        vec!["busy", "unsure"],
        "a job is never killed on an unknown"
    );
    drop(state);
    assert_eq!(names(&outcome.awaiting_job), vec!["busy", "unsure"]);
    let left: Vec<&str> = outcome
        .report
        .registrations_left
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(left, vec!["idle"]);
}

/// The previous credentials are lost: GitHub's answer is of the new scope, so the flush
/// goes by the job probe as if GitHub refused.
#[test]
fn force_flush_whose_listing_misses_the_old_fleet_goes_by_the_probe() {
    let fleet = fleet();
    fleet.add_runner("idle", 3600, false);
    fleet.add_runner("busy", 3600, false);
    fleet.start_job("busy", NOW - 600);
    fleet.state().registrations.clear();
    let outcome = run_in(&fleet, FlushMode::ForceFlushWaitRepoCheck, false).unwrap();
    assert_eq!(removed(&outcome), vec!["idle"]);
    assert_eq!(names(&outcome.awaiting_job), vec!["busy"]);
    assert!(fleet.state().instances.contains_key("busy"));
}

#[test]
fn force_flush_with_working_credentials_deletes_idle_and_marks_busy() {
    let fleet = fleet();
    fleet.add_runner("a", 3600, false);
    fleet.add_runner("b", 3600, true);
    fleet.start_job("b", NOW - 600);
    let outcome = run(&fleet, FlushMode::ForceFlushWaitRepoCheck).unwrap();
    assert!(outcome.github_error.is_none());
    assert_eq!(removed(&outcome), vec!["a"]);
    assert_eq!(names(&outcome.awaiting_job), vec!["b"]);
    assert_eq!(fleet.names(), vec!["b".to_string()]);
    assert_eq!(fleet.state().deleted_registrations.len(), 1);
}

#[test]
fn pre_job_decision() {
    let probe = |busy, job_started| PreJobProbe {
        name: RunnerName("r".into()),
        busy,
        job_started,
    };
    let now = 1000;
    assert!(pre_job_pending(
        &[probe(Some(true), Ok(Some(now - 59)))],
        now
    ));
    assert!(!pre_job_pending(
        &[probe(Some(true), Ok(Some(now - 60)))],
        now
    ));
    assert!(pre_job_pending(&[probe(Some(true), Ok(None))], now));
    assert!(!pre_job_pending(&[probe(None, Ok(None))], now));
    assert!(pre_job_pending(&[probe(None, Ok(Some(now - 1)))], now));
    assert!(!pre_job_pending(
        &[probe(Some(true), Err(OpError::transient("exec failed")))],
        now
    ));
    assert!(!pre_job_pending(&[], now));
}

#[test]
fn removal_targets() {
    let fleet = fleet();
    fleet.add_runner("a", 3600, false);
    fleet.add_runner("b", 3600, true);
    fleet.add_runner("old", 3600, true);
    fleet.set_config("old", SCOPE_CONFIG_KEY, "scope-before");
    fleet.state().registrations.remove("old");
    let obs = fleet.observe().unwrap();
    let mut github = obs.github.unwrap();
    github.push(GitHubRunner {
        id: 99,
        name: "orphan".into(),
        status: crate::github::RunnerOnline::Offline,
        busy: false,
        labels: vec![],
    });
    let decided = decide(
        FlushMode::FlushBusyWaitRepoCheck,
        &obs.instances,
        Some(&github),
        &BTreeMap::new(),
        SCOPE,
    );
    let got: Vec<(&str, bool, Option<u64>, FlushAction)> = decided
        .iter()
        .map(|(t, a)| (t.name.as_str(), t.has_instance, t.github_id, *a))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", true, Some(1), FlushAction::RemoveIdle),
            ("b", true, Some(2), FlushAction::Mark),
            // Its recorded id (3) belongs to another scope: never sent here.
            ("old", true, None, FlushAction::Keep),
            ("orphan", false, Some(99), FlushAction::RemoveIdle),
        ]
    );
}

/// The decision for one runner over every combination of mode, instance, standing,
/// GitHub's view and job probe: the rows spelled out, then the promise checked over all.
#[test]
fn flush_action_table() {
    use FlushAction::*;
    use FlushMode::*;
    use JobProbe::*;
    let live = |standing| {
        Some(InstanceFacts {
            dead: false,
            standing,
        })
    };
    let dead = Some(InstanceFacts {
        dead: true,
        standing: Standing::Current,
    });
    let facts = |instance, listed_busy, github_view, job| FlushFacts {
        instance,
        listed_busy,
        github_view,
        job,
    };
    let cur = live(Standing::Current);
    let flushed = live(Standing::Flushed);
    let other = live(Standing::OtherScope);
    #[rustfmt::skip]
    let rows: Vec<(FlushMode, FlushFacts, FlushAction)> = vec![
        // idle / busy / dead / orphan, this scope, GitHub's view
        (FlushIdle, facts(cur, Some(false), true, NotAsked), RemoveIdle),
        (FlushIdle, facts(cur, Some(true), true, NotAsked), Keep),
        (FlushIdle, facts(cur, None, true, NotAsked), RemoveIdle),
        (FlushIdle, facts(dead, Some(true), true, NotAsked), RemoveForced),
        (FlushIdle, facts(None, Some(false), true, NotAsked), RemoveIdle),
        (FlushIdle, facts(None, Some(true), true, NotAsked), Keep),
        (FlushBusyWaitRepoCheck, facts(cur, Some(false), true, NotAsked), RemoveIdle),
        (FlushBusyWaitRepoCheck, facts(cur, Some(true), true, NotAsked), Mark),
        (FlushBusyWaitRepoCheck, facts(flushed, Some(true), true, NotAsked), Mark),
        (FlushBusyWaitRepoCheck, facts(cur, None, true, NotAsked), RemoveIdle),
        (FlushBusyWaitRepoCheck, facts(dead, None, true, NotAsked), RemoveForced),
        (ForceFlushWaitRepoCheck, facts(cur, Some(true), true, NotAsked), Mark),
        // without GitHub's view: the probe
        (ForceFlushWaitRepoCheck, facts(cur, None, false, Started), Mark),
        (ForceFlushWaitRepoCheck, facts(cur, None, false, Unknown), Mark),
        (ForceFlushWaitRepoCheck, facts(cur, None, false, NoJob), RemoveForced),
        (ForceFlushWaitRepoCheck, facts(flushed, None, false, Started), Mark),
        // another scope's runner: FLUSH_BUSY's only
        (FlushIdle, facts(other, None, true, NotAsked), Keep),
        (FlushBusyWaitRepoCheck, facts(other, Some(true), true, NotAsked), Keep),
        (ForceFlushWaitRepoCheck, facts(other, None, false, NoJob), Keep),
        // force=true
        (FlushBusy, facts(cur, Some(false), true, NotAsked), RemoveIdle),
        (FlushBusy, facts(cur, Some(true), true, NotAsked), RemoveForced),
        (FlushBusy, facts(flushed, Some(true), true, NotAsked), RemoveForced),
        (FlushBusy, facts(other, None, true, NotAsked), RemoveForced),
        (FlushBusy, facts(dead, Some(false), true, NotAsked), RemoveForced),
    ];
    for (mode, f, want) in &rows {
        assert_eq!(flush_action(*mode, f), *want, "{mode} {f:?}");
    }

    // Over every combination: only FLUSH_BUSY removes a runner that is or may be busy, or
    // another scope's, forcibly; a busy runner is marked exactly in the replacing modes.
    let standings = [Standing::Current, Standing::Flushed, Standing::OtherScope];
    let instances = [None, dead, cur, flushed, other]
        .into_iter()
        .chain(standings.map(|s| {
            Some(InstanceFacts {
                dead: true,
                standing: s,
            })
        }));
    let instances: Vec<_> = instances.collect();
    for mode in FlushMode::ALL {
        for &instance in &instances {
            for listed_busy in [None, Some(false), Some(true)] {
                for github_view in [false, true] {
                    for job in [NotAsked, Started, NoJob, Unknown] {
                        let f = facts(instance, listed_busy, github_view, job);
                        let action = flush_action(mode, &f);
                        let may_be_busy = listed_busy == Some(true)
                            || (!github_view && matches!(job, Started | Unknown | NotAsked));
                        let alive = instance.is_some_and(|i| !i.dead);
                        let other_scope =
                            instance.is_some_and(|i| i.standing == Standing::OtherScope);
                        if mode != FlushBusy && alive && (may_be_busy || other_scope) {
                            assert_ne!(action, RemoveForced, "{mode} {f:?}");
                        }
                        if mode != FlushBusy && other_scope {
                            assert_eq!(action, Keep, "{mode} {f:?}");
                        }
                        if action == Mark {
                            assert!(mode.replaces_busy() && alive, "{mode} {f:?}");
                        }
                    }
                }
            }
        }
    }
}
