//! The scale-set listener: get or create the scale set, hold its message session, long
//! poll, and for each message do its work (acquire, busy, finished runners out, scale to
//! the statistics) before acknowledging it. A thin shell over `listener_state`'s decisions;
//! every effect goes through [`ScaleSetApi`], [`ListenerRunners`], [`MessageCursor`],
//! [`ListenerReport`] and the clock. Run by the listener process (`scaleset::run`).

use super::api::{ListenerRunners, ScaleSetApi};
use super::ledger::{retired_name, HeldScaleSet, ScaleSetLedger};
use super::listener_state::{
    on_message, other_owner, recovery, retry_delay, scale_plan, time_to_runner, track, Action,
    ListenerConfig, ListenerPhase, ListenerState, MessageCursor, Recovery, TimeToRunner,
};
use super::repair::{self, RepairView, REPAIR_INTERVAL};
use super::{NewScaleSet, ScaleSetError, ScaleSetMessage, Session, Statistics};
use crate::clock::Clock;
use crate::github::DeleteOutcome;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Told every phase change (the worker writes it where the status reads it).
pub trait ListenerReport: Send + Sync {
    fn phase(&self, phase: &ListenerPhase);
    /// The statistics scaling is about to act on (a session's first, then each message's).
    fn statistics(&self, _statistics: &Statistics) {}
    /// A job seen assigned reached a runner.
    fn time_to_runner(&self, _time: &TimeToRunner) {}
}

/// Everything the loop works through.
pub struct ListenerEdges<'a> {
    pub api: &'a dyn ScaleSetApi,
    pub runners: &'a dyn ListenerRunners,
    pub cursor: &'a dyn MessageCursor,
    /// The scale sets this unit held: which one is ours, which to drain and delete.
    pub ledger: &'a dyn ScaleSetLedger,
    pub report: &'a dyn ListenerReport,
    pub clock: &'a dyn Clock,
    /// Uniform in [0, 1): `crate::github::retry::jitter` outside tests.
    pub jitter: &'a (dyn Fn() -> f64 + Sync),
}

pub struct Listener<'a> {
    edges: ListenerEdges<'a>,
    config: ListenerConfig,
    state: ListenerState,
}

/// The one granularity of waiting: a stop is seen within it.
const WAIT_SLICE: Duration = Duration::from_secs(1);

impl<'a> Listener<'a> {
    pub fn new(config: ListenerConfig, edges: ListenerEdges<'a>) -> Listener<'a> {
        Listener {
            edges,
            config,
            state: ListenerState::default(),
        }
    }

    pub fn state(&self) -> &ListenerState {
        &self.state
    }

    /// Serve until `stop` is set (checked between polls and while waiting), then delete the
    /// session. Returns the error only the operator can fix, if one ended it.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), ScaleSetError> {
        self.edges.report.phase(&ListenerPhase::Starting);
        let mut session: Option<Session> = None;
        let mut failures = 0u32;
        let outcome = loop {
            if stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            let error = match self.step(&mut session, stop) {
                Ok(()) => {
                    failures = 0;
                    continue;
                }
                Err(e) => e,
            };
            match recovery(&error) {
                Recovery::NewSession => {
                    tracing::info!(error = %error, "opening a new message session");
                    session = None;
                }
                Recovery::RecreateScaleSet => {
                    tracing::warn!(error = %error, "the scale set is gone; creating it again");
                    session = None;
                    // Nothing left to drain or delete there.
                    let mut held = self.edges.ledger.load();
                    if held.remove(&self.state.scale_set_id).is_some() {
                        self.store_held(&held);
                    }
                    // The new scale set's id has no cursor yet: it starts from 0.
                    self.state.scale_set_id = 0;
                }
                Recovery::Backoff => {
                    let retry_in = retry_delay(failures, (self.edges.jitter)());
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %error, retry_in_s = retry_in.as_secs(), "listener retrying");
                    self.edges.report.phase(&ListenerPhase::Retrying {
                        error: error.to_string(),
                        retry_in,
                    });
                    self.wait(retry_in, stop);
                }
                Recovery::Fatal => break Err(error),
            }
        };
        if let Some(s) = session {
            if let Err(e) = self.edges.api.delete_session(&s) {
                tracing::warn!(error = %e, "could not delete the message session; it expires on its own");
            }
        }
        self.edges.report.phase(&ListenerPhase::Stopped);
        outcome
    }

    /// One poll and its work (opening the scale set and session first when needed).
    fn step(
        &mut self,
        session: &mut Option<Session>,
        stop: &AtomicBool,
    ) -> Result<(), ScaleSetError> {
        if self.state.scale_set_id == 0 {
            self.ensure_scale_set()?;
        }
        if session.is_none() {
            let Some(opened) = self.open_session(stop)? else {
                return Ok(());
            };
            self.record_held();
            self.state.statistics = opened.statistics;
            self.edges.report.statistics(&opened.statistics);
            self.edges.report.phase(&ListenerPhase::Listening {
                scale_set_id: self.state.scale_set_id,
            });
            *session = Some(opened);
            // A new session may follow a crash: its leftovers go before scaling counts them.
            self.state.next_repair_epoch = 0;
            self.repair_if_due();
            self.scale()?;
        }
        let Some(s) = session.as_mut() else {
            return Ok(());
        };
        self.repair_if_due();
        self.retry_removals();
        let (last, max) = (self.state.last_message_id, self.config.max_runners);
        match self.queue_call(s, |api, s| api.get_message(s, last, max))? {
            // Nothing came: the last statistics again (a runner may have gone meanwhile).
            None => self.scale(),
            Some(message) => self.handle(s, &message),
        }
    }

    /// What this listener asks its scale set to be.
    fn request(&self) -> HeldScaleSet {
        HeldScaleSet {
            name: self.config.scale_set_name.clone(),
            runner_group: self.config.runner_group.clone(),
            labels: self.config.labels.clone(),
        }
    }

    /// Get the scale set by name or create it. One of ours asked for with other labels
    /// (GitHub cannot change a scale set's labels) is retired: renamed, so that the new
    /// one can have its name, and drained by `repair` while its busy runners finish. A
    /// change of name or group finds nothing under the new one: the old one is retired the
    /// same way, through the ledger.
    fn ensure_scale_set(&mut self) -> Result<(), ScaleSetError> {
        let api = self.edges.api;
        let group_id = api.runner_group_id(&self.config.runner_group)?;
        let wanted = self.request();
        let mut held = self.edges.ledger.load();
        let set = match api.scale_set_by_name(group_id, &self.config.scale_set_name)? {
            Some(set) if held.get(&set.id).is_some_and(|h| !h.same_request(&wanted)) => {
                let retired = retired_name(set.id);
                tracing::info!(
                    scale_set_id = set.id,
                    %retired,
                    "the scale set's labels changed: it is retired (its busy runners finish there) and a new one made"
                );
                api.rename_scale_set(set.id, &retired)?;
                if let Some(h) = held.get_mut(&set.id) {
                    h.name = retired;
                }
                self.store_held(&held);
                self.create_scale_set(group_id)?
            }
            Some(set) => set,
            None => self.create_scale_set(group_id)?,
        };
        self.state.scale_set_id = set.id;
        self.state.last_message_id = self.edges.cursor.load(set.id);
        tracing::info!(
            scale_set_id = set.id,
            last_message_id = self.state.last_message_id,
            "scale set ready"
        );
        Ok(())
    }

    fn create_scale_set(&self, group_id: u64) -> Result<super::ScaleSet, ScaleSetError> {
        self.edges.api.create_scale_set(&NewScaleSet {
            name: self.config.scale_set_name.clone(),
            runner_group_id: group_id,
            labels: self.config.labels.clone(),
        })
    }

    /// The scale set a session opened on is this unit's: recorded with what it was asked
    /// for. Only then: one another deployment holds never gets a session, so never in.
    fn record_held(&self) {
        let mut held = self.edges.ledger.load();
        if held.get(&self.state.scale_set_id) != Some(&self.request()) {
            held.insert(self.state.scale_set_id, self.request());
            self.store_held(&held);
        }
    }

    fn store_held(&self, held: &super::ledger::Held) {
        if let Err(e) = self.edges.ledger.store(held) {
            tracing::warn!(error = %e, "could not keep the scale-set ledger; an earlier scale set may be left to delete by hand");
        }
    }

    /// Create the session, waiting out 409s; `None` when stopped while waiting.
    fn open_session(&mut self, stop: &AtomicBool) -> Result<Option<Session>, ScaleSetError> {
        let mut attempt = 0u32;
        loop {
            match self
                .edges
                .api
                .create_session(self.state.scale_set_id, &self.config.owner)
            {
                Ok(s) => return Ok(Some(s)),
                Err(e @ ScaleSetError::SessionConflict { .. }) => {
                    let retry_in = retry_delay(attempt, (self.edges.jitter)());
                    let ScaleSetError::SessionConflict { message, .. } = &e else {
                        unreachable!("matched above")
                    };
                    let phase = match other_owner(message, &self.config.owner) {
                        Some(owner) => {
                            tracing::warn!(%owner, "the scale set is another deployment's: not taken over");
                            ListenerPhase::HeldByAnother { owner, retry_in }
                        }
                        None => {
                            tracing::info!(error = %e, retry_in_s = retry_in.as_secs(), "waiting for the session to expire");
                            ListenerPhase::WaitingForSession { attempt, retry_in }
                        }
                    };
                    self.edges.report.phase(&phase);
                    if !self.wait(retry_in, stop) {
                        return Ok(None);
                    }
                    attempt = attempt.saturating_add(1);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A queue call; an expired token refreshes the session and the call is tried once
    /// more (a second expiry: the session is lost).
    fn queue_call<T>(
        &self,
        session: &mut Session,
        call: impl Fn(&dyn ScaleSetApi, &Session) -> Result<T, ScaleSetError>,
    ) -> Result<T, ScaleSetError> {
        match call(self.edges.api, session) {
            Err(ScaleSetError::MessageQueueTokenExpired { .. }) => {
                *session = self.edges.api.refresh_session(session)?;
                match call(self.edges.api, session) {
                    Err(ScaleSetError::MessageQueueTokenExpired { method, path }) => {
                        Err(ScaleSetError::SessionNotFound {
                            scale_set_id: session.scale_set_id,
                            method,
                            path,
                        })
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    /// A message's work in `on_message`'s order; an error leaves it unacknowledged.
    fn handle(
        &mut self,
        session: &mut Session,
        message: &ScaleSetMessage,
    ) -> Result<(), ScaleSetError> {
        for action in on_message(message) {
            match action {
                Action::Acquire(ids) => {
                    let got = self.queue_call(session, |api, s| api.acquire_jobs(s, &ids))?;
                    tracing::info!(asked = ids.len(), acquired = got.len(), "acquired jobs");
                }
                Action::Assigned(job_id) => {
                    let now = self.edges.clock.now_epoch();
                    track(&mut self.state.assigned_at, &job_id, now);
                }
                Action::MarkBusy { runner, job_id } => {
                    let now = self.edges.clock.now_epoch();
                    if let Some(t) = time_to_runner(&mut self.state, &runner, &job_id, now) {
                        self.edges.report.time_to_runner(&t);
                    }
                    self.state.busy.insert(runner);
                }
                Action::JobEnded(job_id) => {
                    self.state.assigned_at.remove(&job_id);
                }
                Action::RemoveFinished { name, runner_id } => {
                    self.state.busy.remove(&name);
                    self.state.pending_removals.insert(name.clone(), runner_id);
                    self.try_removal(&name);
                }
                Action::Scale(statistics) => {
                    self.state.statistics = statistics;
                    self.edges.report.statistics(&statistics);
                    self.scale()?;
                }
                Action::Ack(id) => {
                    if let Err(e) = self.edges.cursor.store(self.state.scale_set_id, id) {
                        tracing::warn!(error = %e, "could not persist the message cursor; a restart sees this message again");
                    }
                    self.state.last_message_id = id;
                    self.queue_call(session, |api, s| api.delete_message(s, id))?;
                }
            }
        }
        Ok(())
    }

    fn retry_removals(&mut self) {
        let names: Vec<String> = self.state.pending_removals.keys().cloned().collect();
        for name in names {
            self.try_removal(&name);
        }
    }

    /// A finished runner's instance, then its registration; what fails stays pending.
    fn try_removal(&mut self, name: &str) {
        let Some(&runner_id) = self.state.pending_removals.get(name) else {
            return;
        };
        if let Err(e) = self.edges.runners.remove(name) {
            tracing::warn!(error = %e, "finished runner not removed yet; retrying");
            return;
        }
        let done = runner_id == 0
            || match self.edges.api.remove_runner(runner_id) {
                Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => true,
                Ok(DeleteOutcome::Busy) => false,
                Err(e) => {
                    tracing::warn!(error = %e, runner = name, "registration not removed yet; retrying");
                    false
                }
            };
        if done {
            self.state.pending_removals.remove(name);
        }
    }

    /// [`repair`] when due; what fails is logged and tried at the next repair.
    fn repair_if_due(&mut self) {
        let now = self.edges.clock.now_epoch();
        if now < self.state.next_repair_epoch {
            return;
        }
        self.state.next_repair_epoch = now.saturating_add(REPAIR_INTERVAL.as_secs());
        let registrations = match self.edges.api.registrations() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the runner registrations; repairing later");
                return;
            }
        };
        let instances = match self.edges.runners.list() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list runners; repairing later");
                return;
            }
        };
        let mut held = self.edges.ledger.load();
        let retired: BTreeSet<u64> = held
            .keys()
            .filter(|id| **id != self.state.scale_set_id)
            .copied()
            .collect();
        let plan = repair::plan(&RepairView {
            scale_set_id: self.state.scale_set_id,
            registrations: &registrations,
            instances: &instances,
            busy: &self.state.busy,
            retired: &retired,
            now_epoch: now,
            bootstrap_timeout: self.config.bootstrap_timeout,
        });
        if plan.is_empty() {
            return;
        }
        tracing::info!(
            registrations = plan.registrations.len(),
            instances = plan.instances.len(),
            never_online = plan.stuck.len(),
            retired_runners = plan.retired_idle.len(),
            retired_scale_sets = plan.retired_empty.len(),
            "repairing the scale set's leftovers"
        );
        for id in plan.registrations {
            if let Err(e) = self.edges.api.remove_runner(id) {
                tracing::warn!(error = %e, runner_id = id, "registration without an instance not removed yet");
            }
        }
        for name in plan.instances {
            self.state.busy.remove(&name);
            if let Err(e) = self.edges.runners.remove(&name) {
                tracing::warn!(error = %e, "instance without a registration not removed yet");
            }
        }
        for (name, id) in plan.stuck {
            match self.edges.api.remove_runner(id) {
                Ok(DeleteOutcome::Busy) => {
                    self.state.busy.insert(name);
                }
                Ok(_) => {
                    if let Err(e) = self.edges.runners.remove(&name) {
                        tracing::warn!(error = %e, "runner never online not removed yet");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, runner = %name, "runner never online: registration not removed yet")
                }
            }
        }
        // A retired scale set goes only once none of its runners is left: its busy
        // runners finish their job first (they are removed when it ends).
        let mut drained = true;
        for (name, id) in plan.retired_idle {
            match self.edges.api.remove_runner(id) {
                Ok(DeleteOutcome::Busy) => drained = false,
                Ok(_) => {
                    if let Err(e) = self.edges.runners.remove(&name) {
                        drained = false;
                        tracing::warn!(error = %e, "idle runner of a retired scale set not removed yet");
                    }
                }
                Err(e) => {
                    drained = false;
                    tracing::warn!(error = %e, runner = %name, "idle runner of a retired scale set: registration not removed yet");
                }
            }
        }
        if !drained {
            return;
        }
        for id in plan.retired_empty {
            match self.edges.api.delete_scale_set(id) {
                Ok(()) => {
                    tracing::info!(scale_set_id = id, "retired scale set deleted");
                    held.remove(&id);
                    self.store_held(&held);
                }
                Err(e) => {
                    tracing::warn!(error = %e, scale_set_id = id, "retired scale set not deleted yet; trying at the next repair");
                }
            }
        }
    }

    /// Create or remove runners toward the desired count of the latest statistics.
    fn scale(&mut self) -> Result<(), ScaleSetError> {
        let instances = match self.edges.runners.list() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list runners; not scaling this time");
                return Ok(());
            }
        };
        let plan = scale_plan(&self.state, &self.config, &instances);
        for _ in 0..plan.create {
            self.create_runner()?;
        }
        for name in plan.remove {
            let runner_id = instances
                .iter()
                .find(|i| i.name == name)
                .map_or(0, |i| i.runner_id);
            self.remove_idle(&name, runner_id)?;
        }
        Ok(())
    }

    fn create_runner(&mut self) -> Result<(), ScaleSetError> {
        let name = match self.edges.runners.new_runner_name() {
            Ok(name) => name,
            Err(e) => {
                tracing::warn!(error = %e, "no runner name; the next scaling tries again");
                return Ok(());
            }
        };
        let jit = match self.edges.api.generate_jit_config(
            self.state.scale_set_id,
            &name,
            &self.config.work_folder,
        ) {
            Ok(jit) => jit,
            Err(e @ ScaleSetError::RunnerExists { .. }) => {
                tracing::warn!(error = %e, "runner name taken; the next scaling tries another");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        if let Err(e) = self.edges.runners.create(
            &name,
            self.state.scale_set_id,
            jit.runner.id,
            &jit.encoded_jit_config,
        ) {
            tracing::warn!(error = %e, "runner not created; removing its registration");
            self.edges.api.remove_runner(jit.runner.id)?;
        } else {
            let now = self.edges.clock.now_epoch();
            track(&mut self.state.ready_at, &name, now);
        }
        Ok(())
    }

    /// A surplus runner: its registration first (a runner that took a job meanwhile is
    /// `Busy` and stays), then its instance.
    fn remove_idle(&mut self, name: &str, runner_id: u64) -> Result<(), ScaleSetError> {
        if runner_id != 0 && self.edges.api.remove_runner(runner_id)? == DeleteOutcome::Busy {
            self.state.busy.insert(name.to_string());
            return Ok(());
        }
        if let Err(e) = self.edges.runners.remove(name) {
            tracing::warn!(error = %e, "surplus runner not removed; the next scaling tries again");
        }
        Ok(())
    }

    /// Sleep `d` on the clock, in slices; false when `stop` was set meanwhile.
    fn wait(&self, d: Duration, stop: &AtomicBool) -> bool {
        let mut left = d;
        while !left.is_zero() {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            let slice = left.min(WAIT_SLICE);
            self.edges.clock.sleep(slice);
            left -= slice;
        }
        !stop.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
#[path = "listener_tests.rs"]
mod tests;
