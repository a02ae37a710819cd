//! Reactive mode as the charm drives it: converge (settings, workers, orphan runners and
//! registrations, status), leave (mode switch to pull, stop, remove), restart
//! (flush-runners), and the check-runners keys. Decisions are pure ([`mode_switch`],
//! [`reactive_status`], [`orphan_runners`], [`orphan_registrations`], [`check_results`]);
//! the rest goes through `reactive::workers` and the runner code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::claim::ClaimDir;
use super::health::{failure_lines, worst_problem, SlotHealth, WorstProblem};
use super::run::{LxdRunners, WorkerSettings};
use super::worker::{JobRunners, RunnerRemoval};
use super::workers::{
    ensure_workers, render_logrotate, settings_fingerprint, stop_all, survey_slots, write_settings,
    LiveWorker, ProcessControl, UnitDirs,
};
use crate::charm::fleet::CharmRunnerOps;
use crate::charm::runtime::Runtime;
use crate::github::{DeleteOutcome, GitHubRunner};
use crate::identity::UnitIdentity;
use crate::juju::Status;
use crate::paths::HostPaths;
use crate::reactive::source::{QueueSource, SourceOrigin};
use crate::secret::Secret;

/// How long a reconcile waits for the workers it started to take their slots (status).
const START_WAIT: Duration = Duration::from_secs(3);
/// How long stop, remove and a mode switch wait for workers to hand back what they hold.
pub const STOP_WAIT: Duration = Duration::from_secs(60);

/// `<app>-<n>`: the unit's name in reactive folders and worker scopes.
pub fn unit_key(identity: &UnitIdentity) -> String {
    crate::paths::unit_folder_name(&identity.unit_name())
}

/// The unit's reactive folders.
pub fn unit_dirs(paths: &HostPaths, identity: &UnitIdentity) -> UnitDirs {
    let key = unit_key(identity);
    UnitDirs::new(paths.reactive_dir(&key), paths.reactive_log_dir(&key))
}

/// The logrotate rule of the unit's worker logs.
pub fn logrotate_rule(paths: &HostPaths, identity: &UnitIdentity) -> std::path::PathBuf {
    paths
        .logrotate_dir()
        .join(format!("github-runner-reactive-{}", unit_key(identity)))
}

/// remove: the unit's reactive state folder (settings, slots, claims) and the logrotate
/// rule go; the workers' logs stay, as the metrics log does. Call after [`leave`].
/// Idempotent.
pub fn remove_unit_files(paths: &HostPaths, identity: &UnitIdentity) {
    crate::host::file::remove_logged(&unit_dirs(paths, identity).state);
    crate::host::file::remove_logged(&logrotate_rule(paths, identity));
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pull,
    Reactive,
}

/// The mode the unit was in: reactive while a settings file exists (written by every
/// reactive reconcile, removed when leaving).
pub fn previous_mode(dirs: &UnitDirs) -> Mode {
    if dirs.settings_file().exists() {
        Mode::Reactive
    } else {
        Mode::Pull
    }
}

/// What a change of mode requires before converging in the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeSwitch {
    None,
    /// Pull's idle runners go (the reactive converge removes every runner no worker holds).
    PullToReactive,
    /// Workers stop (handing back what they hold), their idle runners go.
    ReactiveToPull,
}

pub fn mode_switch(previous: Mode, now: Mode) -> ModeSwitch {
    match (previous, now) {
        (Mode::Pull, Mode::Reactive) => ModeSwitch::PullToReactive,
        (Mode::Reactive, Mode::Pull) => ModeSwitch::ReactiveToPull,
        _ => ModeSwitch::None,
    }
}

/// The broker a reactive unit serves from: read this hook, or the last one it served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broker {
    pub uri: Secret,
    /// Hosts without credentials.
    pub host: String,
    pub from_relation: bool,
}

/// What this hook runs on, from the queue source it read and the broker the unit last
/// served (issue 20 item 7: a relation unusable for a moment never switches modes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueChoice {
    /// No queue: pull mode (reactive mode is left if it was on).
    Pull,
    /// Reactive on `broker`; `held` says why it is the last one served, not a fresh read.
    Reactive {
        broker: Broker,
        held: Option<Status>,
    },
    /// The relation asks for what reactive mode does not do: workers stop, nothing else
    /// changes, the status says why.
    Blocked(Status),
}

/// Pure. Only `mq-uri` gone with no relation, or the relation really gone (broken, or no
/// longer in `relation-ids`), leaves reactive mode; a relation that is there but unusable
/// (no provider unit, no data yet, an unreadable secret) keeps a unit that served from it
/// on its last broker, Waiting with the reason. A unit that never served waits in pull mode.
pub fn choose_queue(source: QueueSource, last: Option<Broker>) -> QueueChoice {
    match source {
        QueueSource::On { uri, origin } => QueueChoice::Reactive {
            broker: Broker {
                host: uri.host().to_string(),
                uri: uri.secret().clone(),
                from_relation: origin == SourceOrigin::Relation,
            },
            held: None,
        },
        QueueSource::Off => QueueChoice::Pull,
        QueueSource::Unsupported(why) => QueueChoice::Blocked(Status::Blocked(why)),
        QueueSource::Waiting(why) => match last {
            Some(broker) if broker.from_relation => QueueChoice::Reactive {
                broker,
                held: Some(Status::Waiting(crate::messages::reactive_held(&why))),
            },
            _ => {
                tracing::info!("reactive mode waits: {why}");
                QueueChoice::Pull
            }
        },
    }
}

/// The broker the unit's workers were last given (its 0600 settings file), if any.
/// The queue this hook runs on: the source read now ([`read_queue_source`]) chosen against
/// the broker last served ([`choose_queue`]). Every consumer (the reactive round, the
/// runners' ACL rejecting the broker) asks this, so they never disagree.
///
/// [`read_queue_source`]: crate::reactive::relation::read_queue_source
pub fn current_queue(
    tools: &dyn crate::juju::HookTools,
    config_uri: Option<&crate::reactive::source::MqUri>,
    facts: crate::reactive::relation::HookFacts<'_>,
    dirs: &UnitDirs,
) -> Result<QueueChoice, crate::juju::HookToolError> {
    let source = crate::reactive::relation::read_queue_source(tools, config_uri, facts)?;
    Ok(choose_queue(source, last_broker(dirs)))
}

pub fn last_broker(dirs: &UnitDirs) -> Option<Broker> {
    let bytes = super::run::read_settings(dirs).ok()?;
    let settings: WorkerSettings = serde_json::from_slice(&bytes).ok()?;
    Some(Broker {
        uri: Secret::new(settings.mq_uri),
        host: settings.broker_host,
        from_relation: settings.from_relation,
    })
}

/// The unit's runners that no live worker holds: a reconcile removes them unless busy
/// (defect D3: a runner a worker holds a message or a job for is never touched).
pub fn orphan_runners(instances: &[String], held: &[String]) -> Vec<String> {
    instances
        .iter()
        .filter(|i| !held.contains(i))
        .cloned()
        .collect()
}

/// The unit's GitHub registrations with no instance behind them that no live worker holds,
/// as (name, id): a worker killed between its runner's JIT registration and the launch
/// leaves one. A busy one is GitHub's to end.
pub fn orphan_registrations(
    registrations: &[GitHubRunner],
    instances: &[String],
    held: &[String],
) -> Vec<(String, u64)> {
    registrations
        .iter()
        .filter(|r| !r.busy && !instances.contains(&r.name) && !held.contains(&r.name))
        .map(|r| (r.name.clone(), r.id))
        .collect()
}

/// What the status and check-runners show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactiveView {
    pub target: u32,
    pub workers: Vec<LiveWorker>,
    /// The slots that tell how workers fare: every live one, and the dead ones a reconcile
    /// refills (below the target).
    pub health: Vec<SlotHealth>,
}

impl ReactiveView {
    /// The unit's slot files as they are now.
    pub fn read(dirs: &UnitDirs, target: u32) -> Self {
        let health: Vec<SlotHealth> = survey_slots(dirs)
            .into_iter()
            .filter(|s| s.live || s.slot < target)
            .collect();
        let workers = health
            .iter()
            .filter(|s| s.live)
            .map(|s| LiveWorker {
                slot: s.slot,
                status: s.status.clone(),
            })
            .collect();
        ReactiveView {
            target,
            workers,
            health,
        }
    }

    /// Workers that are not on their way out.
    pub fn running(&self) -> usize {
        self.workers.iter().filter(|w| !w.status.stopping).count()
    }

    /// Runners workers hold (creating, waiting for pickup, or running their job).
    pub fn runners(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.status.runner.is_some())
            .count()
    }

    /// The queue's waiting messages as last seen by a worker.
    pub fn queue(&self) -> Option<u64> {
        self.workers
            .iter()
            .filter_map(|w| w.status.queue_waiting)
            .max()
    }

    /// Workers whose job waits for room on the machine, and the last refusal's words.
    pub fn waiting_for_room(&self) -> (usize, Option<&str>) {
        let refused: Vec<&str> = self
            .workers
            .iter()
            .filter_map(|w| w.status.no_room.as_deref())
            .collect();
        (refused.len(), refused.first().copied())
    }

    pub fn broker_error(&self) -> Option<&str> {
        self.workers
            .iter()
            .find_map(|w| w.status.broker_error.as_deref())
            .filter(|h| !h.is_empty())
    }

    /// A repository whose jobs a worker cannot read (the token lacks Actions read).
    pub fn job_access(&self) -> Option<&str> {
        self.workers
            .iter()
            .find_map(|w| w.status.job_access.as_deref())
    }
}

/// "reactive: 2/4 workers, 1 runner busy, queue 3" while nothing fails. Otherwise the worst
/// the workers report: Blocked for a token GitHub rejects; Maintenance for a crash-looping
/// slot, an unreachable broker (its host), then the worst other failure. A repository the
/// token cannot read jobs of blocks too (only the operator can grant the permission), after
/// a rejected token.
pub fn reactive_status(view: &ReactiveView) -> Status {
    use crate::messages;
    let problem = worst_problem(&view.health);
    if !matches!(problem, Some(WorstProblem::TokenRejected(_))) {
        if let Some(text) = view.job_access() {
            return Status::Blocked(text.to_string());
        }
    }
    match (problem, view.broker_error()) {
        (Some(WorstProblem::TokenRejected(f)), _) => {
            Status::Blocked(messages::reactive_token_rejected(&f.detail))
        }
        (
            Some(WorstProblem::CrashLoop {
                slot,
                crashes,
                failure,
            }),
            _,
        ) => Status::Maintenance(messages::reactive_crash_loop(
            slot,
            crashes,
            failure.map(|f| f.detail.as_str()),
        )),
        (_, Some(host)) => Status::Maintenance(messages::broker_unreachable(
            host,
            view.running(),
            view.target,
        )),
        (Some(WorstProblem::Failing { failure, slots }), None) => {
            Status::Maintenance(messages::reactive_failing(
                failure.kind.name(),
                &failure.detail,
                slots,
                failure.at_epoch,
            ))
        }
        (None, None) => {
            let summary = messages::reactive_summary(
                view.running(),
                view.target,
                view.runners(),
                view.queue(),
            );
            Status::Active(match view.waiting_for_room() {
                (waiting, Some(refusal)) => {
                    messages::reactive_waiting_for_room(&summary, waiting, refusal)
                }
                _ => summary,
            })
        }
    }
}

/// check-runners' reactive keys.
pub fn check_results(view: &ReactiveView) -> BTreeMap<String, String> {
    let mut r = BTreeMap::from([
        ("mode".to_string(), "reactive".to_string()),
        ("workers".to_string(), view.running().to_string()),
        ("workers-target".to_string(), view.target.to_string()),
        ("reactive-runners".to_string(), view.runners().to_string()),
    ]);
    if let Some(q) = view.queue() {
        r.insert("queue".to_string(), q.to_string());
    }
    if let (waiting @ 1.., _) = view.waiting_for_room() {
        r.insert("waiting-for-room".to_string(), waiting.to_string());
    }
    let failures = failure_lines(&view.health);
    if !failures.is_empty() {
        r.insert("worker-failures".to_string(), failures.join("\n"));
    }
    r
}

/// What a reactive round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactiveRound {
    pub status: Status,
    pub view: ReactiveView,
    pub started: u32,
    pub stopped: u32,
    pub orphans_removed: Vec<String>,
    pub problems: Vec<String>,
}

impl ReactiveRound {
    /// A round that did nothing but say why (the workers stopped).
    pub fn blocked(status: Status, target: u32) -> ReactiveRound {
        ReactiveRound {
            status,
            view: ReactiveView {
                target,
                workers: Vec::new(),
                health: Vec::new(),
            },
            started: 0,
            stopped: 0,
            orphans_removed: Vec::new(),
            problems: Vec::new(),
        }
    }
}

/// One reactive reconcile: settings file, logrotate rule, workers up to `virtual-machines`,
/// orphan runners removed, status.
pub fn converge(
    rt: &Runtime,
    control: &dyn ProcessControl,
    settings: &WorkerSettings,
) -> ReactiveRound {
    let dirs = unit_dirs(&rt.paths, &rt.identity);
    let target = rt.config.virtual_machines;
    let mut problems = Vec::new();
    let bytes = settings.to_bytes();
    let current = std::fs::read(dirs.settings_file()).ok();
    if current.as_deref() != Some(&bytes[..]) {
        if let Err(e) = write_settings(&dirs, &bytes) {
            problems.push(format!("cannot write the worker settings: {e}"));
        }
    }
    let rule = logrotate_rule(&rt.paths, &rt.identity);
    if let Err(e) =
        crate::host::file::replace_if_changed(&rule, &render_logrotate(&dirs.logs), 0o644)
    {
        problems.push(format!("cannot write {}: {e}", rule.display()));
    }
    let fingerprint = settings_fingerprint(&bytes);
    let outcome = ensure_workers(&dirs, control, target, &fingerprint);
    problems.extend(outcome.problems);
    let orphans_removed = remove_orphans(rt, &dirs, &mut problems);
    let deadline = Instant::now() + START_WAIT;
    let view = loop {
        let view = ReactiveView::read(&dirs, target);
        let up = view
            .workers
            .iter()
            .filter(|w| !w.status.stopping && w.status.pid != 0)
            .count();
        if up >= target as usize || Instant::now() >= deadline {
            break view;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for p in &problems {
        tracing::warn!("reactive: {p}");
    }
    ReactiveRound {
        status: reactive_status(&view),
        view,
        started: outcome.started,
        stopped: outcome.stopped,
        orphans_removed,
        problems,
    }
}

fn remove_orphans(rt: &Runtime, dirs: &UnitDirs, problems: &mut Vec<String>) -> Vec<String> {
    let instances = match rt.lxd.list_owned_instances(&rt.identity.owner_value()) {
        Ok(list) => list.into_iter().map(|i| i.name).collect::<Vec<_>>(),
        Err(e) => {
            problems.push(format!("cannot list runners: {e}"));
            return Vec::new();
        }
    };
    let registrations = match rt.github.list_runners() {
        Ok(list) => list
            .into_iter()
            .filter(|r| rt.identity.owns_name(&r.name))
            .collect(),
        Err(e) => {
            problems.push(format!("cannot list runner registrations: {e}"));
            Vec::new()
        }
    };
    // Read last: a runner created after the listings is named by its worker's claim by then.
    let held = ClaimDir::open(dirs.claims_dir())
        .map(|c| c.held_runners())
        .unwrap_or_default();
    let ops = CharmRunnerOps::new(rt);
    let runners = LxdRunners { rt, ops: &ops };
    let mut removed: Vec<String> = orphan_runners(&instances, &held)
        .into_iter()
        .filter(|name| match runners.remove_if_idle(name) {
            Ok(RunnerRemoval::Removed) => true,
            Ok(RunnerRemoval::Busy) => false,
            Err(e) => {
                problems.push(format!("cannot remove runner {name}: {e}"));
                false
            }
        })
        .collect();
    for (name, id) in orphan_registrations(&registrations, &instances, &held) {
        match rt.github.delete_runner(id) {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => removed.push(name),
            Ok(DeleteOutcome::Busy) => {}
            Err(e) => problems.push(format!("cannot delete registration {name}: {e}")),
        }
    }
    removed
}

/// Leaves reactive mode (mode switch to pull, stop, remove): every worker stops, handing
/// back what it holds, and the settings file (token, broker URI) goes. Returns the workers
/// still running after [`STOP_WAIT`].
pub fn leave(paths: &HostPaths, identity: &UnitIdentity, control: &dyn ProcessControl) -> usize {
    let dirs = unit_dirs(paths, identity);
    let left = stop_all(&dirs, control, STOP_WAIT);
    super::workers::remove_settings(&dirs);
    if left > 0 {
        tracing::warn!("{left} reactive workers still running after {STOP_WAIT:?}");
    }
    left
}

/// flush-runners in reactive mode: every worker stops (handing back what it holds), then
/// the next converge starts fresh ones.
pub fn restart_workers(paths: &HostPaths, identity: &UnitIdentity, control: &dyn ProcessControl) {
    let dirs = unit_dirs(paths, identity);
    let left = stop_all(&dirs, control, STOP_WAIT);
    if left > 0 {
        tracing::warn!("{left} reactive workers still finishing; replaced once they exit");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactive::workers::SlotStatus;

    fn worker(
        slot: u32,
        runner: Option<&str>,
        queue: Option<u64>,
        broker: Option<&str>,
    ) -> LiveWorker {
        LiveWorker {
            slot,
            status: SlotStatus {
                pid: 10 + slot,
                runner: runner.map(str::to_string),
                busy: runner.is_some(),
                queue_waiting: queue,
                broker_error: broker.map(str::to_string),
                ..SlotStatus::default()
            },
        }
    }

    fn broker(host: &str, from_relation: bool) -> Broker {
        Broker {
            uri: Secret::new(format!("mongodb://u:pw@{host}/db")),
            host: host.into(),
            from_relation,
        }
    }

    /// Issue 20 item 7: only a relation really gone leaves reactive mode.
    #[test]
    fn a_relation_unusable_for_a_moment_keeps_the_last_broker() {
        let fresh = crate::reactive::source::parse_mq_uri("mongodb://u:pw@m2/db").unwrap();
        let waiting = || QueueSource::Waiting("mongodb relation: no provider unit yet".into());
        let held = Status::Waiting(
            "mongodb relation: no provider unit yet; reactive mode goes on with the last broker settings"
                .into(),
        );
        assert_eq!(
            choose_queue(waiting(), Some(broker("m1", true))),
            QueueChoice::Reactive {
                broker: broker("m1", true),
                held: Some(held)
            }
        );
        // Never served from the relation (or from mq-uri, now unset): pull mode waits.
        assert_eq!(choose_queue(waiting(), None), QueueChoice::Pull);
        assert_eq!(
            choose_queue(waiting(), Some(broker("r1", false))),
            QueueChoice::Pull
        );
        // Gone: pull, whatever was served.
        assert_eq!(
            choose_queue(QueueSource::Off, Some(broker("m1", true))),
            QueueChoice::Pull
        );
        // A fresh read wins over the last broker.
        let on = QueueSource::On {
            uri: fresh,
            origin: SourceOrigin::Relation,
        };
        assert!(matches!(
            choose_queue(on, Some(broker("m1", true))),
            QueueChoice::Reactive { broker: Broker { ref host, from_relation: true, .. }, held: None } if host == "m2"
        ));
        assert_eq!(
            choose_queue(
                QueueSource::Unsupported("tls".into()),
                Some(broker("m1", true))
            ),
            QueueChoice::Blocked(Status::Blocked("tls".into()))
        );
    }

    #[test]
    fn mode_switch_table() {
        use Mode::*;
        assert_eq!(mode_switch(Pull, Pull), ModeSwitch::None);
        assert_eq!(mode_switch(Reactive, Reactive), ModeSwitch::None);
        assert_eq!(mode_switch(Pull, Reactive), ModeSwitch::PullToReactive);
        assert_eq!(mode_switch(Reactive, Pull), ModeSwitch::ReactiveToPull);
    }

    #[test]
    fn status_shows_workers_runners_and_queue() {
        let view = ReactiveView {
            target: 4,
            workers: vec![
                worker(0, Some("r1"), None, None),
                worker(1, None, Some(3), None),
            ],
            health: vec![],
        };
        assert_eq!(
            reactive_status(&view),
            Status::Active("reactive: 2/4 workers, 1 runner busy, queue 3".into())
        );
        let empty = ReactiveView {
            target: 0,
            workers: vec![],
            health: vec![],
        };
        assert_eq!(
            reactive_status(&empty),
            Status::Active("reactive: 0/0 workers, 0 runners busy".into())
        );
        let results = check_results(&view);
        assert_eq!(results["workers"], "2");
        assert_eq!(results["queue"], "3");
        assert_eq!(results["reactive-runners"], "1");
    }

    #[test]
    fn jobs_waiting_for_room_on_the_machine_are_named_in_the_status_and_check_runners() {
        let refusal = "no room on this machine for another runner (8 instances on it): \
                       host memory allows 8";
        let mut waiting = worker(1, None, Some(2), None);
        waiting.status.no_room = Some(refusal.into());
        let mut also = worker(2, None, Some(2), None);
        also.status.no_room = Some(refusal.into());
        let view = ReactiveView {
            target: 3,
            workers: vec![worker(0, Some("r1"), None, None), waiting, also],
            health: vec![],
        };
        assert_eq!(
            reactive_status(&view),
            Status::Active(format!(
                "reactive: 3/3 workers, 1 runner busy, queue 2; 2 jobs waiting: {refusal}"
            ))
        );
        assert_eq!(check_results(&view)["waiting-for-room"], "2");
        let none = ReactiveView {
            target: 1,
            workers: vec![worker(0, None, Some(0), None)],
            health: vec![],
        };
        assert!(!check_results(&none).contains_key("waiting-for-room"));
    }

    #[test]
    fn an_unreachable_broker_is_maintenance_naming_the_host() {
        let view = ReactiveView {
            target: 2,
            workers: vec![
                worker(0, None, None, Some("redis.internal:6379")),
                worker(1, None, None, None),
            ],
            health: vec![],
        };
        assert_eq!(
            reactive_status(&view),
            Status::Maintenance(
                "reactive: message broker redis.internal:6379 unreachable, workers retrying (2 of 2 up)"
                    .into()
            )
        );
    }

    /// Issue 20 item 15: what workers report shows; a rejected token blocks.
    #[test]
    fn worker_failures_show_in_the_status_worst_first_and_in_check_runners() {
        use crate::reactive::health::{FailureKind, WorkerFailure};
        let failing = |slot: u32, kind: FailureKind, detail: &str| SlotHealth {
            slot,
            live: true,
            status: SlotStatus {
                pid: 10 + slot,
                failure: Some(WorkerFailure::new(kind, detail, 8 * 3600 + 15 * 60)),
                ..SlotStatus::default()
            },
        };
        let lxd = failing(0, FailureKind::RunnerCreation, "LXD: image not found");
        let token = failing(
            1,
            FailureKind::TokenRejected,
            "GitHub rejected the token (401)",
        );
        let view = |health: Vec<SlotHealth>| ReactiveView {
            target: 2,
            workers: vec![worker(0, None, None, None), worker(1, None, None, None)],
            health,
        };
        assert_eq!(
            reactive_status(&view(vec![lxd.clone()])),
            Status::Maintenance(
                "reactive: runner-creation on 1 worker since 08:15 UTC: LXD: image not found"
                    .into()
            )
        );
        assert_eq!(
            reactive_status(&view(vec![lxd.clone(), token.clone()])),
            Status::Blocked(
                "reactive: workers cannot use the token: GitHub rejected the token (401)".into()
            )
        );
        let results = check_results(&view(vec![lxd, token]));
        assert_eq!(
            results["worker-failures"],
            "worker 0 (running): runner-creation at 08:15 UTC: LXD: image not found\n\
             worker 1 (running): token-rejected at 08:15 UTC: GitHub rejected the token (401)"
        );
        assert!(!check_results(&view(vec![])).contains_key("worker-failures"));
    }

    #[test]
    fn a_repository_the_token_cannot_read_blocks_naming_it() {
        let mut blind = worker(1, None, None, None);
        blind.status.job_access = Some(crate::messages::cannot_read_jobs("octo/secret"));
        let view = ReactiveView {
            target: 2,
            workers: vec![worker(0, None, None, None), blind],
            health: vec![],
        };
        assert_eq!(
            reactive_status(&view),
            Status::Blocked("cannot read jobs of octo/secret: the token needs Actions read".into())
        );
    }

    #[test]
    fn orphan_registrations_are_idle_ones_with_no_instance_and_no_live_claim() {
        use crate::github::RunnerOnline;
        let reg = |id: u64, name: &str, busy: bool| GitHubRunner {
            id,
            name: name.into(),
            status: RunnerOnline::Offline,
            busy,
            labels: vec![],
        };
        let registrations = vec![
            reg(1, "with-instance", false),
            reg(2, "held", false),
            reg(3, "busy", true),
            reg(4, "left-behind", false),
        ];
        assert_eq!(
            orphan_registrations(&registrations, &["with-instance".into()], &["held".into()]),
            vec![("left-behind".to_string(), 4)]
        );
        assert!(orphan_registrations(&[], &[], &[]).is_empty());
    }

    #[test]
    fn orphans_are_the_runners_no_live_claim_names() {
        let instances = vec!["a".to_string(), "b".into(), "c".into()];
        assert_eq!(orphan_runners(&instances, &["b".into()]), vec!["a", "c"]);
        assert!(orphan_runners(&instances, &instances).is_empty());
    }
}
