//! Time to get N runners online (created, started, registered and online in the fake
//! GitHub), serially and with bounded parallelism, against the floor: a raw `lxc launch` of
//! N containers of the same image on the same daemon. Prints a table.
//!
//! Run: `cargo bench --bench lxd_spawn` (needs the LXD of tests/support/lxd_fixture).
//! Under `cargo test` (no `--bench` argument) it makes a one-run smoke pass with N = 1.
//! `LXD_BENCH_SIZES=1,5,10`, `LXD_BENCH_PARALLELISM=4` and `LXD_BENCH_REPEAT=3` (best of)
//! override the defaults.

#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/fake_github/mod.rs"]
mod fake_github;
#[path = "../tests/support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use github_runner::github::{GitHubClient, GitHubPath};
use github_runner::identity::UnitIdentity;
use github_runner::lxd::{InstanceType, Lxd};
use github_runner::runner::resources::{self, Resources};
use github_runner::runner::{create_runner, CreateRequest, CreateTimeouts, RunnerEnvironment};
use lxd_fixture::{LxdFixture, IMAGE_ALIAS};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const OWNER: &str = "bench-model/app/0";

struct Bench {
    fx: LxdFixture,
    gh: fake_github::FakeGitHub,
    client: GitHubClient,
    unit: UnitIdentity,
    profiles: Vec<String>,
    labels: Vec<String>,
    env: RunnerEnvironment,
}

impl Bench {
    fn new() -> Bench {
        let fx = LxdFixture::new();
        let gh = fake_github::FakeGitHub::start();
        let unit = UnitIdentity::parse("app/0", "bench-model").expect("unit name");
        let path = GitHubPath::Repo {
            owner: "octo".into(),
            repo: "bench".into(),
        };
        let client = GitHubClient::new(gh.client_settings(path, unit.clone()))
            .expect("GitHub client for the fake");
        let lxd = fx.lxd();
        let r = Resources {
            cpu: 1,
            memory_bytes: 1 << 30,
            disk_bytes: 1 << 30,
        };
        let proxy = fx.loopback_proxy_profile(gh.port());
        let profiles =
            resources::ensure_profiles(lxd, &r, InstanceType::Container, &fx.pool, &[proxy])
                .expect("profiles");
        Bench {
            profiles,
            labels: resources::runner_labels("app", IMAGE_ALIAS, &[]),
            unit,
            env: RunnerEnvironment::default(),
            fx,
            gh,
            client,
        }
    }

    fn create_one(&self) -> String {
        let name = self.unit.new_runner_name().expect("random name");
        let req = CreateRequest {
            name: &name,
            owner_value: OWNER,
            image_alias: IMAGE_ALIAS,
            instance_type: InstanceType::Container,
            profiles: &self.profiles,
            labels: &self.labels,
            runner_tarball: self.fx.fake_runner_tarball(),
            environment: &self.env,
            timeouts: CreateTimeouts::default(),
            launch_gate: &github_runner::runner::create::Ungated,
            registration: github_runner::runner::create::JitSource::Generate,
        };
        create_runner(self.fx.lxd(), &self.client, &req).expect("create runner");
        name.to_string()
    }

    /// Runs `job` for 0..n on at most `workers` threads.
    fn run_bounded(n: usize, workers: usize, job: &(dyn Fn(usize) + Sync)) {
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..workers.min(n) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= n {
                        break;
                    }
                    job(i);
                });
            }
        });
    }

    /// Seconds until `n` runners are online, creating them on `workers` threads.
    fn runners_online(&self, n: usize, workers: usize) -> f64 {
        let started = Instant::now();
        Self::run_bounded(n, workers, &|_| {
            self.create_one();
        });
        let online = self.gh.wait_until(Duration::from_secs(300), |s| {
            s.runners.iter().filter(|r| r.online).count() >= n
        });
        assert!(online, "runners did not come online");
        started.elapsed().as_secs_f64()
    }

    /// Seconds for a raw `lxc launch` of `n` containers on `workers` threads, with the
    /// runners' profiles (`same_profiles`) or the default profile only.
    fn raw_launch(&self, n: usize, workers: usize, same_profiles: bool) -> f64 {
        let started = Instant::now();
        Self::run_bounded(n, workers, &|i| {
            let name = format!("raw-{i}");
            let mut args = vec!["launch", IMAGE_ALIAS, &name, "--ephemeral", "--quiet"];
            if same_profiles {
                for p in &self.profiles {
                    args.push("--profile");
                    args.push(p);
                }
            }
            self.fx.lxc_ok(&args);
        });
        started.elapsed().as_secs_f64()
    }

    /// Removes every instance and registration (not timed).
    fn reset(&self) {
        let names: Vec<String> = self.fx.instance_names();
        Self::run_bounded(names.len(), 4, &|i| {
            let _ = self.fx.lxd().delete(&names[i], true);
        });
        for r in self.gh.runners() {
            self.gh.remove_runner(&r.name);
        }
    }
}

fn env_list(key: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(key)
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| default.to_vec())
}

fn main() {
    // `cargo bench` passes `--bench`; under `cargo test --all-targets` (no `--bench`) this is
    // a smoke pass: N = 1, one run.
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        env_list("LXD_BENCH_SIZES", &[1, 5, 10])
    } else {
        vec![1]
    };
    let parallelism = env_list("LXD_BENCH_PARALLELISM", &[4])[0].max(1);
    let repeat = if full {
        env_list("LXD_BENCH_REPEAT", &[3])[0].max(1)
    } else {
        1
    };
    let bench = Bench::new();
    // Warm-up: the first launch in a project unpacks the image.
    bench.raw_launch(1, 1, true);
    bench.reset();

    println!();
    println!("LXD runner spawn benchmark (containers, busybox image, fake GitHub on loopback)");
    println!("floor = raw `lxc launch` of N containers with the runners' profiles (incl. the test");
    println!("proxy device, which alone adds ~1 s per launch); plain = default profile only;");
    println!("each cell is the best of {repeat} interleaved runs");
    println!(
        "{:>3} | {:<12} | {:>15} | {:>9} | {:>9} | {:>15}",
        "N", "mode", "runners online", "floor", "plain", "ratio to floor"
    );
    println!(
        "{:-<3}-+-{:-<12}-+-{:-<15}-+-{:-<9}-+-{:-<9}-+-{:-<15}",
        "", "", "", "", "", ""
    );
    for &n in &sizes {
        for (mode, workers) in [("serial", 1), ("parallel", parallelism)] {
            // Best of `repeat`, interleaved: the machine is shared, so the fastest run is the
            // one least disturbed by others.
            let (mut plain, mut floor, mut online) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..repeat {
                plain = plain.min(bench.raw_launch(n, workers, false));
                bench.reset();
                floor = floor.min(bench.raw_launch(n, workers, true));
                bench.reset();
                online = online.min(bench.runners_online(n, workers));
                bench.reset();
            }
            let label = if workers == 1 {
                mode.to_string()
            } else {
                format!("{mode} x{workers}")
            };
            println!(
                "{n:>3} | {label:<12} | {:>13.2} s | {floor:>7.2} s | {plain:>7.2} s | {:>15.2}",
                online,
                online / floor
            );
        }
    }
    println!();
}
