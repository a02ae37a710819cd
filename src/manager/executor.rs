//! Applies a [`Plan`] through [`RunnerOps`], several operations at a time.
//!
//! Plain threads (`std::thread::scope`) pull work from a shared index: no async runtime, and
//! the number in flight never exceeds the bound. Each operation's failure, or panic, is
//! recorded and the others carry on.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::github::GitHubRunner;
use crate::identity::RunnerName;
use crate::manager::ops::{OpError, RemoveOutcome, RunnerOps};
use crate::manager::planner::{Health, Plan, Removal, RemovalReason};

/// Default cap on concurrent operations: enough to hide LXD and GitHub latency, few enough
/// not to swamp a small machine.
pub const DEFAULT_MAX_PARALLEL: usize = 8;

/// How many operations may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Concurrency {
    /// `min(8, work)`.
    #[default]
    Default,
    /// One at a time (the benchmark's baseline).
    Serial,
    /// At most this many (0 is taken as 1).
    AtMost(usize),
}

impl Concurrency {
    /// Worker threads for `work` items: never more than the work, never 0 when there is work.
    pub fn workers(self, work: usize) -> usize {
        let cap = match self {
            Concurrency::Default => DEFAULT_MAX_PARALLEL,
            Concurrency::Serial => 1,
            Concurrency::AtMost(n) => n.max(1),
        };
        cap.min(work)
    }
}

/// What an operation of the executor was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    Create,
    Remove {
        name: RunnerName,
        reason: RemovalReason,
    },
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operation::Create => f.write_str("create a runner"),
            Operation::Remove { name, reason } => write!(f, "remove {name} ({reason})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub operation: Operation,
    pub error: OpError,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "could not {}: {}", self.operation, self.error)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub name: RunnerName,
    pub reason: RemovalReason,
}

/// A registration a forced removal could not delete (see [`RemoveOutcome::RegistrationLeft`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftRegistration {
    pub name: RunnerName,
    pub reason: String,
}

/// What applying a plan did. Lists are sorted by runner name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    pub created: Vec<RunnerName>,
    pub removed: Vec<Removed>,
    /// Planned for removal, but they took a job first: kept.
    pub kept_busy: Vec<RunnerName>,
    /// Instances removed whose registrations stayed (forced removals only).
    pub registrations_left: Vec<LeftRegistration>,
    pub failed: Vec<Failure>,
    /// Creations not attempted: the round stopped creating after launches failed in a row.
    pub creations_skipped: u32,
}

impl Report {
    /// Append another report (flush runs in phases).
    pub fn absorb(&mut self, other: Report) {
        self.created.extend(other.created);
        self.removed.extend(other.removed);
        self.kept_busy.extend(other.kept_busy);
        self.registrations_left.extend(other.registrations_left);
        self.failed.extend(other.failed);
        self.creations_skipped += other.creations_skipped;
        self.sort();
    }

    fn sort(&mut self) {
        self.created.sort();
        self.removed.sort_by(|a, b| a.name.cmp(&b.name));
        self.kept_busy.sort();
        self.registrations_left.sort_by(|a, b| a.name.cmp(&b.name));
        self.failed
            .sort_by(|a, b| match (&a.operation, &b.operation) {
                (Operation::Remove { name: x, .. }, Operation::Remove { name: y, .. }) => x.cmp(y),
                (Operation::Create, Operation::Remove { .. }) => std::cmp::Ordering::Less,
                (Operation::Remove { .. }, Operation::Create) => std::cmp::Ordering::Greater,
                (Operation::Create, Operation::Create) => a.error.message.cmp(&b.error.message),
            });
    }

    pub fn is_clean(&self) -> bool {
        self.failed.is_empty()
    }

    /// `could not remove a (...): ...; could not ...`, or None when nothing failed.
    pub fn failure_summary(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let failures: Vec<String> = self.failed.iter().map(ToString::to_string).collect();
        Some(failures.join("; "))
    }
}

/// One finished operation, for progress output (action-log) while a long plan runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Operations finished so far, this one included.
    pub done: usize,
    pub total: usize,
    pub event: ProgressEvent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    Created(RunnerName),
    Removed(Removed),
    KeptBusy(RunnerName),
    RegistrationLeft(LeftRegistration),
    Failed(Failure),
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}/{}] ", self.done, self.total)?;
        match &self.event {
            ProgressEvent::Created(name) => write!(f, "created {name}"),
            ProgressEvent::Removed(r) => write!(f, "removed {} ({})", r.name, r.reason),
            ProgressEvent::KeptBusy(name) => write!(f, "kept {name}: it took a job"),
            ProgressEvent::RegistrationLeft(l) => {
                write!(
                    f,
                    "removed {}; its registration is left: {}",
                    l.name, l.reason
                )
            }
            ProgressEvent::Failed(failure) => write!(f, "{failure}"),
        }
    }
}

/// A progress sink that drops everything.
pub fn no_progress(_: &Progress) {}

enum Work<'p> {
    Create,
    Remove(&'p Removal),
}

/// Run `job` over `items` on at most `workers` threads; results keep the items' order.
/// A panic inside `job` is the caller's to catch (the executor's jobs do).
pub fn bounded_map<T, R, F>(items: &[T], workers: usize, job: F) -> Vec<R>
where
    T: Sync,
    R: Send,
    F: Fn(&T) -> R + Sync,
{
    if items.is_empty() {
        return Vec::new();
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers.clamp(1, items.len()) {
            scope.spawn(|| loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(index) else { break };
                let result = job(item);
                // A poisoned lock means another job panicked while holding it, which cannot
                // happen (the lock is held only for this store); keep going regardless.
                let mut slots = results.lock().unwrap_or_else(|p| p.into_inner());
                slots[index] = Some(result);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .flatten()
        .collect()
}

/// Apply `plan`: removals first (they free resources), then creations, `concurrency` at a time.
pub fn apply(
    plan: &Plan,
    ops: &dyn RunnerOps,
    concurrency: Concurrency,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Report {
    apply_limited(plan, ops, concurrency, u32::MAX, progress)
}

/// As [`apply`], but creating stops once `max_consecutive_failures` creations in a row have
/// failed (each failed launch costs GitHub calls and time under Juju's machine lock); the
/// rest are counted in [`Report::creations_skipped`] for the next round. Creations already
/// running when the limit is reached finish, so at most `max_consecutive_failures +
/// workers - 1` fail in a row.
pub fn apply_limited(
    plan: &Plan,
    ops: &dyn RunnerOps,
    concurrency: Concurrency,
    max_consecutive_failures: u32,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Report {
    apply_work(
        &plan.removals,
        plan.create,
        ops,
        concurrency,
        max_consecutive_failures,
        progress,
    )
}

/// Apply removals only (flush).
pub fn remove_all(
    removals: &[Removal],
    ops: &dyn RunnerOps,
    concurrency: Concurrency,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Report {
    apply_work(removals, 0, ops, concurrency, u32::MAX, progress)
}

fn apply_work(
    removals: &[Removal],
    create: u32,
    ops: &dyn RunnerOps,
    concurrency: Concurrency,
    max_consecutive_failures: u32,
    progress: &(dyn Fn(&Progress) + Sync),
) -> Report {
    let failures_in_a_row = AtomicU32::new(0);
    let mut work: Vec<Work<'_>> = removals.iter().map(Work::Remove).collect();
    work.extend((0..create).map(|_| Work::Create));
    let total = work.len();
    let done = AtomicUsize::new(0);
    let workers = concurrency.workers(total);
    tracing::info!(removals = removals.len(), create, workers, "applying plan");

    let events = bounded_map(&work, workers, |item| {
        if matches!(item, Work::Create)
            && failures_in_a_row.load(Ordering::SeqCst) >= max_consecutive_failures
        {
            return None;
        }
        let event = run_one(item, ops);
        if matches!(item, Work::Create) {
            if matches!(event, ProgressEvent::Failed(_)) {
                failures_in_a_row.fetch_add(1, Ordering::SeqCst);
            } else {
                failures_in_a_row.store(0, Ordering::SeqCst);
            }
        }
        let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
        let update = Progress {
            done: finished,
            total,
            event: event.clone(),
        };
        tracing::info!("{update}");
        progress(&update);
        Some(event)
    });

    let mut report = Report::default();
    for event in events {
        let Some(event) = event else {
            report.creations_skipped += 1;
            continue;
        };
        match event {
            ProgressEvent::Created(name) => report.created.push(name),
            ProgressEvent::Removed(removed) => report.removed.push(removed),
            ProgressEvent::KeptBusy(name) => report.kept_busy.push(name),
            ProgressEvent::RegistrationLeft(left) => report.registrations_left.push(left),
            ProgressEvent::Failed(failure) => report.failed.push(failure),
        }
    }
    if report.creations_skipped > 0 {
        tracing::warn!(
            skipped = report.creations_skipped,
            "stopped creating runners after {max_consecutive_failures} launches in a row failed; \
             the next round tries again"
        );
    }
    report.sort();
    report
}

fn run_one(work: &Work<'_>, ops: &dyn RunnerOps) -> ProgressEvent {
    match work {
        Work::Create => match guarded(|| ops.create()) {
            Ok(name) => ProgressEvent::Created(name),
            Err(error) => ProgressEvent::Failed(Failure {
                operation: Operation::Create,
                error,
            }),
        },
        Work::Remove(removal) => {
            let name = removal.target.name.clone();
            match guarded(|| ops.remove(&removal.target, removal.force)) {
                Ok(RemoveOutcome::Removed) => ProgressEvent::Removed(Removed {
                    name,
                    reason: removal.reason,
                }),
                Ok(RemoveOutcome::KeptBusy) => ProgressEvent::KeptBusy(name),
                Ok(RemoveOutcome::RegistrationLeft { reason }) => {
                    ProgressEvent::RegistrationLeft(LeftRegistration { name, reason })
                }
                Err(error) => ProgressEvent::Failed(Failure {
                    operation: Operation::Remove {
                        name,
                        reason: removal.reason,
                    },
                    error,
                }),
            }
        }
    }
}

/// Turn a panic inside one operation into that operation's failure.
fn guarded<T>(op: impl FnOnce() -> Result<T, OpError>) -> Result<T, OpError> {
    catch_unwind(AssertUnwindSafe(op)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(OpError::transient(format!("internal error: {what}")))
    })
}

/// Health of each named instance, probed `concurrency` at a time. A panicking probe is
/// [`Health::Unknown`].
pub fn probe_health(
    ops: &dyn RunnerOps,
    instances: &[String],
    concurrency: Concurrency,
) -> BTreeMap<String, Health> {
    let workers = concurrency.workers(instances.len());
    let healths = bounded_map(instances, workers, |name| {
        catch_unwind(AssertUnwindSafe(|| ops.health(name))).unwrap_or(Health::Unknown)
    });
    instances.iter().cloned().zip(healths).collect()
}

/// Each registration by id (`RunnerOps::registration`), `concurrency` at a time, in the
/// ids' order. A panicking check is that check's failure.
pub fn check_registrations(
    ops: &dyn RunnerOps,
    ids: &[u64],
    concurrency: Concurrency,
) -> Vec<Result<Option<GitHubRunner>, OpError>> {
    bounded_map(ids, concurrency.workers(ids.len()), |id| {
        guarded(|| ops.registration(*id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::ops::Observation;
    use crate::manager::planner::RemovalTarget;
    use std::collections::BTreeSet;
    use std::sync::atomic::AtomicBool;
    use std::sync::Barrier;
    use std::time::{Duration, Instant};

    /// In-memory ops that count how many calls are in flight at once.
    #[derive(Default)]
    struct CountingOps {
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        created: AtomicUsize,
        /// Names whose removal fails / answers busy / panics.
        fail: BTreeSet<String>,
        busy: BTreeSet<String>,
        panic: BTreeSet<String>,
        fail_every_create: bool,
        /// When set, every call waits here until `width` calls are inside at once, proving
        /// they overlap without sleeping.
        rendezvous: Option<Barrier>,
        removed: Mutex<Vec<(String, bool)>>,
    }

    impl CountingOps {
        fn enter(&self) {
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(barrier) = &self.rendezvous {
                barrier.wait();
            } else {
                // Give the other workers a chance to enter while this call is in flight.
                std::thread::yield_now();
            }
        }

        fn leave(&self) {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl RunnerOps for CountingOps {
        fn observe(&self) -> Result<Observation, OpError> {
            Ok(Observation {
                instances: vec![],
                github: Ok(vec![]),
            })
        }

        fn create(&self) -> Result<RunnerName, OpError> {
            self.enter();
            let n = self.created.fetch_add(1, Ordering::SeqCst);
            self.leave();
            if self.fail_every_create {
                return Err(OpError::transient("GitHub server error 502"));
            }
            Ok(RunnerName(format!("new-{n:02}")))
        }

        fn remove(&self, target: &RemovalTarget, force: bool) -> Result<RemoveOutcome, OpError> {
            self.enter();
            let name = target.name.as_str().to_string();
            self.leave();
            if self.panic.contains(&name) {
                panic!("bug while removing {name}");
            }
            if self.fail.contains(&name) {
                return Err(OpError::transient(format!("lxc delete {name} failed")));
            }
            if self.busy.contains(&name) && !force {
                return Ok(RemoveOutcome::KeptBusy);
            }
            self.removed.lock().unwrap().push((name, force));
            Ok(RemoveOutcome::Removed)
        }

        fn registration(&self, _id: u64) -> Result<Option<GitHubRunner>, OpError> {
            Ok(None)
        }

        fn health(&self, instance: &str) -> Health {
            self.enter();
            self.leave();
            if self.panic.contains(instance) {
                panic!("bug while probing {instance}");
            }
            if self.fail.contains(instance) {
                Health::NotRunning
            } else {
                Health::Running
            }
        }

        fn job_started_at(&self, _: &RunnerName) -> Result<Option<u64>, OpError> {
            Ok(None)
        }
        fn mark_for_replacement(&self, _: &RunnerName, _: &str) -> Result<(), OpError> {
            Ok(())
        }
    }

    fn removal(name: &str) -> Removal {
        Removal {
            target: RemovalTarget {
                name: RunnerName(name.to_string()),
                has_instance: true,
                github_id: Some(1),
            },
            reason: RemovalReason::Surplus,
            force: false,
        }
    }

    fn plan(create: u32, remove: &[&str]) -> Plan {
        Plan {
            create,
            removals: remove.iter().map(|n| removal(n)).collect(),
            ..Plan::empty(create)
        }
    }

    #[test]
    fn the_failure_summary_names_each_failed_operation() {
        let mut report = Report::default();
        assert_eq!(report.failure_summary(), None);
        report.failed = vec![
            Failure {
                operation: Operation::Remove {
                    name: RunnerName("a".into()),
                    reason: RemovalReason::Flush,
                },
                error: OpError::transient("GitHub server error 502"),
            },
            Failure {
                operation: Operation::Create,
                error: OpError::transient("lxc launch failed"),
            },
        ];
        assert_eq!(
            report.failure_summary().as_deref(),
            Some(
                "could not remove a (flushed): GitHub server error 502; \
                 could not create a runner: lxc launch failed"
            )
        );
    }

    #[test]
    fn workers_follow_the_bound() {
        assert_eq!(Concurrency::Default.workers(3), 3);
        assert_eq!(Concurrency::Default.workers(20), 8);
        assert_eq!(Concurrency::Serial.workers(20), 1);
        assert_eq!(Concurrency::AtMost(0).workers(5), 1);
        assert_eq!(Concurrency::AtMost(3).workers(5), 3);
        assert_eq!(Concurrency::Default.workers(0), 0);
    }

    #[test]
    fn the_bound_is_respected_and_reached() {
        for (concurrency, expected) in [
            (Concurrency::Serial, 1),
            (Concurrency::AtMost(3), 3),
            (Concurrency::Default, 8),
        ] {
            // The barrier only lets calls through in groups of `expected`: the run finishes
            // only if that many are really in flight together, and the counter proves no more.
            let ops = CountingOps {
                rendezvous: Some(Barrier::new(expected)),
                ..CountingOps::default()
            };
            let report = apply(&plan(24, &[]), &ops, concurrency, &no_progress);
            assert_eq!(report.created.len(), 24);
            assert_eq!(
                ops.max_in_flight.load(Ordering::SeqCst),
                expected,
                "{concurrency:?}"
            );
        }
    }

    #[test]
    fn failures_and_panics_do_not_stop_the_others() {
        let ops = CountingOps {
            fail: ["b".to_string()].into(),
            panic: ["c".to_string()].into(),
            busy: ["d".to_string()].into(),
            ..CountingOps::default()
        };
        let report = apply(
            &plan(2, &["a", "b", "c", "d", "e"]),
            &ops,
            Concurrency::Default,
            &no_progress,
        );
        assert_eq!(
            report.created,
            vec![RunnerName("new-00".into()), RunnerName("new-01".into())]
        );
        let removed: Vec<&str> = report.removed.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(removed, vec!["a", "e"]);
        assert_eq!(report.kept_busy, vec![RunnerName("d".into())]);
        assert_eq!(report.failed.len(), 2);
        assert!(
            report.failed[0].to_string().contains("remove b"),
            "{}",
            report.failed[0]
        );
        assert!(report.failed[0]
            .error
            .message
            .contains("lxc delete b failed"));
        assert!(report.failed[1]
            .error
            .message
            .contains("bug while removing c"));
        assert!(!report.is_clean());
    }

    #[test]
    fn every_create_failing_still_reports_each() {
        let ops = CountingOps {
            fail_every_create: true,
            ..CountingOps::default()
        };
        let report = apply(&plan(5, &[]), &ops, Concurrency::Default, &no_progress);
        assert!(report.created.is_empty());
        assert_eq!(report.failed.len(), 5);
        assert!(report
            .failed
            .iter()
            .all(|f| f.operation == Operation::Create));
    }

    #[test]
    fn force_is_passed_through() {
        let ops = CountingOps {
            busy: ["a".to_string()].into(),
            ..CountingOps::default()
        };
        let mut forced = removal("a");
        forced.force = true;
        let report = remove_all(&[forced], &ops, Concurrency::Serial, &no_progress);
        assert_eq!(report.removed.len(), 1);
        assert_eq!(*ops.removed.lock().unwrap(), vec![("a".to_string(), true)]);
    }

    #[test]
    fn progress_counts_every_operation_once() {
        let ops = CountingOps {
            fail: ["x".to_string()].into(),
            ..CountingOps::default()
        };
        let seen = Mutex::new(Vec::new());
        let sink = |p: &Progress| seen.lock().unwrap().push((p.done, p.total, p.to_string()));
        apply(&plan(3, &["x", "y"]), &ops, Concurrency::AtMost(2), &sink);
        let mut seen = seen.into_inner().unwrap();
        seen.sort();
        let dones: Vec<usize> = seen.iter().map(|s| s.0).collect();
        assert_eq!(dones, vec![1, 2, 3, 4, 5]);
        assert!(seen.iter().all(|s| s.1 == 5));
        assert!(
            seen.iter().any(|s| s.2.contains("could not remove x")),
            "{seen:?}"
        );
        assert_eq!(
            seen.iter().filter(|s| s.2.contains("created new-")).count(),
            3
        );
    }

    #[test]
    fn empty_plan_does_nothing() {
        let ops = CountingOps::default();
        assert_eq!(
            apply(&plan(0, &[]), &ops, Concurrency::Default, &no_progress),
            Report::default()
        );
        assert_eq!(ops.max_in_flight.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn health_is_probed_in_parallel_and_panics_become_unknown() {
        let ops = CountingOps {
            fail: ["down".to_string()].into(),
            panic: ["bug".to_string()].into(),
            ..CountingOps::default()
        };
        let names: Vec<String> = ["up", "down", "bug"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let health = probe_health(&ops, &names, Concurrency::Default);
        assert_eq!(health["up"], Health::Running);
        assert_eq!(health["down"], Health::NotRunning);
        assert_eq!(health["bug"], Health::Unknown);
    }

    #[test]
    fn bounded_map_keeps_order_and_overlaps() {
        // Three jobs that each wait until all three have started: finishes only if they run
        // together; a deadline turns a regression into a failure instead of a hang.
        let started = AtomicUsize::new(0);
        let timed_out = AtomicBool::new(false);
        let out = bounded_map(&[1, 2, 3], 3, |x| {
            started.fetch_add(1, Ordering::SeqCst);
            let deadline = Instant::now() + Duration::from_secs(10);
            while started.load(Ordering::SeqCst) < 3 {
                if Instant::now() > deadline {
                    timed_out.store(true, Ordering::SeqCst);
                    break;
                }
                std::thread::yield_now();
            }
            x * 10
        });
        assert_eq!(out, vec![10, 20, 30]);
        assert!(!timed_out.load(Ordering::SeqCst));
    }
}
