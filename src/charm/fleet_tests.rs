use super::*;
use crate::charm::fake_world::{config, FakeWorld};
use crate::lxd::InstanceState;
use crate::manager::planner::RUNNER_ID_CONFIG_KEY;
use crate::manager::replacement::SCOPE_CONFIG_KEY;
use crate::runner::health::UnhealthyReason;

fn out(exit_code: i32, stdout: &str) -> ExecOutput {
    ExecOutput {
        exit_code,
        stdout: stdout.into(),
        stderr: "stat: boom".into(),
    }
}

#[test]
fn job_start_output_is_parsed_strictly() {
    assert_eq!(
        parse_job_started(&out(0, "1700000000\n")),
        Ok(Some(1_700_000_000))
    );
    assert_eq!(parse_job_started(&out(NO_WORK_DIR, "")), Ok(None));
    assert!(parse_job_started(&out(0, "?"))
        .unwrap_err()
        .contains("\"?\""));
    assert!(parse_job_started(&out(0, "")).is_err());
    assert!(parse_job_started(&out(1, ""))
        .unwrap_err()
        .contains("stat: boom"));
}

#[test]
fn job_start_script_runs_under_posix_sh() {
    let dir = tempfile::tempdir().unwrap();
    let script = job_started_script().replace(files::RUNNER_DIR, dir.path().to_str().unwrap());
    let run = || {
        let o = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        ExecOutput {
            exit_code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into(),
            stderr: String::from_utf8_lossy(&o.stderr).into(),
        }
    };
    assert_eq!(parse_job_started(&run()), Ok(None));
    std::fs::create_dir(dir.path().join("_work")).unwrap();
    let started = parse_job_started(&run()).unwrap().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(started <= now && now - started < 60, "{started} vs {now}");
}

#[test]
fn only_a_definite_listener_failure_is_not_running() {
    assert_eq!(planner_health(&runner::Health::Healthy), Health::Running);
    assert_eq!(planner_health(&runner::Health::Starting), Health::Unknown);
    assert_eq!(
        planner_health(&runner::Health::Unknown("x".into())),
        Health::Unknown
    );
    for reason in [
        UnhealthyReason::ListenerNotRunning,
        UnhealthyReason::NotRunning(InstanceState::Stopped),
    ] {
        assert_eq!(
            planner_health(&runner::Health::Unhealthy(reason)),
            Health::NotRunning
        );
    }
}

#[test]
fn binary_state_follows_the_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("t.tar.gz");
    assert_eq!(binary_state(&tarball), BinaryState::default());
    std::fs::write(&tarball, b"x").unwrap();
    let state = binary_state(&tarball);
    assert!(state.ready);
    assert!(state.updated_at_epoch.is_some());
}

#[test]
fn created_instances_carry_owner_runner_id_scope_and_profiles_in_order() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[("labels", "gpu".into())]));
    let ops = CharmRunnerOps::new(&rt);
    let name = ops.create().unwrap();
    let w = world.lock();
    let instance = &w.instances[name.as_str()];
    let (runner, _) = w.runners.values().next().unwrap();
    assert_eq!(
        instance.config.get(RUNNER_ID_CONFIG_KEY),
        Some(&runner.id.to_string())
    );
    assert_eq!(
        instance.config.get(SCOPE_CONFIG_KEY),
        Some(&scope_fingerprint(&rt.config))
    );
    assert_eq!(
        instance.config.get(crate::identity::OWNER_CONFIG_KEY),
        Some(&rt.identity.owner_value())
    );
    assert_eq!(
        instance.profiles,
        vec!["default", "ghr-runner", "cpu-2-mem-7GiB-disk-10GiB"]
    );
    assert_eq!(instance.instance_type, InstanceType::Container);
    assert_eq!(runner.labels, vec!["github-runner", "jammy", "gpu"]);
    assert_eq!(runner.name, name.as_str());
    drop(w);
    let metrics = std::fs::read_to_string(rt.paths.metrics_log()).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{metrics}");
    assert_eq!(lines[0]["event"], "runner_installed");
    assert_eq!(lines[0]["flavor"], "github-runner");
    assert_eq!(lines[1]["event"], "runner_creation_phases");
    assert!(lines[1]["first_exec"].as_f64().unwrap() >= 0.0);
}

#[test]
fn a_failed_launch_leaves_no_registration() {
    let world = FakeWorld::new();
    world.lock().image_present = false;
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    let err = ops.create().unwrap_err();
    assert!(err.message.contains("launch"), "{err}");
    assert!(ops.image_missing());
    assert!(world.runner_names().is_empty());
    assert!(world.instance_names().is_empty());
    assert!(!err.message.contains("SECRET-JIT"));
}

#[test]
fn github_refusing_registration_creates_nothing() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    world.lock().valid_tokens.clear();
    let ops = CharmRunnerOps::new(&rt);
    let err = ops.create().unwrap_err();
    assert_eq!(err.kind, FailureKind::NeedsOperator);
    assert!(world.instance_names().is_empty());
}

#[test]
fn profiles_are_ensured_once_per_hook() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    ops.create().unwrap();
    world.lock().profiles.clear();
    ops.create().unwrap();
    assert!(
        world.lock().profiles.is_empty(),
        "second creation re-used them"
    );
}

#[test]
fn removal_rechecks_the_owner_and_maps_outcomes() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    let name = ops.create().unwrap();
    let id = world.lock().runners.keys().next().copied();
    ops.observe().unwrap();
    let target = RemovalTarget {
        name: name.clone(),
        has_instance: true,
        github_id: id,
    };
    // Busy: kept unless forced.
    world
        .lock()
        .runners
        .values_mut()
        .for_each(|(r, _)| r.busy = true);
    assert_eq!(ops.remove(&target, false), Ok(RemoveOutcome::KeptBusy));
    assert_eq!(world.instance_names(), vec![name.to_string()]);
    assert!(matches!(
        ops.remove(&target, true),
        Ok(RemoveOutcome::RegistrationLeft { .. })
    ));
    assert!(world.instance_names().is_empty());
    // Another unit's instance of that name is never deleted.
    world.lock().instances.insert(
        name.to_string(),
        Instance {
            name: name.to_string(),
            state: InstanceState::Running,
            instance_type: InstanceType::Container,
            created_at_epoch: 0,
            config: [(
                crate::identity::OWNER_CONFIG_KEY.to_string(),
                "other/unit/0".to_string(),
            )]
            .into(),
            profiles: vec![],
        },
    );
    let foreign = CharmRunnerOps::new(&rt);
    *foreign.seen.lock().unwrap() = world.lock().instances.clone();
    let err = foreign.remove(&target, true).unwrap_err();
    assert_eq!(err.kind, FailureKind::NeedsOperator);
    assert_eq!(world.instance_names(), vec![name.to_string()]);
}

#[test]
fn job_started_reads_one_exec_and_a_vanished_instance_has_no_job() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    let name = ops.create().unwrap();
    let before = world.lock().execs;
    assert_eq!(ops.job_started_at(&name), Ok(None));
    assert_eq!(world.lock().execs, before + 1);
    assert_eq!(ops.job_started_at(&RunnerName("gone".into())), Ok(None));
}

#[test]
fn a_job_conclusion_is_looked_up_only_inside_the_configured_path() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    let name = RunnerName("github-runner-0-0123456789ab".into());
    for outside in ["evil/repo", "org/x/../../evil/y", "org"] {
        assert_eq!(ops.job_conclusion(outside, 7, &name), None);
    }
    assert!(
        world.lock().github_calls.is_empty(),
        "{:?}",
        world.lock().github_calls
    );
    assert_eq!(ops.job_conclusion("org/repo", 7, &name), None);
    assert_eq!(world.lock().github_calls.len(), 1);
}

#[test]
fn a_job_conclusion_is_the_one_of_this_runners_job_in_the_run() {
    let world = FakeWorld::new();
    let root = tempfile::tempdir().unwrap();
    let rt = world.runtime(root.path(), config(&[]));
    let ops = CharmRunnerOps::new(&rt);
    let job = |id: u64, runner: &str, conclusion: Option<&str>| crate::github::WorkflowJob {
        id,
        run_id: 9,
        status: "completed".into(),
        conclusion: conclusion.map(String::from),
        runner_name: Some(runner.into()),
        labels: vec![],
        created_at: None,
        started_at: None,
        completed_at: None,
        workflow_name: None,
    };
    world.lock().run_jobs.insert(
        ("org/r".into(), 9),
        vec![
            job(1, "other", Some("success")),
            job(2, "me", Some("cancelled")),
            job(3, "unfinished", None),
        ],
    );
    let me = RunnerName("me".into());
    assert_eq!(
        ops.job_conclusion("org/r", 9, &me).as_deref(),
        Some("cancelled")
    );
    let unfinished = RunnerName("unfinished".into());
    assert_eq!(ops.job_conclusion("org/r", 9, &unfinished), None);
    assert_eq!(
        ops.job_conclusion("org/r", 9, &RunnerName("x".into())),
        None
    );
    // GitHub's 404 (an unknown run, or a token that cannot read the repo): no conclusion.
    assert_eq!(ops.job_conclusion("org/r", 10, &me), None);
    let asked = world
        .lock()
        .github_calls
        .iter()
        .filter(|c| c.starts_with("run-jobs "))
        .count();
    assert_eq!(asked, 4, "one listing per lookup");
}

#[test]
fn pre_job_output_is_parsed_and_bounded() {
    let json = r#"{"workflow": "CI", "repository": "o/r", "event": "push", "run_id": "9", "timestamp": 7}"#;
    assert_eq!(
        parse_pre_job(&out(0, json)),
        Ok(PreJob {
            workflow: "CI".into(),
            repository: "o/r".into(),
            event: "push".into(),
            run_id: "9".into(),
            timestamp: 7,
        })
    );
    assert!(parse_pre_job(&out(1, ""))
        .unwrap_err()
        .contains("exited with 1"));
    assert!(parse_pre_job(&out(0, "{"))
        .unwrap_err()
        .contains("not valid"));
    let huge = format!(
        r#"{{"workflow": "{}", "repository": "o/r", "event": "push", "timestamp": 7}}"#,
        "x".repeat(1100)
    );
    assert!(parse_pre_job(&out(0, &huge))
        .unwrap_err()
        .contains("over 1024"));
}
