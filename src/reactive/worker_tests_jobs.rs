//! Crossover, lost leases and unreadable repositories (issue 20 items 2, 3 and 5).

use super::*;

/// What a sibling worker does when GitHub handed its job B to our runner: it holds B's
/// claim naming our runner (it counts as serving B).
fn sibling_serves(claims: &ClaimDir, job: u64, runner: &str) -> Claim {
    let mut c = match claims.claim(job, 2, "sibling-message").unwrap() {
        ClaimAttempt::Claimed(c) => c,
        other => panic!("{other:?}"),
    };
    c.record_runner(2, runner).unwrap();
    c
}

#[test]
fn our_runner_taking_a_siblings_job_puts_ours_back_unacked_and_keeps_the_runner() {
    let s = Setup::new();
    let id = s.queue.put(job_body(21, &[]), 0);
    s.jobs.script(21, vec![found("queued")]);
    let name = "app-0-000000000001";
    // Our runner runs the sibling's job: busy, never removable.
    s.runners.busy.borrow_mut().push(name.into());
    let claims = s.claims.clone();
    let sibling: RefCell<Option<Claim>> = RefCell::new(None);
    let sibling = std::rc::Rc::new(sibling);
    let hold = sibling.clone();
    *s.jobs.on_lookup.borrow_mut() = Some(Box::new(move |n| {
        if n == 2 {
            *hold.borrow_mut() = Some(sibling_serves(&claims, 22, name));
        }
    }));
    let start = s.clock.now_epoch();
    assert_eq!(s.round(), Round::Handled);
    assert!(
        s.clock.now_epoch() - start < WorkerTimings::default().pickup_bound.as_secs(),
        "seen within a tick, not at the bound"
    );
    assert_eq!(s.queue.acked(), 0, "a job still queued is never acked");
    let now = s.clock.now_epoch();
    let waiting = s.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].0, id);
    assert_eq!(waiting[0].1, 0, "not counted: nothing was wrong with it");
    assert!(waiting[0].2 <= now, "served next");
    assert!(
        s.removed().is_empty(),
        "the runner stays with the job it took"
    );
    // The next handling makes a runner for it.
    *s.jobs.on_lookup.borrow_mut() = None;
    s.jobs
        .script(21, vec![found("queued"), picked_by("app-0-000000000002")]);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.created().len(), 2);
    assert_eq!(s.queue.acked(), 1);
    drop(sibling);
}

#[test]
fn a_busy_runner_at_the_bound_acks_only_if_github_says_the_job_was_picked() {
    // Our runner took some job nobody of this unit handles; ours is still queued.
    let s = Setup::new();
    s.queue.put(job_body(23, &[]), 0);
    s.jobs.script(23, vec![found("queued")]);
    s.runners
        .busy
        .borrow_mut()
        .push("app-0-000000000001".into());
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.queue.acked(), 0);
    let waiting = s.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, 0);
    // The same, but it took ours after the last look of the wait: acked.
    let looks_in_a_round = s.jobs.lookups.borrow().len();
    let s = Setup::new();
    s.queue.put(job_body(24, &[]), 0);
    let name = "app-0-000000000001";
    s.runners.busy.borrow_mut().push(name.into());
    let looks = std::iter::repeat_n(found("queued"), looks_in_a_round - 1)
        .chain([picked_by(name)])
        .collect();
    s.jobs.script(24, looks);
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.queue.acked(), 1);
}

#[test]
fn a_job_taken_by_a_siblings_runner_is_served_by_it_and_ours_goes() {
    let s = Setup::new();
    s.queue.put(job_body(25, &[]), 0);
    let siblings_runner = "app-0-00000000ffff";
    // The sibling (job 26) spawned that runner and holds its claim.
    let sibling = sibling_serves(&s.claims, 26, siblings_runner);
    s.jobs
        .script(25, vec![found("queued"), picked_by(siblings_runner)]);
    let claims = s.claims.clone();
    let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
    let log = seen.clone();
    *s.runners.on_exists.borrow_mut() = Some(Box::new(move |runner: String| {
        log.borrow_mut().push(runner.clone());
        // Our claim on job 25 names the runner that serves it.
        assert!(claims.runner_serves_another_job(&runner, 26));
    }));
    assert_eq!(s.round(), Round::Handled);
    assert_eq!(s.queue.acked(), 1, "picked: acked");
    assert_eq!(s.removed(), vec!["app-0-000000000001".to_string()]);
    assert!(seen.borrow().iter().all(|r| r == siblings_runner));
    assert!(!seen.borrow().is_empty(), "waited for the sibling's runner");
    drop(sibling);
}

#[test]
fn a_lease_the_broker_lost_is_put_back_from_the_held_copy() {
    let s = Setup::new();
    let id = s.queue.put(job_body(27, &[]), 0);
    s.jobs.script(27, vec![found("queued")]);
    let queue = s.queue.clone();
    *s.jobs.on_lookup.borrow_mut() = Some(Box::new(move |n| {
        if n == 2 {
            queue.lose_everything();
        }
    }));
    assert_eq!(s.round(), Round::Handled);
    let waiting = s.queue.waiting();
    assert_eq!(waiting.len(), 1, "not forgotten");
    assert_eq!(waiting[0].0, id);
    assert_eq!(waiting[0].1, 1, "counted as the requeue it is");
    // A lease that lapsed while the message is still on the broker is not doubled.
    let s = Setup::new();
    s.queue.put(job_body(28, &[]), 0);
    let mut q = s.queue.clone();
    let d = q
        .lease_next(Duration::ZERO, Duration::from_secs(1))
        .unwrap()
        .unwrap();
    s.clock.advance(Duration::from_secs(5));
    let again = q
        .lease_next(Duration::ZERO, Duration::from_secs(60))
        .unwrap();
    assert!(again.is_some(), "lapsed and leased again");
    assert!(matches!(q.release(&d), Err(QueueError::LeaseLost { .. })));
    assert!(!q.restore(&d, 0, T0).unwrap());
    assert_eq!(s.queue.total(), 1);
}

#[test]
fn a_repository_the_token_cannot_read_requeues_with_backoff_and_says_so() {
    let s = Setup::new();
    s.queue.put(job_body(29, &[]), 0);
    let no_access = (
        JobLookup::NoAccess {
            repo: "octo/hello".into(),
        },
        None,
    );
    s.jobs.script(29, vec![no_access]);
    assert_eq!(s.round(), Round::Handled);
    assert!(s.created().is_empty());
    assert_eq!(s.queue.acked(), 0, "never dropped as a missing job");
    let waiting = s.queue.waiting();
    assert_eq!(waiting[0].1, 1);
    assert_eq!(waiting[0].2, requeue_not_before(T0, 0));
    let last = s.report.states.borrow().last().cloned().unwrap();
    assert_eq!(
        last.job_access.as_deref(),
        Some("cannot read jobs of octo/hello: the token needs Actions read")
    );
}
