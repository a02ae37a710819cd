//! When the machine booted, to tell runners that survived a reboot from ones made since.

use std::path::Path;

/// `btime` of a `/proc/stat` text: the boot time in seconds since the epoch.
pub fn parse_boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The machine's boot time, or None when the kernel does not say (callers then assume the
/// worst: runners may predate the boot).
pub fn boot_time_epoch() -> Option<u64> {
    std::fs::read_to_string(Path::new("/proc/stat"))
        .ok()
        .and_then(|s| parse_boot_time(&s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_btime() {
        let stat = "cpu  1 2 3\nintr 5\nctxt 9\nbtime 1764265593\nprocesses 77\n";
        assert_eq!(parse_boot_time(stat), Some(1_764_265_593));
        assert_eq!(parse_boot_time("cpu 1\n"), None);
        assert_eq!(parse_boot_time("btime x\n"), None);
    }

    #[test]
    fn this_machine_has_a_boot_time_in_the_past() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let boot = boot_time_epoch().expect("Linux /proc/stat has btime");
        assert!(boot > 0 && boot <= now);
    }
}
