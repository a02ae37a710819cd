//! One worker's loop: lease a message, decide (`reactive::job`), act, settle; then the next.
//!
//! Effects go through small traits: the broker ([`JobQueue`]), GitHub's view of a job
//! ([`JobSource`]), runner creation and removal ([`JobRunners`]) and what the worker reports
//! ([`WorkerReport`]: metrics and its state for the charm's status). The worker never sleeps
//! while it holds a message: a backoff is a not-before time on the requeued message, and a
//! pause (GitHub or LXD down) happens after the message went back unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::claim::{Claim, ClaimAttempt, ClaimDir};
use super::job::{
    decide_on_job, screen, settle_after_wait, Decision, DropReason, JobLookup, JobTarget,
    PickupOutcome, Settlement, UnitScope,
};
use super::pacing::{next_lookup_in, PaceInput};
use super::queue::{Delivery, JobQueue, QueueError, QueueLength};
use crate::clock::Clock;
use crate::github::outcomes::RateLimit;

pub use super::github_jobs::{lookup_error, GitHubJobs};

/// The timing of a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerTimings {
    /// How long one lease call blocks on the broker when the queue is empty.
    pub lease_wait: Duration,
    /// Lease length: longer than a runner creation, renewed while waiting for pickup.
    pub lease_for: Duration,
    /// How long a spawned runner may wait for GitHub to hand it the job.
    pub pickup_bound: Duration,
    /// Between two checks while waiting for pickup (the stop flag, a sibling's claim on our
    /// runner, the lease); GitHub is asked at the pace of [`super::pacing`], never more often.
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
    /// Admission refused it: the machine holds no more runners now.
    pub no_room: bool,
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
    /// The rate-limit budget GitHub last reported (paces the looks while waiting for
    /// pickup); None when unknown.
    fn budget(&self) -> Option<RateLimit> {
        None
    }
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
    /// Admission's last refusal, while the job it refused waits on the queue for room.
    pub no_room: Option<String>,
    /// The token cannot read the jobs of a repository this worker got a job of
    /// ([`crate::messages::cannot_read_jobs`]); cleared when a job there is read.
    pub job_access: Option<String>,
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
    /// The message being handled was refused for want of room.
    refused_now: bool,
    /// The repository `state.job_access` names.
    unreadable_repo: Option<String>,
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
            refused_now: false,
            unreadable_repo: None,
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
        // A refusal stays shown until a message of this worker ends otherwise.
        let refused = self.state.no_room.is_some() && self.refused_now;
        self.refused_now = false;
        self.set_state(|s| {
            s.busy = false;
            s.runner = None;
            if !refused {
                s.no_room = None;
            }
        });
        round
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
        self.note_access(&target, &lookup);
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
                self.spawn_and_settle(&d, &target, &name, &mut claim)
            }
        };
        if let Err(e) = claim.release() {
            tracing::warn!("{e}");
        }
        round
    }

    fn spawn_and_settle(
        &mut self,
        d: &Delivery,
        target: &JobTarget,
        name: &str,
        claim: &mut Claim,
    ) -> Round {
        let started = Instant::now();
        self.set_state(|s| s.runner = Some(name.to_string()));
        let (outcome, picker) = match self.runners.create(name) {
            Err(f) if f.no_room => {
                tracing::info!(runner = name, job = target.job_id, "{}", f.message);
                self.refused_now = true;
                self.set_state(|s| s.no_room = Some(f.message));
                (PickupOutcome::NoRoom, None)
            }
            Err(f) => {
                tracing::warn!(runner = name, job = target.job_id, "{}", f.message);
                let retry_epoch = f.retry_epoch;
                (PickupOutcome::SpawnFailed { retry_epoch }, None)
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
                        self.release(d);
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
                let ours_busy = self.remove_unused(name) == Some(RunnerRemoval::Busy);
                match picker {
                    Some(p) if self.claims.runner_serves_another_job(&p, target.job_id) => {
                        // A sibling's runner took this job: it serves this one now, and
                        // the sibling learns from this claim that its job needs another.
                        tracing::info!(runner = %p, job = target.job_id, "taken by a sibling's runner");
                        if let Err(e) = claim.record_runner(self.slot, &p) {
                            tracing::warn!("{e}");
                        }
                        self.set_state(|s| s.runner = Some(p.clone()));
                        self.wait_runner_gone(&p);
                    }
                    _ if ours_busy => self.wait_runner_gone(name),
                    _ => {}
                }
            }
            Settlement::RequeueRemoveRunner { not_before_epoch } => {
                if self.remove_unused(name) == Some(RunnerRemoval::Busy) {
                    // It took a job after the last look: this one only if GitHub says so.
                    match self.jobs.lookup(target) {
                        (JobLookup::Found(state), runner) if state.is_picked() => {
                            self.ack_picked(d);
                            if runner.as_deref() == Some(name) {
                                self.wait_runner_gone(name);
                            }
                        }
                        _ => self.crossed_over(d, target, name),
                    }
                } else {
                    self.requeue(d, not_before_epoch);
                }
            }
            Settlement::ReleaseKeepRunner => self.crossed_over(d, target, name),
            Settlement::DropRemoveRunner(reason) => {
                self.remove_unused(name);
                self.drop_message(d, &reason);
            }
            Settlement::ReleaseAndPause { resume_epoch } => {
                return self.release_and_pause(d, resume_epoch);
            }
            Settlement::Defer { not_before_epoch } => {
                let r = self.queue.defer(d, not_before_epoch);
                self.settle_err("defer", d, r);
            }
        }
        Round::Handled
    }

    /// Our runner took another job while this one is still queued: the message goes back
    /// unchanged (the next handling makes a runner for it); the runner is left to its job.
    fn crossed_over(&mut self, d: &Delivery, target: &JobTarget, name: &str) {
        tracing::info!(
            runner = name,
            job = target.job_id,
            "the runner took another job; this job goes back on the queue"
        );
        self.release(d);
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

    /// Waits until some runner took the job (and which), GitHub no longer knows it, our
    /// runner took another job of this unit, the bound passed, or the worker stops (None).
    /// GitHub is asked at the pace of [`next_lookup_in`]; the lease is renewed at each step.
    fn wait_for_pickup(
        &mut self,
        d: &Delivery,
        target: &JobTarget,
        name: &str,
    ) -> Option<(PickupOutcome, Option<String>)> {
        let spawned = self.clock.now_epoch();
        let deadline = spawned + self.timings.pickup_bound.as_secs();
        let mut next_look = spawned + self.pace(spawned, spawned);
        loop {
            if self.stopping() {
                return None;
            }
            let now = self.clock.now_epoch();
            let crossed = self.claims.runner_serves_another_job(name, target.job_id);
            if crossed || now >= next_look || now >= deadline {
                match self.jobs.lookup(target) {
                    (JobLookup::Found(state), runner) if state.is_picked() => {
                        let outcome = if runner.as_deref() == Some(name) {
                            PickupOutcome::PickedByOurs
                        } else {
                            PickupOutcome::PickedByOther
                        };
                        return Some((outcome, runner));
                    }
                    (JobLookup::NotFound, _) => return Some((PickupOutcome::JobGone, None)),
                    _ if crossed => return Some((PickupOutcome::CrossedOver, None)),
                    // At the bound, a runner gone while the job is queued took another job
                    // (one whose worker was too quick to be seen above) or crashed.
                    _ if now >= deadline && self.runners.exists(name) == Ok(false) => {
                        return Some((PickupOutcome::RunnerGone, None))
                    }
                    _ => {}
                }
                if now >= deadline {
                    return Some((PickupOutcome::NotPicked, None));
                }
                next_look = now + self.pace(spawned, now);
            }
            if let Err(e) = self.queue.renew(d, self.timings.lease_for) {
                tracing::warn!(message = %d.id, "lease renewal failed: {e}");
            }
            self.pause(self.timings.pickup_poll);
        }
    }

    /// Seconds until the next look at the job (rounded up).
    fn pace(&self, spawned: u64, now: u64) -> u64 {
        let wait = next_lookup_in(&PaceInput {
            budget: self.jobs.budget(),
            now_epoch: now,
            waiters: self.claims.held_jobs() as u64,
            since_spawn: Duration::from_secs(now.saturating_sub(spawned)),
        });
        wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
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

#[path = "worker_settle.rs"]
mod settle;

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
