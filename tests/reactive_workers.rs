//! The worker process manager (`reactive::workers`) with the real binary as workers: started
//! detached, counted by their slot locks, scaled down idle/newest first, a SIGKILLed one
//! replaced, all stopped; no secret in argv or environment; none of the starter's pipes kept;
//! a worker's own GitHub calls go through the model's proxy (real redis-server, real kombu).

#[path = "support/kombu/mod.rs"]
#[allow(dead_code)]
mod kombu;
#[path = "support/redis_server/mod.rs"]
mod redis_server;

use github_runner::reactive::run::WorkerSettings;
use github_runner::reactive::workers::{
    ensure_workers, settings_fingerprint, stop_all, survey, write_settings, DetachedWorkers,
    UnitDirs,
};
use redis_server::RedisServer;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

const PASSWORD: &str = "s3cr3t-broker-pw";
const TOKEN: &str = "ghp_workertesttoken0123456789";

fn settings() -> WorkerSettings {
    let config = serde_json::json!({
        "path": "octo/hello",
        "token": TOKEN,
        "test-mode": "insecure",
        "github-url": "http://127.0.0.1:9",
    });
    WorkerSettings {
        mq_uri: format!("redis://user:{PASSWORD}@127.0.0.1:9/0"),
        broker_host: "127.0.0.1:9".into(),
        queue_name: "app".into(),
        unit_name: "app/0".into(),
        model_uuid: "uuid-1".into(),
        config: config.as_object().unwrap().clone(),
        http_proxy: None,
        https_proxy: None,
        no_proxy: None,
        charm_dir: "/nonexistent".into(),
        lxd_project: None,
        binary: String::new(),
        debug_ssh: Vec::new(),
        from_relation: false,
    }
}

struct Unit {
    _tmp: tempfile::TempDir,
    dirs: UnitDirs,
    control: DetachedWorkers,
    fingerprint: String,
}

impl Unit {
    fn new() -> Unit {
        Unit::with(settings())
    }

    fn with(settings: WorkerSettings) -> Unit {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let dirs = UnitDirs::new(
            root.join("var/lib/github-runner-charm/reactive/app-0"),
            root.join("var/log/github-runner-reactive/app-0"),
        );
        let bytes = settings.to_bytes();
        write_settings(&dirs, &bytes).unwrap();
        let control = DetachedWorkers {
            binary: env!("CARGO_BIN_EXE_github-runner-worker").into(),
            env: vec![
                ("PATH".into(), std::env::var("PATH").unwrap_or_default()),
                (
                    "GITHUB_RUNNER_HOST_ROOT".into(),
                    root.to_string_lossy().into_owned(),
                ),
            ],
        };
        Unit {
            _tmp: tmp,
            dirs,
            control,
            fingerprint: settings_fingerprint(&bytes),
        }
    }

    fn ensure(&self, target: u32) {
        let out = ensure_workers(&self.dirs, &self.control, target, &self.fingerprint);
        assert!(out.problems.is_empty(), "{:?}", out.problems);
    }

    /// Waits until `n` workers live and each has published its status (pid and the broker
    /// error, since no broker answers).
    fn wait_live(&self, n: usize) -> Vec<github_runner::reactive::workers::LiveWorker> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let live = survey(&self.dirs);
            let ready = live.len() == n
                && live
                    .iter()
                    .all(|w| w.status.pid != 0 && w.status.broker_error.is_some());
            if ready {
                return live;
            }
            assert!(
                Instant::now() < deadline,
                "wanted {n} ready workers, have {live:?}; logs: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(&self.dirs.logs).unwrap().flatten() {
            all.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
        }
        all
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        stop_all(&self.dirs, &self.control, Duration::from_secs(10));
    }
}

fn proc_file(pid: u32, name: &str) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/{name}")).unwrap_or_default()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn workers_start_detached_count_by_lock_scale_down_and_are_replaced_after_a_crash() {
    let unit = Unit::new();
    unit.ensure(3);
    let live = unit.wait_live(3);
    assert_eq!(
        live.iter().map(|w| w.slot).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    for w in &live {
        let pid = w.status.pid;
        // A session of its own (outlives the hook), no secret in argv or environment.
        let stat = String::from_utf8(proc_file(pid, "stat")).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let session: u32 = after.split(' ').nth(3).unwrap().parse().unwrap();
        assert_eq!(session, pid, "worker {pid} leads its own session");
        for file in ["cmdline", "environ"] {
            let text = proc_file(pid, file);
            assert!(!text.is_empty());
            assert!(
                !contains(&text, PASSWORD) && !contains(&text, TOKEN),
                "{file}"
            );
        }
        // stdin is /dev/null; stdout and stderr its own log file.
        let link = |fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(link(0), Path::new("/dev/null"));
        assert_eq!(link(1), unit.dirs.log_file(w.slot));
        assert_eq!(link(2), unit.dirs.log_file(w.slot));
    }
    // A second reconcile at the same target changes nothing.
    unit.ensure(3);
    assert_eq!(unit.wait_live(3), live);

    // Scale down to 1: the oldest stays (all are idle).
    unit.ensure(1);
    let left = unit.wait_live(1);
    let oldest = live.iter().min_by_key(|w| w.status.started_ms).unwrap();
    assert_eq!(left[0].status.pid, oldest.status.pid);

    // A SIGKILLed worker frees its slot at once and the next reconcile replaces it.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(left[0].status.pid as i32).unwrap(),
        rustix::process::Signal::KILL,
    )
    .unwrap();
    unit.wait_live(0);
    unit.ensure(1);
    let replaced = unit.wait_live(1);
    assert_ne!(replaced[0].status.pid, left[0].status.pid);

    // The broker is named by host in the status, never with credentials; the logs neither.
    assert_eq!(
        replaced[0].status.broker_error.as_deref(),
        Some("127.0.0.1:9")
    );
    let logs = unit.logs();
    assert!(logs.contains("127.0.0.1:9"), "{logs}");
    assert!(!logs.contains(PASSWORD) && !logs.contains(TOKEN));

    // Stop: every worker exits on SIGTERM.
    assert_eq!(
        stop_all(&unit.dirs, &unit.control, Duration::from_secs(10)),
        0
    );
}

/// Juju waits until every holder of a hook's output pipe closes it: a worker must keep
/// none, even one the starter leaked without close-on-exec.
#[test]
fn a_worker_keeps_none_of_the_starters_pipes() {
    let unit = Unit::new();
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two new descriptors; no O_CLOEXEC on purpose (a leaked one).
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both are fresh and owned here.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    unit.ensure(1);
    let live = unit.wait_live(1);
    drop(write);
    // EOF at once: no worker holds the write end.
    let mut buf = [0u8; 1];
    // SAFETY: reading into a valid buffer from an owned descriptor.
    let n = unsafe { libc::read(read.as_raw_fd(), buf.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 0, "read returned {n}: the worker holds the pipe");
    let pid = live[0].status.pid;
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    assert!(fds.iter().all(|f| !f.starts_with("pipe:")), "{fds:?}");
}

/// A forward proxy on loopback that records each request line and answers 502: enough to
/// see whether a client goes through it.
struct RecordingProxy {
    port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl RecordingProxy {
    fn start() -> RecordingProxy {
        use std::io::{BufRead, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = lines.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() {
                    seen.lock().unwrap().push(line.trim_end().to_string());
                }
                let _ =
                    (&stream).write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
            }
        });
        RecordingProxy { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// Issue 20 item 1: behind a mandatory proxy the model's proxies reach the worker's own
/// calls, not only its runners. The GitHub host (`github.invalid`) resolves nowhere: the
/// only way to it is the proxy, so a job lookup shows up there as a CONNECT.
#[test]
fn a_workers_github_calls_go_through_the_models_proxy() {
    let redis = RedisServer::start();
    let proxy = RecordingProxy::start();
    let mut s = settings();
    s.mq_uri = redis.uri();
    s.broker_host = format!("127.0.0.1:{}", redis.port);
    s.config
        .insert("github-url".into(), "https://github.invalid".into());
    s.https_proxy = Some(format!("http://127.0.0.1:{}", proxy.port));
    s.http_proxy = s.https_proxy.clone();
    s.no_proxy = Some("127.0.0.1,localhost".into());
    let unit = Unit::with(s);
    let body = serde_json::json!({
        "labels": [],
        "status": "queued",
        "url": "https://github.invalid/api/v3/repos/octo/hello/actions/jobs/4242",
    })
    .to_string();
    kombu::put(&redis.uri(), "app", &[&body]);
    unit.ensure(1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy
        .lines()
        .iter()
        .any(|l| l.starts_with("CONNECT github.invalid:443 "))
    {
        assert!(
            Instant::now() < deadline,
            "the worker's job lookup never reached the proxy: {:?}; logs: {}",
            proxy.lines(),
            unit.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logs = unit.logs();
    assert!(!logs.contains(TOKEN), "{logs}");
}
