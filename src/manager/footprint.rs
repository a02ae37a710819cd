//! What the instances already on the machine take, for admission (`manager::admission`).
//! Pure: the instances' limits as LXD reports them (their expanded config, own keys over
//! their profiles') are read at the edge (`Lxd::list_machine_instances`).
//!
//! Every instance counts, whoever made it: this unit's runners, other units' and other
//! applications' runners, leftovers, the image builder. An instance whose CPU or memory
//! limit is unset or unreadable counts as one runner of the size being admitted: a container
//! without `limits.memory` may take all of the host's memory, and a VM takes LXD's default,
//! so neither can be counted as free.

use crate::manager::admission::{HostCapacity, RunnerSize};

/// One instance's CPU and memory limits as LXD holds them (`limits.cpu`, `limits.memory`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceLimits {
    pub cpu: Option<String>,
    pub memory: Option<String>,
}

/// What the instances on the machine take in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineLoad {
    pub instances: u32,
    pub cpus: u64,
    pub memory_bytes: u64,
}

impl MachineLoad {
    /// `count` instances of `size` (what a unit alone with its runners puts on the host).
    pub fn uniform(count: u32, size: &RunnerSize) -> MachineLoad {
        MachineLoad {
            instances: count,
            cpus: u64::from(count).saturating_mul(size.cpus),
            memory_bytes: u64::from(count).saturating_mul(size.memory_bytes),
        }
    }

    /// The sum over `instances`, each unreadable limit counted as `size`'s.
    pub fn of<'a>(
        instances: impl IntoIterator<Item = &'a InstanceLimits>,
        size: &RunnerSize,
        host: &HostCapacity,
    ) -> MachineLoad {
        instances
            .into_iter()
            .fold(MachineLoad::default(), |load, limits| MachineLoad {
                instances: load.instances.saturating_add(1),
                cpus: load.cpus.saturating_add(
                    limits
                        .cpu
                        .as_deref()
                        .and_then(cpu_limit)
                        .unwrap_or(size.cpus),
                ),
                memory_bytes: load.memory_bytes.saturating_add(
                    limits
                        .memory
                        .as_deref()
                        .and_then(|m| memory_limit(m, host.memory_bytes))
                        .unwrap_or(size.memory_bytes),
                ),
            })
    }
}

/// `limits.cpu`: a count (`2`) or a set of pinned CPUs (`0-3`, `1,3`, `0-1,4`), as vCPUs.
pub fn cpu_limit(text: &str) -> Option<u64> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if !text.contains(['-', ',']) {
        return text.parse::<u64>().ok().filter(|n| *n > 0);
    }
    let mut total = 0u64;
    for part in text.split(',') {
        let part = part.trim();
        let count = match part.split_once('-') {
            Some((low, high)) => {
                let (low, high): (u64, u64) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
                high.checked_sub(low)?.checked_add(1)?
            }
            None => {
                part.parse::<u64>().ok()?;
                1
            }
        };
        total = total.checked_add(count)?;
    }
    Some(total)
}

/// `limits.memory`: bytes (`1073741824`), a size with LXD's decimal or binary suffix
/// (`512MB`, `4GiB`), or a share of the host's memory (`50%`, known only when the host's is).
pub fn memory_limit(text: &str, host_memory: Option<u64>) -> Option<u64> {
    let text = text.trim();
    if let Some(percent) = text.strip_suffix('%') {
        let percent: u64 = percent.trim().parse().ok()?;
        let host = host_memory?;
        return u64::try_from(u128::from(host) * u128::from(percent) / 100).ok();
    }
    const UNITS: [(&str, u64); 13] = [
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("TiB", 1 << 40),
        ("PiB", 1 << 50),
        ("EiB", 1 << 60),
        ("kB", 1_000),
        ("KB", 1_000),
        ("MB", 1_000_000),
        ("GB", 1_000_000_000),
        ("TB", 1_000_000_000_000),
        ("PB", 1_000_000_000_000_000),
        ("EB", 1_000_000_000_000_000_000),
    ];
    let (number, factor) = UNITS
        .iter()
        .find_map(|(unit, factor)| text.strip_suffix(unit).map(|n| (n, *factor)))
        .or_else(|| text.strip_suffix('B').map(|n| (n, 1)))
        .unwrap_or((text, 1));
    let number = number.trim();
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse::<u64>().ok()?.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn cpu_limits_are_counts_or_pinned_sets() {
        for (text, want) in [
            ("2", Some(2)),
            (" 4 ", Some(4)),
            ("0-3", Some(4)),
            ("1,3", Some(2)),
            ("0-1,4", Some(3)),
            ("5-5", Some(1)),
            ("0", None),
            ("", None),
            ("3-1", None),
            ("a", None),
            ("1,x", None),
            ("-1", None),
            ("0-18446744073709551615", None),
            ("7,9", Some(2)),
        ] {
            assert_eq!(cpu_limit(text), want, "{text:?}");
        }
    }

    #[test]
    fn memory_limits_in_every_unit_lxd_takes() {
        let host = Some(64 * GIB);
        for (text, want) in [
            ("7GiB", Some(7 * GIB)),
            ("512MiB", Some(512 << 20)),
            ("4GB", Some(4_000_000_000)),
            ("100kB", Some(100_000)),
            ("1073741824", Some(GIB)),
            ("1024B", Some(1024)),
            ("50%", Some(32 * GIB)),
            (" 2GiB ", Some(2 * GIB)),
            ("GiB", None),
            ("1.5GiB", None),
            ("-1GiB", None),
            ("lots", None),
            ("20000EiB", None),
        ] {
            assert_eq!(memory_limit(text, host), want, "{text:?}");
        }
        assert_eq!(
            memory_limit("50%", None),
            None,
            "a share of an unknown host"
        );
    }

    #[test]
    fn the_load_sums_every_instance_and_counts_unreadable_limits_as_the_admitted_size() {
        let size = RunnerSize {
            cpus: 2,
            memory_bytes: 7 * GIB,
            disk_bytes: 10 * GIB,
        };
        let host = HostCapacity {
            cpus: Some(16),
            memory_bytes: Some(64 * GIB),
            pool_free_bytes: None,
        };
        let limits = |cpu: Option<&str>, memory: Option<&str>| InstanceLimits {
            cpu: cpu.map(str::to_string),
            memory: memory.map(str::to_string),
        };
        let instances = [
            // Another unit's runner.
            limits(Some("2"), Some("7GiB")),
            // The image builder.
            limits(Some("2"), Some("4GiB")),
            // A leftover without limits, and one with a limit LXD would refuse.
            limits(None, None),
            limits(Some("many"), Some("25%")),
        ];
        assert_eq!(
            MachineLoad::of(&instances, &size, &host),
            MachineLoad {
                instances: 4,
                cpus: 2 + 2 + 2 + 2,
                memory_bytes: (7 + 4 + 7 + 16) * GIB,
            }
        );
        assert_eq!(MachineLoad::of(&[], &size, &host), MachineLoad::default());
        assert_eq!(
            MachineLoad::uniform(3, &size),
            MachineLoad {
                instances: 3,
                cpus: 6,
                memory_bytes: 21 * GIB
            }
        );
    }
}
