//! The planner and runners waiting for their job before replacement: flushed while busy,
//! or of a previous scope. Every standing against every instance state and GitHub view.

use super::*;
use crate::lxd::InstanceType;
use crate::manager::replacement::{REPLACE_CONFIG_KEY, SCOPE_CONFIG_KEY};

const NOW: u64 = 1_000_000;
const GRACE: u64 = 600;
const OLD_AGE: u64 = 3_600;
const NEW_SCOPE: &str = "scope-new";
const OLD_SCOPE: &str = "scope-old";

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// Made for the current scope, never flushed.
    Current,
    /// Made for the current scope, flushed while busy.
    Flushed,
    /// Made for the previous scope (launch key).
    OldScope,
    /// Made before the scope key existed, flushed in the previous scope.
    OldUnkeyedMarked,
}

fn instance(name: &str, kind: Kind, state: InstanceState, id: u64) -> Instance {
    let mut config = BTreeMap::from([(RUNNER_ID_CONFIG_KEY.to_string(), id.to_string())]);
    let mut put = |k: &str, v: &str| config.insert(k.to_string(), v.to_string());
    match kind {
        Kind::Current => put(SCOPE_CONFIG_KEY, NEW_SCOPE),
        Kind::Flushed => {
            put(SCOPE_CONFIG_KEY, NEW_SCOPE);
            put(REPLACE_CONFIG_KEY, NEW_SCOPE)
        }
        Kind::OldScope => put(SCOPE_CONFIG_KEY, OLD_SCOPE),
        Kind::OldUnkeyedMarked => put(REPLACE_CONFIG_KEY, OLD_SCOPE),
    };
    Instance {
        name: name.to_string(),
        state,
        instance_type: InstanceType::Container,
        created_at_epoch: NOW - OLD_AGE,
        config,
        profiles: vec![],
    }
}

#[derive(Debug, Clone, Copy)]
enum Listed {
    No,
    Busy,
    IdleOnline,
    Offline,
}

fn registration(id: u64, name: &str, listed: Listed) -> Option<GitHubRunner> {
    let (status, busy) = match listed {
        Listed::No => return None,
        Listed::Busy => (RunnerOnline::Online, true),
        Listed::IdleOnline => (RunnerOnline::Online, false),
        Listed::Offline => (RunnerOnline::Offline, false),
    };
    Some(GitHubRunner {
        id,
        name: name.to_string(),
        status,
        busy,
        labels: vec![],
    })
}

struct Input {
    desired: u32,
    instances: Vec<Instance>,
    github: Vec<GitHubRunner>,
    confirmed_gone: BTreeSet<u64>,
    health: BTreeMap<String, Health>,
}

fn run(input: &Input) -> Plan {
    plan(&PlanInput {
        desired: input.desired,
        instances: &input.instances,
        github: &input.github,
        health: &input.health,
        confirmed_gone: &input.confirmed_gone,
        binary: BinaryState {
            ready: true,
            updated_at_epoch: None,
        },
        now_epoch: NOW,
        grace_secs: GRACE,
        scope: NEW_SCOPE,
    })
}

fn one(kind: Kind, state: InstanceState, listed: Listed, gone: bool) -> Plan {
    run(&Input {
        desired: 1,
        instances: vec![instance("r", kind, state, 7)],
        github: registration(7, "r", listed).into_iter().collect(),
        confirmed_gone: if gone { [7].into() } else { BTreeSet::new() },
        health: [("r".to_string(), Health::Running)].into(),
    })
}

fn stopping() -> InstanceState {
    InstanceState::Other("Stopping".into())
}

/// A condition, and for a removal whether it is forced and which registration it deletes.
type Expected = (Condition, Option<(bool, Option<u64>)>);

/// (kind, state, listed, GitHub confirmed the recorded id gone) -> [`Expected`].
#[test]
fn every_standing_against_every_state_and_view() {
    use Kind::*;
    use Listed::*;
    use RemovalReason as R;
    let replacing: Expected = (Condition::Replacing, None);
    let removing = |r: RemovalReason, force: bool, id: Option<u64>| -> Expected {
        (Condition::Removing(r), Some((force, id)))
    };
    let running = || InstanceState::Running;
    #[rustfmt::skip]
    let table: Vec<(Kind, InstanceState, Listed, bool, Expected)> = vec![
        // A previous scope's runner: judged by its instance; a 404 with these credentials
        // proves nothing, and its recorded id is never sent to this scope.
        (OldScope, running(), No, false, replacing),
        (OldScope, running(), No, true, replacing),
        (OldScope, running(), Busy, false, replacing),
        (OldScope, running(), IdleOnline, false, removing(R::Flush, false, Some(7))),
        (OldScope, running(), Offline, false, removing(R::Flush, false, Some(7))),
        (OldScope, InstanceState::Stopped, No, true, removing(R::InstanceStopped, true, None)),
        (OldScope, InstanceState::Error, No, false, removing(R::InstanceError, true, None)),
        (OldScope, stopping(), No, false, (Condition::Transitional, None)),
        (OldUnkeyedMarked, running(), No, true, replacing),
        (OldUnkeyedMarked, InstanceState::Stopped, No, false, removing(R::InstanceStopped, true, None)),
        // Flushed in this scope: GitHub's view applies.
        (Flushed, running(), Busy, false, replacing),
        (Flushed, stopping(), Busy, false, replacing),
        (Flushed, running(), No, false, replacing),
        (Flushed, running(), No, true, removing(R::RegistrationGone, false, None)),
        (Flushed, running(), IdleOnline, false, removing(R::Flush, false, Some(7))),
        (Flushed, InstanceState::Stopped, No, false, removing(R::InstanceStopped, true, None)),
        // Unchanged for this scope's runners.
        (Current, running(), Busy, false, (Condition::Busy, None)),
        (Current, running(), IdleOnline, false, (Condition::Idle, None)),
        (Current, running(), No, true, removing(R::RegistrationGone, false, None)),
        (Current, running(), No, false, (Condition::Unconfirmed, None)),
    ];
    for (kind, state, listed, gone, (condition, removal)) in table {
        let what = format!("{kind:?} {state:?} {listed:?} gone={gone}");
        let p = one(kind, state, listed, gone);
        assert_eq!(p.runners[0].condition, condition, "{what}");
        let got = p.removals.first().map(|r| (r.force, r.target.github_id));
        assert_eq!(got, removal, "{what}");
        assert!(
            !condition.is_capacity() || matches!(kind, Current),
            "{what}"
        );
    }
}

/// After a path change two old runners are busy: neither counts for the new scope, so
/// both new runners are created, and neither old one is removed.
#[test]
fn a_previous_scopes_busy_runners_are_kept_and_not_counted() {
    let p = run(&Input {
        desired: 2,
        instances: vec![
            instance("old-a", Kind::OldScope, InstanceState::Running, 1),
            instance("old-b", Kind::OldUnkeyedMarked, InstanceState::Running, 2),
        ],
        github: vec![],
        confirmed_gone: [1, 2].into(),
        health: BTreeMap::new(),
    });
    assert_eq!((p.create, p.capacity), (2, 0));
    assert!(p.removals.is_empty(), "{:?}", p.removals);
    assert_eq!(p.count(Condition::Replacing), 2);
}

/// A flushed busy runner is no runner of the fleet: its replacement is created at once;
/// once its job ended and it powered off, it goes.
#[test]
fn a_flushed_runner_is_replaced_now_and_removed_when_its_job_ends() {
    let fleet = |state: InstanceState| Input {
        desired: 2,
        instances: vec![
            instance("flushed", Kind::Flushed, state, 1),
            instance("fresh", Kind::Current, InstanceState::Running, 2),
        ],
        github: vec![
            registration(1, "flushed", Listed::Busy).unwrap(),
            registration(2, "fresh", Listed::IdleOnline).unwrap(),
        ],
        confirmed_gone: BTreeSet::new(),
        health: [("fresh".to_string(), Health::Running)].into(),
    };
    let during = run(&fleet(InstanceState::Running));
    assert_eq!((during.create, during.capacity), (1, 1));
    assert!(during.removals.is_empty());
    let mut after = fleet(InstanceState::Stopped);
    after.github.remove(0);
    let after = run(&after);
    assert_eq!(after.removals.len(), 1);
    assert_eq!(after.removals[0].target.name.as_str(), "flushed");
    assert_eq!(after.removals[0].reason, RemovalReason::InstanceStopped);
}

/// Scaling down never picks a runner waiting for its job.
#[test]
fn runners_waiting_for_their_job_are_never_surplus() {
    let p = run(&Input {
        desired: 0,
        instances: vec![
            instance("old", Kind::OldScope, InstanceState::Running, 1),
            instance("flushed", Kind::Flushed, InstanceState::Running, 2),
        ],
        github: vec![registration(2, "flushed", Listed::Busy).unwrap()],
        confirmed_gone: BTreeSet::new(),
        health: BTreeMap::new(),
    });
    assert!(p.removals.is_empty(), "{:?}", p.removals);
    assert_eq!(p.count(Condition::Replacing), 2);
}

#[test]
fn a_previous_scopes_runners_are_never_looked_up_with_these_credentials() {
    let instances = vec![
        instance("old", Kind::OldScope, InstanceState::Running, 1),
        instance("marked", Kind::OldUnkeyedMarked, InstanceState::Running, 2),
        instance("flushed", Kind::Flushed, InstanceState::Running, 3),
        instance("now", Kind::Current, InstanceState::Running, 4),
    ];
    assert_eq!(
        unlisted_registrations(&instances, &[], NEW_SCOPE),
        vec![("flushed".to_string(), 3), ("now".to_string(), 4)]
    );
}
