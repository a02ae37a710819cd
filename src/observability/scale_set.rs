//! The scale-set listener's gauges, read at each scrape from its slot file (live: the
//! listener rewrites it at every phase change and message, between reconciles). Nothing is
//! shown for a unit that never ran a listener (no slot file).

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::exposition::{gauge, labels, FGauge};
use crate::reactive::workers::{survey_slots, UnitDirs};
use crate::scaleset::listener_state::ListenerPhase;
use crate::scaleset::process::{ListenerSnapshot, LISTENER_SLOT};

/// The values of `github_runner_scale_set_listener{phase}`: the listener's phases, and
/// `down` when no listener process holds the slot.
pub const LISTENER_PHASES: [&str; 7] = [
    "starting",
    "waiting-for-session",
    "held-by-another",
    "listening",
    "retrying",
    "stopped",
    "down",
];

/// What a scrape knows of the unit's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetView {
    /// A listener process holds the slot now.
    pub live: bool,
    pub snapshot: Option<ListenerSnapshot>,
}

/// The unit's listener as its slot file says; None when the unit has none.
pub fn read_view(dirs: &UnitDirs) -> Option<ScaleSetView> {
    let slot = survey_slots(dirs)
        .into_iter()
        .find(|s| s.slot == LISTENER_SLOT)?;
    Some(ScaleSetView {
        live: slot.live,
        snapshot: slot.status.listener,
    })
}

/// The phase label of `view` (pure).
pub fn phase_label(view: &ScaleSetView) -> &'static str {
    if !view.live {
        return "down";
    }
    match view.snapshot.as_ref().and_then(|s| s.phase.as_ref()) {
        None | Some(ListenerPhase::Starting) => "starting",
        Some(ListenerPhase::WaitingForSession { .. }) => "waiting-for-session",
        Some(ListenerPhase::HeldByAnother { .. }) => "held-by-another",
        Some(ListenerPhase::Listening { .. }) => "listening",
        Some(ListenerPhase::Retrying { .. }) => "retrying",
        Some(ListenerPhase::Stopped) => "stopped",
    }
}

pub fn register(registry: &mut Registry, view: &ScaleSetView) {
    let current = phase_label(view);
    let phases: Family<super::log_stats::Labels, FGauge> = Family::default();
    for phase in LISTENER_PHASES {
        phases
            .get_or_create(&labels(&[("phase", phase)]))
            .set(f64::from(u8::from(phase == current)));
    }
    registry.register(
        "github_runner_scale_set_listener",
        "1 for the scale-set listener's phase (down: no listener process)",
        phases,
    );
    let Some(stats) = view.snapshot.as_ref().and_then(|s| s.statistics) else {
        return;
    };
    let jobs: Family<super::log_stats::Labels, FGauge> = Family::default();
    for (state, n) in [
        ("available", stats.total_available_jobs),
        ("acquired", stats.total_acquired_jobs),
        ("assigned", stats.total_assigned_jobs),
        ("running", stats.total_running_jobs),
    ] {
        jobs.get_or_create(&labels(&[("state", state)]))
            .set(n as f64);
    }
    registry.register(
        "github_runner_scale_set_jobs",
        "The scale set's jobs by state, as the service's last statistics said",
        jobs,
    );
    let runners: Family<super::log_stats::Labels, FGauge> = Family::default();
    for (state, n) in [
        ("registered", stats.total_registered_runners),
        ("busy", stats.total_busy_runners),
        ("idle", stats.total_idle_runners),
    ] {
        runners
            .get_or_create(&labels(&[("state", state)]))
            .set(n as f64);
    }
    registry.register(
        "github_runner_scale_set_runners",
        "The scale set's runners by state, as the service's last statistics said",
        runners,
    );
    gauge(
        registry,
        "github_runner_scale_set_statistics_present",
        "1 once the listener has the service's statistics",
        1.0,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scaleset::Statistics;
    use std::time::Duration;

    fn view(live: bool, phase: Option<ListenerPhase>) -> ScaleSetView {
        ScaleSetView {
            live,
            snapshot: Some(ListenerSnapshot {
                scale_set: "linux-0".into(),
                phase,
                statistics: None,
            }),
        }
    }

    #[test]
    fn the_phase_label_is_down_without_a_live_listener_whatever_its_file_says() {
        let listening = Some(ListenerPhase::Listening { scale_set_id: 4 });
        assert_eq!(phase_label(&view(false, listening.clone())), "down");
        assert_eq!(phase_label(&view(true, listening)), "listening");
        assert_eq!(phase_label(&view(true, None)), "starting");
        let waiting = ListenerPhase::WaitingForSession {
            attempt: 1,
            retry_in: Duration::from_secs(5),
        };
        assert_eq!(
            phase_label(&view(true, Some(waiting))),
            "waiting-for-session"
        );
        let retrying = ListenerPhase::Retrying {
            error: "x".into(),
            retry_in: Duration::from_secs(5),
        };
        assert_eq!(phase_label(&view(true, Some(retrying))), "retrying");
        assert_eq!(
            phase_label(&view(true, Some(ListenerPhase::Stopped))),
            "stopped"
        );
        for label in LISTENER_PHASES {
            assert!(!label.is_empty());
        }
    }

    #[test]
    fn a_live_listeners_slot_file_gives_its_snapshot_and_a_free_slot_says_down() {
        use crate::reactive::workers::SlotHold;
        let dir = tempfile::tempdir().unwrap();
        let dirs = UnitDirs::new(dir.path().join("state"), dir.path().join("logs"));
        assert_eq!(read_view(&dirs), None, "no slot file: no listener");
        dirs.create().unwrap();
        let mut hold = SlotHold::acquire(&dirs, LISTENER_SLOT, Duration::ZERO)
            .unwrap()
            .unwrap();
        let snapshot = ListenerSnapshot {
            scale_set: "linux-0".into(),
            phase: Some(ListenerPhase::Listening { scale_set_id: 4 }),
            statistics: Some(Statistics {
                total_assigned_jobs: 2,
                ..Statistics::default()
            }),
        };
        hold.status.listener = Some(snapshot.clone());
        hold.publish().unwrap();
        let live = read_view(&dirs).unwrap();
        assert!(live.live);
        assert_eq!(live.snapshot, Some(snapshot));
        drop(hold);
        assert!(!read_view(&dirs).unwrap().live);
    }
}
