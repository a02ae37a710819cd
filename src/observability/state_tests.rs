use super::*;
use crate::github::outcomes::RateLimit;

fn round(outcome: RoundOutcome, census: Option<Census>, ok: u64, failed: u64) -> RoundFacts {
    RoundFacts {
        outcome,
        census,
        duration_secs: 4.0,
        creations_succeeded: ok,
        creations_failed: failed,
    }
}

fn census(idle: u32, busy: u32) -> Census {
    Census {
        desired: 3,
        idle,
        busy,
        ..Census::default()
    }
}

fn update<'a>(
    round: RoundFacts,
    calls: &'a BTreeMap<(ApiCall, String), u64>,
    url: Option<&'a str>,
) -> Update<'a> {
    Update {
        flavor: "gr",
        now: 1000,
        reconcile_interval_secs: 600,
        round,
        calls,
        rate_limit: None,
        runner_binary_url: url,
    }
}

#[test]
fn counters_accumulate_across_hooks_and_the_census_survives_a_failed_round() {
    let mut calls = BTreeMap::new();
    calls.insert((ApiCall::ListRunners, "200".to_string()), 2);
    let url = "https://x/actions-runner-linux-x64-2.311.0.tar.gz";
    let first = advance(
        None,
        &update(
            round(RoundOutcome::Success, Some(census(2, 1)), 3, 0),
            &calls,
            Some(url),
        ),
    );
    assert_eq!(first.census, census(2, 1));
    assert_eq!(first.creations_succeeded, 3);
    assert_eq!(first.runner_binary_version.as_deref(), Some("2.311.0"));
    assert_eq!(first.reconciles["success"], 1);

    let mut second_calls = BTreeMap::new();
    second_calls.insert((ApiCall::ListRunners, "200".to_string()), 1);
    second_calls.insert((ApiCall::ListRunners, "503".to_string()), 4);
    let mut u = update(round(RoundOutcome::Failed, None, 0, 0), &second_calls, None);
    u.rate_limit = Some(RateLimit {
        remaining: 10,
        limit: Some(5000),
        reset_epoch: 99,
    });
    let second = advance(Some(&first), &u);
    assert_eq!(second.census, census(2, 1), "kept from the last good round");
    assert_eq!(second.last_reconcile_outcome, RoundOutcome::Failed);
    assert_eq!(second.reconciles["success"], 1);
    assert_eq!(second.reconciles["failed"], 1);
    assert_eq!(second.creations_succeeded, 3);
    assert_eq!(
        second.github_calls,
        vec![
            ApiCallCount {
                endpoint: "list-runners".into(),
                status: "200".into(),
                count: 3
            },
            ApiCallCount {
                endpoint: "list-runners".into(),
                status: "503".into(),
                count: 4
            },
        ]
    );
    assert_eq!(second.rate_limit.unwrap().remaining, 10);
    assert_eq!(second.runner_binary_version.as_deref(), Some("2.311.0"));
    let third = advance(
        Some(&second),
        &update(
            round(RoundOutcome::Partial, Some(census(0, 0)), 1, 2),
            &BTreeMap::new(),
            None,
        ),
    );
    assert_eq!(
        third.rate_limit, second.rate_limit,
        "kept until a new answer"
    );
    assert_eq!(third.creations_failed, 2);
    assert_eq!(third.creations_succeeded, 4);
}

#[test]
fn versions_come_only_from_runner_tarball_names() {
    assert_eq!(
        version_from_url("https://github.com/actions/runner/releases/download/v2.320.0/actions-runner-linux-arm64-2.320.0.tar.gz")
            .as_deref(),
        Some("2.320.0")
    );
    for bad in [
        "",
        "x.tar.gz",
        "a-b.zip",
        "actions-runner-linux-x64-.tar.gz",
        "r-2..1.tar.gz",
        "r-12.tar.gz",
    ] {
        assert_eq!(version_from_url(bad), None, "{bad}");
    }
}

#[test]
fn the_file_round_trips_at_0640_and_a_bad_or_foreign_file_is_no_state() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("var/lib/x/exporter-state.json");
    assert!(read(&path).unwrap().is_none());
    let state = advance(
        None,
        &update(
            round(RoundOutcome::Success, Some(census(1, 0)), 1, 0),
            &BTreeMap::new(),
            None,
        ),
    );
    write(&path, &state).unwrap();
    assert_eq!(read(&path).unwrap(), Some(state.clone()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, STATE_MODE);
    let gauges = ReactiveGauges {
        workers: 2,
        workers_busy: 1,
        queue_length: 9,
    };
    assert!(set_reactive(&path, gauges).unwrap());
    assert_eq!(read(&path).unwrap().unwrap().reactive, gauges);
    let kept = advance(
        read(&path).unwrap().as_ref(),
        &update(
            round(RoundOutcome::Success, None, 0, 0),
            &BTreeMap::new(),
            None,
        ),
    );
    assert_eq!(
        kept.reactive, gauges,
        "a round keeps what the reactive side wrote"
    );
    assert!(!set_reactive(&dir.path().join("none.json"), gauges).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"version\":1", "\"version\":2")).unwrap();
    assert!(read(&path).unwrap().is_none());
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(read(&path), Err(StateError::Invalid { .. })));
    std::fs::write(&path, vec![b' '; MAX_STATE_BYTES as usize + 10]).unwrap();
    assert!(matches!(read(&path), Err(StateError::Invalid { .. })));
}
