//! Pure presentation: the status line and the action results, with the Python charm's keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::github::status::rate_limit_status;
use crate::github::{GitHubRunner, RunnerOnline};
use crate::juju::Status;
use crate::lxd::Instance;
use crate::manager::executor::Report;
use crate::manager::ops::FailureKind;
use crate::manager::planner::{Condition, Plan, RemovalReason};
use crate::manager::reconcile::ReconcileError;
use crate::messages;

/// Counts behind the status line. Serializable so a hook that must not call GitHub
/// (update-status) can show the last one from unit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Census {
    pub desired: u32,
    pub idle: u32,
    pub busy: u32,
    /// Started, not online yet.
    pub creating: u32,
    /// Registrations that are not online and have no usable instance.
    pub offline: u32,
    /// Runners found broken that are still there (their removal failed).
    pub unhealthy: u32,
    /// Flushed while busy, or of a previous scope: replaced once their job ends.
    #[serde(default)]
    pub replacing: u32,
}

impl Census {
    /// The fleet as the planner found it, before the plan ran.
    pub fn before(plan: &Plan) -> Census {
        let mut census = Census {
            desired: plan.desired,
            ..Census::default()
        };
        for runner in &plan.runners {
            census.count(runner.condition);
        }
        census
    }

    /// The fleet as it should be once `report`'s operations took effect: removed runners
    /// gone, kept ones busy, failed removals still there, created ones creating.
    pub fn after(plan: &Plan, report: &Report) -> Census {
        let mut census = Census {
            desired: plan.desired,
            ..Census::default()
        };
        let gone: Vec<&str> = report
            .removed
            .iter()
            .map(|r| r.name.as_str())
            .chain(report.registrations_left.iter().map(|l| l.name.as_str()))
            .collect();
        for runner in &plan.runners {
            if report.kept_busy.contains(&runner.name) {
                census.busy += 1;
            } else if matches!(runner.condition, Condition::Removing(_))
                && gone.contains(&runner.name.as_str())
            {
                continue;
            } else {
                census.count(runner.condition);
            }
        }
        census.creating += report.created.len() as u32;
        census
    }

    fn count(&mut self, condition: Condition) {
        match condition {
            Condition::Busy => self.busy += 1,
            Condition::Idle
            | Condition::Removing(RemovalReason::Surplus | RemovalReason::Outdated) => {
                self.idle += 1
            }
            Condition::Creating => self.creating += 1,
            Condition::BusyWithoutInstance
            | Condition::Removing(
                RemovalReason::Offline
                | RemovalReason::NeverRegistered
                | RemovalReason::OrphanRegistration,
            ) => self.offline += 1,
            Condition::Removing(_) => self.unhealthy += 1,
            // Stopping, Frozen, ...: neither a runner nor a problem.
            Condition::Transitional => {}
            // Possibly busy, possibly gone: the next round tells.
            Condition::Unconfirmed => {}
            Condition::Replacing => self.replacing += 1,
        }
    }

    /// `3/3 runners: 2 idle, 1 busy`, then creating, offline, unhealthy and awaiting
    /// replacement counts when not 0.
    pub fn summary(&self) -> String {
        messages::runner_summary(
            self.desired,
            self.idle,
            self.busy,
            &[
                (self.creating, "creating"),
                (self.offline, "offline"),
                (self.unhealthy, "unhealthy"),
                (self.replacing, messages::awaiting_job_end(self.replacing)),
            ],
        )
    }
}

/// The unit status after a reconcile (or flush then reconcile).
///
/// Blocked when a failure needs the operator (its message says what to fix); Maintenance
/// naming the reset time under a rate limit, or the failures when they are transient;
/// Waiting while creations wait for the runner binary; Active with the summary otherwise.
pub fn status_after(plan: &Plan, report: &Report) -> Status {
    let summary = with_held_back(Census::after(plan, report).summary(), plan);
    let failures = &report.failed;
    if let Some(f) = failures
        .iter()
        .find(|f| f.error.kind == FailureKind::NeedsOperator)
    {
        return Status::Blocked(f.error.message.clone());
    }
    if let Some(reset) = failures.iter().find_map(|f| match f.error.kind {
        FailureKind::RateLimited { reset_epoch } => Some(reset_epoch),
        _ => None,
    }) {
        return Status::Maintenance(messages::rate_limited_with(reset, &summary));
    }
    if let Some(first) = failures.first() {
        return Status::Maintenance(messages::retrying_next_round(
            &summary,
            first,
            failures.len() - 1,
            report.creations_skipped,
        ));
    }
    if plan.creates_deferred > 0 {
        return Status::Waiting(messages::waiting_for_binary(&summary));
    }
    Status::Active(summary)
}

/// `4/10 runners: host memory allows 4, 4 idle, 0 busy`: creations admission held back
/// (the host's capacity, the round's cap, or failed launches) are named right after the count.
fn with_held_back(summary: String, plan: &Plan) -> String {
    match plan.held_back.note() {
        Some(note) => summary.replacen(" runners: ", &format!(" runners: {note}, "), 1),
        None => summary,
    }
}

/// The unit status when a reconcile could not even start.
pub fn status_for_error(err: &ReconcileError) -> Status {
    match err.kind() {
        FailureKind::NeedsOperator => Status::Blocked(err.to_string()),
        FailureKind::RateLimited { reset_epoch } => rate_limit_status(reset_epoch),
        FailureKind::Transient | FailureKind::NoRoom => Status::Maintenance(err.to_string()),
    }
}

/// Action results as `action-set` takes them (dotted keys, string values).
pub type ActionResults = BTreeMap<String, String>;

/// check-runners: GitHub's online and offline counts, `unknown` = instances GitHub does not
/// list (their GitHub state is unknown), `runners` = online names joined by ", ".
pub fn check_runners_results(github: &[GitHubRunner], instances: &[Instance]) -> ActionResults {
    let mut online: Vec<&str> = github
        .iter()
        .filter(|r| r.status == RunnerOnline::Online)
        .map(|r| r.name.as_str())
        .collect();
    online.sort_unstable();
    let offline = github
        .iter()
        .filter(|r| r.status == RunnerOnline::Offline)
        .count();
    let unknown = instances
        .iter()
        .filter(|i| !github.iter().any(|r| r.name == i.name))
        .count();
    BTreeMap::from([
        ("online".to_string(), online.len().to_string()),
        ("offline".to_string(), offline.to_string()),
        ("unknown".to_string(), unknown.to_string()),
        ("runners".to_string(), online.join(", ")),
    ])
}

/// reconcile-runners and flush-runners: `delta.virtual-machines` plus the check-runners keys.
pub fn reconcile_results(delta: i64, check: ActionResults) -> ActionResults {
    let mut results = check;
    results.insert("delta.virtual-machines".to_string(), delta.to_string());
    results
}

/// update-dependencies: `flush` as Python prints a bool.
pub fn update_dependencies_results(flushed: bool) -> ActionResults {
    let value = if flushed { "True" } else { "False" };
    BTreeMap::from([("flush".to_string(), value.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::RunnerName;
    use crate::lxd::{InstanceState, InstanceType};
    use crate::manager::executor::{Failure, Operation, Removed};
    use crate::manager::ops::OpError;
    use crate::manager::planner::RunnerView;

    fn view(name: &str, condition: Condition) -> RunnerView {
        RunnerView {
            name: RunnerName(name.into()),
            condition,
            has_instance: true,
            github_id: Some(1),
            online: None,
        }
    }

    fn plan(desired: u32, runners: Vec<RunnerView>) -> Plan {
        Plan {
            runners,
            ..Plan::empty(desired)
        }
    }

    fn census(desired: u32, idle: u32, busy: u32) -> Census {
        Census {
            desired,
            idle,
            busy,
            ..Census::default()
        }
    }

    #[test]
    fn summary_shows_only_non_zero_extras() {
        assert_eq!(census(3, 2, 1).summary(), "3/3 runners: 2 idle, 1 busy");
        assert_eq!(census(0, 0, 0).summary(), "0/0 runners: 0 idle, 0 busy");
        let all = Census {
            creating: 2,
            offline: 1,
            unhealthy: 3,
            ..census(5, 1, 1)
        };
        assert_eq!(
            all.summary(),
            "2/5 runners: 1 idle, 1 busy, 2 creating, 1 offline, 3 unhealthy"
        );
        let creating_only = Census {
            creating: 3,
            ..census(3, 0, 0)
        };
        assert_eq!(
            creating_only.summary(),
            "0/3 runners: 0 idle, 0 busy, 3 creating"
        );
    }

    #[test]
    fn census_after_applies_the_report() {
        let plan = plan(
            3,
            vec![
                view("a", Condition::Idle),
                view("b", Condition::Busy),
                view("c", Condition::Removing(RemovalReason::Surplus)),
                view("d", Condition::Removing(RemovalReason::ListenerDown)),
                view("e", Condition::Removing(RemovalReason::InstanceError)),
                view("f", Condition::Transitional),
                view("g", Condition::Removing(RemovalReason::Offline)),
            ],
        );
        let removed = |n: &str, reason| Removed {
            name: RunnerName(n.into()),
            reason,
        };
        let report = Report {
            created: vec![RunnerName("new".into())],
            removed: vec![removed("d", RemovalReason::ListenerDown)],
            kept_busy: vec![RunnerName("c".into())],
            registrations_left: vec![],
            failed: vec![
                Failure {
                    operation: Operation::Remove {
                        name: RunnerName("e".into()),
                        reason: RemovalReason::InstanceError,
                    },
                    error: OpError::transient("lxc delete failed"),
                },
                Failure {
                    operation: Operation::Remove {
                        name: RunnerName("g".into()),
                        reason: RemovalReason::Offline,
                    },
                    error: OpError::transient("502"),
                },
            ],
            creations_skipped: 0,
        };
        let after = Census::after(&plan, &report);
        assert_eq!(
            after,
            Census {
                desired: 3,
                idle: 1,
                busy: 2,
                creating: 1,
                offline: 1,
                unhealthy: 1,
                replacing: 0,
            }
        );
        let before = Census::before(&plan);
        assert_eq!(
            before,
            Census {
                desired: 3,
                idle: 2,
                busy: 1,
                creating: 0,
                offline: 1,
                unhealthy: 2,
                replacing: 0,
            }
        );
    }

    #[test]
    fn census_round_trips_through_json() {
        let c = Census {
            creating: 1,
            ..census(2, 1, 0)
        };
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Census>(&json).unwrap(), c);
    }

    #[test]
    fn what_admission_held_back_is_named_after_the_count() {
        use crate::manager::admission::{HeldBack, Resource};
        let held = Plan {
            held_back: HeldBack {
                host: Some((Resource::Memory, 4)),
                by_host: 6,
                by_round: 0,
                round_cap: 16,
            },
            ..plan(10, vec![view("a", Condition::Idle); 1])
        };
        assert_eq!(
            status_after(&held, &Report::default()),
            Status::Active("1/10 runners: host memory allows 4, 1 idle, 0 busy".into())
        );
    }

    #[test]
    fn creations_left_after_failed_launches_are_named() {
        let report = Report {
            creations_skipped: 13,
            ..failing(
                crate::manager::ops::FailureKind::Transient,
                "lxc launch failed",
            )
        };
        match status_after(&plan(16, vec![]), &report) {
            Status::Maintenance(m) => assert!(
                m.ends_with(
                    "lxc launch failed; 13 creations left for the next round after launches failed in a row"
                ),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }

    fn failing(kind: crate::manager::ops::FailureKind, message: &str) -> Report {
        Report {
            failed: vec![Failure {
                operation: Operation::Create,
                error: OpError {
                    kind,
                    message: message.into(),
                },
            }],
            ..Report::default()
        }
    }

    #[test]
    fn status_follows_the_worst_failure() {
        let p = plan(1, vec![view("a", Condition::Idle)]);
        assert_eq!(
            status_after(&p, &Report::default()),
            Status::Active("1/1 runners: 1 idle, 0 busy".into())
        );
        assert_eq!(
            status_after(
                &p,
                &failing(FailureKind::NeedsOperator, "GitHub rejected the token")
            ),
            Status::Blocked("GitHub rejected the token".into())
        );
        let limited = status_after(
            &p,
            &failing(FailureKind::RateLimited { reset_epoch: 0 }, "x"),
        );
        assert_eq!(
            limited,
            Status::Maintenance(
                "GitHub rate limit reached, retrying after 00:00 UTC; \
                 1/1 runners: 1 idle, 0 busy"
                    .into()
            )
        );
        let mut two = failing(FailureKind::Transient, "GitHub server error 502");
        two.failed.push(two.failed[0].clone());
        match status_after(&p, &two) {
            Status::Maintenance(m) => {
                assert!(
                    m.starts_with("1/1 runners: 1 idle, 0 busy; retrying"),
                    "{m}"
                );
                assert!(
                    m.contains("could not create a runner: GitHub server error 502"),
                    "{m}"
                );
                assert!(m.ends_with("(and 1 more)"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        let waiting = Plan {
            creates_deferred: 1,
            ..plan(1, vec![])
        };
        assert_eq!(
            status_after(&waiting, &Report::default()),
            Status::Waiting("waiting for the runner binary; 0/1 runners: 0 idle, 0 busy".into())
        );
    }

    #[test]
    fn status_for_errors() {
        let blocked = ReconcileError::GitHub(OpError::needs_operator("401"));
        assert!(matches!(status_for_error(&blocked), Status::Blocked(m) if m.contains("401")));
        let storm = ReconcileError::GitHub(OpError::transient("GitHub server error 503"));
        assert!(matches!(status_for_error(&storm), Status::Maintenance(m) if m.contains("503")));
        let limited = ReconcileError::GitHub(OpError {
            kind: FailureKind::RateLimited {
                reset_epoch: 1_720_000_000,
            },
            message: "rate".into(),
        });
        assert_eq!(
            status_for_error(&limited),
            Status::Maintenance("GitHub rate limit reached, retrying after 09:46 UTC".into())
        );
    }

    fn gh(name: &str, status: RunnerOnline) -> GitHubRunner {
        GitHubRunner {
            id: 1,
            name: name.into(),
            status,
            busy: false,
            labels: vec![],
        }
    }

    fn inst(name: &str) -> Instance {
        Instance {
            name: name.into(),
            state: InstanceState::Running,
            instance_type: InstanceType::Container,
            created_at_epoch: 0,
            config: BTreeMap::new(),
            profiles: vec![],
        }
    }

    #[test]
    fn check_runners_keys_and_values() {
        let github = vec![
            gh("r-b", RunnerOnline::Online),
            gh("r-a", RunnerOnline::Online),
            gh("r-c", RunnerOnline::Offline),
        ];
        let instances = vec![inst("r-a"), inst("r-b"), inst("r-new")];
        let results = check_runners_results(&github, &instances);
        let expected: ActionResults = [
            ("online", "2"),
            ("offline", "1"),
            ("unknown", "1"),
            ("runners", "r-a, r-b"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(results, expected);

        let reconciled = reconcile_results(-2, results);
        assert_eq!(reconciled["delta.virtual-machines"], "-2");
        assert_eq!(reconciled.len(), 5);

        let empty = check_runners_results(&[], &[]);
        assert_eq!(empty["runners"], "");
        assert_eq!(empty["online"], "0");
    }

    #[test]
    fn update_dependencies_flush_is_python_bool_text() {
        assert_eq!(update_dependencies_results(true)["flush"], "True");
        assert_eq!(update_dependencies_results(false)["flush"], "False");
    }
}
