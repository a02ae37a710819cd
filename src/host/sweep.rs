//! What a killed hook leaves behind: temporary files (a 0600 copy of a start script holding a
//! JIT config, a partial runner download of up to 512 MiB, a half-written unit file). Each
//! hook starts by deleting them. Juju runs one hook at a time on a machine, but other
//! processes make the same files meanwhile (the unit's reactive workers push start scripts
//! through `LXD_CONF`), so a file whose name says its owner still runs is kept
//! ([`TempOwner`]); only a dead owner's files, and those of older charms, go.

use std::path::{Path, PathBuf};

use crate::host::file::{TempOwner, TEMP_PREFIX};
use crate::paths::HostPaths;

/// Names of temporary files an older charm made, in folders only the charm writes.
const LEGACY_PATTERNS: &[(&str, &str)] = &[
    (".push-", ""),
    (".actions-runner-", ".partial"),
    (".tmp", ""),
];

/// Deletes the charm's temporary files from every folder it makes them in; answers what it
/// deleted. Best effort: a folder that cannot be read is skipped.
pub fn sweep_temp_files(paths: &HostPaths) -> Vec<PathBuf> {
    let charm_only = [
        paths.state_dir(),
        paths.runner_binary_dir(),
        paths.lxd_conf_dir(),
    ];
    let shared = [paths.systemd_dir(), paths.cron_dir(), paths.logrotate_dir()];
    let mut removed = Vec::new();
    for dir in &charm_only {
        removed.extend(sweep_dir(dir, true));
    }
    for dir in &shared {
        removed.extend(sweep_dir(dir, false));
    }
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "removed temporary files a killed hook left"
        );
    }
    removed
}

fn sweep_dir(dir: &Path, charm_only: bool) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            is_temp_name(&name, charm_only) && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| e.path())
        .filter(|p| std::fs::remove_file(p).is_ok())
        .collect()
}

fn is_temp_name(name: &str, charm_only: bool) -> bool {
    if name.starts_with(TEMP_PREFIX) {
        return !TempOwner::of_temp_name(name).is_some_and(|owner| owner.is_alive());
    }
    charm_only
        && LEGACY_PATTERNS
            .iter()
            .any(|(prefix, suffix)| name.starts_with(prefix) && name.ends_with(suffix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_hooks_temp_files_are_swept_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let write = |dir: PathBuf, name: &str| {
            std::fs::create_dir_all(&dir).unwrap();
            let p = dir.join(name);
            std::fs::write(&p, "x").unwrap();
            p
        };
        // What a hook killed mid-way leaves: named by a process that is gone.
        let dead = dead_owner();
        let gone = [
            write(
                paths.lxd_conf_dir(),
                &format!("{TEMP_PREFIX}{}-jit1", dead.tag()),
            ),
            // An older charm's name, without an owner.
            write(paths.state_dir(), &format!("{TEMP_PREFIX}abc123")),
            write(paths.runner_binary_dir(), ".actions-runner-abc.partial"),
            write(paths.state_dir(), ".tmpXy12ab"),
            write(paths.lxd_conf_dir(), ".push-abc"),
            write(
                paths.systemd_dir(),
                &format!("{TEMP_PREFIX}{}-x", dead.tag()),
            ),
        ];
        let kept = [
            write(paths.state_dir(), "credentials.json"),
            write(paths.runner_binary_dir(), "actions-runner-linux-x64.tar.gz"),
            write(paths.lxd_conf_dir(), "client.crt"),
            // Someone else's temp file in a shared folder.
            write(paths.systemd_dir(), ".tmpOther1"),
            write(paths.cron_dir(), ".push-other"),
        ];
        let link_target = write(root.path().join("elsewhere"), "x");
        let link = paths.state_dir().join(format!("{TEMP_PREFIX}link"));
        std::os::unix::fs::symlink(&link_target, &link).unwrap();

        let mut removed = sweep_temp_files(&paths);
        removed.sort();
        let mut expected = gone.to_vec();
        expected.sort();
        assert_eq!(removed, expected);
        assert!(gone.iter().all(|p| !p.exists()));
        assert!(kept.iter().all(|p| p.exists()));
        assert!(link_target.exists());
        assert!(sweep_temp_files(&paths).is_empty());
    }

    /// A child that ran and was reaped: its pid names no process (or a newer one, with
    /// another start time).
    fn dead_owner() -> TempOwner {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        // Unreaped, it still shows in /proc.
        let owner = TempOwner::of_process(child.id()).unwrap();
        child.wait().unwrap();
        owner
    }

    /// Issue 20 item 10: a reactive worker pushes a start script (a JIT config) through a
    /// temp file in the unit's `LXD_CONF` while a hook of the same unit starts. The hook's
    /// sweep keeps the file of a live owner, and takes it once that owner is gone.
    #[test]
    fn a_live_processs_temp_file_is_kept_and_swept_once_it_is_gone() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let conf = paths.lxd_conf_dir();
        std::fs::create_dir_all(&conf).unwrap();
        // This process's own, in flight.
        let mine = crate::host::file::temp_file_in(&conf).unwrap();
        // Another live process's (a worker).
        let mut worker = std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap();
        let owner = TempOwner::of_process(worker.id()).unwrap();
        assert!(owner.is_alive());
        let theirs = conf.join(format!("{TEMP_PREFIX}{}-start", owner.tag()));
        std::fs::write(&theirs, "jit").unwrap();
        // The same pid with another start time is a reused pid: not the owner.
        let reused = conf.join(format!(
            "{TEMP_PREFIX}{}.{}-old",
            owner.pid,
            owner.start_ticks + 1
        ));
        std::fs::write(&reused, "x").unwrap();

        assert_eq!(sweep_temp_files(&paths), vec![reused.clone()]);
        assert!(mine.path().exists() && theirs.exists());

        worker.kill().unwrap();
        worker.wait().unwrap();
        assert_eq!(sweep_temp_files(&paths), vec![theirs]);
        assert!(mine.path().exists());
    }
}
