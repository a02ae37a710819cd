//! One worker's loop: lease a message, decide (`reactive::job`), act, settle; then the next.
//!
//! Effects go through small traits: the broker ([`JobQueue`]), GitHub's view of a job
//! ([`JobSource`]), runner creation and removal ([`JobRunners`]) and what the worker reports
//! ([`WorkerReport`]: metrics and its state for the charm's status). The worker never sleeps
//! while it holds a message: a backoff is a not-before time on the requeued message, and a
//! pause (GitHub or LXD down) happens after the message went back unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::claim::{ClaimAttempt, ClaimDir};
use super::job::{
    decide_on_job, screen, settle_after_wait, Decision, DropReason, JobLookup, JobState, JobTarget,
    PickupOutcome, Settlement, UnitScope,
};
use super::queue::{Delivery, JobQueue, QueueError, QueueLength};
use crate::clock::Clock;
use crate::github::{GitHub, GitHubError, JobRef};

/// The timing of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerTimings {
    /// How long one lease call blocks on the broker when the queue is empty.
    pub lease_wait: Duration,
    /// Lease length: longer than a runner creation, renewed while waiting for pickup.
    pub lease_for: Duration,
    /// How long a spawned runner may wait for GitHub to hand it the job.
    pub pickup_bound: Duration,
    /// Between two looks at the job while waiting for pickup.
    pub pickup_poll: Duration,
    /// Between two looks at whether the runner that took the job is gone.
    pub runner_end_poll: Duration,
    /// First pause after the broker failed; doubles up to `max_broker_backoff`.
    pub broker_backoff: Duration,
    pub max_broker_backoff: Duration,
}

impl Default for WorkerTimings {
    fn default() -> Self {
        WorkerTimings {
            lease_wait: Duration::from_secs(5),
            lease_for: Duration::from_secs(900),
            pickup_bound: Duration::from_secs(300),
            pickup_poll: Duration::from_secs(3),
            runner_end_poll: Duration::from_secs(5),
            broker_backoff: Duration::from_secs(1),
            max_broker_backoff: Duration::from_secs(60),
        }
    }
}

/// Why a runner could not be created, and when to try again if that is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpawnFailure {
    pub message: String,
    pub retry_epoch: Option<u64>,
}

/// Whether an unused runner went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerRemoval {
    Removed,
    /// It runs a job: it stays and ends on its own.
    Busy,
}

/// Runner effects of the unit: creation with the unit's labels, idle removal, presence.
pub trait JobRunners {
    /// A fresh runner name of this unit (recorded in the claim before creation).
    fn new_name(&self) -> Result<String, String>;
    fn create(&self, name: &str) -> Result<(), SpawnFailure>;
    fn remove_if_idle(&self, name: &str) -> Result<RunnerRemoval, String>;
    /// The runner's instance still exists (an ephemeral runner is deleted after its job).
    fn exists(&self, name: &str) -> Result<bool, String>;
}

/// GitHub's view of a job: its state and the runner it was handed to.
pub trait JobSource {
    fn lookup(&self, job: &JobTarget) -> (JobLookup, Option<String>);
}

/// What a worker reports: metrics and its state.
pub trait WorkerReport {
    fn event(&self, event: WorkerEvent);
    fn state(&self, state: &WorkerState);
}

/// A worker's metrics events.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    JobReceived,
    JobDropped {
        reason: &'static str,
    },
    RunnerSpawned {
        seconds: f64,
    },
    /// `queue_seconds`: from the message's enqueue to the pickup, when the broker knew.
    PickedUp {
        queue_seconds: Option<f64>,
    },
    Requeued {
        process_count: u32,
    },
}

/// What a worker is doing, for the charm's status and check-runners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerState {
    /// Holding a message, or a runner that runs its job.
    pub busy: bool,
    /// The runner this worker spawned, while it exists.
    pub runner: Option<String>,
    /// Last queue length seen, when the broker answered.
    pub queue: Option<QueueLength>,
    /// The broker's last error (host only, never credentials).
    pub broker_error: Option<String>,
}

/// [`JobSource`] over the GitHub client: the job by owner, repository and id (never the
/// message's URL as given: the token goes only to the configured API).
pub struct GitHubJobs<'a>(pub &'a dyn GitHub);

impl JobSource for GitHubJobs<'_> {
    fn lookup(&self, job: &JobTarget) -> (JobLookup, Option<String>) {
        let job_ref = JobRef::Id {
            owner: job.owner.clone(),
            repo: job.repo.clone(),
            job_id: job.job_id,
        };
        match self.0.get_job(&job_ref) {
            Ok(j) => (
                JobLookup::Found(JobState::from_status(&j.status)),
                j.runner_name,
            ),
            Err(e) => (lookup_error(&e), None),
        }
    }
}

/// A failed job lookup in the decision table's terms.
pub fn lookup_error(e: &GitHubError) -> JobLookup {
    match e {
        GitHubError::NotFound { .. } => JobLookup::NotFound,
        GitHubError::RateLimited { reset_epoch, .. } => JobLookup::Unavailable {
            until_epoch: Some(*reset_epoch),
        },
        GitHubError::Transport { .. }
        | GitHubError::Server { .. }
        | GitHubError::Unauthorized { .. }
        | GitHubError::Credential { .. } => JobLookup::Unavailable { until_epoch: None },
        other => JobLookup::Refused(other.to_string()),
    }
}

/// How one round of the loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Round {
    /// Nothing to lease within the wait.
    Idle,
    Handled,
    /// The broker failed; the worker paused.
    BrokerDown,
    /// The stop flag was raised; whatever was held went back.
    Stopped,
}

/// One worker.
pub struct Worker<'a> {
    pub queue: &'a mut dyn JobQueue,
    pub jobs: &'a dyn JobSource,
    pub runners: &'a dyn JobRunners,
    pub claims: &'a ClaimDir,
    pub scope: &'a UnitScope,
    pub clock: &'a dyn Clock,
    pub report: &'a dyn WorkerReport,
    /// Raised by SIGTERM: finish or hand back what is held, then return.
    pub stop: &'a AtomicBool,
    pub slot: u32,
    pub timings: WorkerTimings,
    state: WorkerState,
    broker_backoff: Duration,
}

impl<'a> Worker<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        queue: &'a mut dyn JobQueue,
        jobs: &'a dyn JobSource,
        runners: &'a dyn JobRunners,
        claims: &'a ClaimDir,
        scope: &'a UnitScope,
        clock: &'a dyn Clock,
        report: &'a dyn WorkerReport,
        stop: &'a AtomicBool,
        slot: u32,
        timings: WorkerTimings,
    ) -> Self {
        Worker {
            queue,
            jobs,
            runners,
            claims,
            scope,
            clock,
            report,
            stop,
            slot,
            timings,
            state: WorkerState::default(),
            broker_backoff: timings.broker_backoff,
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Runs until the stop flag is raised.
    pub fn run(&mut self) {
        while !self.stopping() {
            self.round();
        }
    }

    fn set_state(&mut self, change: impl FnOnce(&mut WorkerState)) {
        change(&mut self.state);
        self.report.state(&self.state);
    }

    /// Waits `d` (or until stopped) in steps of at most a second, holding nothing.
    fn pause(&self, d: Duration) {
        let mut left = d;
        while !left.is_zero() && !self.stopping() {
            let step = left.min(Duration::from_secs(1));
            self.clock.sleep(step);
            left = left.saturating_sub(step);
        }
    }

    fn pause_until(&self, epoch: u64) {
        let now = self.clock.now_epoch();
        self.pause(Duration::from_secs(epoch.saturating_sub(now)));
    }

    fn broker_failed(&mut self, e: &QueueError) {
        tracing::warn!(
            slot = self.slot,
            "{e}; retrying in {:?}",
            self.broker_backoff
        );
        let host = match e {
            QueueError::Unreachable { host, .. } | QueueError::Refused { host, .. } => host.clone(),
            QueueError::LeaseLost { .. } => String::new(),
        };
        self.set_state(|s| s.broker_error = Some(host));
        self.pause(self.broker_backoff);
        self.broker_backoff = (self.broker_backoff * 2).min(self.timings.max_broker_backoff);
    }

    fn broker_ok(&mut self) {
        self.broker_backoff = self.timings.broker_backoff;
        if self.state.broker_error.is_some() {
            self.set_state(|s| s.broker_error = None);
        }
    }

    /// Leases one message and handles it completely.
    pub fn round(&mut self) -> Round {
        if self.stopping() {
            return Round::Stopped;
        }
        let lease = self
            .queue
            .lease_next(self.timings.lease_wait, self.timings.lease_for);
        let delivery = match lease {
            Ok(Some(d)) => d,
            Ok(None) => {
                match self.queue.len() {
                    Ok(len) => {
                        self.broker_ok();
                        self.set_state(|s| s.queue = Some(len));
                    }
                    Err(e) => {
                        self.broker_failed(&e);
                        return Round::BrokerDown;
                    }
                }
                return Round::Idle;
            }
            Err(e) => {
                self.broker_failed(&e);
                return Round::BrokerDown;
            }
        };
        self.broker_ok();
        self.set_state(|s| s.busy = true);
        let round = self.handle(delivery);
        self.set_state(|s| {
            s.busy = false;
            s.runner = None;
        });
        round
    }

    fn settle_err(&self, what: &str, d: &Delivery, r: Result<(), QueueError>) {
        if let Err(e) = r {
            // The lease expires and the message returns: at-least-once holds.
            tracing::warn!(message = %d.id, "could not {what} the message: {e}");
        }
    }

    fn drop_message(&mut self, d: &Delivery, reason: &DropReason) {
        tracing::info!(message = %d.id, "dropping job message: {reason}");
        let r = self.queue.ack(d);
        self.settle_err("ack", d, r);
        self.report.event(WorkerEvent::JobDropped {
            reason: reason.name(),
        });
    }

    fn requeue(&mut self, d: &Delivery, not_before_epoch: u64) {
        let r = self.queue.requeue(d, not_before_epoch);
        self.settle_err("requeue", d, r);
        self.report.event(WorkerEvent::Requeued {
            process_count: d.process_count + 1,
        });
    }

    fn release_and_pause(&mut self, d: &Delivery, resume_epoch: u64) -> Round {
        let r = self.queue.release(d);
        self.settle_err("release", d, r);
        self.pause_until(resume_epoch);
        Round::Handled
    }

    fn handle(&mut self, d: Delivery) -> Round {
        self.report.event(WorkerEvent::JobReceived);
        let target = match screen(self.scope, &d.body, d.process_count) {
            Ok(t) => t,
            Err(reason) => {
                self.drop_message(&d, &reason);
                return Round::Handled;
            }
        };
        let mut claim = match self.claims.claim(target.job_id, self.slot, &d.id) {
            Ok(ClaimAttempt::Claimed(c)) => c,
            Ok(ClaimAttempt::HeldByAnother) => {
                self.drop_message(&d, &DropReason::Duplicate);
                return Round::Handled;
            }
            Ok(ClaimAttempt::HeldForThisMessage) => {
                // Never dropped: if the holder's runner goes unpicked, this is the only copy.
                let not_before = self.clock.now_epoch() + self.timings.lease_for.as_secs();
                tracing::info!(
                    message = %d.id,
                    job = target.job_id,
                    "lease lapsed while another worker handles the job; back on the queue"
                );
                let r = self.queue.defer(&d, not_before);
                self.settle_err("defer", &d, r);
                return Round::Handled;
            }
            Err(e) => {
                tracing::warn!("{e}");
                let resume = self.clock.now_epoch() + super::job::PAUSE_SECS;
                return self.release_and_pause(&d, resume);
            }
        };
        if let Some(left) = claim.leftover_runner.take() {
            // A worker died holding this job: its runner is removed unless it took a job.
            match self.runners.remove_if_idle(&left) {
                Ok(r) => tracing::info!(runner = %left, "runner of a dead worker: {r:?}"),
                Err(e) => tracing::warn!(runner = %left, "runner of a dead worker kept: {e}"),
            }
        }
        let (lookup, _) = self.jobs.lookup(&target);
        let now = self.clock.now_epoch();
        let round = match decide_on_job(&lookup, d.process_count, now) {
            Decision::Drop(reason) => {
                self.drop_message(&d, &reason);
                Round::Handled
            }
            Decision::AckPicked => {
                let r = self.queue.ack(&d);
                self.settle_err("ack", &d, r);
                Round::Handled
            }
            Decision::Requeue { not_before_epoch } => {
                self.requeue(&d, not_before_epoch);
                Round::Handled
            }
            Decision::ReleaseAndPause { resume_epoch } => {
                if let Err(e) = claim.release() {
                    tracing::warn!("{e}");
                }
                return self.release_and_pause(&d, resume_epoch);
            }
            Decision::Spawn => {
                let name = match self.runners.new_name() {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!("{e}");
                        let resume = now + super::job::PAUSE_SECS;
                        drop(claim);
                        return self.release_and_pause(&d, resume);
                    }
                };
                if let Err(e) = claim.record_runner(self.slot, &name) {
                    tracing::warn!("{e}");
                }
                self.spawn_and_settle(&d, &target, &name)
            }
        };
        if let Err(e) = claim.release() {
            tracing::warn!("{e}");
        }
        round
    }

    fn spawn_and_settle(&mut self, d: &Delivery, target: &JobTarget, name: &str) -> Round {
        let started = Instant::now();
        self.set_state(|s| s.runner = Some(name.to_string()));
        let outcome = match self.runners.create(name) {
            Err(f) => {
                tracing::warn!(runner = name, job = target.job_id, "{}", f.message);
                PickupOutcome::SpawnFailed {
                    retry_epoch: f.retry_epoch,
                }
            }
            Ok(()) => {
                self.report.event(WorkerEvent::RunnerSpawned {
                    seconds: started.elapsed().as_secs_f64(),
                });
                match self.wait_for_pickup(d, target, name) {
                    Some(o) => o,
                    None => {
                        // Stopping: the unused runner goes, the message goes back unchanged.
                        self.remove_unused(name);
                        let r = self.queue.release(d);
                        self.settle_err("release", d, r);
                        return Round::Stopped;
                    }
                }
            }
        };
        let now = self.clock.now_epoch();
        match settle_after_wait(&outcome, d.process_count, now) {
            Settlement::AckKeepRunner => {
                self.ack_picked(d);
                self.wait_runner_gone(name);
            }
            Settlement::AckRemoveRunner => {
                let r = self.queue.ack(d);
                self.settle_err("ack", d, r);
                if self.remove_unused(name) == Some(RunnerRemoval::Busy) {
                    self.wait_runner_gone(name);
                }
            }
            Settlement::RequeueRemoveRunner { not_before_epoch } => {
                if self.remove_unused(name) == Some(RunnerRemoval::Busy) {
                    // It took a job after the last look: most likely this one.
                    self.ack_picked(d);
                    self.wait_runner_gone(name);
                } else {
                    self.requeue(d, not_before_epoch);
                }
            }
            Settlement::DropRemoveRunner(reason) => {
                self.remove_unused(name);
                self.drop_message(d, &reason);
            }
            Settlement::ReleaseAndPause { resume_epoch } => {
                return self.release_and_pause(d, resume_epoch);
            }
        }
        Round::Handled
    }

    fn ack_picked(&mut self, d: &Delivery) {
        let r = self.queue.ack(d);
        self.settle_err("ack", d, r);
        let queue_seconds = d
            .enqueued_epoch
            .map(|e| self.clock.now_epoch().saturating_sub(e) as f64);
        self.report.event(WorkerEvent::PickedUp { queue_seconds });
    }

    fn remove_unused(&self, name: &str) -> Option<RunnerRemoval> {
        match self.runners.remove_if_idle(name) {
            Ok(r) => Some(r),
            Err(e) => {
                // The next reconcile removes it: no live claim names it any more.
                tracing::warn!(runner = name, "could not remove the unused runner: {e}");
                None
            }
        }
    }

    /// Looks at the job until some runner took it, the bound passed, or the worker stops
    /// (None). Renews the lease on every look.
    fn wait_for_pickup(
        &mut self,
        d: &Delivery,
        target: &JobTarget,
        name: &str,
    ) -> Option<PickupOutcome> {
        let deadline = self.clock.now_epoch() + self.timings.pickup_bound.as_secs();
        loop {
            if self.stopping() {
                return None;
            }
            match self.jobs.lookup(target) {
                (JobLookup::Found(state), runner) if state.is_picked() => {
                    return Some(if runner.as_deref() == Some(name) {
                        PickupOutcome::PickedByOurs
                    } else {
                        PickupOutcome::PickedByOther
                    });
                }
                (JobLookup::NotFound, _) => return Some(PickupOutcome::JobGone),
                _ => {}
            }
            if self.clock.now_epoch() >= deadline {
                return Some(PickupOutcome::NotPicked);
            }
            if let Err(e) = self.queue.renew(d, self.timings.lease_for) {
                tracing::warn!(message = %d.id, "lease renewal failed: {e}");
            }
            self.pause(self.timings.pickup_poll);
        }
    }

    /// Holds the job's claim (so no flush takes the runner) until its runner is gone or the
    /// worker stops (the runner then runs on and ends by itself).
    fn wait_runner_gone(&mut self, name: &str) {
        while !self.stopping() {
            match self.runners.exists(name) {
                Ok(false) => return,
                Ok(true) => {}
                Err(e) => tracing::warn!(runner = name, "{e}"),
            }
            self.pause(self.timings.runner_end_poll);
        }
    }
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
