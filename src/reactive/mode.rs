//! Reactive mode as the charm drives it: converge (settings, workers, orphan runners and
//! registrations, status), leave (mode switch to pull, stop, remove), restart
//! (flush-runners), and the check-runners keys. Decisions are pure ([`mode_switch`],
//! [`reactive_status`], [`orphan_runners`], [`orphan_registrations`], [`check_results`]);
//! the rest goes through `reactive::workers` and the runner code.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::claim::ClaimDir;
use super::run::{LxdRunners, WorkerSettings};
use super::worker::{JobRunners, RunnerRemoval};
use super::workers::{
    ensure_workers, render_logrotate, settings_fingerprint, stop_all, survey, write_settings,
    LiveWorker, ProcessControl, UnitDirs,
};
use crate::charm::fleet::CharmRunnerOps;
use crate::charm::runtime::Runtime;
use crate::github::{DeleteOutcome, GitHubRunner};
use crate::identity::UnitIdentity;
use crate::juju::Status;
use crate::paths::HostPaths;

/// How long a reconcile waits for the workers it started to take their slots (status).
const START_WAIT: Duration = Duration::from_secs(3);
/// How long stop, remove and a mode switch wait for workers to hand back what they hold.
pub const STOP_WAIT: Duration = Duration::from_secs(60);

/// The unit's reactive folders.
pub fn unit_dirs(paths: &HostPaths, identity: &UnitIdentity) -> UnitDirs {
    let key = format!("{}-{}", identity.app, identity.unit_number);
    UnitDirs::new(paths.reactive_dir(&key), paths.reactive_log_dir(&key))
}

/// The logrotate rule of the unit's worker logs.
pub fn logrotate_rule(paths: &HostPaths, identity: &UnitIdentity) -> std::path::PathBuf {
    paths.logrotate_dir().join(format!(
        "github-runner-reactive-{}-{}",
        identity.app, identity.unit_number
    ))
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
}

impl ReactiveView {
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

/// "reactive: 2/4 workers, 1 runner busy, queue 3"; Maintenance naming the broker host
/// while workers cannot reach it; Blocked while the token cannot read a repository's jobs
/// (only the operator can grant the permission).
pub fn reactive_status(view: &ReactiveView) -> Status {
    if let Some(host) = view.broker_error() {
        return Status::Maintenance(crate::messages::broker_unreachable(
            host,
            view.running(),
            view.target,
        ));
    }
    match view.job_access() {
        Some(text) => Status::Blocked(text.to_string()),
        None => Status::Active(crate::messages::reactive_summary(
            view.running(),
            view.target,
            view.runners(),
            view.queue(),
        )),
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
        let workers = survey(&dirs);
        let up = workers
            .iter()
            .filter(|w| !w.status.stopping && w.status.pid != 0)
            .count();
        if up >= target as usize || Instant::now() >= deadline {
            break ReactiveView { target, workers };
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
    match std::fs::remove_file(dirs.settings_file()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove the worker settings: {e}"),
    }
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
        };
        assert_eq!(
            reactive_status(&view),
            Status::Active("reactive: 2/4 workers, 1 runner busy, queue 3".into())
        );
        let empty = ReactiveView {
            target: 0,
            workers: vec![],
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
    fn an_unreachable_broker_is_maintenance_naming_the_host() {
        let view = ReactiveView {
            target: 2,
            workers: vec![
                worker(0, None, None, Some("redis.internal:6379")),
                worker(1, None, None, None),
            ],
        };
        assert_eq!(
            reactive_status(&view),
            Status::Maintenance(
                "reactive: message broker redis.internal:6379 unreachable, workers retrying (2 of 2 up)"
                    .into()
            )
        );
    }

    #[test]
    fn a_repository_the_token_cannot_read_blocks_naming_it() {
        let mut blind = worker(1, None, None, None);
        blind.status.job_access = Some(crate::messages::cannot_read_jobs("octo/secret"));
        let view = ReactiveView {
            target: 2,
            workers: vec![worker(0, None, None, None), blind],
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
