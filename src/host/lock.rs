//! One lock per unit around reconcile and flush, so a timer reconcile, an action and a hook
//! never act on the runners at once.
//!
//! An advisory `flock` on a file under the host root: the kernel drops it when the holder
//! exits, however it dies, so a killed dispatch never leaves the unit locked. The holder
//! writes who it is and since when into the file, so a waiter that gives up can say for how
//! long the lock has been held.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::clock::Clock;

/// How long to wait for the lock, and how often to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockWait {
    pub max: Duration,
    pub poll: Duration,
}

impl Default for LockWait {
    /// Long enough for a flush's pre-job wait (150 s) and a reconcile to finish.
    fn default() -> Self {
        LockWait {
            max: Duration::from_secs(300),
            poll: Duration::from_secs(1),
        }
    }
}

/// Who holds the lock, as the holder recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub purpose: String,
    pub since_epoch: u64,
}

impl Holder {
    fn render(&self) -> String {
        format!(
            "pid={} purpose={} since={}\n",
            self.pid, self.purpose, self.since_epoch
        )
    }

    fn parse(text: &str) -> Option<Holder> {
        let mut pid = None;
        let mut purpose = None;
        let mut since = None;
        for field in text.split_whitespace() {
            match field.split_once('=') {
                Some(("pid", v)) => pid = v.parse().ok(),
                Some(("purpose", v)) => purpose = Some(v.to_string()),
                Some(("since", v)) => since = v.parse().ok(),
                _ => {}
            }
        }
        Some(Holder {
            pid: pid?,
            purpose: purpose?,
            since_epoch: since?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another reconcile or flush has held the lock for {held_secs} s ({}, pid {}); gave up after waiting {waited_secs} s", .holder.purpose, .holder.pid)]
    HeldFor {
        holder: Holder,
        held_secs: u64,
        waited_secs: u64,
    },
    #[error(
        "another reconcile or flush holds the lock {path}; gave up after waiting {waited_secs} s"
    )]
    Held { path: PathBuf, waited_secs: u64 },
    #[error("could not use the lock file {path}: {reason}")]
    Io { path: PathBuf, reason: String },
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct UnitLock {
    file: File,
    path: PathBuf,
}

impl UnitLock {
    /// Take the lock at `path` for `purpose` (one word, e.g. `reconcile`), polling with
    /// `try_lock` on `clock` for at most `wait.max`.
    pub fn acquire(
        path: &Path,
        purpose: &str,
        clock: &dyn Clock,
        wait: LockWait,
    ) -> Result<UnitLock, LockError> {
        let io = |e: std::io::Error| LockError::Io {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        // 0600 in a 0700 folder: flock works on any descriptor, even a read-only one, so a
        // lock file other users can open is one they can hold and fail every hook with.
        if let Some(dir) = path.parent() {
            crate::host::file::create_private_dir(dir).map_err(io)?;
        }
        let mut file = crate::host::file::open_lock_file(path).map_err(io)?;
        crate::host::file::tighten_mode(&file, 0o600).map_err(io)?;
        let started = clock.now_epoch();
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(io(e)),
            }
            let waited = clock.now_epoch().saturating_sub(started);
            if waited >= wait.max.as_secs() {
                return Err(held_error(&mut file, path, clock.now_epoch(), waited));
            }
            clock.sleep(wait.poll);
        }
        let holder = Holder {
            pid: std::process::id(),
            purpose: purpose.split_whitespace().collect::<Vec<_>>().join("-"),
            since_epoch: clock.now_epoch(),
        };
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(holder.render().as_bytes()).map_err(io)?;
        tracing::debug!(path = %path.display(), purpose, "unit lock taken");
        Ok(UnitLock {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnitLock {
    fn drop(&mut self) {
        // Clear the record before the lock goes with the file: a waiter never reads a
        // finished holder as the current one. Failing to clear it only makes that message
        // less precise.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn held_error(file: &mut File, path: &Path, now: u64, waited_secs: u64) -> LockError {
    let mut text = String::new();
    let holder = file
        .seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_string(&mut text))
        .ok()
        .and_then(|_| Holder::parse(&text));
    match holder {
        Some(holder) => LockError::HeldFor {
            held_secs: now.saturating_sub(holder.since_epoch),
            holder,
            waited_secs,
        },
        None => LockError::Held {
            path: path.to_path_buf(),
            waited_secs,
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::clock::{ManualClock, SystemClock};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::Instant;

    fn lock_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("run/github-runner-charm/reconcile.lock")
    }

    const QUICK: LockWait = LockWait {
        max: Duration::from_secs(30),
        poll: Duration::from_secs(1),
    };

    #[test]
    fn a_second_taker_gives_up_and_says_for_how_long_the_lock_was_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let clock = ManualClock::at(1_000);
        let held = UnitLock::acquire(&path, "flush-runners", &clock, QUICK).unwrap();
        clock.advance(Duration::from_secs(12));

        // Another thread, another open file description: flock conflicts for real.
        let err = std::thread::scope(|s| {
            s.spawn(|| UnitLock::acquire(&path, "reconcile", &clock, QUICK).unwrap_err())
                .join()
                .unwrap()
        });
        assert_eq!(
            err.to_string(),
            format!(
                "another reconcile or flush has held the lock for 42 s (flush-runners, pid {}); \
                 gave up after waiting 30 s",
                std::process::id()
            )
        );
        // It polled through the clock, 30 one-second sleeps, without sleeping for real.
        assert_eq!(clock.sleeps().len(), 30);
        drop(held);
        assert!(UnitLock::acquire(&path, "reconcile", &clock, QUICK).is_ok());
    }

    #[test]
    fn the_lock_file_is_0600_in_a_0700_folder_even_after_an_older_charm() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        // What an older charm left: a 0755 folder and a world-readable lock file.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::set_permissions(
            path.parent().unwrap(),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        let held = UnitLock::acquire(&path, "reconcile", &SystemClock, QUICK).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        drop(held);

        // A symlink planted in its place is refused, not followed.
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(UnitLock::acquire(&path, "reconcile", &SystemClock, QUICK).is_err());
    }

    /// A clock that sleeps for real but tells the test when the waiter first had to wait.
    pub(crate) struct SignallingClock {
        pub(crate) contended: std::sync::Mutex<Option<mpsc::Sender<()>>>,
    }

    impl Clock for SignallingClock {
        fn now_epoch(&self) -> u64 {
            SystemClock.now_epoch()
        }

        fn sleep(&self, d: Duration) {
            if let Some(tx) = self.contended.lock().unwrap().take() {
                let _ = tx.send(());
            }
            std::thread::sleep(d)
        }
    }

    #[test]
    fn a_waiter_gets_the_lock_once_the_holder_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let held = UnitLock::acquire(&path, "reconcile", &SystemClock, QUICK).unwrap();
        let (tx, rx) = mpsc::channel();
        let clock = SignallingClock {
            contended: std::sync::Mutex::new(Some(tx)),
        };
        let wait = LockWait {
            max: Duration::from_secs(20),
            poll: Duration::from_millis(10),
        };
        std::thread::scope(|s| {
            let waiter = s.spawn(|| UnitLock::acquire(&path, "flush", &clock, wait));
            // Release only once the waiter has found the lock taken.
            rx.recv_timeout(Duration::from_secs(20))
                .expect("waiter never contended");
            drop(held);
            let lock = waiter.join().unwrap().expect("lock after release");
            let text = std::fs::read_to_string(lock.path()).unwrap();
            assert!(text.contains("purpose=flush"), "{text}");
        });
    }

    #[test]
    fn another_process_holding_the_lock_blocks_us_until_it_exits() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        // flock(1) holds the lock while `cat` runs; `cat` exits when its stdin closes.
        let mut child = Command::new("flock")
            .arg(&path)
            .arg("cat")
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux");
        // Wait (bounded) until the child really holds it.
        let deadline = Instant::now() + Duration::from_secs(20);
        let probe = std::fs::OpenOptions::new().read(true).open(&path).unwrap();
        loop {
            match probe.try_lock() {
                Err(TryLockError::WouldBlock) => break,
                Ok(()) => probe.unlock().unwrap(),
                Err(TryLockError::Error(e)) => panic!("{e}"),
            }
            assert!(Instant::now() < deadline, "flock(1) never took the lock");
            std::thread::yield_now();
        }
        let clock = ManualClock::at(5_000);
        let err = UnitLock::acquire(&path, "reconcile", &clock, QUICK).unwrap_err();
        assert!(
            matches!(
                err,
                LockError::Held {
                    waited_secs: 30,
                    ..
                }
            ),
            "a holder that wrote nothing is reported without a duration: {err}"
        );
        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(UnitLock::acquire(&path, "reconcile", &clock, QUICK).is_ok());
    }

    #[test]
    fn the_record_is_cleared_on_release() {
        let dir = tempfile::tempdir().unwrap();
        let path = lock_path(&dir);
        let lock = UnitLock::acquire(&path, "reconcile runners", &SystemClock, QUICK).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let holder = Holder::parse(&text).unwrap();
        assert_eq!(holder.purpose, "reconcile-runners");
        assert_eq!(holder.pid, std::process::id());
        drop(lock);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
    }

    #[test]
    fn unusable_path_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, "").unwrap();
        let err = UnitLock::acquire(&blocker.join("lock"), "x", &SystemClock, QUICK).unwrap_err();
        assert!(matches!(err, LockError::Io { .. }), "{err}");
    }
}
