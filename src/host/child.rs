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

/// Longest pause between two looks at the child: how late a finished child may be noticed.
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// Waits for `child` until `timeout`; kills and reaps it and answers None when the deadline
/// passes. Polls with a short, growing interval that never sleeps past the deadline.
pub fn wait_with_deadline(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut interval = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
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
}
