use super::*;

fn w(slot: u32, started_ms: u64, busy: bool, settings: &str) -> LiveWorker {
    LiveWorker {
        slot,
        status: SlotStatus {
            pid: 1000 + slot,
            started_ms,
            settings: settings.into(),
            busy,
            ..SlotStatus::default()
        },
    }
}

#[test]
fn plan_table() {
    let stopping = {
        let mut x = w(1, 10, true, "s");
        x.status.stopping = true;
        x
    };
    let rows: Vec<(&str, Vec<LiveWorker>, u32, WorkerPlan)> = vec![
        (
            "from none",
            vec![],
            3,
            WorkerPlan {
                start: vec![0, 1, 2],
                stop: vec![],
            },
        ),
        (
            "at target",
            vec![w(0, 1, false, "s"), w(1, 2, true, "s")],
            2,
            WorkerPlan::default(),
        ),
        (
            "crashed slot 0 is refilled",
            vec![w(1, 2, false, "s")],
            2,
            WorkerPlan {
                start: vec![0],
                stop: vec![],
            },
        ),
        (
            "scale down: idle first, then newest",
            vec![
                w(0, 1, true, "s"),
                w(1, 5, false, "s"),
                w(2, 3, false, "s"),
                w(3, 9, true, "s"),
            ],
            1,
            WorkerPlan {
                start: vec![],
                stop: vec![(1, 1001), (2, 1002), (3, 1003)],
            },
        ),
        (
            "scale down keeps the oldest busy",
            vec![w(0, 1, true, "s"), w(3, 9, true, "s")],
            1,
            WorkerPlan {
                start: vec![],
                stop: vec![(3, 1003)],
            },
        ),
        (
            "to zero: idle first",
            vec![w(0, 1, true, "s"), w(1, 2, false, "s")],
            0,
            WorkerPlan {
                start: vec![],
                stop: vec![(1, 1001), (0, 1000)],
            },
        ),
        (
            "other settings: stopped and replaced in free slots",
            vec![w(0, 1, true, "old"), w(1, 2, false, "s")],
            2,
            WorkerPlan {
                start: vec![2],
                stop: vec![(0, 1000)],
            },
        ),
        (
            "a stopping worker counts for nothing and keeps its slot",
            vec![stopping.clone()],
            1,
            WorkerPlan {
                start: vec![0],
                stop: vec![],
            },
        ),
        (
            "stopping and target 0",
            vec![stopping],
            0,
            WorkerPlan::default(),
        ),
    ];
    for (name, live, target, want) in rows {
        assert_eq!(plan_workers(&live, target, "s"), want, "{name}");
    }
}

fn dirs(tmp: &tempfile::TempDir) -> UnitDirs {
    let d = UnitDirs::new(tmp.path().join("state/app-0"), tmp.path().join("log/app-0"));
    d.create().unwrap();
    d
}

#[test]
fn a_held_slot_is_live_with_its_status_and_a_dropped_one_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let mut hold = SlotHold::acquire(&d, 2, Duration::ZERO).unwrap().unwrap();
    assert_eq!(survey(&d).len(), 1, "live before it wrote a status");
    hold.status = SlotStatus {
        pid: 42,
        started_ms: 7,
        settings: "abc".into(),
        ..SlotStatus::default()
    };
    hold.status.apply(&WorkerState {
        busy: true,
        runner: Some("r".into()),
        queue: Some(QueueLength {
            waiting: 3,
            leased: 1,
        }),
        broker_error: None,
        no_room: None,
        job_access: None,
    });
    hold.publish().unwrap();
    let live = survey(&d);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].slot, 2);
    assert_eq!(live[0].status.pid, 42);
    assert_eq!(
        live[0].status.queue(),
        Some(QueueLength {
            waiting: 3,
            leased: 1
        })
    );
    // A second worker for the same slot gives up.
    assert!(SlotHold::acquire(&d, 2, Duration::from_millis(50))
        .unwrap()
        .is_none());
    drop(hold);
    assert!(survey(&d).is_empty());
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&d.state), 0o700);
    assert_eq!(mode(&d.slot_file(2)), 0o600);
}

#[test]
fn settings_are_written_0600_and_fingerprinted() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    write_settings(&d, b"{\"token\":\"x\"}").unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.settings_file())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_ne!(settings_fingerprint(b"a"), settings_fingerprint(b"b"));
    assert_eq!(settings_fingerprint(b"a").len(), 64);
}

/// A process that outlives its SIGTERM and the wait is killed (the listener's stop).
#[test]
fn stop_or_kill_kills_what_outlived_its_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    d.create().unwrap();
    let mut held = SlotHold::acquire(&d, 0, Duration::ZERO).unwrap().unwrap();
    held.status.pid = 41;
    held.publish().unwrap();
    let control = RecordingControl::default();
    // The hold is this test's: nothing dies, so the slot stays held.
    assert_eq!(stop_or_kill(&d, &control, Duration::ZERO), 1);
    assert_eq!(*control.calls.borrow(), vec!["term 41", "kill 41"]);
    drop(held);
    let control = RecordingControl::default();
    assert_eq!(stop_or_kill(&d, &control, Duration::ZERO), 0);
    assert!(control.calls.borrow().is_empty(), "nothing left to stop");
}

#[test]
fn ensure_workers_applies_the_plan_over_the_slots_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let mut held = SlotHold::acquire(&d, 0, Duration::ZERO).unwrap().unwrap();
    held.status = SlotStatus {
        pid: 77,
        settings: "old".into(),
        ..SlotStatus::default()
    };
    held.publish().unwrap();
    let control = RecordingControl::default();
    let out = ensure_workers(&d, &control, 2, "new");
    assert_eq!((out.started, out.stopped), (2, 1));
    assert_eq!(
        *control.calls.borrow(),
        vec!["term 77".to_string(), "start 1".into(), "start 2".into()]
    );
}

#[test]
fn the_logrotate_rule_is_daily_and_truncates_in_place() {
    let rule = render_logrotate(Path::new("/var/log/github-runner-reactive/app-0"));
    assert!(rule.starts_with("/var/log/github-runner-reactive/app-0/*.log {"));
    assert!(rule.contains("daily") && rule.contains("copytruncate"));
}

fn argv_text(argv: Vec<std::ffi::OsString>) -> Vec<String> {
    argv.iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_worker_runs_in_a_scope_named_after_its_unit_slot_and_start_or_directly() {
    let d = UnitDirs::new("/s", "/l");
    let bin = std::path::Path::new("/charm/bin/github-runner-worker");
    let direct = [
        "/charm/bin/github-runner-worker",
        "--dir",
        "/s",
        "--logs",
        "/l",
        "--slot",
        "2",
    ];
    assert_eq!(
        argv_text(worker_argv(bin, WorkerRole::Reactive, &d, 2, None, 7)),
        direct
    );
    let scope = WorkerScope {
        systemd_run: "/usr/bin/systemd-run".into(),
        unit_prefix: scope_prefix("app-0", WorkerRole::Reactive),
    };
    let scoped = [
        "/usr/bin/systemd-run",
        "--scope",
        "--quiet",
        "--collect",
        "--unit=github-runner-worker-app-0-2-7",
        "--description=github-runner reactive worker 2 (github-runner-worker-app-0)",
        "--",
    ];
    assert_eq!(
        argv_text(worker_argv(
            bin,
            WorkerRole::Reactive,
            &d,
            2,
            Some(&scope),
            7
        )),
        [&scoped[..], &direct[..]].concat()
    );
}

/// Issue 23: the listener is the worker binary with `--scale-set`, in a scope of its own.
#[test]
fn the_listener_runs_the_worker_binary_with_its_flag_in_its_own_scope() {
    let d = UnitDirs::new("/s", "/l");
    let bin = std::path::Path::new("/charm/bin/github-runner-worker");
    let direct = [
        "/charm/bin/github-runner-worker",
        "--scale-set",
        "--dir",
        "/s",
        "--logs",
        "/l",
        "--slot",
        "0",
    ];
    assert_eq!(
        argv_text(worker_argv(bin, WorkerRole::Listener, &d, 0, None, 7)),
        direct
    );
    let scope = WorkerScope {
        systemd_run: "/usr/bin/systemd-run".into(),
        unit_prefix: scope_prefix("app-0", WorkerRole::Listener),
    };
    let argv = argv_text(worker_argv(
        bin,
        WorkerRole::Listener,
        &d,
        0,
        Some(&scope),
        7,
    ));
    assert_eq!(argv[4], "--unit=github-runner-listener-app-0-0-7");
    assert_eq!(
        argv[5],
        "--description=github-runner scale-set listener 0 (github-runner-listener-app-0)"
    );
    assert_eq!(argv[7..], direct);
}

#[test]
fn a_new_worker_counts_the_crashes_its_slot_saw_and_publishes_its_time() {
    let tmp = tempfile::tempdir().unwrap();
    let d = UnitDirs::new(tmp.path().join("s"), tmp.path().join("l"));
    d.create().unwrap();
    let crashed = SlotStatus {
        pid: 5,
        started_ms: 1,
        updated_ms: 2,
        crashes: 1,
        ..SlotStatus::default()
    };
    std::fs::write(d.slot_file(0), serde_json::to_vec(&crashed).unwrap()).unwrap();
    let mut hold = SlotHold::acquire(&d, 0, Duration::ZERO).unwrap().unwrap();
    assert_eq!(hold.status.crashes, 2);
    hold.publish().unwrap();
    assert!(hold.status.updated_ms > 0);
    let slots = survey_slots(&d);
    assert!(slots[0].live && slots[0].status.crashes == 2);
    drop(hold);
    assert!(!survey_slots(&d)[0].live);
}
