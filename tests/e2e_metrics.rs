//! The metrics exporter scraped while a real fleet runs: the charm binary through `dispatch`
//! (fake hook tools), the real LXD daemon and the fake GitHub (tests/support/charm_env); the
//! exporter is the same binary in `metrics-exporter` mode, run as a plain process over the
//! unit's host root. Every value is checked against the fleet (LXD, the fake GitHub) and the
//! metrics log, and the exposition is parsed by the Prometheus Python parser.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use charm_env::CharmEnv;
use fake_github::Endpoint;
use github_runner::observability::testing::{parse_openmetrics, value, Sample};
use serde_json::Value;

/// The exporter process; killed on drop.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_loopback_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("its address")
}

impl Exporter {
    fn start(env: &CharmEnv) -> Exporter {
        let addr = free_loopback_port();
        let child = Command::new(env!("CARGO_BIN_EXE_github-runner-charm"))
            .args(["metrics-exporter", "--listen", &addr.to_string()])
            .args(["--unit", &env.h.unit_name])
            .env_clear()
            .env("GITHUB_RUNNER_HOST_ROOT", &env.h.host_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the exporter");
        let exporter = Exporter { child, addr };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the exporter never listened on {addr}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        exporter
    }

    fn scrape(&self) -> (String, Vec<Sample>) {
        let response = ureq::get(&format!("http://{}/metrics", self.addr))
            .call()
            .expect("scrape");
        assert!(
            response
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "{:?}",
            response.header("content-type")
        );
        let text = response.into_string().expect("body");
        let samples = parse_openmetrics(&text);
        (text, samples)
    }
}

fn events(env: &CharmEnv, name: &str) -> usize {
    let text = std::fs::read_to_string(
        github_runner::paths::HostPaths::for_unit(&env.h.host_root, &env.h.unit_name).metrics_log(),
    )
    .unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["event"] == name)
        .count()
}

/// The fleet's numbers in the scrape equal what LXD, GitHub and the log say.
fn assert_matches_fleet(env: &CharmEnv, exporter: &Exporter, n: usize) {
    let (text, s) = exporter.scrape();
    let get = |name: &str, labels: &[(&str, &str)]| {
        value(&s, name, labels).unwrap_or_else(|| panic!("{name} {labels:?} missing:\n{text}"))
    };
    assert_eq!(get("github_runner_exporter_state_present", &[]), 1.0);
    assert_eq!(env.assert_runners(n).len(), n);
    assert_eq!(env.online().len(), n);
    assert_eq!(
        get("github_runner_runners", &[("state", "idle")]),
        n as f64,
        "{text}"
    );
    for state in ["busy", "creating", "offline", "unhealthy"] {
        assert_eq!(
            get("github_runner_runners", &[("state", state)]),
            0.0,
            "{state}"
        );
    }
    assert_eq!(get("github_runner_runners_desired", &[]), n as f64);
    assert_eq!(get("github_runner_last_reconcile_success", &[]), 1.0);
    let jit = env.gh.count(Endpoint::GenerateJitConfig);
    assert_eq!(
        get(
            "github_runner_runner_creations_total",
            &[("result", "success")]
        ),
        jit as f64
    );
    assert_eq!(
        get(
            "github_runner_github_api_calls_total",
            &[("endpoint", "generate-jitconfig"), ("status", "201")]
        ),
        jit as f64
    );
    assert_eq!(
        get(
            "github_runner_github_api_calls_total",
            &[("endpoint", "list-runners"), ("status", "200")]
        ),
        env.gh.count(Endpoint::ListRunners) as f64,
        "every listing happens in a reconciling hook"
    );
    assert_eq!(get("github_runner_github_rate_limit_limit", &[]), 5000.0);
    let remaining = get("github_runner_github_rate_limit_remaining", &[]);
    let calls: usize = env.gh.counts().values().sum();
    assert!(
        remaining < 5000.0 && remaining >= 5000.0 - calls as f64,
        "{remaining}"
    );
    assert_eq!(
        get(
            "github_runner_runner_binary_info",
            &[("version", &env.gh.runner_version())]
        ),
        1.0
    );
    assert_eq!(
        get("github_runner_reconcile_duration_seconds_count", &[]),
        events(env, "reconciliation") as f64
    );
    assert_eq!(
        get("github_runner_runner_install_duration_seconds_count", &[]),
        events(env, "runner_installed") as f64
    );
    for phase in ["launch", "first_exec", "files_pushed", "listener_started"] {
        assert_eq!(
            get(
                "github_runner_creation_phase_duration_seconds_count",
                &[("phase", phase)]
            ),
            jit as f64,
            "{phase}"
        );
    }
    assert_eq!(
        get("github_runner_metrics_log_skipped_lines_total", &[]),
        0.0
    );
}

#[test]
fn the_exporter_serves_the_fleet_as_it_scales() {
    let mut env = CharmEnv::new(2);
    env.deploy();
    env.wait_online(2);
    // A round that sees them online (deploy's rounds saw them creating).
    env.reconcile().assert_ok();
    let exporter = Exporter::start(&env);
    assert_matches_fleet(&env, &exporter, 2);

    env.set_config("virtual-machines", 3);
    env.config_changed().assert_ok();
    env.wait_online(3);
    env.reconcile().assert_ok();
    // The same exporter process: it read only the log's new lines.
    assert_matches_fleet(&env, &exporter, 3);

    // Anything but GET /metrics is refused; the exporter carries on.
    let other = ureq::get(&format!("http://{}/", exporter.addr)).call();
    assert!(
        matches!(other, Err(ureq::Error::Status(404, _))),
        "{other:?}"
    );
    exporter.scrape();
}
