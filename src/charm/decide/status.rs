//! The unit's status as a pure decision. Precedence (highest first): Blocked (invalid
//! config, GitHub refusing the token or path, an immutable option changed, lxd-profile
//! outside test mode, too little storage), Waiting (LXD not answering, image or runner
//! binary not ready), Maintenance (what is happening, rate limit, transient GitHub errors),
//! Active (the runner summary from `manager::status`). The texts come from
//! `crate::messages`.

use crate::juju::state::UnitState;
use crate::juju::Status;
use crate::manager::ops::FailureKind;
use crate::manager::reconcile::{ReconcileError, ReconcileOutcome};
use crate::manager::status::{status_after, status_for_error};
use crate::messages;

/// What a unit with a valid configuration shows from local state only (no GitHub or LXD
/// call): the status the last reconcile or flush remembered, else waiting for the first.
pub fn ready_status(state: Option<&UnitState>) -> Status {
    state
        .and_then(|s| s.last_status.clone())
        .unwrap_or_else(|| Status::Waiting(messages::FIRST_RECONCILE.into()))
}

/// 0 = Active .. 3 = Blocked.
pub fn severity(status: &Status) -> u8 {
    match status {
        Status::Active(_) => 0,
        Status::Maintenance(_) => 1,
        Status::Waiting(_) => 2,
        Status::Blocked(_) => 3,
    }
}

/// The status to show of several that hold at once: the most severe, the first of equals.
pub fn worst(statuses: impl IntoIterator<Item = Status>) -> Option<Status> {
    let mut chosen: Option<Status> = None;
    for status in statuses {
        if chosen
            .as_ref()
            .is_none_or(|c| severity(&status) > severity(c))
        {
            chosen = Some(status);
        }
    }
    chosen
}

/// Why the host cannot create runners right now (besides configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// A creation found no image under the base-image alias.
    pub image_missing: Option<String>,
}

/// The status after a reconcile round: the manager's verdict on the round, a Waiting for an
/// unanswering LXD (rather than Maintenance) and for a missing image, whichever is worst.
pub fn after_reconcile(
    result: &Result<ReconcileOutcome, ReconcileError>,
    readiness: &Readiness,
) -> Status {
    let round = match result {
        Ok(outcome) => status_after(&outcome.plan, &outcome.report),
        Err(err @ ReconcileError::Lxd(e)) if e.kind == FailureKind::Transient => {
            Status::Waiting(messages::waiting_for_lxd(err))
        }
        Err(err) => status_for_error(err),
    };
    let image = readiness.image_missing.as_ref().map(|alias| {
        let summary = match &round {
            Status::Active(s) => Some(s.as_str()),
            _ => None,
        };
        Status::Waiting(messages::waiting_for_image(alias, summary))
    });
    match image {
        Some(image) if severity(&image) > severity(&round) => image,
        _ => round,
    }
}

/// The status a round leaves: [`after_reconcile`], or a worse note that also holds (a
/// failed binary update, a failed flush).
pub fn shown_after_round(
    result: &Result<ReconcileOutcome, ReconcileError>,
    readiness: &Readiness,
    notes: &[Status],
) -> Status {
    let round = after_reconcile(result, readiness);
    worst(notes.iter().cloned().chain([round.clone()])).unwrap_or(round)
}

/// `status` telling how many of the Python charm's runners still finish their job: an
/// Active summary says it; any other status is worth more than the count.
pub fn with_old_runners(status: Status, finishing: Option<usize>) -> Status {
    match (status, finishing) {
        (Status::Active(summary), Some(n)) if n > 0 => {
            Status::Active(messages::old_runners_finishing(&summary, n))
        }
        (status, _) => status,
    }
}

/// Scale-set mode's status from the listener's slot (pure): `slot` is slot
/// `scaleset::process::LISTENER_SLOT` as surveyed (None: never used), `scale_set` the
/// unit's scale set, `log` the listener's log file. A crash loop blocks naming the log
/// (only the operator can read why); no live listener is one starting (every reconcile
/// restarts it); a live one shows its phase: waiting for a session or retrying is
/// Waiting, listening is Active with the jobs the service last counted.
pub fn listener_status(
    scale_set: &str,
    slot: Option<&crate::reactive::health::SlotHealth>,
    log: &str,
) -> Status {
    use crate::scaleset::listener_state::ListenerPhase;
    let Some(slot) = slot else {
        return Status::Maintenance(messages::scale_set_listener_starting(scale_set));
    };
    let snapshot = slot.status.listener.as_ref();
    let name = snapshot
        .map(|s| s.scale_set.as_str())
        .filter(|n| !n.is_empty())
        .unwrap_or(scale_set);
    let phase = snapshot
        .and_then(|s| s.phase.as_ref())
        .filter(|_| slot.live);
    let listening = matches!(phase, Some(ListenerPhase::Listening { .. }));
    if slot.crash_looping() && !listening {
        return Status::Blocked(messages::scale_set_listener_crash_loop(
            name,
            slot.crashes_in_a_row(),
            log,
        ));
    }
    if slot.live && slot.status.stopping {
        return Status::Maintenance(messages::scale_set_listener_stopped(name));
    }
    match phase {
        None | Some(ListenerPhase::Starting) => {
            Status::Maintenance(messages::scale_set_listener_starting(name))
        }
        Some(p @ (ListenerPhase::WaitingForSession { .. } | ListenerPhase::Retrying { .. })) => {
            Status::Waiting(p.status_text(name))
        }
        Some(p @ ListenerPhase::HeldByAnother { .. }) => Status::Blocked(p.status_text(name)),
        Some(p @ ListenerPhase::Listening { .. }) => {
            let text = p.status_text(name);
            Status::Active(match snapshot.and_then(|s| s.statistics.as_ref()) {
                Some(stats) => messages::scale_set_listening_with_jobs(
                    &text,
                    stats.total_assigned_jobs,
                    stats.total_running_jobs,
                ),
                None => text,
            })
        }
        Some(p @ ListenerPhase::Stopped) => Status::Maintenance(p.status_text(name)),
    }
}

/// The text of a status, whatever its kind.
pub fn message(status: &Status) -> &str {
    match status {
        Status::Maintenance(m) | Status::Blocked(m) | Status::Waiting(m) | Status::Active(m) => m,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
