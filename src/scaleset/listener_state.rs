//! The listener's decisions, pure: what a message asks for and in which order, how many
//! runners to create or remove, how long to wait, what an error means for the loop, and
//! the cursor (`lastMessageId`) kept across restarts. The loop in `listener` applies them.

use super::api::ListenerInstance;
use super::scaling::{self, ExistingRunner, RunnerState, ScalePlan};
use super::{JobMessage, ScaleSetError, ScaleSetMessage, Statistics};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

/// What the listener serves; built by the mode that runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub scale_set_name: String,
    /// Runner group name (`""` or `default`: the default group).
    pub runner_group: String,
    /// Labels besides the scale set's name.
    pub labels: Vec<String>,
    /// The session owner, stable per unit.
    pub owner: String,
    /// The most runners at once (`X-ScaleSetMaxCapacity`).
    pub max_runners: u32,
    pub min_idle: u32,
    /// `workFolder` of JIT configs (`""`: the runner's default).
    pub work_folder: String,
    /// How long a registered runner may stay offline before repair removes it (the grace
    /// pull mode gives a new runner: `charm::runtime::grace_for`).
    pub bootstrap_timeout: Duration,
}

/// Where the listener is, for the unit's status (published in its slot file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum ListenerPhase {
    Starting,
    /// A 409: another session holds the scale set (most often a crashed predecessor's,
    /// until it expires).
    WaitingForSession {
        attempt: u32,
        retry_in: Duration,
    },
    /// A 409 naming another owner: another deployment's listener holds the scale set. Never
    /// taken over; the listener keeps asking (backed off) in case it is let go.
    HeldByAnother {
        owner: String,
        retry_in: Duration,
    },
    Listening {
        scale_set_id: u64,
    },
    /// A failure the loop waits out (the service down, rate limits).
    Retrying {
        error: String,
        retry_in: Duration,
    },
    Stopped,
}

impl ListenerPhase {
    /// The status text (from `crate::messages`).
    pub fn status_text(&self, scale_set_name: &str) -> String {
        use crate::messages;
        match self {
            ListenerPhase::Starting => messages::scale_set_listener_starting(scale_set_name),
            ListenerPhase::WaitingForSession { .. } => {
                messages::scale_set_waiting_for_session(scale_set_name)
            }
            ListenerPhase::HeldByAnother { owner, .. } => {
                messages::scale_set_held_by_another(scale_set_name, owner)
            }
            ListenerPhase::Listening { .. } => messages::scale_set_listening(scale_set_name),
            ListenerPhase::Retrying { error, .. } => {
                messages::scale_set_listener_retrying(scale_set_name, error)
            }
            ListenerPhase::Stopped => messages::scale_set_listener_stopped(scale_set_name),
        }
    }
}

/// What the listener knows between messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerState {
    /// 0: not known yet (to be got or created).
    pub scale_set_id: u64,
    pub last_message_id: i64,
    /// The latest statistics: what scaling is decided on.
    pub statistics: Statistics,
    /// Runners a JobStarted named: never removed by scaling.
    pub busy: BTreeSet<String>,
    /// Finished runners whose instance or registration is still to go (name -> runner id).
    pub pending_removals: BTreeMap<String, u64>,
    /// When the next repair is due (clock seconds; 0: at once).
    pub next_repair_epoch: u64,
    /// Job id -> when a JobAssigned for it was first seen (the time-to-runner's start).
    pub assigned_at: BTreeMap<String, u64>,
    /// Runner name -> when its creation was done (its runner up).
    pub ready_at: BTreeMap<String, u64>,
}

/// Most jobs and runners the time-to-runner tracks (a job whose start is never seen, a
/// runner that never takes one: the oldest go).
pub const MAX_TRACKED: usize = 1024;

/// From the listener seeing a job assigned to the runner that took it being up and to its
/// JobStarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeToRunner {
    pub runner_online: Duration,
    pub job_started: Duration,
}

/// Remember `key` at `now`, keeping the first time (a redelivered message) and at most
/// [`MAX_TRACKED`] entries.
pub fn track(map: &mut BTreeMap<String, u64>, key: &str, now: u64) {
    if map.contains_key(key) {
        return;
    }
    if map.len() >= MAX_TRACKED {
        if let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) {
            map.remove(&oldest);
        }
    }
    map.insert(key.to_string(), now);
}

/// A JobStarted for `job_id` on `runner` at `now`: its time to runner, when its assignment
/// was seen (not after a restart lost it). A runner up before the job came took it at once
/// (`runner_online` 0); one whose creation was not seen here counts as up at the start.
pub fn time_to_runner(
    state: &mut ListenerState,
    runner: &str,
    job_id: &str,
    now: u64,
) -> Option<TimeToRunner> {
    let ready = state.ready_at.remove(runner);
    let assigned = state.assigned_at.remove(job_id)?;
    let ready = ready.unwrap_or(now).clamp(assigned, now);
    Some(TimeToRunner {
        runner_online: Duration::from_secs(ready - assigned),
        job_started: Duration::from_secs(now.saturating_sub(assigned)),
    })
}

/// One step of handling a message, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// GHES: acquire these `runnerRequestId`s. Failing, the message is not acknowledged.
    Acquire(Vec<i64>),
    /// A job assigned to the scale set (its time to runner starts).
    Assigned(String),
    MarkBusy {
        runner: String,
        job_id: String,
    },
    /// A job completed or cancelled: its time to runner is not tracked any longer.
    JobEnded(String),
    /// The runner's job is done: its instance and registration go.
    RemoveFinished {
        name: String,
        runner_id: u64,
    },
    /// Scale to these statistics.
    Scale(Statistics),
    /// Persist the cursor, then delete the message: after all the work (at-least-once).
    Ack(i64),
}

/// The work a message asks for. Job messages are handled idempotently (a message may come
/// again); the count comes from the statistics only.
pub fn on_message(message: &ScaleSetMessage) -> Vec<Action> {
    let acquire: Vec<i64> = message
        .jobs
        .iter()
        .filter_map(|j| match j {
            JobMessage::Available(job) if job.runner_request_id != 0 => Some(job.runner_request_id),
            _ => None,
        })
        .collect();
    let mut actions = Vec::new();
    if !acquire.is_empty() {
        actions.push(Action::Acquire(acquire));
    }
    for job in &message.jobs {
        match job {
            JobMessage::Assigned(job) if !job.job_id.is_empty() => {
                actions.push(Action::Assigned(job.job_id.clone()));
            }
            JobMessage::Started {
                runner_name, job, ..
            } if !runner_name.is_empty() => {
                actions.push(Action::MarkBusy {
                    runner: runner_name.clone(),
                    job_id: job.job_id.clone(),
                });
            }
            JobMessage::Completed {
                runner_name,
                runner_id,
                job,
                ..
            } => {
                if !job.job_id.is_empty() {
                    actions.push(Action::JobEnded(job.job_id.clone()));
                }
                // An empty name: the job never reached a runner (a cancelled assignment).
                if !runner_name.is_empty() {
                    actions.push(Action::RemoveFinished {
                        name: runner_name.clone(),
                        runner_id: *runner_id,
                    });
                }
            }
            _ => {}
        }
    }
    actions.push(Action::Scale(message.statistics));
    actions.push(Action::Ack(message.id));
    actions
}

/// What to create or remove: desired from the statistics, busy runners (by the runner
/// side or a JobStarted) kept, finished ones on their way out not counted, nor runners of
/// another scale set (a retired one's, a pull-mode one finishing its job: `repair`'s).
pub fn scale_plan(
    state: &ListenerState,
    config: &ListenerConfig,
    instances: &[ListenerInstance],
) -> ScalePlan {
    let existing: Vec<ExistingRunner> = instances
        .iter()
        .filter(|i| {
            i.scale_set_id == state.scale_set_id && !state.pending_removals.contains_key(&i.name)
        })
        .map(|i| ExistingRunner {
            name: i.name.clone(),
            state: if state.busy.contains(&i.name) {
                RunnerState::Busy
            } else {
                i.state
            },
        })
        .collect();
    let desired = scaling::desired_runners(&state.statistics, config.max_runners, config.min_idle);
    scaling::plan(desired, &existing)
}

/// What an error from the service means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Drop the session and open a new one.
    NewSession,
    /// GitHub deleted the scale set: create it again, from a cursor of 0.
    RecreateScaleSet,
    /// Transient: wait and try again.
    Backoff,
    /// Only the operator can fix it: stop, with the error.
    Fatal,
}

pub fn recovery(error: &ScaleSetError) -> Recovery {
    use ScaleSetError as E;
    match error {
        E::SessionNotFound { .. } | E::MessageQueueTokenExpired { .. } => Recovery::NewSession,
        E::ScaleSetNotFound { .. } => Recovery::RecreateScaleSet,
        E::SessionConflict { .. }
        | E::RateLimited { .. }
        | E::Server { .. }
        | E::Transport { .. }
        | E::Service { .. }
        | E::Protocol { .. }
        | E::RunnerExists { .. }
        | E::RegistrationToken(_) => Recovery::Backoff,
        E::BadConfigUrl { .. }
        | E::RegistrationRefused { .. }
        | E::AdminUnauthorized { .. }
        | E::Forbidden { .. }
        | E::RunnerGroupNotFound { .. }
        | E::InsecureUrl { .. }
        | E::Proxy(_) => Recovery::Fatal,
    }
}

/// First wait of a backoff; doubled per attempt up to [`RETRY_CAP`].
pub const RETRY_BASE: Duration = Duration::from_secs(5);
pub const RETRY_CAP: Duration = Duration::from_secs(60);

/// Capped exponential backoff, whole seconds, plus up to a quarter more of jitter
/// (`jitter` in [0, 1)) so that listeners started together do not retry together.
/// The owner a 409 names ("… already has an active session for owner <x>."), when it names
/// one other than `ours`: then the scale set is another deployment's, not a crashed
/// predecessor's (whose owner is ours: the owner is stable per unit).
pub fn other_owner(conflict_message: &str, ours: &str) -> Option<String> {
    const MARK: &str = "for owner ";
    let start = conflict_message.find(MARK)? + MARK.len();
    let owner = conflict_message[start..]
        .trim()
        .trim_end_matches('.')
        .trim();
    (!owner.is_empty() && owner != ours).then(|| owner.to_string())
}

pub fn retry_delay(attempt: u32, jitter: f64) -> Duration {
    let factor = 1u64.checked_shl(attempt.min(16)).unwrap_or(u64::MAX);
    let step = RETRY_BASE
        .as_secs()
        .saturating_mul(factor)
        .min(RETRY_CAP.as_secs());
    let extra = ((step as f64) * jitter.clamp(0.0, 1.0) / 4.0).floor() as u64;
    Duration::from_secs(step + extra)
}

/// Where `lastMessageId` survives a restart, per scale set (a new scale set starts at 0).
pub trait MessageCursor: Send + Sync {
    fn load(&self, scale_set_id: u64) -> i64;
    fn store(&self, scale_set_id: u64, last_message_id: i64) -> std::io::Result<()>;
}

/// The cursor in a file: `<scale set id> <last message id>`, replaced atomically.
#[derive(Debug, Clone)]
pub struct FileCursor {
    pub path: PathBuf,
}

impl MessageCursor for FileCursor {
    /// 0 when the file is missing, unreadable, or of another scale set.
    fn load(&self, scale_set_id: u64) -> i64 {
        let Ok(text) = std::fs::read_to_string(&self.path) else {
            return 0;
        };
        parse_cursor(&text)
            .filter(|(id, _)| *id == scale_set_id)
            .map_or(0, |(_, last)| last)
    }

    fn store(&self, scale_set_id: u64, last_message_id: i64) -> std::io::Result<()> {
        let content = format!("{scale_set_id} {last_message_id}\n");
        crate::host::file::replace_if_changed(&self.path, &content, 0o600).map(|_| ())
    }
}

fn parse_cursor(text: &str) -> Option<(u64, i64)> {
    let mut parts = text.split_whitespace();
    let id = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    Some((id, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_naming_another_owner_tells_another_deployment_from_a_crashed_self() {
        let ours = "uuid-1/github-runner/0";
        let msg = |o: &str| {
            format!("The runner scale set lxd-0 already has an active session for owner {o}.")
        };
        assert_eq!(
            other_owner(&msg("uuid-2/github-runner/0"), ours),
            Some("uuid-2/github-runner/0".to_string())
        );
        assert_eq!(other_owner(&msg(ours), ours), None, "our own stale session");
        assert_eq!(
            other_owner(
                "The actions runner scaleset dev already has an active session.",
                ours
            ),
            None,
            "no owner named: waited out"
        );
        assert_eq!(other_owner(&msg(""), ours), None);
    }
    use crate::scaleset::JobInfo;

    fn info(request: i64) -> JobInfo {
        JobInfo {
            runner_request_id: request,
            ..JobInfo::default()
        }
    }

    fn job(id: &str) -> JobInfo {
        JobInfo {
            job_id: id.into(),
            ..JobInfo::default()
        }
    }

    #[test]
    fn a_jobs_assignment_start_and_end_are_actions_for_its_time_to_runner() {
        let message = ScaleSetMessage {
            id: 3,
            message_type: String::new(),
            statistics: Statistics::default(),
            jobs: vec![
                JobMessage::Assigned(job("j1")),
                JobMessage::Started {
                    job: job("j1"),
                    runner_id: 6,
                    runner_name: "r-6".into(),
                },
                JobMessage::Completed {
                    job: job("j2"),
                    result: "canceled".into(),
                    runner_id: 0,
                    runner_name: String::new(),
                },
            ],
        };
        assert_eq!(
            on_message(&message)[..3],
            [
                Action::Assigned("j1".into()),
                Action::MarkBusy {
                    runner: "r-6".into(),
                    job_id: "j1".into()
                },
                Action::JobEnded("j2".into()),
            ]
        );
    }

    #[test]
    fn time_to_runner_counts_from_the_assignment_to_the_runner_up_and_to_the_start() {
        let mut state = ListenerState::default();
        track(&mut state.assigned_at, "j1", 100);
        // Redelivered: the first sighting stays.
        track(&mut state.assigned_at, "j1", 150);
        track(&mut state.ready_at, "r-1", 130);
        let t = time_to_runner(&mut state, "r-1", "j1", 140).unwrap();
        assert_eq!(
            t,
            TimeToRunner {
                runner_online: Duration::from_secs(30),
                job_started: Duration::from_secs(40),
            }
        );
        assert!(state.assigned_at.is_empty() && state.ready_at.is_empty());
        // Seen once only.
        assert_eq!(time_to_runner(&mut state, "r-1", "j1", 141), None);

        // A runner idle before the job came: online at once.
        track(&mut state.ready_at, "r-2", 10);
        track(&mut state.assigned_at, "j2", 200);
        let t = time_to_runner(&mut state, "r-2", "j2", 205).unwrap();
        assert_eq!(t.runner_online, Duration::ZERO);
        assert_eq!(t.job_started, Duration::from_secs(5));

        // A runner whose creation this listener did not see: up when the job started.
        track(&mut state.assigned_at, "j3", 300);
        let t = time_to_runner(&mut state, "r-9", "j3", 320).unwrap();
        assert_eq!(t.runner_online, Duration::from_secs(20));

        // An assignment not seen (a restart lost it): nothing to tell.
        track(&mut state.ready_at, "r-4", 400);
        assert_eq!(time_to_runner(&mut state, "r-4", "j4", 410), None);
        assert!(
            state.ready_at.is_empty(),
            "the runner is not kept for a later job"
        );
    }

    #[test]
    fn tracking_is_bounded_and_drops_the_oldest() {
        let mut map = BTreeMap::new();
        for i in 0..MAX_TRACKED as u64 {
            track(&mut map, &format!("job-{i}"), 1000 + i);
        }
        track(&mut map, "late", 5000);
        assert_eq!(map.len(), MAX_TRACKED);
        assert!(!map.contains_key("job-0") && map.contains_key("job-1"));
        assert_eq!(map["late"], 5000);
    }

    #[test]
    fn a_message_acquires_first_handles_its_jobs_in_order_then_scales_then_acks() {
        let statistics = Statistics {
            total_assigned_jobs: 4,
            ..Statistics::default()
        };
        let message = ScaleSetMessage {
            id: 9,
            message_type: "RunnerScaleSetJobMessages".into(),
            statistics,
            jobs: vec![
                JobMessage::Completed {
                    job: info(0),
                    result: "succeeded".into(),
                    runner_id: 5,
                    runner_name: "r-5".into(),
                },
                JobMessage::Available(info(7)),
                JobMessage::Available(info(0)),
                JobMessage::Assigned(info(8)),
                JobMessage::Started {
                    job: info(0),
                    runner_id: 6,
                    runner_name: "r-6".into(),
                },
                JobMessage::Started {
                    job: info(0),
                    runner_id: 0,
                    runner_name: String::new(),
                },
                JobMessage::Completed {
                    job: info(0),
                    result: "canceled".into(),
                    runner_id: 0,
                    runner_name: String::new(),
                },
                JobMessage::Available(info(11)),
                JobMessage::Unknown {
                    message_type: "x".into(),
                },
            ],
        };
        assert_eq!(
            on_message(&message),
            [
                Action::Acquire(vec![7, 11]),
                Action::RemoveFinished {
                    name: "r-5".into(),
                    runner_id: 5
                },
                Action::MarkBusy {
                    runner: "r-6".into(),
                    job_id: String::new()
                },
                Action::Scale(statistics),
                Action::Ack(9),
            ]
        );
        let empty = ScaleSetMessage {
            jobs: Vec::new(),
            ..message
        };
        assert_eq!(
            on_message(&empty),
            [Action::Scale(statistics), Action::Ack(9)]
        );
    }

    #[test]
    fn the_plan_keeps_runners_busy_by_job_started_and_skips_those_on_their_way_out() {
        let config = ListenerConfig {
            scale_set_name: "s".into(),
            runner_group: String::new(),
            labels: Vec::new(),
            owner: "o".into(),
            max_runners: 4,
            min_idle: 1,
            work_folder: String::new(),
            bootstrap_timeout: Duration::from_secs(600),
        };
        let instance = |name: &str, state| ListenerInstance {
            name: name.into(),
            runner_id: 1,
            state,
            created_at_epoch: 0,
            scale_set_id: 0,
        };
        let instances = [
            instance("a", RunnerState::Idle),
            instance("b", RunnerState::Idle),
            instance("gone", RunnerState::Idle),
        ];
        let mut state = ListenerState::default();
        state.busy.insert("a".into());
        state.pending_removals.insert("gone".into(), 3);
        // Desired min(4, 0 + 1) = 1; a (busy) and b count, gone does not: b is the surplus.
        assert_eq!(scale_plan(&state, &config, &instances).remove, ["b"]);
        state.statistics.total_assigned_jobs = 2;
        assert_eq!(
            scale_plan(&state, &config, &instances),
            ScalePlan {
                create: 1,
                remove: vec![]
            }
        );
        state.statistics.total_assigned_jobs = 100;
        assert_eq!(scale_plan(&state, &config, &instances).create, 2, "max 4");
    }

    #[test]
    fn the_retry_delay_doubles_from_5_s_to_a_60_s_cap_with_at_most_a_quarter_of_jitter() {
        let plain: Vec<u64> = (0..8).map(|a| retry_delay(a, 0.0).as_secs()).collect();
        assert_eq!(plain, [5, 10, 20, 40, 60, 60, 60, 60]);
        for attempt in [0, 3, 40, u32::MAX] {
            let low = retry_delay(attempt, 0.0);
            for jitter in [0.0, 0.3, 0.999_999, 7.0, -1.0] {
                let d = retry_delay(attempt, jitter);
                assert!(d >= low && d <= low + low / 4, "{attempt} {jitter}: {d:?}");
            }
        }
    }

    #[test]
    fn only_configuration_and_permission_errors_end_the_loop() {
        let e = |status| ScaleSetError::Server {
            method: "GET".into(),
            path: "/".into(),
            status,
        };
        assert_eq!(recovery(&e(503)), Recovery::Backoff);
        let lost = ScaleSetError::SessionNotFound {
            scale_set_id: 1,
            method: "GET".into(),
            path: "/".into(),
        };
        assert_eq!(recovery(&lost), Recovery::NewSession);
        let gone = ScaleSetError::ScaleSetNotFound {
            scale_set_id: 1,
            method: "GET".into(),
            path: "/".into(),
        };
        assert_eq!(recovery(&gone), Recovery::RecreateScaleSet);
        let group = ScaleSetError::RunnerGroupNotFound { name: "g".into() };
        assert_eq!(recovery(&group), Recovery::Fatal);
        let conflict = ScaleSetError::SessionConflict {
            scale_set_id: 1,
            message: String::new(),
        };
        assert_eq!(recovery(&conflict), Recovery::Backoff);
    }

    #[test]
    fn the_file_cursor_is_per_scale_set_private_and_survives_a_new_instance() {
        let dir = tempfile::tempdir().unwrap();
        let cursor = FileCursor {
            path: dir.path().join("state/cursor"),
        };
        assert_eq!(cursor.load(41), 0, "no file yet");
        cursor.store(41, 100_000_171).unwrap();
        let again = FileCursor {
            path: cursor.path.clone(),
        };
        assert_eq!(again.load(41), 100_000_171);
        assert_eq!(again.load(42), 0, "another scale set starts over");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cursor.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&cursor.path, "garbage").unwrap();
        assert_eq!(again.load(41), 0);
    }
}
