//! Child processes run with a deadline: std has no wait-with-timeout, and a child whose pipes
//! nobody drains blocks once a pipe buffer fills, so its output is read on threads.

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
        Some(pidfd) => sleep_until_exit(&pidfd, deadline)?,
        None => poll_until_exit(child, deadline)?,
    };
    if exited_in_time {
        return child.wait().map(Some);
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok(None)
}

/// A pidfd for the child. It names that very process: the child is ours and not yet reaped,
/// so its pid cannot have been reused.
fn pidfd_of(child: &Child) -> Option<rustix::fd::OwnedFd> {
    let pid = rustix::process::Pid::from_child(child);
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// True once the process behind `pidfd` has exited, false at the deadline.
fn sleep_until_exit(pidfd: &rustix::fd::OwnedFd, deadline: Instant) -> std::io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(false);
        }
        let timeout = Timespec {
            tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        match poll(&mut fds, Some(&timeout)) {
            Ok(0) => continue, // timed out: the loop head sees the deadline
            Ok(_) => return Ok(true),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
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
        Command::new("/bin/sh")
            .args(["-c", script])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
