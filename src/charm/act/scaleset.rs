//! Scale-set mode in the pipeline (issue 23): the mode switch around it, the listener's
//! settings and process (one per unit, slot `LISTENER_SLOT`, started detached like the
//! reactive workers), its status, check-runners keys and tear-down. Decisions are
//! `decide::mode` and `decide::status::listener_status`; the listener itself (the worker
//! binary with `--scale-set`) makes and removes the runners, so no pull round runs here.
//! Runners of the scale set with no instance, or instances whose runner is gone, are the
//! listener's to repair: the charm cannot tell one the listener is creating from a leftover.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::super::context::Context;
use super::super::decide::mode::{choose_mode, scale_set_switch, ModeChoice, UnitMode};
use super::super::decide::status::listener_status;
use super::super::error::CharmError;
use super::super::runtime::{lxd_project_from, Runtime};
use super::actions::ActionResults;
use super::runners;
use crate::identity::UnitIdentity;
use crate::juju::event::Action;
use crate::juju::Status;
use crate::manager::flush::FlushMode;
use crate::paths::HostPaths;
use crate::reactive::health::SlotHealth;
use crate::reactive::mode::{self as reactive_mode, Mode, STOP_WAIT};
use crate::reactive::workers::{
    remove_settings, render_logrotate, settings_fingerprint, stop_or_kill, survey, survey_slots,
    write_settings, ProcessControl, UnitDirs, WorkerRole,
};
use crate::scaleset::process::{self, ListenerSettings, LISTENER_SLOT};

/// How long a reconcile waits for the listener it started to take its slot (status).
const START_WAIT: Duration = Duration::from_secs(3);

/// Options the listener never reads: the hook-only ones (`reactive::run`) but
/// `virtual-machines` (its maximum capacity), and the token (the listener reads the
/// credential from the unit's credential file).
fn listener_config(
    mut config: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    config.retain(|k, _| {
        k == "virtual-machines"
            || !(crate::reactive::run::HOOK_ONLY_OPTIONS.contains(&k.as_str()) || k == "token")
    });
    config
}

/// The logrotate rule of the unit's listener log.
pub fn logrotate_rule(paths: &HostPaths, identity: &UnitIdentity) -> PathBuf {
    paths.logrotate_dir().join(format!(
        "github-runner-scale-set-{}",
        reactive_mode::unit_key(identity)
    ))
}

/// remove: the unit's scale-set state folder (settings, slot, cursor) and the logrotate
/// rule go; the listener's log stays. Call after [`tear_down`]. Idempotent.
pub fn remove_unit_files(paths: &HostPaths, identity: &UnitIdentity) {
    crate::host::file::remove_logged(&process::unit_dirs(paths, identity).state);
    crate::host::file::remove_logged(&logrotate_rule(paths, identity));
}

/// The listener is on: its settings file is there (written by every scale-set converge,
/// removed when leaving the mode).
fn listener_was_on(dirs: &UnitDirs) -> bool {
    dirs.settings_file().exists()
}

/// Stops the listener (SIGTERM, [`STOP_WAIT`], then SIGKILL: its work is at-least-once,
/// so a kill loses no job) and removes its settings file. Returns whether one still runs.
pub fn leave(paths: &HostPaths, identity: &UnitIdentity, control: &dyn ProcessControl) -> bool {
    leave_within(&process::unit_dirs(paths, identity), control, STOP_WAIT)
}

fn leave_within(dirs: &UnitDirs, control: &dyn ProcessControl, wait: Duration) -> bool {
    let left = stop_or_kill(dirs, control, wait);
    remove_settings(dirs);
    if left > 0 {
        tracing::warn!("the scale-set listener still runs after SIGKILL");
    }
    left > 0
}

fn control(
    paths: &HostPaths,
    identity: &UnitIdentity,
) -> crate::reactive::workers::DetachedWorkers {
    super::reactive::control_for(paths, identity, WorkerRole::Listener)
}

/// What the status and check-runners show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerView {
    /// The unit's scale set (`<scale-set-name>-<unit number>`).
    pub scale_set: String,
    /// The listener's slot as surveyed (None: never used).
    pub slot: Option<SlotHealth>,
    pub log: PathBuf,
}

impl ListenerView {
    pub fn read(dirs: &UnitDirs, scale_set: &str) -> Self {
        ListenerView {
            scale_set: scale_set.to_string(),
            slot: survey_slots(dirs)
                .into_iter()
                .find(|s| s.slot == LISTENER_SLOT),
            log: dirs.log_file(LISTENER_SLOT),
        }
    }

    pub fn status(&self) -> Status {
        listener_status(
            &self.scale_set,
            self.slot.as_ref(),
            &self.log.display().to_string(),
        )
    }

    pub fn live(&self) -> bool {
        self.slot.as_ref().is_some_and(|s| s.live)
    }

    /// check-runners' scale-set keys.
    pub fn check_results(&self) -> ActionResults {
        let mut r = ActionResults::from([
            ("mode".to_string(), "scale-set".to_string()),
            ("scale-set".to_string(), self.scale_set.clone()),
            (
                "listener".to_string(),
                if self.live() {
                    "running"
                } else {
                    "not running"
                }
                .to_string(),
            ),
        ]);
        let snapshot = self.slot.as_ref().and_then(|s| s.status.listener.as_ref());
        if let Some(stats) = snapshot.and_then(|s| s.statistics.as_ref()) {
            r.insert(
                "assigned-jobs".into(),
                stats.total_assigned_jobs.to_string(),
            );
            r.insert("running-jobs".into(), stats.total_running_jobs.to_string());
            r.insert("idle-runners".into(), stats.total_idle_runners.to_string());
            r.insert("busy-runners".into(), stats.total_busy_runners.to_string());
        }
        if let Some(slot) = &self.slot {
            r.insert(
                "listener-crashes".into(),
                slot.crashes_in_a_row().to_string(),
            );
        }
        r
    }
}

/// What a scale-set round did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerRound {
    pub status: Status,
    /// None: the round was blocked before looking at the listener.
    pub view: Option<ListenerView>,
    pub started: u32,
    pub stopped: u32,
    pub problems: Vec<String>,
    /// False when the old fleet of a scope change could not be flushed (or the round was
    /// blocked): the change is retried by the next converge.
    pub scope_flushed: bool,
}

impl ListenerRound {
    fn blocked(status: Status) -> Self {
        ListenerRound {
            status,
            view: None,
            started: 0,
            stopped: 0,
            problems: Vec::new(),
            scope_flushed: false,
        }
    }
}

/// One scale-set reconcile of the listener: settings file (0600 in a 0700 folder),
/// logrotate rule, exactly one listener in slot [`LISTENER_SLOT`] running `bytes`
/// (one with other settings, or in another slot, is stopped first: two listeners would
/// fight over the session), status. `stop_wait`: how long a stale listener gets to exit.
pub fn converge_listener(
    dirs: &UnitDirs,
    rule: &std::path::Path,
    control: &dyn ProcessControl,
    bytes: &[u8],
    scale_set: &str,
    stop_wait: Duration,
) -> ListenerRound {
    let mut problems = Vec::new();
    if std::fs::read(dirs.settings_file()).ok().as_deref() != Some(bytes) {
        if let Err(e) = write_settings(dirs, bytes) {
            problems.push(format!("cannot write the listener settings: {e}"));
        }
    }
    if let Err(e) =
        crate::host::file::replace_if_changed(rule, &render_logrotate(&dirs.logs), 0o644)
    {
        problems.push(format!("cannot write {}: {e}", rule.display()));
    }
    let fingerprint = settings_fingerprint(bytes);
    let live = survey(dirs);
    let current = live
        .iter()
        .any(|w| w.slot == LISTENER_SLOT && !w.status.stopping && w.status.settings == fingerprint);
    let stale = live
        .iter()
        .any(|w| w.slot != LISTENER_SLOT || w.status.stopping || w.status.settings != fingerprint);
    let (mut started, mut stopped) = (0, 0);
    if !current {
        let mut free = true;
        if stale {
            stopped = u32::try_from(live.len()).unwrap_or(u32::MAX);
            free = stop_or_kill(dirs, control, stop_wait) == 0;
        }
        if !free {
            problems.push(
                "the previous listener still runs; the next reconcile starts the new one".into(),
            );
        } else if let Err(e) = dirs
            .create()
            .map_err(|e| e.to_string())
            .and_then(|()| control.start(dirs, LISTENER_SLOT))
        {
            problems.push(format!("cannot start the listener: {e}"));
        } else {
            started = 1;
        }
    }
    let deadline = Instant::now() + START_WAIT;
    let view = loop {
        let view = ListenerView::read(dirs, scale_set);
        let up = view
            .slot
            .as_ref()
            .is_some_and(|s| s.live && s.status.pid != 0);
        if started == 0 || up || Instant::now() >= deadline {
            break view;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    for p in &problems {
        tracing::warn!("scale set: {p}");
    }
    ListenerRound {
        status: view.status(),
        view: Some(view),
        started,
        stopped,
        problems,
        scope_flushed: true,
    }
}

/// What the listener needs (never the token).
fn settings(ctx: &Context<'_>, rt: &Runtime) -> Result<ListenerSettings, CharmError> {
    let worker = super::reactive::worker_binary();
    Ok(ListenerSettings {
        unit_name: rt.identity.unit_name(),
        model_uuid: rt.identity.model_uuid.clone(),
        config: listener_config(ctx.tools.config_get()?),
        http_proxy: ctx.hook.proxy.http.clone(),
        https_proxy: ctx.hook.proxy.https.clone(),
        no_proxy: ctx.hook.proxy.no_proxy.clone(),
        charm_dir: ctx.hook.charm_dir.clone(),
        lxd_project: lxd_project_from(|k| std::env::var(k).ok()),
        binary: format!(
            "{} {}",
            worker.display(),
            crate::host::file::binary_identity(&worker)
        ),
        debug_ssh: rt.environment.debug_ssh.clone(),
    })
}

/// Idle runners go (busy ones finish): the runners of the mode being left.
fn flush_idle(rt: &Runtime, why: &str) -> Result<(), CharmError> {
    let flushed = runners::flush(rt, FlushMode::FlushIdle)?;
    if let Err(e) = flushed.result {
        tracing::warn!("{why}: flushing idle runners failed: {e}");
    }
    Ok(())
}

/// Before a converge's other rounds: leaving scale-set mode (None then: reactive or pull
/// goes on), or in scale-set mode the whole round (entering it first when it was off).
pub fn converge(
    ctx: &Context<'_>,
    rt: &Runtime,
    action: Option<Action>,
    scope_flush: &[&'static str],
) -> Result<Option<ListenerRound>, CharmError> {
    let dirs = process::unit_dirs(&rt.paths, &rt.identity);
    let was_on = listener_was_on(&dirs);
    let unit_scale_set = rt.config.unit_scale_set(rt.identity.unit_number);
    let Some(scale_set) = unit_scale_set else {
        if scale_set_switch(was_on, false, UnitMode::Pull).stop_listener {
            tracing::info!("leaving scale-set mode: the listener stops, its idle runners go");
            leave(&rt.paths, &rt.identity, &control(&rt.paths, &rt.identity));
            flush_idle(rt, "leaving scale-set mode")?;
        }
        return Ok(None);
    };
    let queue = super::reactive::queue_choice(ctx, rt)?;
    let now = match choose_mode(true, &queue, &rt.identity.app) {
        ModeChoice::Blocked(status) => return Ok(Some(ListenerRound::blocked(status))),
        ModeChoice::Run(mode) => mode,
    };
    let reactive_dirs = reactive_mode::unit_dirs(&rt.paths, &rt.identity);
    let workers_were_on = reactive_mode::previous_mode(&reactive_dirs) == Mode::Reactive;
    let switch = scale_set_switch(was_on, workers_were_on, now);
    if switch.stop_workers {
        tracing::info!("entering scale-set mode: reactive workers stop");
        reactive_mode::leave(
            &rt.paths,
            &rt.identity,
            &super::reactive::control(&rt.paths, &rt.identity),
        );
    }
    if switch.flush_idle {
        tracing::info!("entering scale-set mode: idle runners go, the listener starts");
        flush_idle(rt, "entering scale-set mode")?;
    }
    let control = control(&rt.paths, &rt.identity);
    let settings = settings(ctx, rt)?;
    let scope_flushed = super::reactive::stop_then_flush_old_scope(ctx, rt, scope_flush, || {
        stop_or_kill(&dirs, &control, STOP_WAIT);
    })?;
    let _lock = crate::host::lock::UnitLock::acquire(
        &rt.paths.lock_file(),
        "scale-set",
        &*rt.clock,
        rt.lock_wait,
    )?;
    if action == Some(Action::FlushRunners) {
        stop_or_kill(&dirs, &control, STOP_WAIT);
    }
    let round = converge_listener(
        &dirs,
        &logrotate_rule(&rt.paths, &rt.identity),
        &control,
        &settings.to_bytes(),
        &scale_set,
        STOP_WAIT,
    );
    Ok(Some(ListenerRound {
        scope_flushed,
        ..round
    }))
}

/// The action results of a scale-set round.
pub fn action_results(round: &ListenerRound) -> ActionResults {
    let mut results = round
        .view
        .as_ref()
        .map(ListenerView::check_results)
        .unwrap_or_default();
    results.insert(
        "delta.listener".into(),
        (i64::from(round.started) - i64::from(round.stopped)).to_string(),
    );
    results
}

/// stop, remove: the listener stops before the runners go, whatever the configuration.
pub fn tear_down(ctx: &Context<'_>) {
    leave(
        ctx.paths,
        &ctx.hook.identity,
        &control(ctx.paths, &ctx.hook.identity),
    );
}

/// The listener's view while in scale-set mode (its settings file there).
fn view(
    paths: &HostPaths,
    identity: &UnitIdentity,
    config: &crate::config::CharmConfig,
) -> Option<ListenerView> {
    let dirs = process::unit_dirs(paths, identity);
    let scale_set = config.unit_scale_set(identity.unit_number)?;
    listener_was_on(&dirs).then(|| ListenerView::read(&dirs, &scale_set))
}

/// check-runners' scale-set keys while in scale-set mode.
pub fn check_results(rt: &Runtime) -> Option<ActionResults> {
    view(&rt.paths, &rt.identity, &rt.config).map(|v| v.check_results())
}

/// update-status in scale-set mode: the listener's own report (its slot file), no GitHub
/// or LXD call. None in the other modes. The mongodb relation alongside, as the last
/// converge found it, stays shown until a hook reads the relation again.
pub fn report_status(
    ctx: &Context<'_>,
    config: &crate::config::CharmConfig,
    remembered: &Status,
) -> Option<Status> {
    let view = view(ctx.paths, &ctx.hook.identity, config)?;
    let conflict = crate::messages::scale_set_with_mongodb_relation(&ctx.hook.identity.app);
    if *remembered == Status::Blocked(conflict) {
        return Some(remembered.clone());
    }
    Some(view.status())
}

#[cfg(test)]
#[path = "scaleset_tests.rs"]
mod tests;
