//! How many runners a scale set wants and what to do about the ones it has: pure.
//!
//! Desired = min(max runners, assigned jobs + min idle), from the service's statistics,
//! never from counting job messages (a message carries at most 50 and may be redelivered).
//! `totalAssignedJobs` counts waiting and running jobs, so busy runners are inside it.

use super::Statistics;

/// `min(max_runners, total_assigned_jobs + min_idle)`.
pub fn desired_runners(statistics: &Statistics, max_runners: u32, min_idle: u32) -> u32 {
    let wanted = statistics
        .total_assigned_jobs
        .saturating_add(u64::from(min_idle));
    u32::try_from(wanted.min(u64::from(max_runners))).unwrap_or(max_runners)
}

/// Where one of this scale set's runners is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RunnerState {
    /// Registered (JIT config made), not online yet.
    Starting,
    /// Online, no job.
    Idle,
    /// A JobStarted named it: never removed by scaling.
    Busy,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRunner {
    pub name: String,
    pub state: RunnerState,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScalePlan {
    /// New runners to create.
    pub create: u32,
    /// Runners to remove (names), starting ones first: an online idle runner takes the
    /// next job soonest.
    pub remove: Vec<String>,
}

/// What to create or remove so that `desired` runners exist. Busy runners always stay, so
/// more than `desired` may remain; only surplus starting or idle runners go.
pub fn plan(desired: u32, runners: &[ExistingRunner]) -> ScalePlan {
    let have = u32::try_from(runners.len()).unwrap_or(u32::MAX);
    if have <= desired {
        return ScalePlan {
            create: desired - have,
            remove: Vec::new(),
        };
    }
    let surplus = (have - desired) as usize;
    let mut removable: Vec<&ExistingRunner> = runners
        .iter()
        .filter(|r| r.state != RunnerState::Busy)
        .collect();
    removable.sort_by(|a, b| (a.state, &a.name).cmp(&(b.state, &b.name)));
    ScalePlan {
        create: 0,
        remove: removable
            .into_iter()
            .take(surplus)
            .map(|r| r.name.clone())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(assigned: u64) -> Statistics {
        Statistics {
            total_assigned_jobs: assigned,
            ..Statistics::default()
        }
    }

    #[test]
    fn desired_is_assigned_plus_idle_capped_by_the_maximum() {
        for max in 0..6u32 {
            for idle in 0..=max {
                for assigned in 0..9u64 {
                    let d = desired_runners(&stats(assigned), max, idle);
                    assert_eq!(
                        u64::from(d),
                        (assigned + u64::from(idle)).min(u64::from(max))
                    );
                }
            }
        }
        assert_eq!(desired_runners(&stats(u64::MAX), 7, 3), 7);
        let other_counts = Statistics {
            total_available_jobs: 9,
            total_running_jobs: 9,
            total_idle_runners: 9,
            total_busy_runners: 9,
            total_registered_runners: 9,
            ..stats(1)
        };
        assert_eq!(
            desired_runners(&other_counts, 10, 0),
            1,
            "only assigned jobs count"
        );
    }

    #[test]
    fn every_mix_of_runners_converges_without_touching_a_busy_one() {
        let states = [RunnerState::Starting, RunnerState::Idle, RunnerState::Busy];
        for starting in 0..4 {
            for idle in 0..4 {
                for busy in 0..4 {
                    let mut runners = Vec::new();
                    for (state, n) in states.iter().zip([starting, idle, busy]) {
                        for i in 0..n {
                            runners.push(ExistingRunner {
                                name: format!("{state:?}-{i}"),
                                state: *state,
                            });
                        }
                    }
                    for desired in 0..8u32 {
                        let p = plan(desired, &runners);
                        let have = runners.len() as u32;
                        let after = have + p.create - p.remove.len() as u32;
                        assert_eq!(
                            after,
                            desired.max(busy),
                            "{starting}/{idle}/{busy} -> {desired}: {p:?}"
                        );
                        assert!(p.create == 0 || p.remove.is_empty());
                        let mut unique = p.remove.clone();
                        unique.dedup();
                        assert_eq!(unique.len(), p.remove.len());
                        for name in &p.remove {
                            let r = runners.iter().find(|r| &r.name == name).unwrap();
                            assert_ne!(r.state, RunnerState::Busy);
                        }
                        let idle_removed =
                            p.remove.iter().filter(|n| n.starts_with("Idle")).count();
                        let starting_removed = p.remove.len() - idle_removed;
                        assert!(
                            idle_removed == 0 || starting_removed == starting as usize,
                            "starting ones go first: {p:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn removal_order_is_deterministic() {
        let r = |n: &str, state| ExistingRunner {
            name: n.into(),
            state,
        };
        let runners = [
            r("b", RunnerState::Idle),
            r("z", RunnerState::Starting),
            r("a", RunnerState::Idle),
            r("c", RunnerState::Busy),
        ];
        assert_eq!(plan(1, &runners).remove, vec!["z", "a", "b"]);
        assert_eq!(plan(3, &runners).remove, vec!["z"]);
        assert_eq!(
            plan(6, &runners),
            ScalePlan {
                create: 2,
                remove: vec![]
            }
        );
    }
}
