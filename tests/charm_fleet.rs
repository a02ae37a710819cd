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
use github_runner::charm::fleet::CharmRunnerOps;
use github_runner::identity::RunnerName;
use github_runner::manager::ops::{RemoveOutcome, RunnerOps};
use github_runner::manager::planner::{Health, RemovalTarget, RUNNER_ID_CONFIG_KEY};
use lxd_fixture::wait_for;
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
