//! The worker process manager (`reactive::workers`) with the real binary as workers: started
//! detached, counted by their slot locks, scaled down idle/newest first, a SIGKILLed one
//! replaced, all stopped; no secret in argv or environment; none of the starter's pipes kept;
//! each in a systemd scope of its own when there is systemd (a recording `systemd-run`);
//! failures and crash loops in their slot files, shown by the unit's status.
//! a worker's own GitHub calls go through the model's proxy (real redis-server, real kombu).

#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/kombu/mod.rs"]
#[allow(dead_code)] // put only
mod kombu;
#[path = "support/redis_server/mod.rs"]
mod redis_server;

use github_runner::juju::Status;
use github_runner::reactive::mode::{check_results, reactive_status, ReactiveView};
use github_runner::reactive::run::WorkerSettings;
use github_runner::reactive::workers::{
    ensure_workers, settings_fingerprint, stop_all, survey, write_settings, DetachedWorkers,
    UnitDirs, WorkerScope,
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
        Unit::with_settings(settings())
    }

    fn with_settings(settings: WorkerSettings) -> Unit {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let dirs = UnitDirs::new(
            root.join("var/lib/github-runner-charm/reactive/app-0"),
            root.join("var/log/github-runner-reactive/app-0"),
        );
        let bytes = settings.to_bytes();
        write_settings(&dirs, &bytes).unwrap();
        // The unit's credential file, as the hook that starts workers writes it: a worker
        // takes its credential from there, never from its settings.
        if let Some(token) = settings.config.get("token").and_then(|t| t.as_str()) {
            let paths = github_runner::paths::HostPaths::for_unit(&root, &settings.unit_name);
            github_runner::credential::store::CredentialStore::for_unit(&paths)
                .put(
                    &github_runner::credential::Credential::Token(
                        github_runner::secret::Secret::new(token),
                    ),
                    &github_runner::clock::SystemClock,
                )
                .unwrap();
        }
        let control = DetachedWorkers {
            scope: None,
            role: github_runner::reactive::workers::WorkerRole::Reactive,
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

fn cgroup_of(pid: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.contains(":name=systemd:") || l.starts_with("0::"))
        .unwrap_or_default()
        .to_string()
}

/// Issue 20 item 11: with systemd on the machine, each worker is the process of a transient
/// scope of its own (`systemd-run --scope --unit=<prefix>-<slot>-<ms>`), outside the cgroup
/// of whoever started it (the unit agent's), so an agent restart does not kill it. The
/// recording systemd-run moves itself into the scope's cgroup where this machine lets it,
/// as systemd would, and execs the worker: the worker stays there.
#[test]
fn with_systemd_each_worker_runs_in_a_scope_of_its_own() {
    let mut unit = Unit::new();
    let bin = unit._tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let systemd_run = bin.join("systemd-run");
    executable::copy_executable(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/fake_systemd_run.sh"),
        &systemd_run,
    );
    let prefix = format!("github-runner-worker-test{}", std::process::id());
    unit.control.scope = Some(WorkerScope {
        systemd_run: systemd_run.clone(),
        unit_prefix: prefix.clone(),
    });
    unit.ensure(2);
    let live = unit.wait_live(2);
    let calls = std::fs::read_to_string(bin.join("calls")).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "{calls:?}");
    for w in &live {
        let pid = w.status.pid.to_string();
        let call = calls
            .iter()
            .find(|c| c.split(' ').next() == Some(pid.as_str()))
            .unwrap_or_else(|| panic!("worker {pid} is not the scope's process: {calls:?}"));
        let unit_arg = format!("--unit={prefix}-{}-", w.slot);
        let expected_tail = format!(
            " -- {} --dir {} --logs {} --slot {}",
            env!("CARGO_BIN_EXE_github-runner-worker"),
            unit.dirs.state.display(),
            unit.dirs.logs.display(),
            w.slot
        );
        assert!(
            call.contains(" --scope --quiet --collect ")
                && call.contains(&unit_arg)
                && call.ends_with(&expected_tail),
            "{call}"
        );
        let scope_cgroup = format!(
            "/sys/fs/cgroup/systemd/{}.scope",
            call.split(' ')
                .find_map(|a| a.strip_prefix("--unit="))
                .unwrap()
        );
        if std::path::Path::new(&scope_cgroup).is_dir() {
            assert_ne!(cgroup_of(&pid), cgroup_of("self"), "worker {pid}");
            assert!(cgroup_of(&pid).ends_with(".scope"), "{}", cgroup_of(&pid));
        }
    }
    assert_eq!(
        stop_all(&unit.dirs, &unit.control, Duration::from_secs(10)),
        0
    );
    // The scope cgroups the recording systemd-run made (systemd collects its own).
    for call in calls {
        if let Some(name) = call.split(' ').find_map(|a| a.strip_prefix("--unit=")) {
            let _ = std::fs::remove_dir(format!("/sys/fs/cgroup/systemd/{name}.scope"));
        }
    }
}

/// The unit's status and check-runners' keys as a hook reads them from the slot files.
fn unit_view(unit: &Unit, target: u32) -> (Status, std::collections::BTreeMap<String, String>) {
    let view = ReactiveView::read(&unit.dirs, target);
    (reactive_status(&view), check_results(&view))
}

fn failure_kind(unit: &Unit) -> Option<&'static str> {
    survey(&unit.dirs)
        .into_iter()
        .find_map(|w| w.status.failure)
        .map(|f| f.kind.name())
}

/// Issue 20 item 15: a worker whose runner cannot be created (LXD fails: the unit's LXD
/// project does not exist) and then whose token GitHub rejects (401) says so in its slot
/// file; the unit's status turns Maintenance, then Blocked, and check-runners lists it.
#[test]
fn lxd_failures_and_a_revoked_token_show_in_the_status_and_check_runners() {
    let redis = redis_server::RedisServer::start();
    let gh = fake_github::FakeGitHub::start();
    let mut config = settings().config;
    config.insert("token".into(), gh.token().into());
    config.insert("github-url".into(), gh.url().into());
    let unit = Unit::with_settings(WorkerSettings {
        mq_uri: redis.uri(),
        broker_host: "127.0.0.1".into(),
        config,
        lxd_project: Some(format!("no-such-project-{}", std::process::id())),
        ..settings()
    });
    unit.ensure(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while survey(&unit.dirs)
        .iter()
        .all(|w| w.status.queue_waiting.is_none())
    {
        assert!(
            Instant::now() < deadline,
            "no worker reached the broker: {}",
            unit.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(matches!(unit_view(&unit, 1).0, Status::Active(_)));

    let job = gh.add_job("octo/hello", &[]);
    let body = serde_json::json!({
        "labels": [],
        "status": "queued",
        "url": format!("{}/repos/octo/hello/actions/jobs/{job}", gh.api_base()),
    })
    .to_string();
    kombu::put(&redis.uri(), "app", &[&body]);
    let wait_kind = |kind: &str| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while failure_kind(&unit) != Some(kind) {
            assert!(
                Instant::now() < deadline,
                "no {kind} failure: {:?}; logs: {}",
                survey(&unit.dirs),
                unit.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_kind("runner-creation");
    let (status, results) = unit_view(&unit, 1);
    let Status::Maintenance(text) = status else {
        panic!("{status:?}")
    };
    assert!(
        text.starts_with("reactive: runner-creation on 1 worker since "),
        "{text}"
    );
    assert!(
        results["worker-failures"].starts_with("worker 0 (running): runner-creation at "),
        "{results:?}"
    );

    // The token is revoked: the next look at the job meets 401.
    gh.revoke_token(&gh.token());
    wait_kind("token-rejected");
    let (status, results) = unit_view(&unit, 1);
    let Status::Blocked(text) = status else {
        panic!("{status:?}")
    };
    assert!(text.contains("GitHub rejected the token (401"), "{text}");
    assert!(
        results["worker-failures"].contains("token-rejected"),
        "{results:?}"
    );
    assert!(!text.contains(&gh.token()) && !results["worker-failures"].contains(&gh.token()));
}

/// Issue 20 item 15: a worker that cannot start (here: no token in its settings) dies at
/// once, every time a reconcile restarts it; the third death in a row makes the slot
/// crash-looping, and the status says so with the reason.
#[test]
fn a_crash_looping_worker_shows_in_the_status() {
    let mut broken = settings();
    broken.config.remove("token");
    let unit = Unit::with_settings(broken);
    for round in 1..=3u32 {
        unit.ensure(1);
        // Started, then dead: its slot file says it started and is no longer held.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let slots = github_runner::reactive::workers::survey_slots(&unit.dirs);
            if slots.len() == 1 && !slots[0].live && slots[0].status.crashes == round - 1 {
                break;
            }
            assert!(Instant::now() < deadline, "round {round}: {slots:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let (status, results) = unit_view(&unit, 1);
    let Status::Maintenance(text) = status else {
        panic!("{status:?}")
    };
    assert!(
        text.starts_with("reactive: worker 0 crashed 3 times in a row (worker stopped: "),
        "{text}"
    );
    assert!(text.contains("token"), "{text}");
    assert!(
        results["worker-failures"]
            .starts_with("worker 0 (not running, 3 crashes in a row): start-failed"),
        "{results:?}"
    );
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
    let unit = Unit::with_settings(s);
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
