//! Child processes run with a deadline: std has no wait-with-timeout, and a child whose pipes
//! nobody drains blocks once a pipe buffer fills, so its output is read while waiting
//! (on threads, or on this thread with poll for short calls such as hook tools).

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// PATH of the host programs the charm runs (lxc, snap, the image build): the system
/// directories and the snap's, never the hook's inherited PATH.
pub const HOST_PROGRAM_PATH: &str =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin";

/// Longest pause between two looks at the child when the kernel has no pidfd (Linux < 5.3):
/// how late a finished child may be noticed there.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits for `child` until `timeout`; kills and reaps it and answers None when the deadline
/// passes. Sleeps on a pidfd, which becomes readable the moment the child exits, so a short
/// call (a hook tool takes ~1 ms) is not stretched by polling; without pidfd, polls with a
/// short, growing interval that never sleeps past the deadline.
pub fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let exited_in_time = match pidfd_of(child) {
        Some(pidfd) => sleep_until_exit(&pidfd, deadline),
        None => poll_until_exit(child, deadline),
    };
    match exited_in_time {
        Ok(true) => child.wait().map(Some),
        Ok(false) => {
            kill_and_reap(child);
            Ok(None)
        }
        Err(e) => {
            kill_and_reap(child);
            Err(e)
        }
    }
}

/// Never leave a child behind, whatever went wrong while waiting for it.
pub fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A pidfd for the child. It names that very process: the child is ours and not yet reaped,
/// so its pid cannot have been reused.
fn pidfd_of(child: &Child) -> Option<rustix::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// True once the process behind `pidfd` has exited, false at the deadline. A process that
/// has already exited counts as in time even when the deadline is already reached.
fn sleep_until_exit(pidfd: &rustix::fd::OwnedFd, deadline: Instant) -> std::io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timespec(left))) {
            Ok(0) if left.is_zero() => return Ok(false),
            Ok(0) => continue, // woke early: wait for what is left
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn timespec(d: Duration) -> rustix::event::Timespec {
    rustix::event::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// True once `child` has exited, false at the deadline (the fallback without pidfd).
fn poll_until_exit(child: &mut Child, deadline: Instant) -> std::io::Result<bool> {
    let mut interval = Duration::from_millis(2);
    loop {
        if child.try_wait()?.is_some() {
            return Ok(true);
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        std::thread::sleep(interval.min(deadline - now));
        interval = (interval * 2).min(MAX_POLL_INTERVAL);
    }
}

/// A finished child's status and what it printed.
#[derive(Debug)]
pub struct Collected {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Reads the child's piped stdout and stderr to their end on this thread (poll, no thread
/// spawned: a hook tool call takes ~1 ms and threads would add a good part of that), then
/// waits for it, all before `timeout`. Past the deadline the child is killed and reaped and
/// the answer is None. A child that exits while something it started keeps its pipes open
/// runs into the deadline.
pub fn collect_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<Collected>> {
    match collect_capped(child, timeout, usize::MAX)? {
        Collection::Done(collected) => Ok(Some(collected)),
        Collection::TimedOut | Collection::TooLarge => Ok(None),
    }
}

/// How a capped collection ended.
#[derive(Debug)]
pub enum Collection {
    Done(Collected),
    /// The deadline passed; the child was killed and reaped.
    TimedOut,
    /// stdout or stderr went past the cap; the child was killed and reaped at once, so a
    /// child printing without end costs at most `cap` bytes per pipe, never the deadline.
    TooLarge,
}

/// As [`collect_with_deadline`], but each of stdout and stderr may hold at most `cap` bytes:
/// the output of a command run inside a runner is the runner's to choose (a job has root
/// there), so its size must never be the hook's problem.
pub fn collect_capped(
    child: &mut Child,
    timeout: Duration,
    cap: usize,
) -> std::io::Result<Collection> {
    let deadline = Instant::now() + timeout;
    let (stdout, stderr) = match drain_until(child, deadline, cap) {
        Ok(Drained::Both(out, err)) => (out, err),
        Ok(Drained::Deadline) => {
            kill_and_reap(child);
            return Ok(Collection::TimedOut);
        }
        Ok(Drained::OverCap) => {
            kill_and_reap(child);
            return Ok(Collection::TooLarge);
        }
        Err(e) => {
            kill_and_reap(child);
            return Err(e);
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    Ok(match wait_with_deadline(child, left)? {
        Some(status) => Collection::Done(Collected {
            status,
            stdout,
            stderr,
        }),
        None => Collection::TimedOut,
    })
}

enum Drained {
    Both(Vec<u8>, Vec<u8>),
    Deadline,
    OverCap,
}

/// Reads the child's stdout and stderr until both close, the deadline, or either holds more
/// than `cap` bytes.
fn drain_until(child: &mut Child, deadline: Instant, cap: usize) -> std::io::Result<Drained> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut chunk = [0u8; 8192];
    while stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Drained::Deadline);
        }
        let wait = timespec(left);
        let (out_ready, err_ready) = {
            let mut fds = Vec::with_capacity(2);
            if let Some(p) = &stdout {
                fds.push(PollFd::new(p, PollFlags::IN));
            }
            if let Some(p) = &stderr {
                fds.push(PollFd::new(p, PollFlags::IN));
            }
            match poll(&mut fds, Some(&wait)) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            // Readable, or closed at the other end (HUP/ERR): a read then returns 0.
            let ready = |fd: &PollFd<'_>| !fd.revents().is_empty();
            let mut it = fds.iter();
            (
                stdout
                    .as_ref()
                    .map(|_| it.next().is_some_and(ready))
                    .unwrap_or(false),
                stderr
                    .as_ref()
                    .map(|_| it.next().is_some_and(ready))
                    .unwrap_or(false),
            )
        };
        if out_ready {
            read_some(&mut stdout, &mut out, &mut chunk)?;
        }
        if err_ready {
            read_some(&mut stderr, &mut err, &mut chunk)?;
        }
        if out.len() > cap || err.len() > cap {
            return Ok(Drained::OverCap);
        }
    }
    Ok(Drained::Both(out, err))
}

/// One read from a pipe poll said is ready; at its end (0 bytes) the pipe is dropped.
fn read_some<R: Read>(
    pipe: &mut Option<R>,
    into: &mut Vec<u8>,
    chunk: &mut [u8],
) -> std::io::Result<()> {
    if let Some(p) = pipe {
        match p.read(chunk) {
            Ok(0) => *pipe = None,
            Ok(n) => into.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads `pipe` to its end on a thread (nothing when there is no pipe).
pub fn spawn_reader<R: Read + Send + 'static>(pipe: Option<R>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sh(script: &str) -> Child {
        sh_with_stderr(script, Stdio::null())
    }

    fn sh_with_stderr(script: &str, stderr: Stdio) -> Child {
        Command::new("/bin/sh")
            .args(["-c", script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_child_that_ends_in_time_gives_its_status_and_output() {
        let mut child = sh("echo out; exit 4");
        let out = spawn_reader(child.stdout.take());
        let status = wait_with_deadline(&mut child, Duration::from_secs(30)).unwrap();
        assert_eq!(status.and_then(|s| s.code()), Some(4));
        assert_eq!(out.join().unwrap(), b"out\n");
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_and_reaped() {
        let mut child = sh("exec sleep 30");
        let out = spawn_reader(child.stdout.take());
        let status = wait_with_deadline(&mut child, Duration::from_millis(100)).unwrap();
        assert!(status.is_none());
        // Reaped: nothing left to wait for, and the pipe is closed so the reader ends.
        assert!(child.try_wait().unwrap().is_some());
        assert!(out.join().unwrap().is_empty());
    }

    #[test]
    fn collecting_reads_both_pipes_even_past_a_pipe_buffer() {
        // 200 KiB on stdout and some stderr: more than a pipe holds, so the child only ends
        // if both are drained while it runs.
        let mut child = sh_with_stderr(
            "head -c 204800 /dev/zero; echo oops >&2; exit 5",
            Stdio::piped(),
        );
        let got = collect_with_deadline(&mut child, Duration::from_secs(30))
            .unwrap()
            .expect("in time");
        assert_eq!(got.status.code(), Some(5));
        assert_eq!(got.stdout.len(), 204800);
        assert_eq!(got.stderr, b"oops\n");
    }

    #[test]
    fn collecting_with_a_cap_kills_a_child_that_prints_without_end() {
        for script in ["cat /dev/zero", "cat /dev/zero >&2"] {
            let mut child = Command::new("/bin/sh")
                .args(["-c", script])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // The deadline is far: only the cap can end this collection early.
            match collect_capped(&mut child, Duration::from_secs(600), 64 * 1024).unwrap() {
                Collection::TooLarge => {}
                other => panic!("{script}: {other:?}"),
            }
            assert!(child.try_wait().is_ok(), "the child is reaped");
        }
        let mut child = sh("printf 12345678");
        match collect_capped(&mut child, Duration::from_secs(30), 8).unwrap() {
            Collection::Done(c) => assert_eq!(c.stdout, b"12345678"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn collecting_kills_a_child_at_the_deadline() {
        let mut child = sh_with_stderr("echo started; exec sleep 30", Stdio::piped());
        assert!(
            collect_with_deadline(&mut child, Duration::from_millis(200))
                .unwrap()
                .is_none()
        );
        assert!(child.try_wait().unwrap().is_some(), "killed and reaped");
    }

    #[test]
    fn a_child_that_already_exited_is_in_time_even_at_the_deadline() {
        let mut child = sh("exit 3");
        let Some(pidfd) = pidfd_of(&child) else {
            // No pidfd on this kernel: the polling fallback checks the child first anyway.
            assert!(poll_until_exit(&mut child, Instant::now() + Duration::from_secs(30)).unwrap());
            return;
        };
        // Exited (not reaped yet): a zero time left must still say so.
        assert!(sleep_until_exit(&pidfd, Instant::now() + Duration::from_secs(30)).unwrap());
        assert!(sleep_until_exit(&pidfd, Instant::now()).unwrap());
        assert_eq!(
            wait_with_deadline(&mut child, Duration::ZERO)
                .unwrap()
                .and_then(|s| s.code()),
            Some(3)
        );
    }

    #[test]
    fn the_polling_fallback_sees_an_exit_and_a_deadline() {
        let mut quick = sh("exit 2");
        assert!(poll_until_exit(&mut quick, Instant::now() + Duration::from_secs(30)).unwrap());
        assert_eq!(quick.wait().unwrap().code(), Some(2));

        let mut slow = sh("exec sleep 30");
        assert!(!poll_until_exit(&mut slow, Instant::now() + Duration::from_millis(50)).unwrap());
        slow.kill().unwrap();
        slow.wait().unwrap();
    }
}
