//! The listener loop over the in-memory service double and [`MemoryRunners`]: every branch
//! of the loop, on a manual clock (no real sleep).

#[path = "listener_test_doubles.rs"]
mod doubles;

use super::*;
use crate::scaleset::scaling::RunnerState;
use crate::scaleset::{JobMessage, ScaleSetError};
use doubles::*;
use std::sync::atomic::Ordering;

#[test]
fn the_scale_set_is_created_once_then_found_and_stop_deletes_the_session() {
    let w = world();
    let (result, state) = w.run();
    assert!(result.is_ok());
    assert_eq!(
        w.api.calls(),
        [
            "group default",
            "get-set lxd-0",
            "create-set lxd-0",
            "create-session 41 unit-0",
            "poll s1/t1 0 3",
            "delete-session s1",
        ]
    );
    assert_eq!(state.scale_set_id, 41);
    assert_eq!(w.phases().last(), Some(&ListenerPhase::Stopped));
    w.stop.store(false, Ordering::SeqCst);
    let _ = w.run();
    assert_eq!(
        w.api
            .calls()
            .iter()
            .filter(|c| c.starts_with("create-set"))
            .count(),
        1
    );
}

#[test]
fn a_session_conflict_is_waited_out_with_capped_exponential_backoff() {
    for (jitter, waits) in [
        (0.0, [5, 10, 20, 40, 60, 60]),
        // Up to a quarter more, whole seconds.
        (0.99, [6, 12, 24, 49, 74, 74]),
    ] {
        let mut w = world();
        w.jitter = jitter;
        w.api.with(|i| {
            for _ in 0..6 {
                i.session_errors.push_back(ScaleSetError::SessionConflict {
                    scale_set_id: 41,
                    message: "already has an active session".into(),
                });
            }
        });
        let (result, _) = w.run();
        assert!(result.is_ok());
        let times = w.api.with(|i| i.session_times.clone());
        let gaps: Vec<u64> = times.windows(2).map(|t| t[1] - t[0]).collect();
        assert_eq!(gaps, waits, "jitter {jitter}");
        let phases = w.phases();
        let waiting: Vec<u32> = phases
            .iter()
            .filter_map(|p| match p {
                ListenerPhase::WaitingForSession { attempt, retry_in } => {
                    assert_eq!(retry_in.as_secs(), waits[*attempt as usize]);
                    Some(*attempt)
                }
                _ => None,
            })
            .collect();
        assert_eq!(waiting, [0, 1, 2, 3, 4, 5]);
        assert!(phases[1]
            .status_text("lxd-0")
            .contains("waiting for the previous listener's session to expire"));
        assert_eq!(phases[7], ListenerPhase::Listening { scale_set_id: 41 });
    }
}

#[test]
fn a_scale_set_another_deployment_holds_is_never_taken_and_said_so() {
    let w = world();
    let ours = w.config.owner.clone();
    w.api.with(|i| {
        i.session_errors.push_back(ScaleSetError::SessionConflict {
            scale_set_id: 41,
            message: "The runner scale set lxd-0 already has an active session for owner \
                      other-model/github-runner/0."
                .into(),
        });
        i.session_errors.push_back(ScaleSetError::SessionConflict {
            scale_set_id: 41,
            message: format!(
                "The runner scale set lxd-0 already has an active session for owner {ours}."
            ),
        });
    });
    let (result, _) = w.run();
    assert!(result.is_ok());
    let phases = w.phases();
    let held = phases
        .iter()
        .find(|p| matches!(p, ListenerPhase::HeldByAnother { .. }))
        .expect("another owner's session is reported as such");
    assert_eq!(
        held,
        &ListenerPhase::HeldByAnother {
            owner: "other-model/github-runner/0".into(),
            retry_in: std::time::Duration::from_secs(5),
        }
    );
    assert!(held
        .status_text("lxd-0")
        .contains("other-model/github-runner/0"));
    // Our own stale session (same owner) is only waited out.
    assert!(matches!(
        phases[2],
        ListenerPhase::WaitingForSession { attempt: 1, .. }
    ));
    // No call ever deleted or replaced the other session or the scale set.
    assert!(!w
        .api
        .calls()
        .iter()
        .any(|c| c.starts_with("delete-session") && !c.contains("s1")));
}

#[test]
fn a_stop_while_waiting_for_the_session_ends_the_wait_with_nothing_to_delete() {
    let mut w = world();
    w.phases.2 = Some(2);
    w.api.with(|i| {
        for _ in 0..100 {
            i.session_errors.push_back(ScaleSetError::SessionConflict {
                scale_set_id: 41,
                message: String::new(),
            });
        }
    });
    let (result, _) = w.run();
    assert!(result.is_ok());
    assert_eq!(w.api.with(|i| i.session_times.len()), 2);
    assert!(!w
        .api
        .calls()
        .iter()
        .any(|c| c.starts_with("delete-session")));
    // Stopped within one wait slice of the stop, not after the whole 10 s wait.
    assert_eq!(w.clock.now_epoch() - T0, 5);
}

#[test]
fn an_expired_queue_token_refreshes_the_session_and_retries_once() {
    let w = world();
    w.polls(vec![Err(expired()), message(10, 0, vec![])]);
    let (result, state) = w.run();
    assert!(result.is_ok());
    let calls = w.api.calls();
    assert_eq!(
        calls[4..],
        [
            "poll s1/t1 0 3",
            "refresh s1/t1",
            "poll s1/t1r 0 3",
            "ack s1/t1r 10",
            "poll s1/t1r 10 3",
            "delete-session s1",
        ]
    );
    assert_eq!(state.last_message_id, 10);
}

#[test]
fn a_token_expired_again_after_the_refresh_opens_a_new_session() {
    let w = world();
    w.polls(vec![Err(expired()), Err(expired())]);
    let _ = w.run();
    let calls = w.api.calls();
    assert_eq!(
        calls[4..8],
        [
            "poll s1/t1 0 3",
            "refresh s1/t1",
            "poll s1/t1r 0 3",
            "create-session 41 unit-0",
        ]
    );
    assert_eq!(calls[8], "poll s2/t2 0 3");
}

#[test]
fn a_lost_session_is_replaced_and_the_cursor_kept() {
    let w = world();
    w.polls(vec![
        message(10, 0, vec![]),
        Err(ScaleSetError::SessionNotFound {
            scale_set_id: 41,
            method: "GET".into(),
            path: "/message".into(),
        }),
    ]);
    let _ = w.run();
    let calls = w.api.calls();
    let lost = calls.iter().rposition(|c| c == "poll s1/t1 10 3").unwrap();
    assert_eq!(
        calls[lost + 1..lost + 3],
        ["create-session 41 unit-0", "poll s2/t2 10 3"]
    );
    assert_eq!(calls.last().unwrap(), "delete-session s2");
}

#[test]
fn a_deleted_scale_set_is_created_again_from_cursor_zero() {
    let w = world();
    w.polls(vec![
        message(10, 0, vec![]),
        Err(ScaleSetError::ScaleSetNotFound {
            scale_set_id: 41,
            method: "GET".into(),
            path: "/message".into(),
        }),
    ]);
    let (_, state) = w.run();
    let calls = w.api.calls();
    let gone = position(&calls, "poll s1/t1 10 3");
    assert_eq!(
        calls[gone + 1..gone + 6],
        [
            "group default",
            "get-set lxd-0",
            "create-set lxd-0",
            "create-session 42 unit-0",
            "poll s2/t2 0 3",
        ]
    );
    assert_eq!(state.scale_set_id, 42);
    assert_eq!(w.cursor.load(42), 0);
    assert_eq!(w.cursor.load(41), 10);
}

#[test]
fn a_restart_resumes_from_the_persisted_cursor() {
    let w = world();
    w.polls(vec![message(10, 0, vec![]), message(11, 0, vec![])]);
    let _ = w.run();
    assert_eq!(*w.cursor.1.lock().unwrap(), [(41, 10), (41, 11)]);
    w.stop.store(false, Ordering::SeqCst);
    let _ = w.run();
    assert!(w.api.calls().contains(&"poll s2/t2 11 3".to_string()));
}

#[test]
fn a_message_is_acknowledged_only_after_its_work() {
    let mut w = world();
    w.config.min_idle = 0;
    let available = JobMessage::Available(doubles::job("j1", 7));
    w.api.with(|i| {
        i.acquire_errors.push_back(ScaleSetError::Server {
            method: "POST".into(),
            path: "/acquirejobs".into(),
            status: 503,
        })
    });
    // The failed acquisition leaves the message unacknowledged: it comes again.
    w.polls(vec![
        message(10, 1, vec![available.clone()]),
        message(10, 1, vec![available]),
    ]);
    let _ = w.run();
    let calls = w.api.calls();
    let first_ack = position(&calls, "ack");
    assert_eq!(calls.iter().filter(|c| c.starts_with("acquire")).count(), 2);
    let second_acquire = calls
        .iter()
        .rposition(|c| c.starts_with("acquire"))
        .unwrap();
    assert!(second_acquire < first_ack, "{calls:#?}");
    assert!(
        position(&calls, "jit") < first_ack,
        "the runner before the ack"
    );
    assert_eq!(calls.iter().filter(|c| c.starts_with("ack")).count(), 1);
    assert!(w
        .phases()
        .iter()
        .any(|p| matches!(p, ListenerPhase::Retrying { .. })));
}

#[test]
fn desired_runners_come_from_the_statistics_with_min_idle_and_max() {
    let mut w = world();
    w.config.min_idle = 1;
    w.api.with(|i| i.session_statistics = doubles::stats(0));
    // One JobAssigned in the message, five assigned in the statistics: the statistics win.
    let assigned = JobMessage::Assigned(doubles::job("j1", 0));
    w.polls(vec![message(10, 5, vec![assigned])]);
    let _ = w.run();
    assert_eq!(w.runners.instances().len(), 3, "min(3, 5 + 1)");
    let jit = w
        .api
        .calls()
        .iter()
        .filter(|c| c.starts_with("jit"))
        .count();
    assert_eq!(
        jit, 3,
        "1 for the idle runner at the session's start, 2 more"
    );
    assert_eq!(w.runners.jit_config("r-1").as_deref(), Some("jit-of-r-1"));

    // Fewer assigned: the surplus idle ones go (registration first), busy ones never.
    w.runners.all_online();
    w.runners.set_state("r-1", RunnerState::Busy);
    w.stop.store(false, Ordering::SeqCst);
    w.polls(vec![message(11, 0, vec![])]);
    let _ = w.run();
    let names: Vec<String> = w.runners.instances().into_iter().map(|i| i.name).collect();
    assert_eq!(names, ["r-1"], "desired 1 = the busy one");
    let calls = w.api.calls();
    assert!(position(&calls, "remove-runner 102") < calls.len());
    assert_eq!(w.runners.log()[3..], ["remove r-2", "remove r-3"]);
}

#[test]
fn a_finished_runner_goes_and_a_busy_registration_is_retried_next_poll() {
    let w = world();
    w.api
        .with(|i| i.remove_outcomes.push_back(DeleteOutcome::Busy));
    w.polls(vec![
        message(10, 1, vec![JobMessage::Assigned(doubles::job("j1", 0))]),
        message(11, 1, vec![started("r-1", 101)]),
        // The scaling after JobStarted must not take the busy runner, even at 0 assigned.
        message(12, 0, vec![]),
        message(13, 0, vec![completed("r-1", 101)]),
        Ok(None),
    ]);
    let (_, state) = w.run();
    let calls = w.api.calls();
    let removals: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("remove-runner"))
        .collect();
    assert_eq!(
        removals,
        ["remove-runner 101", "remove-runner 101"],
        "Busy, then again"
    );
    assert!(state.pending_removals.is_empty() && state.busy.is_empty());
    assert!(w.runners.instances().is_empty());
    assert!(position(&calls, "remove-runner 101") < position(&calls, "ack s1/t1 13"));
}

#[test]
fn a_runner_that_fails_to_start_has_its_registration_removed() {
    let w = world();
    w.runners.fail_next_creates(1);
    w.polls(vec![message(10, 1, vec![]), Ok(None)]);
    let _ = w.run();
    let calls = w.api.calls();
    assert!(position(&calls, "jit r-1") < position(&calls, "remove-runner 101"));
    assert_eq!(w.runners.instances().len(), 1, "the next scaling made r-2");
}

#[test]
fn an_error_only_the_operator_can_fix_ends_the_loop_and_still_deletes_the_session() {
    let w = world();
    w.polls(vec![Err(ScaleSetError::Forbidden {
        method: "GET".into(),
        path: "/message".into(),
        message: "no".into(),
    })]);
    let (result, _) = w.run();
    assert!(matches!(result, Err(ScaleSetError::Forbidden { .. })));
    assert_eq!(w.api.calls().last().unwrap(), "delete-session s1");
}

fn leftover(
    id: u64,
    name: &str,
    scale_set_id: u64,
    status: &str,
) -> crate::scaleset::ScaleSetRunner {
    crate::scaleset::ScaleSetRunner {
        id,
        name: name.into(),
        runner_scale_set_id: scale_set_id,
        status: status.into(),
        busy: false,
    }
}

#[test]
fn a_new_session_repairs_what_a_crash_left_before_scaling_and_spares_the_busy() {
    let w = world();
    // Scale set 41 is the one the listener creates; 9 is another scale set's runner.
    w.api.with(|i| {
        for r in [
            leftover(7, "cut-short", 41, "offline"),
            leftover(8, "never-online", 41, "offline"),
            leftover(9, "other-set", 9, "offline"),
            leftover(10, "busy-one", 41, "online"),
        ] {
            i.registrations.insert(r.id, r);
        }
        i.registrations.get_mut(&10).unwrap().busy = true;
        // One job assigned: scaling keeps the one instance of this scale set left, so
        // every removal seen is the repair's.
        i.session_statistics = stats(1);
    });
    let old = T0 - 3600;
    w.runners.insert("finished", 41, 6, old);
    w.runners.insert("never-online", 41, 8, old);
    w.runners.insert("other-set", 9, 9, old);
    w.runners.insert("busy-one", 41, 10, old);
    w.polls(vec![Ok(None)]);
    let _ = w.run();
    let calls = w.api.calls();
    let removed: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("remove-runner"))
        .collect();
    assert_eq!(removed, ["remove-runner 7", "remove-runner 8"]);
    let left: Vec<String> = w.runners.instances().into_iter().map(|i| i.name).collect();
    assert_eq!(left, ["busy-one", "other-set"]);
    assert!(
        position(&calls, "remove-runner 8") < position(&calls, "poll s1/t1 0 3"),
        "before the first poll: {calls:#?}"
    );
    assert_eq!(w.api.with(|i| i.listings), 1);
}

#[test]
fn a_repair_runs_again_only_after_its_interval() {
    let w = world();
    // Each poll is a 50 s long poll: 6 polls reach the 300 s interval once.
    w.api.with(|i| i.poll_seconds = 50);
    w.polls((0..7).map(|_| Ok(None)).collect());
    let _ = w.run();
    assert_eq!(w.api.with(|i| i.listings), 2);
}

#[test]
fn a_runner_that_never_comes_online_is_replaced_after_the_bootstrap_timeout() {
    let w = world();
    w.api.with(|i| i.poll_seconds = 50);
    // One assigned job: r-1 is made and never comes online (its registration stays
    // offline) from 50 s on. Repairs run at 0, 300, 600 and 900 s: only the last sees it
    // older than the 600 s bootstrap timeout.
    let mut polls = vec![message(10, 1, vec![])];
    polls.extend((0..18).map(|_| Ok(None)));
    w.polls(polls);
    let _ = w.run();
    let log = w.runners.log();
    assert_eq!(log[..2], ["create r-1", "remove r-1"], "{log:?}");
    assert_eq!(
        log[2], "create r-2",
        "the scaling after the repair replaces it"
    );
    let calls = w.api.calls();
    assert!(position(&calls, "remove-runner 101") < position(&calls, "jit r-2"));
}

fn held(name: &str, labels: &[&str]) -> crate::scaleset::ledger::HeldScaleSet {
    crate::scaleset::ledger::HeldScaleSet {
        name: name.into(),
        runner_group: "default".into(),
        labels: labels.iter().map(|s| s.to_string()).collect(),
    }
}

/// Scale set 41 held before (in the ledger, asked for with `was`), with an idle runner
/// and a busy one, each with its instance.
fn a_held_scale_set(w: &World, name: &str, was: crate::scaleset::ledger::HeldScaleSet) {
    use crate::scaleset::ledger::ScaleSetLedger;
    w.api.with(|i| {
        i.next_set = 41;
        i.existing.push(crate::scaleset::ScaleSet {
            id: 41,
            name: name.into(),
            ..crate::scaleset::ScaleSet::default()
        });
        for r in [
            leftover(7, "idle-old", 41, "online"),
            leftover(8, "busy-old", 41, "online"),
        ] {
            i.registrations.insert(r.id, r);
        }
        i.registrations.get_mut(&8).unwrap().busy = true;
    });
    let old = T0 - 3600;
    w.runners.insert("idle-old", 41, 7, old);
    w.runners.insert("busy-old", 41, 8, old);
    w.ledger.store(&[(41, was)].into_iter().collect()).unwrap();
}

/// Run the listener once more, as after a restart.
fn run_again(w: &World, polls: Vec<doubles::Poll>) {
    w.stop.store(false, Ordering::SeqCst);
    w.polls(polls);
    let _ = w.run();
}

#[test]
fn new_labels_retire_the_old_scale_set_which_keeps_its_busy_runner_and_goes_when_drained() {
    use crate::scaleset::ledger::ScaleSetLedger;
    let w = world();
    a_held_scale_set(&w, "lxd-0", held("lxd-0", &["focal"]));
    w.polls(vec![Ok(None)]);
    let _ = w.run();
    let calls = w.api.calls();
    let rename = position(&calls, "rename-set 41 retired-41");
    assert!(rename < position(&calls, "create-set lxd-0"), "{calls:#?}");
    assert!(calls.contains(&"create-session 42 unit-0".to_string()));
    // The idle runner of the old scale set went; the busy one is on its job still, so
    // the old scale set stays.
    assert!(calls.contains(&"remove-runner 7".to_string()));
    assert!(!calls.iter().any(|c| c.starts_with("delete-set")));
    let left: Vec<String> = w.runners.instances().into_iter().map(|i| i.name).collect();
    assert_eq!(left, ["busy-old"]);
    let ledger = w.ledger.load();
    assert_eq!(ledger.keys().copied().collect::<Vec<_>>(), [41, 42]);
    assert_eq!(ledger[&41].name, "retired-41");
    assert_eq!(ledger[&42], held("lxd-0", &["jammy"]));

    // Its job ends: the ephemeral runner deregisters. The next repair (here: after a
    // restart) deletes its instance and the empty scale set.
    w.api.with(|i| i.registrations.remove(&8));
    run_again(&w, vec![Ok(None)]);
    let calls = w.api.calls();
    assert_eq!(
        calls.iter().filter(|c| c.starts_with("create-set")).count(),
        1,
        "the new scale set is found, not made again: {calls:#?}"
    );
    assert!(calls.contains(&"delete-set 41".to_string()));
    assert!(w.runners.instances().is_empty());
    assert_eq!(w.ledger.load().keys().copied().collect::<Vec<_>>(), [42]);
}

#[test]
fn a_new_name_makes_a_new_scale_set_and_the_old_one_is_deleted_once_drained() {
    use crate::scaleset::ledger::ScaleSetLedger;
    let w = world();
    a_held_scale_set(&w, "old-name", held("old-name", &["jammy"]));
    w.api
        .with(|i| i.registrations.get_mut(&8).unwrap().busy = false);
    w.polls(vec![Ok(None)]);
    let _ = w.run();
    let calls = w.api.calls();
    assert!(!calls.iter().any(|c| c.starts_with("rename-set")));
    assert!(calls.contains(&"create-set lxd-0".to_string()));
    for removed in ["remove-runner 7", "remove-runner 8", "delete-set 41"] {
        assert!(
            calls.contains(&removed.to_string()),
            "{removed}: {calls:#?}"
        );
    }
    assert!(position(&calls, "remove-runner 8") < position(&calls, "delete-set 41"));
    assert!(w.runners.instances().is_empty());
    assert_eq!(w.ledger.load().keys().copied().collect::<Vec<_>>(), [42]);
}

#[test]
fn a_scale_set_not_in_the_ledger_is_used_as_found_and_one_held_by_another_never_recorded() {
    use crate::scaleset::ledger::ScaleSetLedger;
    let mut w = world();
    w.api.with(|i| {
        i.existing.push(crate::scaleset::ScaleSet {
            id: 41,
            name: "lxd-0".into(),
            ..crate::scaleset::ScaleSet::default()
        });
        for _ in 0..100 {
            i.session_errors.push_back(ScaleSetError::SessionConflict {
                scale_set_id: 41,
                message: "The runner scale set lxd-0 already has an active session for owner \
                          other-model/github-runner/0."
                    .into(),
            });
        }
    });
    w.phases.2 = Some(2);
    let _ = w.run();
    assert!(w.ledger.load().is_empty());
    let calls = w.api.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("rename-set") || c.starts_with("delete-set")),
        "{calls:#?}"
    );

    // Once its session opens here, it is this unit's.
    w.api.with(|i| i.session_errors.clear());
    w.phases.2 = None;
    run_again(&w, vec![Ok(None)]);
    assert_eq!(w.ledger.load()[&41], held("lxd-0", &["jammy"]));
}

#[test]
fn a_job_seen_assigned_reports_its_time_to_runner_once_when_it_starts() {
    use crate::scaleset::listener_state::TimeToRunner;
    let w = world();
    w.api.with(|i| i.poll_seconds = 10);
    let started_on = |runner: &str| JobMessage::Started {
        job: job("j1", 0),
        runner_id: 101,
        runner_name: runner.into(),
    };
    w.polls(vec![
        // T0+10: assigned, before the statistics count it.
        message(1, 0, vec![JobMessage::Assigned(job("j1", 0))]),
        // T0+20: the statistics ask for a runner: r-1 is made.
        message(2, 1, vec![]),
        // T0+30: it took the job; the same JobStarted again (a redelivery) tells nothing new.
        message(3, 1, vec![started_on("r-1")]),
        message(4, 1, vec![started_on("r-1")]),
    ]);
    let _ = w.run();
    assert_eq!(w.runners.log()[0], "create r-1");
    assert_eq!(
        *w.phases.3.lock().unwrap(),
        [TimeToRunner {
            runner_online: std::time::Duration::from_secs(10),
            job_started: std::time::Duration::from_secs(20),
        }]
    );
}
