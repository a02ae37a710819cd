//! The host's facts admission needs (`manager::admission`): the machine's CPUs and memory
//! (from `/proc` below the host root) and the free space of the runners' storage pool
//! (through `Lxd`).

use crate::lxd::Lxd;
use crate::manager::admission::HostCapacity;
use crate::paths::HostPaths;

/// Gathers what can be read; what cannot stays None and limits nothing (a test's host root
/// has no /proc).
pub fn gather(paths: &HostPaths, lxd: &dyn Lxd, pool: &str) -> HostCapacity {
    let memory_bytes = memory_bytes(paths);
    let cpus = std::fs::read_to_string(paths.proc_dir().join("cpuinfo"))
        .ok()
        .and_then(|text| cpu_count(&text));
    let pool_free_bytes = match lxd.storage_pool_free_bytes(pool) {
        Ok(free) => free,
        Err(e) => {
            tracing::warn!("could not read the free space of storage pool {pool}: {e}");
            None
        }
    };
    HostCapacity {
        cpus,
        memory_bytes,
        pool_free_bytes,
    }
}

/// The machine's memory (MemTotal of /proc/meminfo below the host root).
pub fn memory_bytes(paths: &HostPaths) -> Option<u64> {
    std::fs::read_to_string(paths.proc_dir().join("meminfo"))
        .ok()
        .and_then(|text| mem_total_bytes(&text))
}

/// The `processor` entries of /proc/cpuinfo (the machine's CPUs, which LXD shares out).
pub fn cpu_count(cpuinfo: &str) -> Option<u64> {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count() as u64;
    (n > 0).then_some(n)
}

/// `MemTotal:  16318256 kB` of /proc/meminfo, in bytes.
pub fn mem_total_bytes(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => value.checked_mul(1024),
        None => Some(value),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_total_is_read_from_meminfo() {
        let text = "MemTotal:       16318256 kB\nMemFree:         1234 kB\n";
        assert_eq!(mem_total_bytes(text), Some(16_318_256 * 1024));
        assert_eq!(mem_total_bytes("MemFree: 1 kB\n"), None);
        assert_eq!(mem_total_bytes("MemTotal: x kB\n"), None);
        // This machine's own.
        let real = std::fs::read_to_string("/proc/meminfo").unwrap();
        assert!(mem_total_bytes(&real).unwrap() > 64 << 20);
    }

    #[test]
    fn cpus_are_counted_from_cpuinfo() {
        assert_eq!(
            cpu_count("processor\t: 0\nmodel name\t: x\n\nprocessor\t: 1\n"),
            Some(2)
        );
        assert_eq!(cpu_count(""), None);
        let real = std::fs::read_to_string("/proc/cpuinfo").unwrap();
        assert!(cpu_count(&real).unwrap() >= 1);
    }

    #[test]
    fn a_root_without_proc_limits_nothing_but_the_pool() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let lxd = crate::charm::setup::fakes::FakeLxd::default();
        let got = gather(&paths, &lxd, "runner");
        assert_eq!((got.cpus, got.memory_bytes), (None, None));
        let real = gather(&HostPaths::new("/"), &lxd, "runner");
        assert!(real.cpus.is_some() && real.memory_bytes.is_some());
    }
}
