//! One job, one runner across every worker process of a unit: a claim file per job id.
//!
//! A worker claims a job by holding an exclusive `flock` on `<dir>/job-<id>` while it
//! handles the job; the kernel drops the lock when the worker dies, however it dies, so a
//! claim is "held" exactly while its worker lives. A second message for the same job (GitHub
//! or the router redelivering) finds the lock held and is dropped as a duplicate. The file
//! names the runner spawned for the job, so a reconcile can tell which runners workers hold
//! (never flushed, defect D3), and a worker that takes over a dead worker's claim learns of
//! the runner left behind. It also names (by a digest) the message the holder leased, so
//! the same message leased again after its lease lapsed is told from a second message for
//! the job: the first goes back on the queue, only the second is a duplicate. The directory is 0700: job ids and runner names are not secrets,
//! but nothing else on the machine has business there.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Longest claim file read (it holds one short line).
const MAX_CLAIM_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
#[error("job claim {path}: {source}")]
pub struct ClaimError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The claims directory of one unit.
#[derive(Debug, Clone)]
pub struct ClaimDir {
    dir: PathBuf,
}

/// Result of trying to claim a job.
#[derive(Debug)]
pub enum ClaimAttempt {
    Claimed(Claim),
    /// A live worker of this unit handles the job, for another message.
    HeldByAnother,
    /// A live worker of this unit handles the job for this very message: its lease lapsed
    /// (a creation outlasted it) and the broker handed it out again.
    HeldForThisMessage,
}

/// A held claim; dropping it releases the lock and keeps the file, [`Claim::release`]
/// removes it.
#[derive(Debug)]
pub struct Claim {
    file: File,
    path: PathBuf,
    /// Digest of the message this claim is for ([`message_digest`]).
    message: String,
    pub job_id: u64,
    /// The runner a dead worker recorded for this job, if any: the new holder decides its fate.
    pub leftover_runner: Option<String>,
}

fn field(text: &str, key: &str) -> Option<String> {
    text.split_whitespace()
        .find_map(|f| f.strip_prefix(key))
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

fn parse_runner(text: &str) -> Option<String> {
    field(text, "runner=")
}

/// A short digest of a message id: ids come from the producer (hostile, any bytes), the
/// claim file holds one word.
pub fn message_digest(message_id: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

fn read_capped(file: &mut File) -> std::io::Result<String> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0))?;
    file.take(MAX_CLAIM_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

impl ClaimDir {
    /// The directory, created 0700 if missing.
    pub fn open(dir: impl Into<PathBuf>) -> Result<ClaimDir, ClaimError> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ClaimError {
                path: dir.clone(),
                source,
            })?;
        Ok(ClaimDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file_for(&self, job_id: u64) -> PathBuf {
        self.dir.join(format!("job-{job_id}"))
    }

    /// Claim `job_id` for the worker in `slot` handling message `message_id`, without
    /// waiting.
    pub fn claim(
        &self,
        job_id: u64,
        slot: u32,
        message_id: &str,
    ) -> Result<ClaimAttempt, ClaimError> {
        let message = message_digest(message_id);
        let path = self.file_for(job_id);
        let err = |source| ClaimError {
            path: path.clone(),
            source,
        };
        // A holder that releases unlinks the file after we opened it: then our lock is on
        // an orphan inode and we must open the path again.
        for _ in 0..8 {
            let mut file = crate::host::file::open_lock_file(&path).map_err(err)?;
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => {
                    // Racing the holder's first write, this reads the previous record: a
                    // mismatch then only makes a re-leased message look like a duplicate.
                    let held_for = read_capped(&mut file)
                        .ok()
                        .and_then(|t| field(&t, "message="));
                    return Ok(if held_for.as_deref() == Some(message.as_str()) {
                        ClaimAttempt::HeldForThisMessage
                    } else {
                        ClaimAttempt::HeldByAnother
                    });
                }
                Err(TryLockError::Error(e)) => return Err(err(e)),
            }
            let same = match std::fs::symlink_metadata(&path) {
                Ok(on_disk) => {
                    let mine = file.metadata().map_err(err)?;
                    on_disk.ino() == mine.ino() && on_disk.dev() == mine.dev()
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(err(e)),
            };
            if !same {
                continue;
            }
            let leftover_runner = parse_runner(&read_capped(&mut file).map_err(err)?);
            let mut claim = Claim {
                file,
                path: path.clone(),
                message,
                job_id,
                leftover_runner,
            };
            claim.write(slot, None).map_err(err)?;
            return Ok(ClaimAttempt::Claimed(claim));
        }
        Err(err(std::io::Error::other(
            "the claim file kept being replaced",
        )))
    }

    /// `(job id, runner)` of every claim a live worker holds, the runner when it names one.
    fn live_claims(&self) -> Vec<(u64, Option<String>)> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(job_id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("job-"))
                .and_then(|id| id.parse::<u64>().ok())
            else {
                continue;
            };
            let Ok(mut file) = OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(entry.path())
            else {
                continue;
            };
            // Held by a live worker when we cannot lock it (a shared probe lock is enough).
            let held = matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock));
            if held {
                let runner = read_capped(&mut file)
                    .ok()
                    .as_deref()
                    .and_then(parse_runner);
                claims.push((job_id, runner));
            }
        }
        claims
    }

    /// Runners named in claims that live workers hold: a reconcile must not remove them.
    pub fn held_runners(&self) -> Vec<String> {
        let mut runners: Vec<String> = self
            .live_claims()
            .into_iter()
            .filter_map(|(_, runner)| runner)
            .collect();
        runners.sort();
        runners
    }

    /// A live worker handling a job other than `job_id` names `runner`: the runner was
    /// spawned for that job, or took it (GitHub hands a queued job to any idle runner with
    /// matching labels) and its worker counts it as serving that job.
    pub fn runner_serves_another_job(&self, runner: &str, job_id: u64) -> bool {
        self.live_claims()
            .iter()
            .any(|(job, r)| *job != job_id && r.as_deref() == Some(runner))
    }

    /// Job ids claimed by live workers (status, tests).
    pub fn held_jobs(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("job-"))
            .filter_map(|e| File::open(e.path()).ok())
            .filter(|f| matches!(f.try_lock_shared(), Err(TryLockError::WouldBlock)))
            .count()
    }
}

impl Claim {
    fn write(&mut self, slot: u32, runner: Option<&str>) -> std::io::Result<()> {
        let message = &self.message;
        let line = match runner {
            Some(r) => format!("slot={slot} message={message} runner={r}\n"),
            None => format!("slot={slot} message={message}\n"),
        };
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()
    }

    /// Record the runner spawned for the job, before it is created: a worker killed during
    /// creation leaves its name for the next holder and the reconcile.
    pub fn record_runner(&mut self, slot: u32, runner: &str) -> Result<(), ClaimError> {
        self.write(slot, Some(runner)).map_err(|source| ClaimError {
            path: self.path.clone(),
            source,
        })
    }

    /// Done with the job: the file goes, then the lock.
    pub fn release(self) -> Result<(), ClaimError> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ClaimError {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn claimed(a: ClaimAttempt) -> Claim {
        match a {
            ClaimAttempt::Claimed(c) => c,
            other => panic!("expected a claim, got {other:?}"),
        }
    }

    #[test]
    fn a_second_claim_on_a_held_job_is_refused_and_succeeds_after_release() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClaimDir::open(tmp.path().join("claims")).unwrap();
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let first = claimed(dir.claim(7, 1, "m").unwrap());
        assert!(matches!(
            dir.claim(7, 2, "second message").unwrap(),
            ClaimAttempt::HeldByAnother
        ));
        // The same message again (its lease lapsed while the holder works) is told apart.
        assert!(matches!(
            dir.claim(7, 2, "m").unwrap(),
            ClaimAttempt::HeldForThisMessage
        ));
        // Another job is independent.
        let other = claimed(dir.claim(8, 2, "m").unwrap());
        assert_eq!(dir.held_jobs(), 2);
        first.release().unwrap();
        let again = claimed(dir.claim(7, 2, "m").unwrap());
        assert_eq!(again.leftover_runner, None);
        drop(other);
        drop(again);
        assert_eq!(dir.held_jobs(), 0);
    }

    #[test]
    fn held_runners_lists_only_live_claims_and_a_dead_holders_runner_is_handed_on() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClaimDir::open(tmp.path()).unwrap();
        let mut live = claimed(dir.claim(1, 1, "m").unwrap());
        live.record_runner(1, "app-0-aaaaaaaaaaaa").unwrap();
        let mut dead = claimed(dir.claim(2, 2, "m").unwrap());
        dead.record_runner(2, "app-0-bbbbbbbbbbbb").unwrap();
        drop(dead); // the worker died: lock gone, file stays
        assert_eq!(dir.held_runners(), vec!["app-0-aaaaaaaaaaaa".to_string()]);
        let taken_over = claimed(dir.claim(2, 3, "m").unwrap());
        assert_eq!(
            taken_over.leftover_runner.as_deref(),
            Some("app-0-bbbbbbbbbbbb")
        );
        // The new holder's record replaced the old one: no runner until it records one.
        assert_eq!(dir.held_runners(), vec!["app-0-aaaaaaaaaaaa".to_string()]);
        drop(live);
    }

    #[test]
    fn a_runner_named_by_another_jobs_live_claim_serves_that_job() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClaimDir::open(tmp.path()).unwrap();
        let mut a = claimed(dir.claim(1, 1, "a").unwrap());
        a.record_runner(1, "r-1").unwrap();
        assert!(!dir.runner_serves_another_job("r-1", 1), "its own job only");
        let mut b = claimed(dir.claim(2, 2, "b").unwrap());
        b.record_runner(2, "r-2").unwrap();
        assert!(!dir.runner_serves_another_job("r-1", 1));
        // B's worker saw its job taken by r-1 and counts r-1 as serving B.
        b.record_runner(2, "r-1").unwrap();
        assert!(dir.runner_serves_another_job("r-1", 1));
        // Seen from B, r-1 is the runner spawned for A.
        assert!(dir.runner_serves_another_job("r-1", 2));
        assert!(!dir.runner_serves_another_job("r-2", 2));
        drop(b); // B's worker died: its claim no longer counts
        assert!(!dir.runner_serves_another_job("r-1", 1));
        drop(a);
    }

    /// Claims are held per process: a claim held by a real child process blocks this one,
    /// and its death frees the job.
    #[test]
    fn a_claim_held_by_another_process_is_freed_when_it_is_killed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClaimDir::open(tmp.path()).unwrap();
        std::fs::write(dir.path().join("job-5"), "slot=9 runner=r-1\n").unwrap();
        // One process holds the lock and nothing else does: the shell locks its own fd 9
        // (flock(1) on an inherited fd) and becomes `sleep`, which keeps it. (`flock -o`
        // leaves a window where its forked child still shares the lock after the parent
        // is killed.)
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", "exec 9>>\"$0\" && flock 9 && exec sleep 30"])
            .arg(dir.path().join("job-5"))
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while dir.held_jobs() == 0 {
            assert!(std::time::Instant::now() < deadline, "child never locked");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(matches!(
            dir.claim(5, 1, "m").unwrap(),
            ClaimAttempt::HeldByAnother
        ));
        assert_eq!(dir.held_runners(), vec!["r-1".to_string()]);
        child.kill().unwrap();
        child.wait().unwrap();
        let c = claimed(dir.claim(5, 1, "m").unwrap());
        assert_eq!(c.leftover_runner.as_deref(), Some("r-1"));
    }

    #[test]
    fn concurrent_claims_of_one_job_give_exactly_one_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = ClaimDir::open(tmp.path()).unwrap();
        for round in 0..50u64 {
            let barrier = std::sync::Barrier::new(4);
            let wins: usize = std::thread::scope(|s| {
                let handles: Vec<_> = (0..4)
                    .map(|slot| {
                        let (dir, barrier) = (&dir, &barrier);
                        s.spawn(move || {
                            barrier.wait();
                            match dir.claim(round, slot, "m").unwrap() {
                                ClaimAttempt::Claimed(c) => {
                                    // Hold it until every thread tried.
                                    barrier.wait();
                                    c.release().unwrap();
                                    1
                                }
                                _ => {
                                    barrier.wait();
                                    0
                                }
                            }
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).sum()
            });
            assert_eq!(wins, 1, "round {round}");
        }
    }
}
