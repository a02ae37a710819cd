use super::*;
use crate::reactive::workers::{RecordingControl, SlotHold, SlotStatus};

fn dirs(tmp: &tempfile::TempDir) -> UnitDirs {
    UnitDirs::new(tmp.path().join("state"), tmp.path().join("logs"))
}

/// A live listener in `slot` (held by the test) running `settings`.
fn listener(d: &UnitDirs, slot: u32, pid: u32, settings: &str) -> SlotHold {
    d.create().unwrap();
    let mut hold = SlotHold::acquire(d, slot, Duration::ZERO).unwrap().unwrap();
    hold.status = SlotStatus {
        pid,
        settings: settings.into(),
        ..SlotStatus::default()
    };
    hold.publish().unwrap();
    hold
}

fn mode(p: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_reconcile_writes_the_settings_privately_and_starts_one_listener_in_its_slot() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let rule = tmp.path().join("logrotate");
    let control = RecordingControl::default();
    let round = converge_listener(&d, &rule, &control, b"{\"a\":1}", "linux-0", Duration::ZERO);
    assert_eq!(*control.calls.borrow(), vec!["start 0"]);
    assert_eq!((round.started, round.stopped), (1, 0));
    assert!(round.problems.is_empty(), "{:?}", round.problems);
    assert_eq!(std::fs::read(d.settings_file()).unwrap(), b"{\"a\":1}");
    assert_eq!(mode(&d.settings_file()), 0o600);
    assert_eq!(mode(&d.state), 0o700);
    assert!(std::fs::read_to_string(&rule)
        .unwrap()
        .contains("copytruncate"));
    // Nothing took the slot (the recording starts nothing): starting, not a crash.
    assert_eq!(
        round.status,
        Status::Maintenance("Scale set linux-0: listener starting".into())
    );
}

#[test]
fn a_listener_with_the_current_settings_is_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let bytes = b"{\"a\":1}";
    let _live = listener(&d, LISTENER_SLOT, 40, &settings_fingerprint(bytes));
    let control = RecordingControl::default();
    let round = converge_listener(
        &d,
        &tmp.path().join("r"),
        &control,
        bytes,
        "linux-0",
        Duration::ZERO,
    );
    assert!(
        control.calls.borrow().is_empty(),
        "{:?}",
        control.calls.borrow()
    );
    assert_eq!((round.started, round.stopped), (0, 0));
    assert!(round.view.unwrap().live());
}

#[test]
fn a_listener_with_other_settings_is_stopped_before_a_new_one_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let old = listener(&d, LISTENER_SLOT, 40, "old");
    let control = RecordingControl::default();
    // The old one outlives its SIGTERM (the test holds its slot): killed, and no second
    // listener starts beside it.
    let round = converge_listener(
        &d,
        &tmp.path().join("r"),
        &control,
        b"new",
        "linux-0",
        Duration::ZERO,
    );
    assert_eq!(*control.calls.borrow(), vec!["term 40", "kill 40"]);
    assert_eq!(round.started, 0);
    assert_eq!(round.problems.len(), 1, "{:?}", round.problems);
    // Gone: the next reconcile starts the new one in the listener's slot.
    drop(old);
    let control = RecordingControl::default();
    let round = converge_listener(
        &d,
        &tmp.path().join("r"),
        &control,
        b"new",
        "linux-0",
        Duration::ZERO,
    );
    assert_eq!(*control.calls.borrow(), vec!["start 0"]);
    assert_eq!(round.started, 1);
}

#[test]
fn a_listener_in_another_slot_is_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let bytes = b"s";
    let _stray = listener(&d, 3, 43, &settings_fingerprint(bytes));
    let control = RecordingControl::default();
    converge_listener(
        &d,
        &tmp.path().join("r"),
        &control,
        bytes,
        "linux-0",
        Duration::ZERO,
    );
    assert_eq!(control.calls.borrow()[0], "term 43");
    assert!(!control.calls.borrow().contains(&"start 0".to_string()));
}

#[test]
fn leaving_stops_the_listener_and_removes_its_settings() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    write_settings(&d, b"x").unwrap();
    let live = listener(&d, LISTENER_SLOT, 40, "x");
    let control = RecordingControl::default();
    assert!(
        leave_within(&d, &control, Duration::ZERO),
        "still held by the test"
    );
    assert_eq!(*control.calls.borrow(), vec!["term 40", "kill 40"]);
    assert!(!d.settings_file().exists());
    assert!(!listener_was_on(&d));
    drop(live);
    assert!(!leave_within(
        &d,
        &RecordingControl::default(),
        Duration::ZERO
    ));
}

#[test]
fn the_listener_never_gets_the_token_nor_hook_only_options_but_its_capacity() {
    let raw = serde_json::json!({
        "token": "ghp_secret", "virtual-machines": 4, "reconcile-interval": 10,
        "creations-per-round": 16, "scale-set-name": "linux", "min-idle-runners": 1,
        "path": "o"
    });
    let config = listener_config(raw.as_object().unwrap().clone());
    let keys: Vec<&str> = config.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "min-idle-runners",
            "path",
            "scale-set-name",
            "virtual-machines"
        ]
    );
}

#[test]
fn check_runners_shows_the_mode_the_listener_and_its_statistics() {
    use crate::scaleset::listener_state::ListenerPhase;
    use crate::scaleset::process::ListenerSnapshot;
    let tmp = tempfile::tempdir().unwrap();
    let d = dirs(&tmp);
    let mut live = listener(&d, LISTENER_SLOT, 40, "x");
    live.status.listener = Some(ListenerSnapshot {
        scale_set: "linux-0".into(),
        phase: Some(ListenerPhase::Listening { scale_set_id: 2 }),
        statistics: Some(crate::scaleset::Statistics {
            total_assigned_jobs: 2,
            total_running_jobs: 1,
            total_idle_runners: 1,
            total_busy_runners: 1,
            ..Default::default()
        }),
    });
    live.publish().unwrap();
    let results = ListenerView::read(&d, "linux-0").check_results();
    assert_eq!(results["mode"], "scale-set");
    assert_eq!(results["scale-set"], "linux-0");
    assert_eq!(results["listener"], "running");
    assert_eq!(results["assigned-jobs"], "2");
    assert_eq!(results["running-jobs"], "1");
    drop(live);
    assert_eq!(
        ListenerView::read(&d, "linux-0").check_results()["listener"],
        "not running"
    );
}
