//! What a killed hook leaves behind: temporary files (a 0600 copy of a start script holding a
//! JIT config, a partial runner download of up to 512 MiB, a half-written unit file). Each
//! hook starts by deleting them. Juju runs one hook (or action, or `juju-exec`) at a time on
//! a machine, so none of them is still being written.

use std::path::{Path, PathBuf};

use crate::host::file::TEMP_PREFIX;
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
    name.starts_with(TEMP_PREFIX)
        || (charm_only
            && LEGACY_PATTERNS
                .iter()
                .any(|(prefix, suffix)| name.starts_with(prefix) && name.ends_with(suffix)))
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
        // What a hook killed mid-way leaves: kept alive by holding them past a kill.
        let jit = crate::host::file::temp_file_in(&{
            std::fs::create_dir_all(paths.lxd_conf_dir()).unwrap();
            paths.lxd_conf_dir()
        })
        .unwrap()
        .keep()
        .unwrap()
        .1;
        let gone = [
            jit,
            write(paths.runner_binary_dir(), ".actions-runner-abc.partial"),
            write(paths.state_dir(), ".tmpXy12ab"),
            write(paths.lxd_conf_dir(), ".push-abc"),
            write(paths.systemd_dir(), &format!("{TEMP_PREFIX}x")),
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
}
