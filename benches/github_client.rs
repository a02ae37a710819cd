//! GitHub client costs against the fake GitHub on loopback: requests and wall time to list a
//! fleet, and registration throughput with parallel workers. Prints a table.
//!
//! `cargo bench --bench github_client`

#[path = "../tests/support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{Endpoint, FakeGitHub};
use github_runner::github::{GitHub, GitHubClient, GitHubPath};
use github_runner::identity::UnitIdentity;
use std::time::{Duration, Instant};

fn identity() -> UnitIdentity {
    UnitIdentity::parse("github-runner/0", "bench").expect("valid unit name")
}

fn client(gh: &FakeGitHub) -> GitHubClient {
    GitHubClient::new(gh.client_settings(GitHubPath::Org("bench-org".into()), identity()))
        .expect("client for the fake")
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    println!("{:<42} {:>10} {:>12}", "case", "requests", "median ms");
    for fleet in [50usize, 250, 1000, 5000] {
        let gh = FakeGitHub::start();
        for _ in 0..fleet {
            let name = identity().new_runner_name().expect("random name");
            gh.add_runner("bench-org", name.as_str(), &["x"]);
        }
        // Runners of other units on the same org are fetched but filtered out.
        for i in 0..fleet / 5 {
            gh.add_runner("bench-org", &format!("other-app-0-{i:012x}"), &["x"]);
        }
        let c = client(&gh);
        let mut times = Vec::new();
        for _ in 0..5 {
            gh.clear_requests();
            let start = Instant::now();
            let listed = c.list_runners().expect("listing");
            times.push(start.elapsed());
            assert_eq!(listed.len(), fleet);
        }
        let case = format!("list_runners, {fleet} ours + {} others", fleet / 5);
        println!(
            "{case:<42} {:>10} {:>12.2}",
            gh.count(Endpoint::ListRunners),
            median(times).as_secs_f64() * 1000.0
        );
    }
    for workers in [1usize, 4, 8] {
        let gh = FakeGitHub::start();
        let c = client(&gh);
        let per_worker = 64 / workers;
        let labels = vec!["github-runner".to_string(), "jammy".to_string()];
        let start = Instant::now();
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    for _ in 0..per_worker {
                        let name = identity().new_runner_name().expect("random name");
                        c.generate_jit_config(name.as_str(), &labels)
                            .expect("jit config");
                    }
                });
            }
        });
        let took = start.elapsed();
        println!(
            "{:<42} {:>10} {:>12.2}",
            format!("64 JIT registrations, {workers} workers (total)"),
            gh.api_request_count(),
            took.as_secs_f64() * 1000.0
        );
    }
}
