//! What the listener repairs, pure: leftovers of a crash or of a lost message, judged from
//! the scope's registrations (the service) against the unit's instances (LXD). Run when a
//! session opens and every [`REPAIR_INTERVAL`] after (`listener`).
//!
//! - A registration of this scale set with no instance: a creation cut short between the
//!   JIT config and the launch, or an instance deleted by hand. It can never take a job.
//! - An instance no registration names: its ephemeral runner finished and deregistered, and
//!   the JobCompleted that would have removed it was never handled here.
//! - A runner of this scale set registered but never online within the bootstrap timeout:
//!   its start failed inside the instance.
//!
//! - A retired scale set (one this unit held before a change of name, group or labels,
//!   `ledger`): its runners not on a job go, registration first; once none is left the scale
//!   set itself is deleted.
//!
//! Never a busy runner (the service's `busy`, or a JobStarted the listener saw), never a
//! runner of a scale set not this unit's or of no scale set (a pull-mode runner finishing
//! its job after a mode switch), never an instance younger than [`YOUNGEST_ORPHAN`].

use super::api::ListenerInstance;
use super::scaling::RunnerState;
use super::ScaleSetRunner;
use std::collections::BTreeSet;
use std::time::Duration;

/// How often the listener repairs while a session lasts (one registration listing each).
pub const REPAIR_INTERVAL: Duration = Duration::from_secs(300);

/// An instance without a registration younger than this is left for the next repair: a
/// runner may finish a very short job before the listener sees the instance at all.
pub const YOUNGEST_ORPHAN: Duration = Duration::from_secs(60);

/// What the repair sees.
#[derive(Debug, Clone, Copy)]
pub struct RepairView<'a> {
    pub scale_set_id: u64,
    /// Every runner registration of the scope (`pools/0/agents`), of any scale set or none.
    pub registrations: &'a [ScaleSetRunner],
    /// The unit's instances (owner key).
    pub instances: &'a [ListenerInstance],
    /// Runners a JobStarted named.
    pub busy: &'a BTreeSet<String>,
    /// Scale sets this unit held before, to drain and delete.
    pub retired: &'a BTreeSet<u64>,
    pub now_epoch: u64,
    pub bootstrap_timeout: Duration,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepairPlan {
    /// Registration ids to remove (no instance behind them).
    pub registrations: Vec<u64>,
    /// Instance names to delete (no registration left).
    pub instances: Vec<String>,
    /// Never online in time: (instance name, registration id), the registration first.
    pub stuck: Vec<(String, u64)>,
    /// A retired scale set's runners not on a job: (instance name, registration id), the
    /// registration first.
    pub retired_idle: Vec<(String, u64)>,
    /// Retired scale sets with no busy runner: deleted once their idle ones are gone.
    pub retired_empty: Vec<u64>,
}

impl RepairPlan {
    pub fn is_empty(&self) -> bool {
        self.registrations.is_empty()
            && self.instances.is_empty()
            && self.stuck.is_empty()
            && self.retired_idle.is_empty()
            && self.retired_empty.is_empty()
    }
}

pub fn plan(view: &RepairView<'_>) -> RepairPlan {
    let busy = |name: &str| view.busy.iter().any(|b| b.eq_ignore_ascii_case(name));
    let mut plan = RepairPlan::default();
    let mut retired_busy = BTreeSet::new();
    for r in view
        .registrations
        .iter()
        .filter(|r| view.retired.contains(&r.runner_scale_set_id))
    {
        if r.busy || busy(&r.name) {
            retired_busy.insert(r.runner_scale_set_id);
        } else {
            plan.retired_idle.push((r.name.clone(), r.id));
        }
    }
    plan.retired_empty = view
        .retired
        .iter()
        .filter(|id| !retired_busy.contains(id))
        .copied()
        .collect();
    for r in view.registrations {
        let ours = r.runner_scale_set_id == view.scale_set_id;
        let has_instance = view.instances.iter().any(|i| {
            i.name.eq_ignore_ascii_case(&r.name) || (i.runner_id != 0 && i.runner_id == r.id)
        });
        if ours && !has_instance && !r.busy && !busy(&r.name) {
            plan.registrations.push(r.id);
        }
    }
    for i in view.instances {
        let age = view.now_epoch.saturating_sub(i.created_at_epoch);
        let registration = view.registrations.iter().find(|r| {
            r.name.eq_ignore_ascii_case(&i.name) || (i.runner_id != 0 && r.id == i.runner_id)
        });
        match registration {
            None if age >= YOUNGEST_ORPHAN.as_secs() => plan.instances.push(i.name.clone()),
            None => {}
            Some(r) => {
                let never_online = r.runner_scale_set_id == view.scale_set_id
                    && !r.status.eq_ignore_ascii_case("online")
                    && !r.busy
                    && !busy(&i.name)
                    && i.state != RunnerState::Busy
                    && age >= view.bootstrap_timeout.as_secs();
                if never_online {
                    plan.stuck.push((i.name.clone(), r.id));
                }
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;
    const SET: u64 = 7;
    const BOOT: Duration = Duration::from_secs(600);

    fn reg(id: u64, name: &str, set: u64, status: &str, busy: bool) -> ScaleSetRunner {
        ScaleSetRunner {
            id,
            name: name.into(),
            runner_scale_set_id: set,
            status: status.into(),
            busy,
        }
    }

    fn inst(name: &str, runner_id: u64, age: u64) -> ListenerInstance {
        ListenerInstance {
            name: name.into(),
            runner_id,
            state: RunnerState::Starting,
            created_at_epoch: NOW - age,
            scale_set_id: SET,
        }
    }

    fn plan_of(
        registrations: &[ScaleSetRunner],
        instances: &[ListenerInstance],
        busy: &[&str],
    ) -> RepairPlan {
        plan_retiring(registrations, instances, busy, &[])
    }

    fn plan_retiring(
        registrations: &[ScaleSetRunner],
        instances: &[ListenerInstance],
        busy: &[&str],
        retired: &[u64],
    ) -> RepairPlan {
        let busy: BTreeSet<String> = busy.iter().map(|s| s.to_string()).collect();
        let retired: BTreeSet<u64> = retired.iter().copied().collect();
        plan(&RepairView {
            scale_set_id: SET,
            registrations,
            instances,
            busy: &busy,
            retired: &retired,
            now_epoch: NOW,
            bootstrap_timeout: BOOT,
        })
    }

    #[test]
    fn a_healthy_fleet_needs_no_repair() {
        let regs = [
            reg(1, "a", SET, "online", false),
            reg(2, "b", SET, "online", true),
            reg(3, "c", SET, "offline", false),
        ];
        // c is still within its bootstrap time.
        let insts = [inst("a", 1, 900), inst("b", 2, 900), inst("c", 3, 30)];
        let p = plan_of(&regs, &insts, &[]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn a_registration_of_this_scale_set_with_no_instance_is_removed_unless_busy() {
        let regs = [
            reg(1, "cut-short", SET, "offline", false),
            reg(2, "busy-elsewhere", SET, "online", true),
            reg(3, "seen-started", SET, "online", false),
            reg(4, "another-set", SET + 1, "offline", false),
            reg(5, "pull-mode", 0, "offline", false),
        ];
        let p = plan_of(&regs, &[], &["SEEN-STARTED"]);
        assert_eq!(p.registrations, vec![1]);
        assert!(p.instances.is_empty() && p.stuck.is_empty());
    }

    #[test]
    fn an_instance_matches_its_registration_by_name_or_by_recorded_id() {
        let regs = [
            reg(1, "A-Name", SET, "online", false),
            reg(2, "renamed", SET, "online", false),
        ];
        let insts = [inst("a-name", 0, 900), inst("other-name", 2, 900)];
        assert!(plan_of(&regs, &insts, &[]).is_empty());
    }

    #[test]
    fn an_instance_whose_registration_is_gone_is_deleted_once_old_enough() {
        let insts = [
            inst("finished", 11, 120),
            inst("just-made", 12, 10),
            inst("no-id-recorded", 0, YOUNGEST_ORPHAN.as_secs()),
        ];
        // The listener's JobStarted memory does not keep it: the service removes an
        // ephemeral registration only after the job.
        let p = plan_of(&[], &insts, &["finished"]);
        assert_eq!(
            p.instances,
            vec!["finished".to_string(), "no-id-recorded".to_string()]
        );
    }

    #[test]
    fn a_pull_mode_runner_finishing_its_job_is_left_alone() {
        let regs = [reg(9, "pull-runner", 0, "offline", false)];
        let insts = [inst("pull-runner", 9, 5000)];
        assert!(plan_of(&regs, &insts, &[]).is_empty());
    }

    #[test]
    fn a_runner_never_online_after_the_bootstrap_timeout_goes_registration_first() {
        let regs = [
            reg(1, "stuck", SET, "offline", false),
            reg(2, "stuck-busy", SET, "offline", true),
            reg(3, "stuck-started", SET, "offline", false),
            reg(4, "young", SET, "offline", false),
            reg(5, "online", SET, "Online", false),
            reg(6, "other-set", SET + 1, "offline", false),
        ];
        let mut busy_state = inst("busy-state", 7, 5000);
        busy_state.state = RunnerState::Busy;
        let regs = [&regs[..], &[reg(7, "busy-state", SET, "offline", false)]].concat();
        let insts = [
            inst("stuck", 1, BOOT.as_secs()),
            inst("stuck-busy", 2, 5000),
            inst("stuck-started", 3, 5000),
            inst("young", 4, BOOT.as_secs() - 1),
            inst("online", 5, 5000),
            inst("other-set", 6, 5000),
            busy_state,
        ];
        let p = plan_of(&regs, &insts, &["stuck-started"]);
        assert_eq!(p.stuck, vec![("stuck".to_string(), 1)]);
        assert!(
            p.registrations.is_empty() && p.instances.is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn an_instance_with_no_creation_time_counts_as_old() {
        let mut i = inst("unknown-age", 3, 0);
        i.created_at_epoch = 0;
        assert_eq!(
            plan_of(&[], &[i], &[]).instances,
            vec!["unknown-age".to_string()]
        );
    }

    #[test]
    fn a_retired_scale_set_loses_its_idle_runners_keeps_its_busy_ones_and_goes_when_empty() {
        const OLD: u64 = 3;
        const EMPTY: u64 = 4;
        const DRAINING: u64 = 5;
        let regs = [
            reg(1, "old-idle", OLD, "online", false),
            reg(2, "old-offline", OLD, "offline", false),
            reg(3, "draining-busy", DRAINING, "online", true),
            reg(4, "draining-started", DRAINING, "online", false),
            reg(5, "draining-idle", DRAINING, "online", false),
            reg(6, "current", SET, "online", false),
        ];
        let insts = [
            inst("old-idle", 1, 900),
            inst("draining-busy", 3, 900),
            inst("draining-started", 4, 900),
            inst("draining-idle", 5, 900),
            inst("current", 6, 900),
        ];
        let p = plan_retiring(
            &regs,
            &insts,
            &["draining-started"],
            &[OLD, EMPTY, DRAINING],
        );
        assert_eq!(
            p.retired_idle,
            vec![
                ("old-idle".to_string(), 1),
                ("old-offline".to_string(), 2),
                ("draining-idle".to_string(), 5),
            ]
        );
        assert_eq!(
            p.retired_empty,
            vec![OLD, EMPTY],
            "DRAINING waits for its jobs"
        );
        // Not the current scale set's: no registration is an orphan of it.
        assert!(p.registrations.is_empty() && p.stuck.is_empty(), "{p:?}");
    }
}
