//! Admission: how many of the runners a plan wants to create this round may be created, given
//! what the host can hold and how much one round may do. Pure; the host's facts are gathered
//! at the edge (`host::capacity`) and passed in.
//!
//! Host capacity, with these overcommit factors:
//! - CPU: [`CPU_OVERCOMMIT`] x the host's CPUs may be handed out as runner vCPUs (vCPUs are
//!   time-shared; CI jobs rarely keep every vCPU busy at once);
//! - memory: [`MEMORY_SHARE_PERCENT`] % of the host's memory, no overcommit (a runner out of
//!   memory kills its job; the rest is the host's and LXD's own);
//! - disk: [`DISK_OVERCOMMIT`] x the pool's free space for new runners' disks (disks are
//!   sparse: a new runner uses a fraction of vm-disk until its job fills it).
//!
//! CPU and memory are shared by every instance on the machine (`manager::footprint`: other
//! units' runners, leftovers, the image builder), so what they already take is subtracted
//! before new runners are counted; free disk bounds the new ones (what is free already
//! accounts for what exists).
//!
//! One decision for every mode: a pull round cuts its creations with [`admit`] up front
//! (for its status line), and every creation, pull or reactive, asks it again for one runner
//! under the machine's creation lock right before its launch (`host::admission`), so units
//! and workers creating at once never start more than the machine holds.

use crate::lxd::MachineInstance;
use crate::manager::footprint::MachineLoad;

/// Runner vCPUs per host CPU.
pub const CPU_OVERCOMMIT: u64 = 2;
/// Share of the host's memory runners may take, in percent.
pub const MEMORY_SHARE_PERCENT: u64 = 90;
/// Runner disk bytes per free byte of the pool.
pub const DISK_OVERCOMMIT: u64 = 2;
/// A round stops creating after this many launches in a row failed.
pub const MAX_CONSECUTIVE_LAUNCH_FAILURES: u32 = 3;

/// How much one round may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundLimits {
    /// Most runners created in one round (`creations-per-round`).
    pub max_creations: u32,
    /// Creating stops after this many consecutive launch failures in the round.
    pub max_consecutive_failures: u32,
}

impl Default for RoundLimits {
    fn default() -> Self {
        RoundLimits {
            max_creations: 16,
            max_consecutive_failures: MAX_CONSECUTIVE_LAUNCH_FAILURES,
        }
    }
}

/// What the host offers, as gathered at the edge. A fact that could not be read is None and
/// limits nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HostCapacity {
    pub cpus: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Free space of the runners' storage pool.
    pub pool_free_bytes: Option<u64>,
}

/// The machine as admission sees it: its capacity and every instance on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Machine {
    pub host: HostCapacity,
    pub instances: Vec<MachineInstance>,
}

impl Machine {
    /// What the machine's instances take, leaving out those named in `leaving` (removals
    /// the round makes), each unreadable limit counted as `size`'s.
    pub fn load(&self, size: &RunnerSize, leaving: &[&str]) -> MachineLoad {
        MachineLoad::of(
            self.instances
                .iter()
                .filter(|i| !leaving.contains(&i.name.as_str()))
                .map(|i| &i.limits),
            size,
            &self.host,
        )
    }
}

/// What one runner takes (vm-cpu, vm-memory, vm-disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunnerSize {
    pub cpus: u64,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

/// The host resource that bounds the runner count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
    PoolDisk,
}

impl Resource {
    fn describe(self) -> &'static str {
        match self {
            Resource::Cpu => "host CPUs",
            Resource::Memory => "host memory",
            Resource::PoolDisk => "free pool disk",
        }
    }
}

/// Creations held back this round, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HeldBack {
    /// Not created because the host cannot hold them: `(resource, runners it allows in all)`.
    pub host: Option<(Resource, u32)>,
    pub by_host: u32,
    /// Not created this round because of the per-round cap; the next round creates them.
    pub by_round: u32,
    pub round_cap: u32,
}

impl HeldBack {
    /// `host memory allows 4`, `at most 16 created a round`: what the status line adds; None
    /// when nothing was held back.
    pub fn note(&self) -> Option<String> {
        crate::messages::held_back(
            self.host
                .filter(|_| self.by_host > 0)
                .map(|(resource, allowed)| (resource.describe(), allowed)),
            (self.by_round > 0).then_some((self.round_cap, self.by_round)),
        )
    }
}

/// Of `wanted` new runners of `size`, how many to create now, with `load` already on the
/// machine (every instance, this unit's `own` runners among them: the note counts what this
/// unit may have in all, `own` plus the new ones). Pure.
pub fn admit(
    wanted: u32,
    own: u32,
    load: &MachineLoad,
    size: &RunnerSize,
    host: &HostCapacity,
    limits: &RoundLimits,
) -> (u32, HeldBack) {
    let mut fits = wanted;
    let mut binding = None;
    let mut consider = |resource: Resource, new_allowed: u64| {
        let new_allowed = u32::try_from(new_allowed).unwrap_or(u32::MAX);
        if new_allowed < fits {
            fits = new_allowed;
            binding = Some((resource, new_allowed.saturating_add(own)));
        }
    };
    if let Some(cpus) = host.cpus {
        let budget = cpus.saturating_mul(CPU_OVERCOMMIT);
        consider(
            Resource::Cpu,
            budget.saturating_sub(load.cpus) / size.cpus.max(1),
        );
    }
    if let Some(memory) = host.memory_bytes {
        let budget = u128::from(memory) * u128::from(MEMORY_SHARE_PERCENT) / 100;
        let free = budget.saturating_sub(u128::from(load.memory_bytes));
        let new = free / u128::from(size.memory_bytes.max(1));
        consider(Resource::Memory, u64::try_from(new).unwrap_or(u64::MAX));
    }
    if let Some(free) = host.pool_free_bytes {
        consider(
            Resource::PoolDisk,
            free.saturating_mul(DISK_OVERCOMMIT) / size.disk_bytes.max(1),
        );
    }
    let create = fits.min(limits.max_creations);
    let held = HeldBack {
        host: binding,
        by_host: wanted - fits,
        by_round: fits - create,
        round_cap: limits.max_creations,
    };
    (create, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn size(cpus: u64, memory_gib: u64, disk_gib: u64) -> RunnerSize {
        RunnerSize {
            cpus,
            memory_bytes: memory_gib * GIB,
            disk_bytes: disk_gib * GIB,
        }
    }

    fn host(cpus: u64, memory_gib: u64, free_gib: u64) -> HostCapacity {
        HostCapacity {
            cpus: Some(cpus),
            memory_bytes: Some(memory_gib * GIB),
            pool_free_bytes: Some(free_gib * GIB),
        }
    }

    /// A unit alone on the machine with `existing` runners of `size`.
    fn alone(
        wanted: u32,
        existing: u32,
        size: &RunnerSize,
        host: &HostCapacity,
        limits: &RoundLimits,
    ) -> (u32, HeldBack) {
        admit(
            wanted,
            existing,
            &MachineLoad::uniform(existing, size),
            size,
            host,
            limits,
        )
    }

    const ROOMY: RoundLimits = RoundLimits {
        max_creations: 1000,
        max_consecutive_failures: 3,
    };

    #[test]
    fn only_what_the_host_holds_is_created_and_the_binding_resource_is_named() {
        // 16 CPUs (32 vCPUs), 40 GiB (36 usable), 1 TiB free; runners of 2 vCPU, 8 GiB, 10 GiB.
        let (create, held) = alone(10, 0, &size(2, 8, 10), &host(16, 40, 1024), &ROOMY);
        assert_eq!(create, 4);
        assert_eq!(held.host, Some((Resource::Memory, 4)));
        assert_eq!(held.by_host, 6);
        assert_eq!(held.note().as_deref(), Some("host memory allows 4"));

        // Existing runners count against CPU and memory totals.
        let (create, held) = alone(8, 3, &size(2, 8, 10), &host(16, 40, 1024), &ROOMY);
        assert_eq!((create, held.by_host), (1, 7));

        // CPU binds: 4 CPUs -> 8 vCPUs -> 2 runners of 4.
        let (create, held) = alone(5, 0, &size(4, 1, 1), &host(4, 512, 1024), &ROOMY);
        assert_eq!((create, held.host), (2, Some((Resource::Cpu, 2))));
        assert_eq!(held.note().as_deref(), Some("host CPUs allows 2"));

        // Disk binds on free space (x2 for sparse disks): 15 GiB free -> 3 runners of 10.
        let (create, held) = alone(5, 2, &size(1, 1, 10), &host(64, 512, 15), &ROOMY);
        assert_eq!((create, held.host), (3, Some((Resource::PoolDisk, 5))));
    }

    #[test]
    fn absurd_requirements_create_nothing_and_unknown_facts_limit_nothing() {
        let (create, held) = alone(
            10,
            0,
            &RunnerSize {
                cpus: u64::from(u32::MAX),
                memory_bytes: 15 << 60,
                disk_bytes: 100_000 * GIB,
            },
            &host(16, 64, 1024),
            &ROOMY,
        );
        assert_eq!((create, held.by_host), (0, 10));
        let (create, held) = alone(10, 0, &size(2, 8, 10), &HostCapacity::default(), &ROOMY);
        assert_eq!(
            (create, held),
            (
                10,
                HeldBack {
                    round_cap: 1000,
                    ..HeldBack::default()
                }
            )
        );
    }

    #[test]
    fn a_round_creates_at_most_its_cap_and_says_the_rest_comes_next_round() {
        let limits = RoundLimits {
            max_creations: 16,
            max_consecutive_failures: 3,
        };
        let (create, held) = alone(40, 0, &size(1, 1, 1), &host(1024, 4096, 4096), &limits);
        assert_eq!((create, held.by_round, held.by_host), (16, 24, 0));
        assert_eq!(
            held.note().as_deref(),
            Some("at most 16 created a round, 24 more next round")
        );
        // Both at once: the host allows 20, the round creates 16.
        let (create, held) = alone(40, 0, &size(1, 1, 1), &host(10, 4096, 4096), &limits);
        assert_eq!((create, held.by_host, held.by_round), (16, 20, 4));
        assert_eq!(
            held.note().as_deref(),
            Some("host CPUs allows 20, at most 16 created a round, 4 more next round")
        );
    }

    /// Two units on one 64 GiB host (57.6 GiB for runners: 8 of 7 GiB), each wanting 8:
    /// whatever order they create in, and whatever else is on the machine, the total never
    /// passes 8. Every row: (instances already there as (cpu, memory) limits, wanted, own) ->
    /// created, and the note.
    #[test]
    fn what_other_instances_take_is_left_to_them_in_every_case() {
        use crate::manager::footprint::InstanceLimits;
        let size = size(2, 7, 10);
        let host = host(64, 64, 1024);
        let runner = || InstanceLimits {
            cpu: Some("2".into()),
            memory: Some("7GiB".into()),
        };
        let builder = InstanceLimits {
            cpu: Some("2".into()),
            memory: Some("4GiB".into()),
        };
        let unlimited = InstanceLimits::default();
        type Case = (Vec<InstanceLimits>, u32, u32, u32, Option<&'static str>);
        let cases: Vec<Case> = vec![
            // An empty machine: 8 fit.
            (vec![], 8, 0, 8, None),
            (vec![], 16, 0, 8, Some("host memory allows 8")),
            // The other unit made 8: nothing is left for this one.
            (vec![runner(); 8], 8, 0, 0, Some("host memory allows 0")),
            // The other unit made 5: 3 are left; this unit's note counts its own too.
            (vec![runner(); 5], 8, 0, 3, Some("host memory allows 3")),
            (vec![runner(); 7], 8, 2, 1, Some("host memory allows 3")),
            // The image builder takes 4 GiB: 7 more fit beside it.
            (vec![builder.clone()], 8, 0, 7, Some("host memory allows 7")),
            // A leftover without limits counts as one runner of this size.
            (
                vec![unlimited.clone(); 2],
                8,
                0,
                6,
                Some("host memory allows 6"),
            ),
            // More on the machine than it holds (made before admission): nothing, no panic.
            (vec![runner(); 12], 8, 0, 0, Some("host memory allows 0")),
            // Nothing wanted: nothing held back, whatever the load.
            (vec![runner(); 12], 0, 0, 0, None),
        ];
        for (instances, wanted, own, want_created, want_note) in cases {
            let load = MachineLoad::of(&instances, &size, &host);
            let (created, held) = admit(wanted, own, &load, &size, &host, &ROOMY);
            assert_eq!(
                (created, held.note().as_deref()),
                (want_created, want_note),
                "{} instances there, {wanted} wanted, {own} own",
                instances.len()
            );
        }
    }

    /// The example, one creation at a time as the creation lock serialises them:
    /// two units alternating, each asking for one runner with the machine listed afresh.
    #[test]
    fn two_units_asking_one_at_a_time_never_pass_what_the_host_holds() {
        let size = size(2, 7, 10);
        let host = host(64, 64, 1024);
        let mut on_machine = 0u32;
        let mut made = [0u32; 2];
        for turn in 0..32 {
            let unit = turn % 2;
            let load = MachineLoad::uniform(on_machine, &size);
            let (create, _) = admit(1, made[unit], &load, &size, &host, &ROOMY);
            on_machine += create;
            made[unit] += create;
        }
        assert_eq!((on_machine, made), (8, [4, 4]));
    }

    #[test]
    fn cpu_is_shared_by_every_instance_too() {
        let size = size(4, 1, 1);
        // 8 CPUs -> 16 vCPUs; another unit's two 4-vCPU runners and a 3-vCPU instance.
        let load = MachineLoad {
            instances: 3,
            cpus: 11,
            memory_bytes: 3 * GIB,
        };
        let (create, held) = admit(5, 0, &load, &size, &host(8, 512, 1024), &ROOMY);
        assert_eq!((create, held.host), (1, Some((Resource::Cpu, 1))));
    }

    #[test]
    fn the_machine_load_leaves_out_the_rounds_removals() {
        use crate::manager::footprint::InstanceLimits;
        let instance = |name: &str| MachineInstance {
            project: "default".into(),
            name: name.into(),
            limits: InstanceLimits {
                cpu: Some("1".into()),
                memory: Some("1GiB".into()),
            },
        };
        let machine = Machine {
            host: host(8, 8, 100),
            instances: vec![instance("a"), instance("b"), instance("c")],
        };
        let size = size(1, 1, 1);
        assert_eq!(machine.load(&size, &[]).instances, 3);
        let load = machine.load(&size, &["b", "zzz"]);
        assert_eq!((load.instances, load.memory_bytes), (2, 2 * GIB));
    }
}
