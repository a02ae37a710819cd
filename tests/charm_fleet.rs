//! `charm::fleet::CharmRunnerOps` against the real LXD daemon and the fake GitHub: what the
//! manager relies on and unit tests cannot show (the runner id on a real instance, the
//! one-exec job-start probe under the image's busybox, owner-checked removal).
//!
//! Each test has its own LXD project (tests/support/lxd_fixture); the project's `default`
//! profile carries the root disk and a loopback proxy device to the fake GitHub.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/fixture_runtime.rs"]
mod fixture_runtime;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use fixture_runtime::FixtureUnit;
use github_runner::charm::fleet::{fetch_pre_job, CharmRunnerOps};
use github_runner::identity::RunnerName;
use github_runner::manager::ops::{RemoveOutcome, RunnerOps};
use github_runner::manager::planner::{Health, RemovalTarget, RUNNER_ID_CONFIG_KEY};
use lxd_fixture::{wait_for, LxdFixture};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REPO: &str = "octo/hello";
const ONLINE_WITHIN: Duration = Duration::from_secs(60);

type Unit = FixtureUnit;

fn unit() -> Unit {
    FixtureUnit::new(REPO, serde_json::json!({"labels": "e2e"}))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn a_created_runner_carries_its_id_comes_online_and_reports_its_job_start() {
    let u = unit();
    let ops = CharmRunnerOps::new(&u.rt);
    let name = ops.create().expect("create a runner");

    let fake = u.gh.runner(name.as_str()).expect("registered on GitHub");
    let observation = ops.observe().unwrap();
    let instance = observation
        .instances
        .iter()
        .find(|i| i.name == name.as_str())
        .expect("the instance is ours");
    assert_eq!(
        instance.config.get(RUNNER_ID_CONFIG_KEY),
        Some(&fake.id.to_string())
    );
    assert_eq!(instance.profiles[0], "default");
    assert!(
        wait_for(ONLINE_WITHIN, || u
            .gh
            .runner(name.as_str())
            .is_some_and(|r| r.online)),
        "the runner never came online"
    );
    assert_eq!(ops.health(name.as_str()), Health::Running);

    // No job yet: no work directory.
    assert_eq!(ops.job_started_at(&name), Ok(None));
    u.fx.lxc_ok(&[
        "exec",
        name.as_str(),
        "--",
        "mkdir",
        "-p",
        "/home/ubuntu/github-runner/_work",
    ]);
    let started = ops
        .job_started_at(&name)
        .expect("probe answers")
        .expect("a job started");
    let t = now();
    assert!(
        started <= t + 1 && t - started < 120,
        "job start {started} vs now {t}"
    );
    // A runner whose instance is gone has no job running.
    assert_eq!(
        ops.job_started_at(&RunnerName(format!(
            "{}ffffffffffff",
            u.rt.identity.name_prefix()
        ))),
        Ok(None)
    );

    let target = RemovalTarget {
        name: name.clone(),
        has_instance: true,
        github_id: Some(fake.id),
    };
    assert_eq!(ops.remove(&target, false), Ok(RemoveOutcome::Removed));
    assert!(u.gh.runner(name.as_str()).is_none());
    assert!(u.fx.lxd().list_all_instances().unwrap().is_empty());
}

#[test]
fn a_busy_runner_is_kept_unless_forced() {
    let u = unit();
    let ops = CharmRunnerOps::new(&u.rt);
    let name = ops.create().expect("create a runner");
    let id = u.gh.runner(name.as_str()).unwrap().id;
    assert!(u.gh.set_runner_busy(name.as_str(), true));
    ops.observe().unwrap();
    let target = RemovalTarget {
        name: name.clone(),
        has_instance: true,
        github_id: Some(id),
    };
    assert_eq!(ops.remove(&target, false), Ok(RemoveOutcome::KeptBusy));
    assert_eq!(u.fx.instance_names(), vec![name.to_string()]);
    let forced = ops.remove(&target, true).unwrap();
    assert!(
        matches!(
            forced,
            RemoveOutcome::Removed | RemoveOutcome::RegistrationLeft { .. }
        ),
        "{forced:?}"
    );
    assert!(u.fx.instance_names().is_empty());
}

/// A job has root in its runner and can serve anything as pre-job.json. Each case answers
/// with an error naming what was served (the log line), at once and with bounded memory;
/// only a small regular JSON file gives a runner_start.
#[test]
fn a_hostile_pre_job_file_gives_no_metric_and_costs_bounded_memory() {
    let fx = LxdFixture::new();
    let name = "harden-0-0123456789ab";
    fx.lxc_ok(&["launch", lxd_fixture::IMAGE_ALIAS, name, "--quiet"]);
    let dir = "/home/ubuntu/github-runner-metrics";
    let valid = r#"{"workflow": "w", "repository": "octo/hello", "event": "push", "run_id": "7", "timestamp": 1700000000}"#;
    let serve = |script: &str| {
        let full = format!(
            "rm -rf {dir} /tmp/served; mkdir -p {dir} && {script} && chown -R 1000:1000 {dir}"
        );
        fx.lxc_ok(&["exec", name, "--", "/bin/sh", "-c", &full]);
    };
    let lxd = fx.lxd();

    serve(&format!("printf '%s' '{valid}' > {dir}/pre-job.json"));
    let pre = fetch_pre_job(lxd, name).expect("a valid pre-job.json is read");
    assert_eq!(pre.repository, "octo/hello");

    let cases = [
        ("/dev/zero", format!("ln -s /dev/zero {dir}/pre-job.json")),
        (
            "a symlink to valid JSON",
            format!("printf '%s' '{valid}' > /tmp/served && ln -s /tmp/served {dir}/pre-job.json"),
        ),
        (
            "a symlinked folder",
            format!(
                "rmdir {dir} && mkdir -p /tmp/d && printf '%s' '{valid}' > /tmp/d/pre-job.json \
                 && ln -s /tmp/d {dir}"
            ),
        ),
        (
            "a 64 MiB file",
            format!("head -c 67108864 /dev/zero > {dir}/pre-job.json"),
        ),
        ("a FIFO", format!("mkfifo {dir}/pre-job.json")),
        ("non-JSON", format!("echo 'rm -rf /' > {dir}/pre-job.json")),
    ];
    for (what, script) in cases {
        serve(&script);
        let err = fetch_pre_job(lxd, name).expect_err(what);
        let expected = match what {
            "a 64 MiB file" => "over 1024",
            "non-JSON" => "not valid",
            _ => "not a regular file",
        };
        assert!(err.contains(expected), "{what}: {err}");
    }
    // Nothing else changed: the instance runs on.
    assert_eq!(fx.instance_names(), vec![name.to_string()]);
}
