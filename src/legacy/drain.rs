//! Which of the Python charm's runners go now and which are left to finish their job.
//!
//! A runner that is not busy is deregistered first (so GitHub gives it no new job), then its
//! instance deleted; a busy one is left until its job ends: its VM powers off, or GitHub
//! shows it gone or offline and idle, and the next round retires what is left.

use super::recognise::{is_old_runner, is_old_runner_name};
use crate::github::GitHubRunner;
use crate::identity::UnitIdentity;
use crate::lxd::{Instance, InstanceState};
use std::collections::BTreeMap;

/// Why the old runners go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainWhen {
    /// A refresh: each busy one is left to finish its job.
    JobsFinished,
    /// stop, remove: the machine is going away, busy ones too (as this charm's own).
    Now,
}

/// One old runner to take away now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retire {
    pub name: String,
    /// Its registrations, deleted first.
    pub registrations: Vec<u64>,
    /// Its instance, when it has one.
    pub instance: Option<InstanceState>,
    pub when: DrainWhen,
}

impl Retire {
    /// Its instance may go only once its registrations did: a running VM still registered
    /// could take a job. A stopped one runs nothing; at stop nothing waits.
    pub fn instance_waits_for_deregistration(&self) -> bool {
        self.when == DrainWhen::JobsFinished
            && matches!(self.instance, Some(InstanceState::Running))
    }
}

/// What a round does with the old runners.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainPlan {
    pub retire: Vec<Retire>,
    /// Busy on a job (or in a state that cannot be told): left this round.
    pub finishing: Vec<String>,
}

impl DrainPlan {
    /// Nothing of the old charm's runners is left or to do.
    pub fn is_empty(&self) -> bool {
        self.retire.is_empty() && self.finishing.is_empty()
    }
}

/// The plan for this unit's old runners among `instances` (the project's) and
/// `registrations` (GitHub's listing; None when it could not be read: then only stopped
/// instances go, since no running one can be told idle).
pub fn plan_drain(
    identity: &UnitIdentity,
    instances: &[Instance],
    registrations: Option<&[GitHubRunner]>,
    when: DrainWhen,
) -> DrainPlan {
    #[derive(Default)]
    struct Seen {
        instance: Option<InstanceState>,
        registrations: Vec<(u64, bool)>,
    }
    let mut by_name: BTreeMap<String, Seen> = BTreeMap::new();
    for instance in instances.iter().filter(|i| is_old_runner(identity, i)) {
        by_name.entry(instance.name.clone()).or_default().instance = Some(instance.state.clone());
    }
    // A registration whose name is also one of this charm's instances (with its owner key)
    // is that instance's: never the old charm's.
    let ours: Vec<&str> = instances
        .iter()
        .filter(|i| is_old_runner_name(identity, &i.name) && !is_old_runner(identity, i))
        .map(|i| i.name.as_str())
        .collect();
    for r in registrations
        .unwrap_or_default()
        .iter()
        .filter(|r| is_old_runner_name(identity, &r.name) && !ours.contains(&r.name.as_str()))
    {
        by_name
            .entry(r.name.clone())
            .or_default()
            .registrations
            .push((r.id, r.busy));
    }
    let mut plan = DrainPlan::default();
    for (name, seen) in by_name {
        let busy = seen.registrations.iter().any(|(_, busy)| *busy);
        let ids: Vec<u64> = seen.registrations.iter().map(|(id, _)| *id).collect();
        let goes = when == DrainWhen::Now
            || match &seen.instance {
                Some(InstanceState::Stopped | InstanceState::Error) => true,
                Some(InstanceState::Running) => registrations.is_some() && !busy,
                Some(InstanceState::Other(_)) => false,
                None => !busy,
            };
        if goes {
            plan.retire.push(Retire {
                name,
                registrations: ids,
                instance: seen.instance,
                when,
            });
        } else {
            plan.finishing.push(name);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::github::RunnerOnline;
    use crate::lxd::InstanceType;

    const HEX24: &str = "0123456789abcdef01234567";

    fn me() -> UnitIdentity {
        UnitIdentity {
            app: "gr".into(),
            unit_number: 0,
            model_uuid: "uuid".into(),
        }
    }

    fn old(n: u8) -> String {
        format!("gr-0-{}{n:02x}", &HEX24[..22])
    }

    fn instance(name: &str, state: InstanceState) -> Instance {
        Instance {
            name: name.into(),
            state,
            instance_type: InstanceType::VirtualMachine,
            created_at_epoch: 0,
            config: BTreeMap::new(),
            profiles: vec![],
        }
    }

    fn reg(id: u64, name: &str, online: bool, busy: bool) -> GitHubRunner {
        GitHubRunner {
            id,
            name: name.into(),
            status: if online {
                RunnerOnline::Online
            } else {
                RunnerOnline::Offline
            },
            busy,
            labels: vec![],
        }
    }

    fn retire(name: &str, ids: &[u64], instance: Option<InstanceState>) -> Retire {
        Retire {
            name: name.into(),
            registrations: ids.to_vec(),
            instance,
            when: DrainWhen::JobsFinished,
        }
    }

    #[test]
    fn idle_ones_go_busy_ones_stay_until_their_job_ends() {
        let instances = [
            instance(&old(1), InstanceState::Running),
            instance(&old(2), InstanceState::Running),
            instance(&old(3), InstanceState::Running),
            instance(&old(4), InstanceState::Stopped),
            instance(&old(5), InstanceState::Running),
            instance(&old(6), InstanceState::Other("Stopping".into())),
            instance(&old(7), InstanceState::Error),
        ];
        let regs = [
            reg(1, &old(1), true, false),  // idle online
            reg(2, &old(2), true, true),   // busy
            reg(3, &old(3), false, false), // offline idle: its job ended
            reg(4, &old(4), false, true),  // GitHub not caught up; the VM powered off
            // old(5): no registration (GitHub removed the ephemeral runner after its job)
            reg(8, &old(8), false, false), // registration whose VM is gone
            reg(9, &old(9), true, true),   // busy registration whose VM is gone
        ];
        let plan = plan_drain(&me(), &instances, Some(&regs), DrainWhen::JobsFinished);
        assert_eq!(
            plan.retire,
            vec![
                retire(&old(1), &[1], Some(InstanceState::Running)),
                retire(&old(3), &[3], Some(InstanceState::Running)),
                retire(&old(4), &[4], Some(InstanceState::Stopped)),
                retire(&old(5), &[], Some(InstanceState::Running)),
                retire(&old(7), &[], Some(InstanceState::Error)),
                retire(&old(8), &[8], None),
            ]
        );
        assert_eq!(plan.finishing, vec![old(2), old(6), old(9)]);
        assert!(plan.retire[0].instance_waits_for_deregistration());
        assert!(!plan.retire[2].instance_waits_for_deregistration());
    }

    #[test]
    fn without_githubs_listing_only_stopped_instances_go() {
        let instances = [
            instance(&old(1), InstanceState::Running),
            instance(&old(2), InstanceState::Stopped),
        ];
        let plan = plan_drain(&me(), &instances, None, DrainWhen::JobsFinished);
        assert_eq!(
            plan.retire,
            vec![retire(&old(2), &[], Some(InstanceState::Stopped))]
        );
        assert_eq!(plan.finishing, vec![old(1)]);
    }

    #[test]
    fn nothing_but_this_units_old_runners_is_ever_planned() {
        let mut ours = instance(&old(1), InstanceState::Stopped);
        ours.config
            .insert(crate::identity::OWNER_CONFIG_KEY.into(), "uuid/gr/0".into());
        let instances = [
            ours,
            instance(&format!("gr-1-{HEX24}"), InstanceState::Stopped),
            instance(&format!("gr-x-0-{HEX24}"), InstanceState::Stopped),
            instance(
                &format!("gr-0-{}", HEX24.to_uppercase()),
                InstanceState::Stopped,
            ),
            instance("gr-0-0123456789ab", InstanceState::Stopped),
            instance("operators-vm", InstanceState::Stopped),
        ];
        let regs = [
            reg(1, &old(1), false, false), // this charm's instance's registration
            reg(2, &format!("gr-1-{HEX24}"), false, false),
            reg(3, "gr-0-0123456789ab", false, false),
            reg(4, &format!("gr-x-0-{HEX24}"), false, false),
        ];
        let plan = plan_drain(&me(), &instances, Some(&regs), DrainWhen::JobsFinished);
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan_drain(&me(), &[], Some(&[]), DrainWhen::JobsFinished).is_empty());
    }

    #[test]
    fn at_stop_every_old_runner_goes_busy_ones_too_without_waiting() {
        let instances = [
            instance(&old(1), InstanceState::Running),
            instance(&old(2), InstanceState::Other("Stopping".into())),
            instance(&format!("gr-1-{HEX24}"), InstanceState::Running),
        ];
        let regs = [reg(1, &old(1), true, true), reg(9, &old(9), true, true)];
        for listing in [Some(&regs[..]), None] {
            let plan = plan_drain(&me(), &instances, listing, DrainWhen::Now);
            assert!(plan.finishing.is_empty(), "{plan:?}");
            let names: Vec<&str> = plan.retire.iter().map(|r| r.name.as_str()).collect();
            let expected: Vec<String> = match listing {
                Some(_) => vec![old(1), old(2), old(9)],
                None => vec![old(1), old(2)],
            };
            assert_eq!(names, expected);
            assert!(plan
                .retire
                .iter()
                .all(|r| !r.instance_waits_for_deregistration()));
        }
    }
}
