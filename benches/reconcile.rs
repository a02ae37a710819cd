//! Reconcile cost (issue 5, item 12): from zero to N online runners, then a steady-state
//! round, for the bounded-parallel executor and a serial one in the same run. Prints, per
//! mode and phase: wall time, GitHub API calls per endpoint (the fake's request log), `lxc`
//! calls and `lxc exec` calls (a counting `lxc` wrapper the charm's `LxcCli` runs).
//!
//! Drives `manager::reconcile` with the charm's `CharmRunnerOps` at library level, against
//! the real LXD daemon (a project of its own, tests/support/lxd_fixture) and the fake GitHub.
//!
//! Run: `cargo bench --features testkit --bench reconcile` (N = 10 runners, 3 interleaved
//! runs per executor; `RECONCILE_BENCH_N` and `RECONCILE_BENCH_RUNS` override). Without
//! `--bench` (as under `cargo test --all-targets`) it is a one-run smoke pass with N = 1.
//! Targets: the steady state costs one listing and no exec beyond the health checks; from
//! zero, parallel is at least 3x faster than serial.

#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/fake_github/mod.rs"]
mod fake_github;
#[path = "../tests/support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use fake_github::{Endpoint, FakeGitHub};
use github_runner::charm::fleet::{host_binary_state, CharmRunnerOps};
use github_runner::charm::runtime::Runtime;
use github_runner::clock::{Clock, SystemClock};
use github_runner::config::{validate, CharmConfig, ConfigContext};
use github_runner::github::download::tarball_path;
use github_runner::github::proxy::ProxySettings;
use github_runner::github::{ClientSettings, GitHubClient};
use github_runner::identity::UnitIdentity;
use github_runner::lxd::LxcCli;
use github_runner::manager::executor::{no_progress, Concurrency};
use github_runner::manager::reconcile::{reconcile, ReconcileOutcome, ReconcileSettings};
use github_runner::paths::HostPaths;
use github_runner::runner::RunnerEnvironment;
use lxd_fixture::LxdFixture;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ONLINE_WITHIN: Duration = Duration::from_secs(300);

/// One phase's costs.
struct Costs {
    wall: Duration,
    /// Until the reconcile returned (creation started everywhere).
    reconcile: Duration,
    api: BTreeMap<Endpoint, usize>,
    lxc: usize,
    lxc_exec: usize,
    health_checks: usize,
}

impl Costs {
    fn api_total(&self) -> usize {
        self.api.values().sum()
    }

    fn api_text(&self) -> String {
        self.api
            .iter()
            .map(|(e, n)| format!("{e:?}={n}"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A unit of the charm over a fresh LXD project and fake GitHub, with a counting `lxc`.
struct Unit {
    fx: LxdFixture,
    gh: FakeGitHub,
    rt: Runtime,
    lxc_log: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Unit {
    fn new(concurrency: Concurrency) -> Unit {
        let fx = LxdFixture::new();
        let gh = FakeGitHub::start();
        fx.route_default_profile_to_host_port(gh.port());
        let tmp = tempfile::Builder::new()
            .prefix("reconcile-bench-")
            .tempdir()
            .expect("temp dir");
        let paths = HostPaths::new(tmp.path().join("host"));
        let tarball = tarball_path(&paths);
        std::fs::create_dir_all(tarball.parent().expect("tarball has a dir")).expect("binary dir");
        std::fs::copy(fx.fake_runner_tarball(), &tarball).expect("place the runner tarball");

        let (wrapper, lxc_log) = lxd_fixture::write_counting_lxc(tmp.path());
        let lxd = LxcCli::with_binary(wrapper, paths.lxd_conf_dir())
            .expect("lxc client")
            .in_project(fx.project.clone());

        let identity = UnitIdentity::parse("github-runner/0", "bench-model").expect("unit name");
        let config = config(&gh);
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let token = config.token().cloned().unwrap_or_default();
        let settings = ClientSettings::from_config(
            &config,
            identity.clone(),
            ProxySettings::default(),
            std::sync::Arc::new(
                github_runner::credential::provider::CredentialProvider::token(token),
            ),
        );
        let github = GitHubClient::new(settings)
            .expect("GitHub client for the fake")
            .with_clock(clock.clone());
        let mut rt = Runtime::from_parts(
            identity,
            config,
            paths,
            Arc::new(lxd),
            Arc::new(github),
            clock,
            RunnerEnvironment::default(),
            tmp.path().join("charm"),
        );
        rt.storage_pool = fx.pool.clone();
        rt.concurrency = concurrency;
        Unit {
            fx,
            gh,
            rt,
            lxc_log,
            _tmp: tmp,
        }
    }

    fn lxc_calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.lxc_log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn reset_counts(&self) {
        self.gh.clear_requests();
        let _ = std::fs::remove_file(&self.lxc_log);
    }

    /// One reconcile to `desired`; then, when `wait_online`, until that many are online.
    fn phase(&self, desired: u32, wait_online: bool) -> (Costs, ReconcileOutcome) {
        self.reset_counts();
        let ops = CharmRunnerOps::new(&self.rt);
        let settings = ReconcileSettings {
            desired,
            binary: host_binary_state(&self.rt),
            grace_secs: self.rt.grace().as_secs(),
            concurrency: self.rt.concurrency,
            // The bench measures spawning, not admission: no cap, no host facts.
            limits: github_runner::manager::admission::RoundLimits {
                max_creations: u32::MAX,
                ..Default::default()
            },
            runner_size: None,
            scope: github_runner::charm::fleet::scope_fingerprint(&self.rt.config),
        };
        let started = Instant::now();
        let outcome = reconcile(&ops, &*self.rt.clock, &settings, &no_progress)
            .unwrap_or_else(|e| panic!("reconcile failed: {e}"));
        let reconcile_time = started.elapsed();
        assert!(
            outcome.report.failed.is_empty(),
            "reconcile failures: {:?}",
            outcome.report.failed
        );
        if wait_online {
            let n = desired as usize;
            assert!(
                self.gh.wait_until(ONLINE_WITHIN, |s| s.runners.len() == n
                    && s.runners.iter().all(|r| r.online)),
                "{n} runners did not come online; instances: {:?}",
                self.fx.instance_names()
            );
        }
        let wall = started.elapsed();
        let calls = self.lxc_calls();
        let api = self
            .gh
            .counts()
            .into_iter()
            .filter(|(e, _)| e.is_api())
            .collect();
        let costs = Costs {
            wall,
            reconcile: reconcile_time,
            api,
            lxc: calls.len(),
            lxc_exec: calls
                .iter()
                .filter(|c| lxd_fixture::lxc_subcommand(c) == Some("exec"))
                .count(),
            health_checks: outcome.health_checks,
        };
        (costs, outcome)
    }
}

fn config(gh: &FakeGitHub) -> CharmConfig {
    let raw: serde_json::Map<String, serde_json::Value> = [
        ("path", serde_json::json!("octo/bench")),
        ("token", serde_json::json!(gh.token())),
        ("github-url", serde_json::json!(gh.url())),
        ("test-mode", serde_json::json!("insecure")),
        ("vm-cpu", serde_json::json!(1)),
        ("vm-memory", serde_json::json!("1GiB")),
        ("vm-disk", serde_json::json!("1GiB")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let ctx = ConfigContext {
        app_name: "github-runner",
        juju_proxy_configured: false,
    };
    validate(&raw, &ctx).unwrap_or_else(|e| panic!("bench config: {e}"))
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let knob = |name: &str, default: u32| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let (n, runs) = if full {
        (
            knob("RECONCILE_BENCH_N", 10),
            knob("RECONCILE_BENCH_RUNS", 3).max(1),
        )
    } else {
        (1, 1)
    };
    println!(
        "reconcile through CharmRunnerOps, real LXD + fake GitHub, N = {n}, {runs} interleaved run(s) ({})",
        if full { "full run" } else { "smoke pass" }
    );
    println!(
        "{:<4} {:<10} {:<10} {:>9} {:>10} {:>5} {:>5} {:>6} {:>7}  API calls per endpoint",
        "run", "executor", "phase", "wall", "reconcile", "API", "lxc", "exec", "probes"
    );
    let modes = [
        ("parallel", Concurrency::Default),
        ("serial", Concurrency::Serial),
    ];
    // From-zero wall times per mode, and whether every steady state met its target.
    let mut from_zero: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut steady_ok = true;
    for run in 1..=runs {
        for (m, (label, concurrency)) in modes.iter().enumerate() {
            let unit = Unit::new(*concurrency);
            let (zero, outcome) = unit.phase(n, true);
            assert_eq!(outcome.report.created.len(), n as usize);
            let (steady, outcome) = unit.phase(n, false);
            assert!(
                outcome.plan.is_noop(),
                "steady state planned work: {:?}",
                outcome.plan
            );
            for (phase, c) in [("from zero", &zero), ("steady", &steady)] {
                println!(
                    "{:<4} {:<10} {:<10} {:>9} {:>10} {:>5} {:>5} {:>6} {:>7}  {}",
                    run,
                    label,
                    phase,
                    secs(c.wall),
                    secs(c.reconcile),
                    c.api_total(),
                    c.lxc,
                    c.lxc_exec,
                    c.health_checks,
                    c.api_text()
                );
            }
            steady_ok &= steady.api.get(&Endpoint::ListRunners) == Some(&1)
                && steady.api_total() == 1
                && steady.lxc_exec == steady.health_checks;
            from_zero[m].push(zero.wall);
        }
    }
    println!(
        "steady-state target (one listing, lxc exec = health checks) in every run: {}",
        if steady_ok { "met" } else { "MISSED" }
    );
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (parallel, serial) = (median(&mut from_zero[0]), median(&mut from_zero[1]));
    let speedup = serial.as_secs_f64() / parallel.as_secs_f64().max(1e-9);
    println!(
        "from zero to {n} online (median): parallel {} vs serial {}: {speedup:.1}x (target >= 3x{})",
        secs(parallel),
        secs(serial),
        if full { "" } else { "; not meaningful at N = 1" }
    );
}
