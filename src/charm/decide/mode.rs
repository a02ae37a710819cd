//! The unit's mode, one choice over pull, reactive and scale-set (issue 23), and what a
//! change into or out of scale-set mode requires. Pull <-> reactive switches stay
//! `reactive::mode`'s; these tables only add scale-set mode around them.

use crate::juju::Status;
use crate::reactive::mode::QueueChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnitMode {
    /// Runners kept ready by the reconcile.
    Pull,
    /// Workers take jobs from a message queue.
    Reactive,
    /// The unit's listener takes jobs from GitHub's own queue (its scale set).
    ScaleSet,
}

/// What this hook runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModeChoice {
    Run(UnitMode),
    /// Nothing changes (no process started or stopped, no runner removed); the status says
    /// why.
    Blocked(Status),
}

/// Pure. `scale_set`: `scale-set-name` is set (validation already refused it with
/// `mq-uri`); `queue`: what the queue sources say (`reactive::mode::choose_queue`). A
/// `mongodb` relation giving connection data, usable or not, together with a scale set
/// blocks naming both; a relation that is there without data (held on the last broker)
/// does not: it gives no queue to serve.
pub fn choose_mode(scale_set: bool, queue: &QueueChoice, app: &str) -> ModeChoice {
    match (scale_set, queue) {
        (true, QueueChoice::Reactive { held: None, .. } | QueueChoice::Blocked(_)) => {
            ModeChoice::Blocked(Status::Blocked(
                crate::messages::scale_set_with_mongodb_relation(app),
            ))
        }
        (true, _) => ModeChoice::Run(UnitMode::ScaleSet),
        (false, QueueChoice::Reactive { .. }) => ModeChoice::Run(UnitMode::Reactive),
        (false, QueueChoice::Pull) => ModeChoice::Run(UnitMode::Pull),
        (false, QueueChoice::Blocked(status)) => ModeChoice::Blocked(status.clone()),
    }
}

/// What entering or leaving scale-set mode requires before converging in `now`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScaleSetSwitch {
    /// Reactive workers stop, handing back what they hold (entering scale-set mode).
    pub stop_workers: bool,
    /// The listener stops (leaving scale-set mode).
    pub stop_listener: bool,
    /// Idle runners go (busy ones finish their job): pull's when entering, as a switch to
    /// reactive mode lets them go; the listener's when leaving, as leaving reactive does.
    pub flush_idle: bool,
}

/// Pure. `listener_was_on` / `workers_were_on`: the listener's / workers' settings file
/// is there (each written by its mode's converge, removed when leaving it). Idempotent:
/// a switch killed halfway is completed by the next hook.
pub fn scale_set_switch(
    listener_was_on: bool,
    workers_were_on: bool,
    now: UnitMode,
) -> ScaleSetSwitch {
    match now {
        UnitMode::ScaleSet => ScaleSetSwitch {
            stop_workers: workers_were_on,
            stop_listener: false,
            flush_idle: !listener_was_on,
        },
        UnitMode::Pull | UnitMode::Reactive => ScaleSetSwitch {
            stop_workers: false,
            stop_listener: listener_was_on,
            flush_idle: listener_was_on,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactive::mode::Broker;
    use crate::secret::Secret;

    fn reactive(held: Option<Status>) -> QueueChoice {
        QueueChoice::Reactive {
            broker: Broker {
                uri: Secret::new("mongodb://u:pw@m1/db".to_string()),
                host: "m1".into(),
                from_relation: true,
            },
            held,
        }
    }

    #[test]
    fn one_mode_from_the_options_and_the_queue_sources() {
        use UnitMode::*;
        let conflict = ModeChoice::Blocked(Status::Blocked(
            crate::messages::scale_set_with_mongodb_relation("app"),
        ));
        let unsupported = QueueChoice::Blocked(Status::Blocked("tls".into()));
        let held = Some(Status::Waiting("no provider unit yet".into()));
        let table = [
            (false, QueueChoice::Pull, ModeChoice::Run(Pull)),
            (false, reactive(None), ModeChoice::Run(Reactive)),
            (false, reactive(held.clone()), ModeChoice::Run(Reactive)),
            (
                false,
                unsupported.clone(),
                ModeChoice::Blocked(Status::Blocked("tls".into())),
            ),
            (true, QueueChoice::Pull, ModeChoice::Run(ScaleSet)),
            (true, reactive(None), conflict.clone()),
            (true, unsupported, conflict),
            // A relation with no data now gives no queue: the scale set runs.
            (true, reactive(held), ModeChoice::Run(ScaleSet)),
        ];
        for (scale_set, queue, expected) in table {
            assert_eq!(
                choose_mode(scale_set, &queue, "app"),
                expected,
                "{scale_set} {queue:?}"
            );
        }
        let ModeChoice::Blocked(Status::Blocked(text)) =
            choose_mode(true, &reactive(None), "runners")
        else {
            panic!("not blocked");
        };
        assert!(
            text.contains("scale-set-name") && text.contains("mongodb relation"),
            "names both: {text}"
        );
        assert!(
            text.contains("juju remove-relation runners mongodb"),
            "{text}"
        );
    }

    #[test]
    fn switches_into_and_out_of_scale_set_mode() {
        use UnitMode::*;
        let s = |stop_workers, stop_listener, flush_idle| ScaleSetSwitch {
            stop_workers,
            stop_listener,
            flush_idle,
        };
        let table = [
            // (listener was on, workers were on, now) -> switch
            ((false, false, ScaleSet), s(false, false, true)),
            ((false, true, ScaleSet), s(true, false, true)),
            ((true, false, ScaleSet), s(false, false, false)),
            // Killed between the listener's first settings and the workers' stop.
            ((true, true, ScaleSet), s(true, false, false)),
            ((true, false, Pull), s(false, true, true)),
            ((true, false, Reactive), s(false, true, true)),
            ((false, false, Pull), s(false, false, false)),
            // Reactive <-> pull is reactive::mode's.
            ((false, true, Pull), s(false, false, false)),
            ((false, true, Reactive), s(false, false, false)),
        ];
        for ((listener, workers, now), expected) in table {
            assert_eq!(
                scale_set_switch(listener, workers, now),
                expected,
                "{listener} {workers} {now:?}"
            );
        }
    }
}
