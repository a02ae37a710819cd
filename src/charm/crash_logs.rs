//! Logs of crashed runners, copied to the host before their instance is deleted: the
//! runner's `_diag` (listener and worker logs) and the instance's syslog, under
//! `var/log/github-runner-logs/<runner>/`, kept 7 days. Once the instance is gone this is
//! the only trace of why a runner died. Sizes are checked first: a job could fill `_diag`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::lxd::{ExecSpec, Lxd, LxdError};
use crate::paths::HostPaths;
use crate::runner::files::RUNNER_DIR;

/// What is copied from a crashed runner's instance.
pub fn crash_log_paths() -> [String; 2] {
    [format!("{RUNNER_DIR}/_diag"), "/var/log/syslog".to_string()]
}

/// Above this much (as `du -sk` counts it), nothing is copied: the host's disk matters more.
pub const MAX_CRASH_LOG_KIB: u64 = 64 * 1024;
/// How long copied logs stay on the host (the Python charm's 7 days).
pub const RETENTION_SECS: u64 = 7 * 24 * 3600;
const SIZE_TIMEOUT: Duration = Duration::from_secs(20);
const PULL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CrashLogError {
    #[error("could not size the logs of {runner}: {source}")]
    Size { runner: String, source: LxdError },
    #[error("the logs of {runner} take {kib} KiB, over the {max} KiB kept per runner; not copied")]
    TooLarge { runner: String, kib: u64, max: u64 },
    #[error("could not create {path}: {reason}; check the disk and permissions under /var/log")]
    Dir { path: PathBuf, reason: String },
}

/// Total KiB in `du -sk` output (`<KiB>\t<path>` lines); a line that does not parse counts 0.
pub fn du_total_kib(out: &str) -> u64 {
    out.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}

/// Names of the copied-log folders older than the retention. Pure.
pub fn expired(folders: &[(String, u64)], now: u64) -> Vec<String> {
    folders
        .iter()
        .filter(|(_, modified)| now.saturating_sub(*modified) > RETENTION_SECS)
        .map(|(name, _)| name.clone())
        .collect()
}

/// Copy the crash logs of `runner` (a running instance) to its folder under the host's
/// runner logs. Returns the paths copied; a path the instance does not have is skipped.
pub fn keep(lxd: &dyn Lxd, paths: &HostPaths, runner: &str) -> Result<Vec<String>, CrashLogError> {
    let wanted = crash_log_paths();
    let size = ExecSpec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            // Missing paths are fine (no syslog in a minimal image): report what exists.
            "du -sk \"$@\" 2>/dev/null; exit 0".into(),
            "du".into(),
            wanted[0].clone(),
            wanted[1].clone(),
        ],
        timeout: SIZE_TIMEOUT,
        ..ExecSpec::default()
    };
    let out = lxd
        .exec(runner, &size)
        .map_err(|source| CrashLogError::Size {
            runner: runner.to_string(),
            source,
        })?;
    let kib = du_total_kib(&out.stdout);
    if kib > MAX_CRASH_LOG_KIB {
        return Err(CrashLogError::TooLarge {
            runner: runner.to_string(),
            kib,
            max: MAX_CRASH_LOG_KIB,
        });
    }
    let dest = paths.runner_logs_dir().join(runner);
    create_private_dir(&dest)?;
    let mut copied = Vec::new();
    for path in wanted {
        match lxd.pull_path(runner, &path, &dest, PULL_TIMEOUT) {
            Ok(()) => copied.push(path),
            Err(e) => tracing::debug!(runner, "crash log {path} not copied: {e}"),
        }
    }
    Ok(copied)
}

/// The folder for one runner's logs, 0750: they may hold what a job printed.
fn create_private_dir(dir: &Path) -> Result<(), CrashLogError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |e: std::io::Error| CrashLogError::Dir {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
        .map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750)).map_err(err)
}

/// Delete copied logs older than the retention. Problems are logged, never fatal.
pub fn prune(paths: &HostPaths, now: u64) {
    let root = paths.runner_logs_dir();
    let Ok(entries) = std::fs::read_dir(&root) else {
        return; // nothing copied yet
    };
    let folders: Vec<(String, u64)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let modified = e.metadata().ok()?.modified().ok()?;
            let secs = modified
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some((e.file_name().to_str()?.to_string(), secs))
        })
        .collect();
    for name in expired(&folders, now) {
        let path = root.join(&name);
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!("could not delete old runner logs {}: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn du_output_is_summed_and_junk_ignored() {
        assert_eq!(du_total_kib(""), 0);
        assert_eq!(du_total_kib("12\t/a\n30\t/var/log/syslog\n"), 42);
        assert_eq!(du_total_kib("x\t/a\n7 /b\n\n"), 7);
        assert_eq!(du_total_kib(&format!("{}\t/a\n5\t/b", u64::MAX)), u64::MAX);
    }

    #[test]
    fn only_folders_past_the_retention_expire() {
        let now = 1_700_000_000;
        let folders = vec![
            ("fresh".to_string(), now - 60),
            ("edge".to_string(), now - RETENTION_SECS),
            ("old".to_string(), now - RETENTION_SECS - 1),
            ("future".to_string(), now + 3600),
        ];
        assert_eq!(expired(&folders, now), ["old"]);
    }

    #[test]
    fn prune_deletes_old_folders_only() {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let logs = paths.runner_logs_dir();
        std::fs::create_dir_all(logs.join("a/_diag")).unwrap();
        std::fs::write(logs.join("a/_diag/Runner.log"), "x").unwrap();
        std::fs::create_dir_all(logs.join("b")).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        prune(&paths, now);
        assert!(logs.join("a/_diag/Runner.log").exists() && logs.join("b").exists());
        prune(&paths, now + RETENTION_SECS + 60);
        assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 0);
        // No folder at all: nothing to do, no error.
        prune(&HostPaths::new(root.path().join("none")), now);
    }
}
