//! The planner over a table of situations, including the races peers suffer.

use super::*;
use crate::lxd::InstanceType;

const NOW: u64 = 1_000_000;
const GRACE: u64 = 600;
const OLD: u64 = 3_600; // an age well past the grace period
const YOUNG: u64 = 30; // an age well within it
const SCOPE: &str = "scope-now";

fn instance(name: &str, state: InstanceState, age: u64, registered_id: Option<u64>) -> Instance {
    let mut config = BTreeMap::new();
    if let Some(id) = registered_id {
        config.insert(RUNNER_ID_CONFIG_KEY.to_string(), id.to_string());
    }
    Instance {
        name: name.to_string(),
        state,
        instance_type: InstanceType::Container,
        created_at_epoch: NOW - age,
        config,
        profiles: vec!["default".into()],
    }
}

fn running(name: &str, age: u64, id: u64) -> Instance {
    instance(name, InstanceState::Running, age, Some(id))
}

fn reg(id: u64, name: &str, status: RunnerOnline, busy: bool) -> GitHubRunner {
    GitHubRunner {
        id,
        name: name.to_string(),
        status,
        busy,
        labels: vec![],
    }
}

fn idle(id: u64, name: &str) -> GitHubRunner {
    reg(id, name, RunnerOnline::Online, false)
}

fn busy(id: u64, name: &str) -> GitHubRunner {
    reg(id, name, RunnerOnline::Online, true)
}

fn offline(id: u64, name: &str) -> GitHubRunner {
    reg(id, name, RunnerOnline::Offline, false)
}

const READY: BinaryState = BinaryState {
    ready: true,
    updated_at_epoch: None,
};

struct Case {
    what: &'static str,
    desired: u32,
    instances: Vec<Instance>,
    github: Vec<GitHubRunner>,
    health: Vec<(&'static str, Health)>,
    /// Recorded ids GitHub answered 404 for.
    confirmed_gone: Vec<u64>,
    binary: BinaryState,
    create: u32,
    /// (name, reason, has_instance, github_id, force)
    removals: Vec<(&'static str, RemovalReason, bool, Option<u64>, bool)>,
    capacity: u32,
}

impl Default for Case {
    fn default() -> Self {
        Case {
            what: "",
            desired: 0,
            instances: vec![],
            github: vec![],
            health: vec![],
            confirmed_gone: vec![],
            binary: READY,
            create: 0,
            removals: vec![],
            capacity: 0,
        }
    }
}

fn run(case: &Case) -> Plan {
    let health: BTreeMap<String, Health> = case
        .health
        .iter()
        .map(|(n, h)| (n.to_string(), *h))
        .collect();
    let confirmed_gone: BTreeSet<u64> = case.confirmed_gone.iter().copied().collect();
    plan(&PlanInput {
        desired: case.desired,
        instances: &case.instances,
        github: &case.github,
        health: &health,
        confirmed_gone: &confirmed_gone,
        binary: case.binary,
        now_epoch: NOW,
        grace_secs: GRACE,
        scope: SCOPE,
    })
}

use RemovalReason::*;

fn cases() -> Vec<Case> {
    vec![
        Case {
            what: "nothing wanted, nothing there",
            ..Case::default()
        },
        Case {
            what: "from zero",
            desired: 3,
            create: 3,
            ..Case::default()
        },
        Case {
            what: "steady state",
            desired: 2,
            instances: vec![running("a", OLD, 1), running("b", OLD, 2)],
            github: vec![idle(1, "a"), idle(2, "b")],
            health: vec![("a", Health::Running), ("b", Health::Running)],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "scale up",
            desired: 5,
            instances: vec![running("a", OLD, 1), running("b", OLD, 2)],
            github: vec![idle(1, "a"), busy(2, "b")],
            create: 3,
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "scale down removes the newest idle runners",
            desired: 1,
            instances: vec![
                running("a", OLD, 1),
                running("b", 1000, 2),
                running("c", 900, 3),
            ],
            github: vec![idle(1, "a"), idle(2, "b"), idle(3, "c")],
            removals: vec![
                ("b", Surplus, true, Some(2), false),
                ("c", Surplus, true, Some(3), false),
            ],
            capacity: 3,
            ..Case::default()
        },
        Case {
            what: "scale down with busy runners removes idle ones only",
            desired: 1,
            instances: vec![
                running("a", OLD, 1),
                running("b", OLD, 2),
                running("c", OLD, 3),
                running("d", OLD, 4),
            ],
            github: vec![busy(1, "a"), busy(2, "b"), idle(3, "c"), idle(4, "d")],
            removals: vec![
                ("c", Surplus, true, Some(3), false),
                ("d", Surplus, true, Some(4), false),
            ],
            capacity: 4,
            ..Case::default()
        },
        Case {
            what: "more busy runners than desired: nothing to do",
            desired: 1,
            instances: vec![running("a", OLD, 1), running("b", OLD, 2)],
            github: vec![busy(1, "a"), busy(2, "b")],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "desired 0 removes idle and creating runners, keeps busy",
            desired: 0,
            instances: vec![
                running("a", OLD, 1),
                running("b", OLD, 2),
                running("c", YOUNG, 3),
            ],
            github: vec![busy(1, "a"), idle(2, "b"), offline(3, "c")],
            removals: vec![
                ("b", Surplus, true, Some(2), false),
                ("c", Surplus, true, Some(3), false),
            ],
            capacity: 3,
            ..Case::default()
        },
        Case {
            what: "scale down prefers creating runners over idle ones",
            desired: 1,
            instances: vec![running("a", OLD, 1), running("b", YOUNG, 2)],
            github: vec![idle(1, "a"), offline(2, "b")],
            removals: vec![("b", Surplus, true, Some(2), false)],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "instance never registered, within grace: kept and counted",
            desired: 1,
            instances: vec![instance("a", InstanceState::Running, YOUNG, None)],
            health: vec![("a", Health::NotRunning)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "instance never registered, after grace: removed and replaced",
            desired: 1,
            instances: vec![instance("a", InstanceState::Running, OLD, None)],
            health: vec![("a", Health::Running)],
            create: 1,
            removals: vec![("a", NeverRegistered, true, None, false)],
            ..Case::default()
        },
        Case {
            what: "registered but offline within grace: creating, counted",
            desired: 2,
            instances: vec![running("a", YOUNG, 1), running("b", OLD, 2)],
            github: vec![offline(1, "a"), idle(2, "b")],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "offline after grace: registration and instance removed, replaced",
            desired: 1,
            instances: vec![running("a", OLD, 1)],
            github: vec![offline(1, "a")],
            create: 1,
            removals: vec![("a", Offline, true, Some(1), false)],
            ..Case::default()
        },
        Case {
            what: "offline past the start window, nothing runs inside (creation cut short by a \
                   killed hook): removed within grace and replaced",
            desired: 1,
            instances: vec![running("a", STALLED_START_SECS * 2, 1)],
            github: vec![offline(1, "a")],
            health: vec![("a", Health::NotRunning)],
            create: 1,
            removals: vec![("a", NeverStarted, true, Some(1), false)],
            ..Case::default()
        },
        Case {
            what: "offline past the start window while its start script runs: creating",
            desired: 1,
            instances: vec![running("a", STALLED_START_SECS * 2, 1)],
            github: vec![offline(1, "a")],
            health: vec![("a", Health::Unknown)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "offline inside the start window, nothing running yet: creating",
            desired: 1,
            instances: vec![running("a", STALLED_START_SECS - 1, 1)],
            github: vec![offline(1, "a")],
            health: vec![("a", Health::NotRunning)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "online idle with its listener down: removed and replaced",
            desired: 2,
            instances: vec![running("a", OLD, 1), running("b", OLD, 2)],
            github: vec![idle(1, "a"), idle(2, "b")],
            health: vec![("a", Health::NotRunning), ("b", Health::Running)],
            create: 1,
            removals: vec![("a", ListenerDown, true, Some(1), false)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "unknown health is no reason to remove",
            desired: 1,
            instances: vec![running("a", OLD, 1)],
            github: vec![idle(1, "a")],
            health: vec![("a", Health::Unknown)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "busy runner whose listener looks down is still never removed",
            desired: 1,
            instances: vec![running("a", OLD, 1)],
            github: vec![busy(1, "a")],
            health: vec![("a", Health::NotRunning)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "registration whose instance vanished: deleted, replaced",
            desired: 1,
            github: vec![offline(7, "gone")],
            create: 1,
            removals: vec![("gone", OrphanRegistration, false, Some(7), false)],
            ..Case::default()
        },
        Case {
            what: "busy registration whose instance vanished: left alone, not capacity",
            desired: 1,
            github: vec![busy(7, "gone")],
            create: 1,
            ..Case::default()
        },
        Case {
            what: "finished its job and left GitHub while its instance still runs: \
                   not capacity, one instance-only removal",
            desired: 1,
            instances: vec![running("done", YOUNG, 5)],
            health: vec![("done", Health::NotRunning)],
            confirmed_gone: vec![5],
            create: 1,
            removals: vec![("done", RegistrationGone, true, None, false)],
            ..Case::default()
        },
        Case {
            what: "missing from the listing, not confirmed gone (a page shifted, or the \
                   check failed): left alone, not capacity",
            desired: 2,
            instances: vec![running("missed", OLD, 5), running("a", OLD, 6)],
            github: vec![idle(6, "a")],
            health: vec![("a", Health::Running)],
            create: 1,
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "missing from the listing, another id confirmed gone: left alone",
            desired: 1,
            instances: vec![running("missed", OLD, 5)],
            confirmed_gone: vec![9],
            create: 1,
            ..Case::default()
        },
        Case {
            what: "finished its job, instance already Stopping: left alone, not capacity",
            desired: 1,
            instances: vec![instance(
                "done",
                InstanceState::Other("Stopping".into()),
                OLD,
                Some(5),
            )],
            create: 1,
            ..Case::default()
        },
        Case {
            what: "Stopping instance whose registration lingers: neither side deleted",
            desired: 0,
            instances: vec![instance(
                "done",
                InstanceState::Other("Stopping".into()),
                OLD,
                Some(5),
            )],
            github: vec![offline(5, "done")],
            ..Case::default()
        },
        Case {
            what: "Error instance removed at once with its registration, forced",
            desired: 1,
            instances: vec![instance("a", InstanceState::Error, YOUNG, Some(1))],
            github: vec![idle(1, "a")],
            create: 1,
            removals: vec![("a", InstanceError, true, Some(1), true)],
            ..Case::default()
        },
        Case {
            what: "Stopped instance removed at once even if GitHub still says busy",
            desired: 1,
            instances: vec![instance("a", InstanceState::Stopped, YOUNG, Some(1))],
            github: vec![busy(1, "a")],
            create: 1,
            removals: vec![("a", InstanceStopped, true, Some(1), true)],
            ..Case::default()
        },
        Case {
            what: "Stopped instance without registration removed",
            desired: 0,
            instances: vec![instance("a", InstanceState::Stopped, OLD, None)],
            removals: vec![("a", InstanceStopped, true, None, true)],
            ..Case::default()
        },
        Case {
            what: "Starting instance within grace counts as creating",
            desired: 1,
            instances: vec![instance(
                "a",
                InstanceState::Other("Starting".into()),
                YOUNG,
                Some(1),
            )],
            github: vec![offline(1, "a")],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "Frozen instance left alone and not counted",
            desired: 1,
            instances: vec![instance(
                "a",
                InstanceState::Other("Frozen".into()),
                OLD,
                Some(1),
            )],
            github: vec![idle(1, "a")],
            create: 1,
            ..Case::default()
        },
        Case {
            what: "binary not ready: no creation, removals still happen",
            desired: 2,
            instances: vec![running("a", OLD, 1)],
            github: vec![offline(1, "a")],
            binary: BinaryState {
                ready: false,
                updated_at_epoch: None,
            },
            removals: vec![("a", Offline, true, Some(1), false)],
            ..Case::default()
        },
        Case {
            what: "binary updated: idle and creating runners on the old one replaced, busy kept",
            desired: 4,
            instances: vec![
                running("a", OLD, 1),
                running("b", OLD, 2),
                running("c", 100, 3),
                running("d", YOUNG, 4),
            ],
            github: vec![idle(1, "a"), busy(2, "b"), offline(3, "c"), idle(4, "d")],
            binary: BinaryState {
                ready: true,
                updated_at_epoch: Some(NOW - 60),
            },
            create: 2,
            removals: vec![
                ("a", Outdated, true, Some(1), false),
                ("c", Outdated, true, Some(3), false),
            ],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "race, round 1: listed idle, so planned as surplus without force \
                   (a 422 on delete keeps it)",
            desired: 0,
            instances: vec![running("a", OLD, 1)],
            github: vec![idle(1, "a")],
            removals: vec![("a", Surplus, true, Some(1), false)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "race, round 2: the runner that took the job is now listed busy and kept",
            desired: 0,
            instances: vec![running("a", OLD, 1)],
            github: vec![busy(1, "a")],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "unhealthy and surplus at once: each runner removed once",
            desired: 1,
            instances: vec![
                running("a", OLD, 1),
                running("b", OLD, 2),
                running("c", 1000, 3),
            ],
            github: vec![idle(1, "a"), idle(2, "b"), idle(3, "c")],
            health: vec![("a", Health::NotRunning)],
            removals: vec![
                ("a", ListenerDown, true, Some(1), false),
                ("c", Surplus, true, Some(3), false),
            ],
            capacity: 2,
            ..Case::default()
        },
        Case {
            what: "duplicate registration of one name: the extra idle one is deleted alone",
            desired: 1,
            instances: vec![running("a", OLD, 1)],
            github: vec![idle(1, "a"), offline(9, "a")],
            removals: vec![("a", OrphanRegistration, false, Some(9), false)],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "instance registered with an id GitHub lists busy: busy",
            desired: 1,
            instances: vec![running("a", YOUNG, 1)],
            github: vec![busy(1, "a")],
            capacity: 1,
            ..Case::default()
        },
        Case {
            what: "mixed fleet converges to the desired count",
            desired: 3,
            instances: vec![
                running("a", OLD, 1),
                instance("b", InstanceState::Error, OLD, Some(2)),
                instance("c", InstanceState::Running, OLD, None),
                running("d", YOUNG, 4),
            ],
            github: vec![busy(1, "a"), offline(4, "d"), offline(8, "orphan")],
            create: 1,
            removals: vec![
                ("b", InstanceError, true, None, true),
                ("c", NeverRegistered, true, None, false),
                ("orphan", OrphanRegistration, false, Some(8), false),
            ],
            capacity: 2,
            ..Case::default()
        },
    ]
}

#[test]
fn table_of_situations() {
    let cases = cases();
    assert!(
        cases.len() >= 25,
        "the table must cover at least 25 situations"
    );
    for case in &cases {
        let plan = run(case);
        let got: Vec<(&str, RemovalReason, bool, Option<u64>, bool)> = plan
            .removals
            .iter()
            .map(|r| {
                (
                    r.target.name.as_str(),
                    r.reason,
                    r.target.has_instance,
                    r.target.github_id,
                    r.force,
                )
            })
            .collect();
        assert_eq!(got, case.removals, "removals: {}", case.what);
        assert_eq!(plan.create, case.create, "create: {}", case.what);
        assert_eq!(plan.capacity, case.capacity, "capacity: {}", case.what);
        assert_eq!(plan.desired, case.desired, "{}", case.what);
    }
}

/// Properties every plan of the table must have, whatever the situation.
#[test]
fn invariants_hold_across_the_table() {
    for case in &cases() {
        let plan = run(case);
        let busy: BTreeSet<&str> = case
            .github
            .iter()
            .filter(|r| r.busy)
            .map(|r| r.name.as_str())
            .collect();
        let mut seen = BTreeSet::new();
        for removal in &plan.removals {
            let key = (removal.target.name.clone(), removal.target.github_id);
            assert!(seen.insert(key), "removed twice: {}", case.what);
            if busy.contains(removal.target.name.as_str()) {
                assert!(
                    removal.force,
                    "busy runner removed without cause: {}",
                    case.what
                );
            }
            assert!(
                removal.target.has_instance || removal.target.github_id.is_some(),
                "empty removal: {}",
                case.what
            );
        }
        // After the plan runs, capacity is exactly the desired count unless busy runners
        // alone exceed it or the binary is missing.
        let surplus = plan.count(Condition::Removing(Surplus)) as u32;
        let after = plan.capacity - surplus + plan.create;
        if case.binary.ready {
            let busy_capacity = plan.count(Condition::Busy) as u32;
            assert_eq!(
                after,
                case.desired.max(busy_capacity),
                "converges: {}",
                case.what
            );
        }
    }
}

#[test]
fn binary_not_ready_defers_creations() {
    let plan = run(&Case {
        desired: 3,
        binary: BinaryState {
            ready: false,
            updated_at_epoch: None,
        },
        ..Case::default()
    });
    assert_eq!((plan.create, plan.creates_deferred), (0, 3));
}

#[test]
fn delta_is_desired_minus_capacity() {
    let scale_down = run(&Case {
        desired: 1,
        instances: vec![
            running("a", OLD, 1),
            running("b", OLD, 2),
            running("c", OLD, 3),
        ],
        github: vec![idle(1, "a"), busy(2, "b"), idle(3, "c")],
        ..Case::default()
    });
    assert_eq!(scale_down.delta(), -2);
    assert_eq!(
        run(&Case {
            desired: 4,
            ..Case::default()
        })
        .delta(),
        4
    );
}

#[test]
fn grace_boundary_is_exclusive() {
    let at = |age| {
        run(&Case {
            desired: 1,
            instances: vec![running("a", age, 1)],
            github: vec![offline(1, "a")],
            ..Case::default()
        })
    };
    assert_eq!(at(GRACE - 1).removals.len(), 0);
    assert_eq!(at(GRACE).removals[0].reason, Offline);
}

#[test]
fn instance_created_in_the_future_counts_as_new() {
    // Clock skew between LXD and the charm must not make a new instance look old.
    let mut future = running("a", 0, 1);
    future.created_at_epoch = NOW + 500;
    let plan = run(&Case {
        desired: 1,
        instances: vec![future],
        github: vec![offline(1, "a")],
        ..Case::default()
    });
    assert!(plan.is_noop());
    assert_eq!(plan.capacity, 1);
}

#[test]
fn only_online_idle_running_instances_are_probed() {
    let instances = vec![
        running("idle", OLD, 1),
        running("busy", OLD, 2),
        running("offline", OLD, 3),
        running("unregistered", OLD, 4),
        instance("stopped", InstanceState::Stopped, OLD, Some(5)),
    ];
    let github = vec![
        idle(1, "idle"),
        busy(2, "busy"),
        offline(3, "offline"),
        idle(5, "stopped"),
    ];
    assert_eq!(
        instances_to_probe(&instances, &github, NOW),
        vec!["idle".to_string(), "offline".to_string()]
    );
    // An offline runner younger than the start window is not probed.
    let young = vec![running("offline", STALLED_START_SECS - 1, 3)];
    assert!(instances_to_probe(&young, &[offline(3, "offline")], NOW).is_empty());
    let old_enough = vec![running("offline", STALLED_START_SECS, 3)];
    assert_eq!(
        instances_to_probe(&old_enough, &[offline(3, "offline")], NOW),
        vec!["offline".to_string()]
    );
}

#[test]
fn only_running_instances_missing_from_the_listing_by_name_and_id_are_checked() {
    let instances = vec![
        running("listed", OLD, 1),
        running("renamed-listing", OLD, 2),
        running("missed-b", OLD, 4),
        running("missed-a", YOUNG, 3),
        instance("no-id", InstanceState::Running, OLD, None),
        instance("stopped", InstanceState::Stopped, OLD, Some(5)),
        instance(
            "stopping",
            InstanceState::Other("Stopping".into()),
            OLD,
            Some(6),
        ),
    ];
    let github = vec![idle(1, "listed"), idle(2, "another-name")];
    assert_eq!(
        unlisted_registrations(&instances, &github, SCOPE),
        vec![("missed-a".to_string(), 3), ("missed-b".to_string(), 4)]
    );
    assert!(unlisted_registrations(&instances[..1], &github, SCOPE).is_empty());
}
