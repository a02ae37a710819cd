//! The doubles of the listener's unit tests: the service in memory with scripted polls and
//! errors (it sets the stop flag when its polls run out), a cursor, a phase recorder.

use super::super::*;
use crate::clock::ManualClock;
use crate::scaleset::ledger::MemoryLedger;
use crate::scaleset::listener_state::MessageCursor;
use crate::scaleset::memory_runners::MemoryRunners;
use crate::scaleset::{
    JobInfo, JobMessage, ScaleSet, ScaleSetJitConfig, ScaleSetRunner, Statistics,
};
use crate::secret::Secret;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};

pub(super) type Poll = Result<Option<ScaleSetMessage>, ScaleSetError>;

#[derive(Default)]
pub(super) struct Inner {
    pub(super) calls: Vec<String>,
    pub(super) existing: Vec<ScaleSet>,
    pub(super) next_set: u64,
    pub(super) next_session: u32,
    pub(super) session_errors: VecDeque<ScaleSetError>,
    pub(super) session_times: Vec<u64>,
    pub(super) session_statistics: Statistics,
    pub(super) polls: VecDeque<Poll>,
    pub(super) acquire_errors: VecDeque<ScaleSetError>,
    pub(super) remove_outcomes: VecDeque<DeleteOutcome>,
    pub(super) next_runner: u64,
    /// What the registration listing answers: made by JIT configs, gone when removed.
    pub(super) registrations: BTreeMap<u64, ScaleSetRunner>,
    /// Registration listings asked for (not in `calls`, which the sequence tests compare).
    pub(super) listings: u32,
    /// How long each poll takes on the clock (a long poll's wait).
    pub(super) poll_seconds: u64,
}

pub(super) struct FakeApi {
    pub(super) inner: Mutex<Inner>,
    pub(super) clock: Arc<ManualClock>,
    pub(super) stop: Arc<AtomicBool>,
}

impl FakeApi {
    fn new(clock: Arc<ManualClock>, stop: Arc<AtomicBool>) -> FakeApi {
        let inner = Inner {
            next_set: 40,
            next_runner: 100,
            ..Inner::default()
        };
        FakeApi {
            inner: Mutex::new(inner),
            clock,
            stop,
        }
    }
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().unwrap())
    }
    fn log(&self, call: String) {
        self.with(|i| i.calls.push(call));
    }
    pub(super) fn calls(&self) -> Vec<String> {
        self.with(|i| i.calls.clone())
    }
    fn session(&self, scale_set_id: u64, n: u32, token: &str) -> Session {
        Session {
            scale_set_id,
            session_id: format!("s{n}"),
            owner_name: "unit-0".into(),
            scale_set: ScaleSet {
                id: scale_set_id,
                ..ScaleSet::default()
            },
            message_queue_url: url::Url::parse("https://broker.example/message?s=1").unwrap(),
            message_queue_token: Secret::new(token),
            statistics: self.with(|i| i.session_statistics),
        }
    }
}

pub(super) fn tag(s: &Session) -> String {
    format!("{}/{}", s.session_id, s.message_queue_token.expose())
}

impl ScaleSetApi for FakeApi {
    fn runner_group_id(&self, name: &str) -> Result<u64, ScaleSetError> {
        self.log(format!("group {name}"));
        Ok(1)
    }
    fn scale_set_by_name(&self, _: u64, name: &str) -> Result<Option<ScaleSet>, ScaleSetError> {
        self.log(format!("get-set {name}"));
        Ok(self.with(|i| i.existing.iter().find(|s| s.name == name).cloned()))
    }
    fn create_scale_set(&self, new: &NewScaleSet) -> Result<ScaleSet, ScaleSetError> {
        self.log(format!("create-set {}", new.name));
        Ok(self.with(|i| {
            i.next_set += 1;
            let set = ScaleSet {
                id: i.next_set,
                name: new.name.clone(),
                ..ScaleSet::default()
            };
            i.existing.push(set.clone());
            set
        }))
    }
    fn rename_scale_set(&self, id: u64, name: &str) -> Result<(), ScaleSetError> {
        self.log(format!("rename-set {id} {name}"));
        self.with(|i| {
            if let Some(set) = i.existing.iter_mut().find(|s| s.id == id) {
                set.name = name.to_string();
            }
        });
        Ok(())
    }
    fn delete_scale_set(&self, id: u64) -> Result<(), ScaleSetError> {
        self.log(format!("delete-set {id}"));
        self.with(|i| i.existing.retain(|s| s.id != id));
        Ok(())
    }
    fn create_session(&self, id: u64, owner: &str) -> Result<Session, ScaleSetError> {
        self.log(format!("create-session {id} {owner}"));
        let now = self.clock.now_epoch();
        let (error, n) = self.with(|i| {
            i.session_times.push(now);
            let e = i.session_errors.pop_front();
            if e.is_none() {
                i.next_session += 1;
            }
            (e, i.next_session)
        });
        match error {
            Some(e) => Err(e),
            None => Ok(self.session(id, n, &format!("t{n}"))),
        }
    }
    fn refresh_session(&self, s: &Session) -> Result<Session, ScaleSetError> {
        self.log(format!("refresh {}", tag(s)));
        let n: u32 = s.session_id[1..].parse().unwrap();
        let token = format!("{}r", s.message_queue_token.expose());
        Ok(self.session(s.scale_set_id, n, &token))
    }
    fn delete_session(&self, s: &Session) -> Result<(), ScaleSetError> {
        self.log(format!("delete-session {}", s.session_id));
        Ok(())
    }
    fn get_message(&self, s: &Session, last: i64, max: u32) -> Poll {
        self.log(format!("poll {} {last} {max}", tag(s)));
        let took = self.with(|i| i.poll_seconds);
        self.clock.advance(std::time::Duration::from_secs(took));
        match self.with(|i| i.polls.pop_front()) {
            Some(Err(e @ ScaleSetError::ScaleSetNotFound { .. })) => {
                self.with(|i| i.existing.clear());
                Err(e)
            }
            Some(poll) => poll,
            None => {
                self.stop.store(true, Ordering::SeqCst);
                Ok(None)
            }
        }
    }
    fn delete_message(&self, s: &Session, id: i64) -> Result<(), ScaleSetError> {
        self.log(format!("ack {} {id}", tag(s)));
        Ok(())
    }
    fn acquire_jobs(&self, s: &Session, ids: &[i64]) -> Result<Vec<i64>, ScaleSetError> {
        self.log(format!("acquire {} {ids:?}", tag(s)));
        match self.with(|i| i.acquire_errors.pop_front()) {
            Some(e) => Err(e),
            None => Ok(ids.to_vec()),
        }
    }
    fn generate_jit_config(
        &self,
        scale_set_id: u64,
        name: &str,
        _: &str,
    ) -> Result<ScaleSetJitConfig, ScaleSetError> {
        self.log(format!("jit {name}"));
        let runner = self.with(|i| {
            i.next_runner += 1;
            let runner = ScaleSetRunner {
                id: i.next_runner,
                name: name.into(),
                runner_scale_set_id: scale_set_id,
                ..ScaleSetRunner::default()
            };
            i.registrations.insert(runner.id, runner.clone());
            runner
        });
        Ok(ScaleSetJitConfig {
            runner,
            encoded_jit_config: Secret::new(format!("jit-of-{name}")),
        })
    }
    fn remove_runner(&self, id: u64) -> Result<DeleteOutcome, ScaleSetError> {
        self.log(format!("remove-runner {id}"));
        Ok(self.with(|i| {
            // As the service does: a busy registration is refused unless a test scripts it.
            let busy = i.registrations.get(&id).is_some_and(|r| r.busy);
            let outcome = i.remove_outcomes.pop_front().unwrap_or(if busy {
                DeleteOutcome::Busy
            } else {
                DeleteOutcome::Deleted
            });
            if outcome != DeleteOutcome::Busy {
                i.registrations.remove(&id);
            }
            outcome
        }))
    }
    fn registrations(&self) -> Result<Vec<ScaleSetRunner>, ScaleSetError> {
        Ok(self.with(|i| {
            i.listings += 1;
            i.registrations.values().cloned().collect()
        }))
    }
}

#[derive(Default)]
pub(super) struct MemoryCursor(
    pub(super) Mutex<BTreeMap<u64, i64>>,
    pub(super) Mutex<Vec<(u64, i64)>>,
);

impl MessageCursor for MemoryCursor {
    fn load(&self, id: u64) -> i64 {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    fn store(&self, id: u64, last: i64) -> std::io::Result<()> {
        self.0.lock().unwrap().insert(id, last);
        self.1.lock().unwrap().push((id, last));
        Ok(())
    }
}

/// Phases seen; sets the stop flag once `stop_after_waits` session waits (ours or another
/// deployment's) were reported.
pub(super) struct Phases(
    pub(super) Mutex<Vec<ListenerPhase>>,
    pub(super) Arc<AtomicBool>,
    pub(super) Option<usize>,
    pub(super) Mutex<Vec<crate::scaleset::listener_state::TimeToRunner>>,
);

impl ListenerReport for Phases {
    fn phase(&self, phase: &ListenerPhase) {
        let mut seen = self.0.lock().unwrap();
        seen.push(phase.clone());
        let waits = seen
            .iter()
            .filter(|p| {
                matches!(
                    p,
                    ListenerPhase::WaitingForSession { .. } | ListenerPhase::HeldByAnother { .. }
                )
            })
            .count();
        if self.2.is_some_and(|n| waits >= n) {
            self.1.store(true, Ordering::SeqCst);
        }
    }
    fn time_to_runner(&self, time: &crate::scaleset::listener_state::TimeToRunner) {
        self.3.lock().unwrap().push(*time);
    }
}

pub(super) struct World {
    pub(super) clock: Arc<ManualClock>,
    pub(super) stop: Arc<AtomicBool>,
    pub(super) api: FakeApi,
    pub(super) runners: MemoryRunners,
    pub(super) cursor: MemoryCursor,
    pub(super) ledger: MemoryLedger,
    pub(super) phases: Phases,
    pub(super) jitter: f64,
    pub(super) config: ListenerConfig,
}

pub(super) const T0: u64 = 1_800_000_000;

pub(super) fn world() -> World {
    let clock = Arc::new(ManualClock::at(T0));
    let stop = Arc::new(AtomicBool::new(false));
    World {
        api: FakeApi::new(clock.clone(), stop.clone()),
        phases: Phases(Mutex::default(), stop.clone(), None, Mutex::default()),
        runners: MemoryRunners::new("r", clock.clone()),
        clock,
        stop,
        cursor: MemoryCursor::default(),
        ledger: MemoryLedger::default(),
        jitter: 0.0,
        config: ListenerConfig {
            scale_set_name: "lxd-0".into(),
            runner_group: "default".into(),
            labels: vec!["jammy".into()],
            owner: "unit-0".into(),
            max_runners: 3,
            min_idle: 0,
            work_folder: String::new(),
            bootstrap_timeout: Duration::from_secs(600),
        },
    }
}

impl World {
    pub(super) fn run(&self) -> (Result<(), ScaleSetError>, ListenerState) {
        let jitter = self.jitter;
        let jitter = move || jitter;
        let mut listener = Listener::new(
            self.config.clone(),
            ListenerEdges {
                api: &self.api,
                runners: &self.runners,
                cursor: &self.cursor,
                ledger: &self.ledger,
                report: &self.phases,
                clock: &*self.clock,
                jitter: &jitter,
            },
        );
        let result = listener.run(&self.stop);
        (result, listener.state().clone())
    }
    pub(super) fn polls(&self, polls: Vec<Poll>) {
        self.api.with(|i| i.polls.extend(polls));
    }
    pub(super) fn phases(&self) -> Vec<ListenerPhase> {
        self.phases.0.lock().unwrap().clone()
    }
}

pub(super) fn stats(assigned: u64) -> Statistics {
    Statistics {
        total_assigned_jobs: assigned,
        ..Statistics::default()
    }
}

pub(super) fn message(id: i64, assigned: u64, jobs: Vec<JobMessage>) -> Poll {
    Ok(Some(ScaleSetMessage {
        id,
        message_type: "RunnerScaleSetJobMessages".into(),
        statistics: stats(assigned),
        jobs,
    }))
}

pub(super) fn job(id: &str, request: i64) -> JobInfo {
    JobInfo {
        job_id: id.into(),
        runner_request_id: request,
        ..JobInfo::default()
    }
}

pub(super) fn started(name: &str, runner_id: u64) -> JobMessage {
    JobMessage::Started {
        job: job("j", 0),
        runner_id,
        runner_name: name.into(),
    }
}

pub(super) fn completed(name: &str, runner_id: u64) -> JobMessage {
    JobMessage::Completed {
        job: job("j", 0),
        result: "succeeded".into(),
        runner_id,
        runner_name: name.into(),
    }
}

pub(super) fn expired() -> ScaleSetError {
    ScaleSetError::MessageQueueTokenExpired {
        method: "GET".into(),
        path: "/message".into(),
    }
}

pub(super) fn position(calls: &[String], prefix: &str) -> usize {
    calls
        .iter()
        .position(|c| c.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} in {calls:#?}"))
}
