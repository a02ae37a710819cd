//! What the charm's hooks call, one line each: the exporter service (install, repair,
//! remove), the state file after a reconcile round, the cos-agent data refresh. Failures of
//! observability are logged, never fatal to a hook: metrics must not stop runners (only a
//! failing hook tool is returned, as everywhere).

use std::collections::BTreeMap;

use std::sync::{Mutex, PoisonError};

use super::cos_agent::{self, CosAgentError};
use super::service::{self, ExporterSpec};
use super::state::{self, RoundFacts, Update};
use crate::clock::Clock;
use crate::github::calls::ApiCall;
use crate::github::outcomes::process_outcomes;
use crate::host::timer::{InstallOutcome, Systemd, TimerSpec};
use crate::juju::context::HookContext;
use crate::juju::event::{Endpoint, Event, RelationEventKind};
use crate::juju::{HookToolError, HookTools};
use crate::manager::reconcile::{ReconcileError, ReconcileOutcome};
use crate::paths::HostPaths;

fn spec_of(timer: &TimerSpec) -> ExporterSpec {
    ExporterSpec {
        unit_name: timer.unit_name.clone(),
        charm_dir: timer.charm_dir.clone(),
        binary_id: crate::host::file::binary_identity(&service::binary_path(&timer.charm_dir)),
    }
}

/// Install the exporter service, or repair it (host setup).
pub fn ensure_exporter(
    paths: &HostPaths,
    timer: &TimerSpec,
    systemd: &dyn Systemd,
) -> Option<InstallOutcome> {
    service::install(paths, &spec_of(timer), systemd)
        .inspect_err(|e| tracing::warn!("could not install the metrics exporter: {e}"))
        .ok()
}

/// Restart the exporter when it is installed but stopped (update-status). No systemctl
/// call at all when it was never installed.
pub fn repair_exporter(paths: &HostPaths, timer: &TimerSpec, systemd: &dyn Systemd) {
    let spec = spec_of(timer);
    if paths.systemd_dir().join(spec.service_name()).exists() {
        ensure_exporter(paths, timer, systemd);
    }
}

/// The events observability itself acts on, before the charm's pipeline: publish the
/// cos-agent data on cos-agent relation-joined/changed, config-changed and upgrade-charm (as
/// the cos_agent library refreshes), and restart the exporter on upgrade-charm.
pub fn on_event(
    tools: &dyn HookTools,
    hook: &HookContext,
    paths: &HostPaths,
    event: &Event,
    systemd: &dyn Systemd,
) -> Result<(), HookToolError> {
    match event {
        Event::Relation {
            endpoint: Endpoint::CosAgent,
            kind: RelationEventKind::Joined | RelationEventKind::Changed,
        }
        | Event::ConfigChanged => refresh_cos_agent(tools, hook),
        Event::UpgradeCharm => {
            restart_exporter(paths, hook, systemd);
            refresh_cos_agent(tools, hook)
        }
        _ => Ok(()),
    }
}

/// upgrade-charm: the running exporter still executes the old binary; restart it when it
/// is installed (its unit file may be unchanged).
pub fn restart_exporter(paths: &HostPaths, hook: &HookContext, systemd: &dyn Systemd) {
    let name = exporter_spec(hook).service_name();
    if paths.systemd_dir().join(&name).exists() {
        if let Err(e) = systemd.restart(&name) {
            tracing::warn!("could not restart the metrics exporter: {e}");
        }
    }
}

fn exporter_spec(hook: &HookContext) -> ExporterSpec {
    ExporterSpec {
        unit_name: hook.identity.unit_name(),
        charm_dir: hook.charm_dir.clone(),
        binary_id: crate::host::file::binary_identity(&service::binary_path(&hook.charm_dir)),
    }
}

/// Stop and delete the exporter service (stop, remove).
pub fn remove_exporter(paths: &HostPaths, hook: &HookContext, systemd: &dyn Systemd) {
    if let Err(e) = service::remove(paths, &exporter_spec(hook), systemd) {
        tracing::warn!("could not remove the metrics exporter: {e}");
    }
}

/// This process's runner binary URL, when a binary check ran (setup::update_runner_binary).
static RUNNER_BINARY_URL: Mutex<Option<String>> = Mutex::new(None);
/// Call counts already folded into the state file by this process.
static FOLDED: Mutex<BTreeMap<(ApiCall, String), u64>> = Mutex::new(BTreeMap::new());

/// Remember the runner binary new runners get (its version is exported).
pub fn note_runner_binary(url: &str) {
    *RUNNER_BINARY_URL
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(url.to_string());
}

type Counts = BTreeMap<(ApiCall, String), u64>;

/// What `now` counts beyond `folded` (non-zero only). Pure.
fn delta(now: &Counts, folded: &Counts) -> Counts {
    now.iter()
        .map(|(k, n)| (k.clone(), n - folded.get(k).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// The calls since the last fold, and mark them folded: a process that reconciles twice
/// (flush then reconcile, an action) adds each call to the state file once.
fn unfolded_calls() -> Counts {
    let now = process_outcomes().counts();
    let mut folded = FOLDED.lock().unwrap_or_else(PoisonError::into_inner);
    let new = delta(&now, &folded);
    *folded = now;
    new
}

/// After a reconcile round: fold it into the exporter's state file.
pub fn record_round(
    paths: &HostPaths,
    clock: &dyn Clock,
    flavor: &str,
    interval_minutes: u32,
    result: &Result<ReconcileOutcome, ReconcileError>,
) {
    let path = paths.exporter_state();
    let previous = state::read(&path).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    });
    let calls = unfolded_calls();
    let url = RUNNER_BINARY_URL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let next = state::advance(
        previous.as_ref(),
        &Update {
            flavor,
            now: clock.now_epoch(),
            reconcile_interval_secs: u64::from(interval_minutes.max(1)) * 60,
            round: RoundFacts::of(result),
            calls: &calls,
            rate_limit: process_outcomes().rate_limit(),
            runner_binary_url: url.as_deref(),
        },
    );
    if let Err(e) = state::write(&path, &next) {
        tracing::warn!("{e}");
    }
}

/// Publish the cos-agent data on every cos-agent relation (relation hooks, upgrade-charm,
/// config-changed). Only a failing hook tool is an error.
pub fn refresh_cos_agent(tools: &dyn HookTools, hook: &HookContext) -> Result<(), HookToolError> {
    match cos_agent::publish(tools, hook) {
        Ok(_) => Ok(()),
        Err(CosAgentError::HookTool(e)) => Err(e),
        Err(e) => {
            tracing::warn!("cos-agent data not published: {e}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observability::testing::RecordingSystemd;

    #[test]
    fn only_calls_not_folded_yet_are_added() {
        let key = |s: &str| (ApiCall::ListRunners, s.to_string());
        let folded: Counts = [(key("200"), 3)].into_iter().collect();
        let now: Counts = [(key("200"), 5), (key("502"), 1)].into_iter().collect();
        let d = delta(&now, &folded);
        assert_eq!(d, [(key("200"), 2), (key("502"), 1)].into_iter().collect());
        assert!(delta(&now, &now).is_empty());
    }

    #[test]
    fn cos_agent_data_follows_its_relation_config_changes_and_upgrades() {
        use crate::juju::memory::{MemoryHookTools, MemoryRelation};
        let tools = MemoryHookTools::default();
        tools
            .lock()
            .relations
            .insert("cos-agent:7".into(), MemoryRelation::default());
        let hook = crate::charm::testing::hook_context();
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let systemd = RecordingSystemd::default();
        let published = |event: Event| {
            tools
                .lock()
                .relations
                .get_mut("cos-agent:7")
                .unwrap()
                .data
                .clear();
            on_event(&tools, &hook, &paths, &event, &systemd).unwrap();
            !tools.lock().relations["cos-agent:7"].data.is_empty()
        };
        let relation = |endpoint, kind| Event::Relation { endpoint, kind };
        assert!(published(relation(
            Endpoint::CosAgent,
            RelationEventKind::Joined
        )));
        assert!(published(relation(
            Endpoint::CosAgent,
            RelationEventKind::Changed
        )));
        assert!(published(Event::ConfigChanged));
        assert!(!published(relation(
            Endpoint::CosAgent,
            RelationEventKind::Broken
        )));
        assert!(!published(relation(
            Endpoint::Mongodb,
            RelationEventKind::Joined
        )));
        assert!(!published(Event::UpdateStatus));
        // upgrade-charm: publish, and restart an installed exporter (it runs the old binary).
        assert!(published(Event::UpgradeCharm));
        assert!(systemd.calls().is_empty(), "not installed: left alone");
        let name = exporter_spec(&hook).service_name();
        std::fs::create_dir_all(paths.systemd_dir()).unwrap();
        std::fs::write(paths.systemd_dir().join(&name), "").unwrap();
        assert!(published(Event::UpgradeCharm));
        assert_eq!(systemd.calls(), vec![format!("restart {name}")]);
    }

    #[test]
    fn the_service_is_repaired_restarted_and_removed_only_when_installed() {
        let systemd = RecordingSystemd::default();
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let hook = crate::charm::testing::hook_context();
        let timer = TimerSpec {
            unit_name: hook.identity.unit_name(),
            charm_dir: "/charm".into(),
            interval_minutes: 5,
        };
        repair_exporter(&paths, &timer, &systemd);
        restart_exporter(&paths, &hook, &systemd);
        remove_exporter(&paths, &hook, &systemd);
        assert!(systemd.calls().is_empty(), "{:?}", systemd.calls());
    }
}
