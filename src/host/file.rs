//! Host files the charm owns (systemd units, cron and logrotate rules): written whole and
//! atomically, so the daemon reading them never sees half a file, and only when they change.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every temporary file the charm makes starts with this, so a hook start can sweep what a
/// killed hook left ([`crate::host::sweep`]) without touching anyone else's files.
pub const TEMP_PREFIX: &str = ".github-runner-charm-tmp-";

/// The kernel's process table. Not a host file a test root could stand in for: the pids in
/// temp file names are this kernel's.
const PROCESSES: &str = "/proc";

/// A 0600 temporary file in `dir` named [`TEMP_PREFIX`] + [`TempOwner::current`] + random;
/// deleted when dropped unless persisted. The owner in the name lets the sweep keep what a
/// live process (a reactive worker, another unit's hook) is still writing.
pub fn temp_file_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{}-", TempOwner::current().tag()))
        .tempfile_in(dir)
}

/// The process that made a temp file: its pid and start time (clock ticks after boot, from
/// `/proc/<pid>/stat`), so a reused pid is not taken for the owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TempOwner {
    pub pid: u32,
    pub start_ticks: u64,
}

impl TempOwner {
    /// This process (start time 0, any, when `/proc` cannot say).
    pub fn current() -> TempOwner {
        let pid = std::process::id();
        TempOwner::of_process(pid).unwrap_or(TempOwner {
            pid,
            start_ticks: 0,
        })
    }

    /// Process `pid`, while `/proc` shows it.
    pub fn of_process(pid: u32) -> Option<TempOwner> {
        Some(TempOwner {
            pid,
            start_ticks: process_start_ticks(pid)?,
        })
    }

    /// `<pid>.<start>`, the part of a temp file's name after [`TEMP_PREFIX`].
    pub fn tag(&self) -> String {
        format!("{}.{}", self.pid, self.start_ticks)
    }

    /// The owner named by a temp file name (`TEMP_PREFIX<pid>.<start>-<random>`); None for
    /// names without one (older charms).
    pub fn of_temp_name(name: &str) -> Option<TempOwner> {
        let (tag, _) = name.strip_prefix(TEMP_PREFIX)?.split_once('-')?;
        let (pid, start) = tag.split_once('.')?;
        Some(TempOwner {
            pid: pid.parse().ok()?,
            start_ticks: start.parse().ok()?,
        })
    }

    /// The process still runs (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        match process_start_ticks(self.pid) {
            Some(start) => self.start_ticks == 0 || start == self.start_ticks,
            None => false,
        }
    }
}

/// Field 22 of `/proc/<pid>/stat` (after the parenthesised command, which may hold spaces).
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("{PROCESSES}/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(19)?.parse().ok()
}

/// Creates `dir` (and its parents) and makes it 0700 even when it already existed: what it
/// holds (LXD client keys, the unit's lock) is root's alone.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Opens (creating it 0600) a lock file for reading and writing, never through a symlink: a
/// link planted at a lock's path must not make the charm open, or create, another file.
pub fn open_lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
}

/// Sets `file`'s mode to `mode` unless it has it already (a file made by an older charm with
/// a wider mode).
pub fn tighten_mode(file: &std::fs::File, mode: u32) -> std::io::Result<()> {
    if file.metadata()?.permissions().mode() & 0o7777 != mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Replaces `path` with `content` at `mode` unless it already holds exactly that; creates
/// the directory. The temporary file is made in the same directory (the rename is atomic)
/// under a name starting with a dot (which cron and logrotate skip). Returns whether it
/// wrote.
pub fn replace_if_changed(path: &Path, content: &str, mode: u32) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|current| current == content.as_bytes()) {
        return Ok(false);
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    // Created 0600, so the content is never readable by others before the mode is set.
    let mut tmp = temp_file_in(dir)?;
    tmp.write_all(content.as_bytes())?;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(true)
}

/// The first `cap` bytes of `path` as text: files a runner or another process may have
/// grown are never read whole.
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(cap)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Device, inode, size and modification time of the file `binary` resolves to: another
/// revision's binary is another file (a refresh renames a new one over it), so what runs
/// it (the exporter service, reactive workers) knows to restart. `missing` when it cannot
/// be read.
pub fn binary_identity(binary: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(binary) {
        Ok(m) => format!(
            "{}:{}:{}:{}.{:09}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        Err(_) => "missing".to_string(),
    }
}

/// Delete a file or a whole folder the charm owns, logging what went (an absent one is
/// fine: every removal may be rerun). Best effort: a failure is a warning.
pub fn remove_logged(path: &Path) {
    let result = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => tracing::info!("{} removed", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("could not remove {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_with_the_mode_then_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/cron.d/rule");
        assert!(replace_if_changed(&path, "a\n", 0o600).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a\n");
        assert_eq!(mode(&path), 0o600);
        assert!(!replace_if_changed(&path, "a\n", 0o600).unwrap());
        assert!(replace_if_changed(&path, "b\n", 0o644).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\n");
        assert_eq!(mode(&path), 0o644);
        // Nothing left behind but the file itself.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("rule")]);
    }
}
