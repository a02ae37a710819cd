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
//! CPU and memory bound the total number of runners; free disk bounds the new ones (what is
//! free already accounts for the runners that exist).

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

/// Of `wanted` new runners, how many to create now, with `existing` runners (busy, idle,
/// creating) kept. Pure.
pub fn admit(
    wanted: u32,
    existing: u32,
    size: &RunnerSize,
    host: &HostCapacity,
    limits: &RoundLimits,
) -> (u32, HeldBack) {
    let mut fits = wanted;
    let mut binding = None;
    let mut consider = |resource: Resource, new_allowed: u64, total_allowed: u64| {
        let new_allowed = u32::try_from(new_allowed).unwrap_or(u32::MAX);
        if new_allowed < fits {
            fits = new_allowed;
            binding = Some((resource, u32::try_from(total_allowed).unwrap_or(u32::MAX)));
        }
    };
    if let Some(cpus) = host.cpus {
        let total = cpus.saturating_mul(CPU_OVERCOMMIT) / size.cpus.max(1);
        consider(
            Resource::Cpu,
            total.saturating_sub(u64::from(existing)),
            total,
        );
    }
    if let Some(memory) = host.memory_bytes {
        let total = (u128::from(memory) * u128::from(MEMORY_SHARE_PERCENT)
            / 100
            / u128::from(size.memory_bytes.max(1))) as u64;
        consider(
            Resource::Memory,
            total.saturating_sub(u64::from(existing)),
            total,
        );
    }
    if let Some(free) = host.pool_free_bytes {
        let new = free.saturating_mul(DISK_OVERCOMMIT) / size.disk_bytes.max(1);
        consider(
            Resource::PoolDisk,
            new,
            new.saturating_add(u64::from(existing)),
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

    const ROOMY: RoundLimits = RoundLimits {
        max_creations: 1000,
        max_consecutive_failures: 3,
    };

    #[test]
    fn only_what_the_host_holds_is_created_and_the_binding_resource_is_named() {
        // 16 CPUs (32 vCPUs), 40 GiB (36 usable), 1 TiB free; runners of 2 vCPU, 8 GiB, 10 GiB.
        let (create, held) = admit(10, 0, &size(2, 8, 10), &host(16, 40, 1024), &ROOMY);
        assert_eq!(create, 4);
        assert_eq!(held.host, Some((Resource::Memory, 4)));
        assert_eq!(held.by_host, 6);
        assert_eq!(held.note().as_deref(), Some("host memory allows 4"));

        // Existing runners count against CPU and memory totals.
        let (create, held) = admit(8, 3, &size(2, 8, 10), &host(16, 40, 1024), &ROOMY);
        assert_eq!((create, held.by_host), (1, 7));

        // CPU binds: 4 CPUs -> 8 vCPUs -> 2 runners of 4.
        let (create, held) = admit(5, 0, &size(4, 1, 1), &host(4, 512, 1024), &ROOMY);
        assert_eq!((create, held.host), (2, Some((Resource::Cpu, 2))));
        assert_eq!(held.note().as_deref(), Some("host CPUs allows 2"));

        // Disk binds on free space (x2 for sparse disks): 15 GiB free -> 3 runners of 10.
        let (create, held) = admit(5, 2, &size(1, 1, 10), &host(64, 512, 15), &ROOMY);
        assert_eq!((create, held.host), (3, Some((Resource::PoolDisk, 5))));
    }

    #[test]
    fn absurd_requirements_create_nothing_and_unknown_facts_limit_nothing() {
        let (create, held) = admit(
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
        let (create, held) = admit(10, 0, &size(2, 8, 10), &HostCapacity::default(), &ROOMY);
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
        let (create, held) = admit(40, 0, &size(1, 1, 1), &host(1024, 4096, 4096), &limits);
        assert_eq!((create, held.by_round, held.by_host), (16, 24, 0));
        assert_eq!(
            held.note().as_deref(),
            Some("at most 16 created a round, 24 more next round")
        );
        // Both at once: the host allows 20, the round creates 16.
        let (create, held) = admit(40, 0, &size(1, 1, 1), &host(10, 4096, 4096), &limits);
        assert_eq!((create, held.by_host, held.by_round), (16, 20, 4));
        assert_eq!(
            held.note().as_deref(),
            Some("host CPUs allows 20, at most 16 created a round, 4 more next round")
        );
    }
}
