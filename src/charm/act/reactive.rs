//! Reactive mode in the pipeline: where a converge, a tear-down and check-runners meet
//! `reactive::mode`. Kept to call sites; the logic is in `src/reactive/`.

use super::super::context::Context;
use super::super::error::CharmError;
use super::super::runtime::{lxd_project_from, Runtime};
use super::super::setup::commands::{HostCommands, SystemCommands};
use super::actions::ActionResults;
use super::runners;
use crate::identity::UnitIdentity;
use crate::juju::event::Action;
use crate::manager::flush::FlushMode;
use crate::paths::HostPaths;
use crate::paths::HOST_ROOT_ENV;
use crate::reactive::mode::{self, Broker, Mode, ModeSwitch, QueueChoice, ReactiveRound};
use crate::reactive::run::WorkerSettings;
use crate::reactive::workers::{
    scope_prefix, DetachedWorkers, WorkerRole, WorkerScope, WORKER_BINARY,
};
use std::path::PathBuf;

/// The broker reactive mode consumes from, once known (`mq-uri` or the `mongodb` relation).
#[derive(Debug, Clone)]
pub struct ReactiveQueue {
    pub broker: Broker,
    pub queue_name: String,
}

/// What this hook runs on: `mq-uri`, else the `mongodb` relation's connection data (the
/// relation being broken in this hook does not count), else, while the relation is there
/// but unusable, the broker the unit last served ([`mode::choose_queue`]). A failing hook
/// tool fails the hook: Juju retries it, and nothing switched mode meanwhile.
pub fn queue_choice(ctx: &Context<'_>, rt: &Runtime) -> Result<QueueChoice, CharmError> {
    Ok(mode::current_queue(
        ctx.tools,
        rt.config.mq_uri.as_ref(),
        ctx.queue_hook_facts(),
        &mode::unit_dirs(&rt.paths, &rt.identity),
    )?)
}

/// The charm's worker binary: beside the running hook binary.
pub(super) fn worker_binary() -> PathBuf {
    // A missing /proc is a broken host: the spawn then fails with the bare name.
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(WORKER_BINARY)))
        .unwrap_or_else(|| PathBuf::from(WORKER_BINARY))
}

/// The production process control of reactive workers ([`control_for`]).
pub fn control(paths: &HostPaths, identity: &UnitIdentity) -> DetachedWorkers {
    control_for(paths, identity, WorkerRole::Reactive)
}

/// The production process control: the worker binary in `role`, with an explicit
/// environment, each process in a systemd scope of its own when systemd runs the machine
/// (so an agent restart does not kill it); started directly otherwise (a container
/// without systemd).
pub fn control_for(
    paths: &HostPaths,
    identity: &UnitIdentity,
    role: WorkerRole,
) -> DetachedWorkers {
    let path =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin".into());
    let mut env = vec![("PATH".to_string(), path.clone())];
    if let Ok(root) = std::env::var(HOST_ROOT_ENV) {
        env.push((HOST_ROOT_ENV.to_string(), root));
    }
    let scope = paths
        .systemd_booted_marker()
        .is_dir()
        .then(|| SystemCommands::new(Some(&path), &paths.lxd_conf_dir()).find("systemd-run"))
        .flatten()
        .map(|systemd_run| WorkerScope {
            systemd_run,
            unit_prefix: scope_prefix(&mode::unit_key(identity), role),
        });
    if scope.is_none() {
        tracing::debug!("no systemd: workers start in the hook's cgroup");
    }
    DetachedWorkers {
        binary: worker_binary(),
        role,
        env,
        scope,
    }
}

/// What workers need: the queue, the unit, the hook's configuration and proxies, and the
/// worker binary's identity (an upgrade-charm restarts workers: D12).
fn settings(
    ctx: &Context<'_>,
    rt: &Runtime,
    q: &ReactiveQueue,
) -> Result<WorkerSettings, CharmError> {
    let worker = worker_binary();
    let binary = format!(
        "{} {}",
        worker.display(),
        crate::host::file::binary_identity(&worker)
    );
    Ok(WorkerSettings {
        mq_uri: q.broker.uri.expose().to_string(),
        broker_host: q.broker.host.clone(),
        from_relation: q.broker.from_relation,
        queue_name: q.queue_name.clone(),
        unit_name: rt.identity.unit_name(),
        model_uuid: rt.identity.model_uuid.clone(),
        config: crate::reactive::run::worker_config(ctx.tools.config_get()?),
        http_proxy: ctx.hook.proxy.http.clone(),
        https_proxy: ctx.hook.proxy.https.clone(),
        no_proxy: ctx.hook.proxy.no_proxy.clone(),
        charm_dir: ctx.hook.charm_dir.clone(),
        lxd_project: lxd_project_from(|k| std::env::var(k).ok()),
        binary,
        // Read once, by the runtime: the same servers pull runners get.
        debug_ssh: rt.environment.debug_ssh.clone(),
    })
}

/// A reactive round, and whether the scope it acted on may be recorded.
#[derive(Debug)]
pub struct ReactiveConverge {
    pub round: ReactiveRound,
    /// False when the old fleet of a scope change could not be flushed: the change is
    /// retried by the next converge.
    pub scope_flushed: bool,
}

/// Before a converge's runner round: the mode switch, and in reactive mode the whole round.
/// None: pull mode, the pull round runs. `scope_flush`: the scope options that changed
/// since the charm last acted (the old fleet goes with the old credentials first, in
/// reactive mode too).
pub fn converge(
    ctx: &Context<'_>,
    rt: &Runtime,
    action: Option<Action>,
    scope_flush: &[&'static str],
) -> Result<Option<ReactiveConverge>, CharmError> {
    let dirs = mode::unit_dirs(&rt.paths, &rt.identity);
    let choice = queue_choice(ctx, rt)?;
    let now = match choice {
        QueueChoice::Reactive { .. } => Mode::Reactive,
        QueueChoice::Pull | QueueChoice::Blocked(_) => Mode::Pull,
    };
    let control = control(&rt.paths, &rt.identity);
    let previous = mode::previous_mode(&dirs);
    if let QueueChoice::Blocked(status) = choice {
        // Workers stop (handing back what they hold); pull runners are left as they are.
        if previous == Mode::Reactive {
            mode::leave(&rt.paths, &rt.identity, &control);
        }
        return Ok(Some(ReactiveConverge {
            round: ReactiveRound::blocked(status, rt.config.virtual_machines),
            scope_flushed: false,
        }));
    }
    match mode::mode_switch(previous, now) {
        ModeSwitch::None => {}
        ModeSwitch::PullToReactive => {
            tracing::info!("switching to reactive mode: idle runners go, workers start");
        }
        ModeSwitch::ReactiveToPull => {
            tracing::info!("switching to pull mode: workers stop, their idle runners go");
            mode::leave(&rt.paths, &rt.identity, &control);
            let flushed = runners::flush(rt, FlushMode::FlushIdle)?;
            if let Err(e) = flushed.result {
                tracing::warn!("flushing the reactive runners failed: {e}");
            }
        }
    }
    let QueueChoice::Reactive { broker, held } = choice else {
        return Ok(None);
    };
    let queue = ReactiveQueue {
        broker,
        queue_name: rt.identity.app.clone(),
    };
    let settings = settings(ctx, rt, &queue)?;
    let scope_flushed = stop_then_flush_old_scope(ctx, rt, scope_flush, || {
        mode::restart_workers(&rt.paths, &rt.identity, &control)
    })?;
    let _lock = crate::host::lock::UnitLock::acquire(
        &rt.paths.lock_file(),
        "reactive",
        &*rt.clock,
        rt.lock_wait,
    )?;
    if action == Some(Action::FlushRunners) {
        mode::restart_workers(&rt.paths, &rt.identity, &control);
    }
    let mut round = mode::converge(rt, &control, &settings);
    publish_gauges(rt, &round.view);
    if let Some(held) = held {
        round.status = held;
    }
    Ok(Some(ReactiveConverge {
        round,
        scope_flushed,
    }))
}

/// A scope change in a mode whose processes make the runners: they stop first (`stop`:
/// handing back what they hold), then the old fleet goes with the credentials it was made
/// with. False when that flush failed (the change is retried by the next converge).
pub(super) fn stop_then_flush_old_scope(
    ctx: &Context<'_>,
    rt: &Runtime,
    scope_flush: &[&'static str],
    stop: impl FnOnce(),
) -> Result<bool, CharmError> {
    if scope_flush.is_empty() {
        return Ok(true);
    }
    stop();
    let flushed = runners::flush_old_scope(ctx, rt, scope_flush)?;
    if let Err(e) = &flushed.result {
        tracing::warn!("flushing the runners of the old scope failed: {e}");
        return Ok(false);
    }
    Ok(true)
}

/// The exporter's reactive gauges (workers, busy ones, queue length) from the workers' own
/// reports. A metrics failure never fails the round.
fn publish_gauges(rt: &Runtime, view: &mode::ReactiveView) {
    let gauges = crate::observability::state::ReactiveGauges {
        workers: u32::try_from(view.running()).unwrap_or(u32::MAX),
        workers_busy: u32::try_from(view.runners()).unwrap_or(u32::MAX),
        queue_length: view.queue().unwrap_or(0),
    };
    if let Err(e) = crate::observability::state::set_reactive(&rt.paths.exporter_state(), gauges) {
        tracing::warn!("could not record the reactive gauges for the exporter: {e}");
    }
}

/// The action results of a reactive round.
pub fn action_results(round: &ReactiveRound) -> ActionResults {
    let mut results = mode::check_results(&round.view);
    results.insert(
        "delta.virtual-machines".into(),
        (i64::from(round.started) - i64::from(round.stopped)).to_string(),
    );
    results
}

/// stop, remove: every worker stops (handing back what it holds) before the runners go,
/// whatever the configuration.
pub fn tear_down(ctx: &Context<'_>) {
    mode::leave(
        ctx.paths,
        &ctx.hook.identity,
        &control(ctx.paths, &ctx.hook.identity),
    );
}

/// check-runners' reactive keys (worker count, queue length) while in reactive mode.
pub fn check_results(rt: &Runtime) -> Option<ActionResults> {
    let dirs = mode::unit_dirs(&rt.paths, &rt.identity);
    if mode::previous_mode(&dirs) != Mode::Reactive {
        return None;
    }
    let view = mode::ReactiveView::read(&dirs, rt.config.virtual_machines);
    Some(mode::check_results(&view))
}

/// update-status in reactive mode: the workers' own reports (slot files), no broker, GitHub
/// or LXD call. None in pull mode. A Waiting the last converge remembered (a relation
/// unusable for now, the unit on its last broker) stays until a hook reads the relation
/// again.
pub fn report_status(
    ctx: &Context<'_>,
    virtual_machines: u32,
    remembered: &crate::juju::Status,
) -> Option<crate::juju::Status> {
    let dirs = mode::unit_dirs(ctx.paths, &ctx.hook.identity);
    if mode::previous_mode(&dirs) != Mode::Reactive {
        return None;
    }
    if matches!(remembered, crate::juju::Status::Waiting(_)) {
        return Some(remembered.clone());
    }
    Some(mode::reactive_status(&mode::ReactiveView::read(
        &dirs,
        virtual_machines,
    )))
}
