use super::*;

const NOW: u64 = 1_000_000;

fn scope_repo() -> UnitScope {
    UnitScope {
        api_base_url: "https://api.github.com".into(),
        path: GitHubPath::Repo {
            owner: "Canonical".into(),
            repo: "example".into(),
        },
        labels: vec![
            "github-runner".into(),
            "jammy".into(),
            "Large".into(),
            "x64".into(),
        ],
    }
}

fn scope_ghes_org() -> UnitScope {
    UnitScope {
        api_base_url: "https://ghe.example.com/api/v3".into(),
        path: GitHubPath::Org("octo".into()),
        labels: vec!["app".into(), "x64".into()],
    }
}

fn body(labels: &[&str], url: &str) -> Result<Vec<u8>, String> {
    Ok(
        serde_json::json!({"labels": labels, "url": url, "status": "queued", "extra": 1})
            .to_string()
            .into_bytes(),
    )
}

const JOB_URL: &str = "https://api.github.com/repos/canonical/example/actions/jobs/123456789";

#[test]
fn the_routers_body_is_accepted_with_unknown_fields_and_any_label_case() {
    let got = screen(&scope_repo(), &body(&["LARGE", "x64"], JOB_URL), 0).unwrap();
    assert_eq!(
        got,
        JobTarget {
            owner: "canonical".into(),
            repo: "example".into(),
            job_id: 123456789,
            labels: vec!["large".into(), "x64".into()],
        }
    );
}

#[test]
fn a_json_string_holding_the_body_is_unwrapped_once() {
    let inner = serde_json::json!({"labels": [], "url": JOB_URL}).to_string();
    let wrapped = serde_json::to_vec(&serde_json::Value::String(inner)).unwrap();
    assert!(screen(&scope_repo(), &Ok(wrapped), 0).is_ok());
}

#[test]
fn malformed_messages_are_dropped() {
    let cases: Vec<Result<Vec<u8>, String>> = vec![
        Err("bad base64".into()),
        Ok(b"__END__".to_vec()),
        Ok(b"{}".to_vec()),
        Ok(br#"{"labels": "large", "url": "x"}"#.to_vec()),
        Ok(br#"{"labels": [1], "url": "x"}"#.to_vec()),
        Ok(br#"{"labels": []}"#.to_vec()),
        Ok(br#""not an object""#.to_vec()),
        Ok(vec![b' '; MAX_BODY_BYTES + 1]),
    ];
    for case in cases {
        let got = screen(&scope_repo(), &case, 0);
        assert!(
            matches!(got, Err(DropReason::Malformed(_))),
            "{case:?} -> {got:?}"
        );
    }
}

#[test]
fn urls_off_this_units_api_and_path_are_refused() {
    let refused = [
        "https://api.github.com.evil.com/repos/canonical/example/actions/jobs/1",
        "http://api.github.com/repos/canonical/example/actions/jobs/1",
        "https://api.github.com:8443/repos/canonical/example/actions/jobs/1",
        "https://api.github.com/repos/canonical/other/actions/jobs/1",
        "https://api.github.com/repos/someone/example/actions/jobs/1",
        "https://api.github.com/repos/canonical/example/actions/runs/1",
        "https://api.github.com/repos/canonical/example/actions/jobs/x",
        "https://api.github.com/repos/canonical/example/actions/jobs/0",
        "https://api.github.com/repos/canonical/example/actions/jobs/1/logs",
        "https://api.github.com/repos/canonical/example/actions/jobs/1?x=1",
        "https://u:p@api.github.com/repos/canonical/example/actions/jobs/1",
        "https://api.github.com/repos//example/actions/jobs/1",
        "/repos/canonical/example/actions/jobs/1",
        "not a url",
    ];
    for url in refused {
        let got = screen(&scope_repo(), &body(&[], url), 0);
        assert!(
            matches!(got, Err(DropReason::ForeignUrl(_))),
            "{url} -> {got:?}"
        );
    }
}

#[test]
fn ghes_urls_under_api_v3_for_the_org_are_accepted_and_others_refused() {
    let ok = "https://ghe.example.com/api/v3/repos/Octo/anything/actions/jobs/42";
    let got = screen(&scope_ghes_org(), &body(&["app"], ok), 0).unwrap();
    assert_eq!((got.owner.as_str(), got.job_id), ("Octo", 42));
    for url in [
        "https://ghe.example.com/repos/octo/anything/actions/jobs/42",
        "https://ghe.example.com/api/v3x/repos/octo/anything/actions/jobs/42",
        "https://ghe.example.com/api/v3/repos/other/anything/actions/jobs/42",
        "https://api.github.com/repos/octo/anything/actions/jobs/42",
    ] {
        let got = screen(&scope_ghes_org(), &body(&["app"], url), 0);
        assert!(matches!(got, Err(DropReason::ForeignUrl(_))), "{url}");
    }
}

#[test]
fn labels_must_be_a_case_insensitive_subset_of_the_units_and_the_defaults() {
    let ok = [
        vec![],
        vec!["self-hosted", "linux"],
        vec![
            "SELF-HOSTED",
            "Linux",
            "large",
            "JAMMY",
            "x64",
            "github-runner",
        ],
    ];
    for labels in ok {
        assert!(
            screen(&scope_repo(), &body(&labels, JOB_URL), 0).is_ok(),
            "{labels:?}"
        );
    }
    let got = screen(&scope_repo(), &body(&["large", "gpu", "arm64"], JOB_URL), 0);
    assert_eq!(
        got,
        Err(DropReason::UnsupportedLabels(vec![
            "gpu".into(),
            "arm64".into()
        ]))
    );
}

#[test]
fn a_message_handled_retry_limit_times_is_dropped_before_any_call() {
    assert!(screen(&scope_repo(), &body(&[], JOB_URL), RETRY_LIMIT - 1).is_ok());
    assert_eq!(
        screen(&scope_repo(), &body(&[], JOB_URL), RETRY_LIMIT),
        Err(DropReason::RetryLimit)
    );
    // A malformed message says so, whatever its count.
    assert!(matches!(
        screen(&scope_repo(), &Ok(b"x".to_vec()), 9),
        Err(DropReason::Malformed(_))
    ));
}

#[test]
fn backoff_is_the_python_charms_doubling_capped_at_1800() {
    // After the 1st handling the 2nd waits 120 s, then 240, 480, 960, ... capped.
    let waits: Vec<u64> = (0..8).map(|c| requeue_not_before(NOW, c) - NOW).collect();
    assert_eq!(waits, [120, 240, 480, 960, 1800, 1800, 1800, 1800]);
    assert_eq!(requeue_not_before(NOW, u32::MAX) - NOW, 1800);
}

/// Every row of the decision table after a screened message's job was looked up.
#[test]
fn decision_table_on_the_jobs_state() {
    let requeue = |count| Decision::Requeue {
        not_before_epoch: requeue_not_before(NOW, count),
    };
    let found = |s: &str| JobLookup::Found(JobState::from_status(s));
    let rows: Vec<(JobLookup, u32, Decision)> = vec![
        (found("queued"), 0, Decision::Spawn),
        (found("queued"), RETRY_LIMIT - 1, Decision::Spawn),
        (found("in_progress"), 0, Decision::AckPicked),
        (found("completed"), 3, Decision::AckPicked),
        (found("waiting"), 0, requeue(0)),
        (found("pending"), 2, requeue(2)),
        (found("requested"), 1, requeue(1)),
        (found("something-new"), 0, requeue(0)),
        (
            found("waiting"),
            RETRY_LIMIT - 1,
            Decision::Drop(DropReason::RetryLimit),
        ),
        (
            JobLookup::NotFound,
            0,
            Decision::Drop(DropReason::JobNotFound),
        ),
        (
            JobLookup::Unavailable { until_epoch: None },
            4,
            Decision::ReleaseAndPause {
                resume_epoch: NOW + PAUSE_SECS,
            },
        ),
        (
            JobLookup::Unavailable {
                until_epoch: Some(NOW + 300),
            },
            0,
            Decision::ReleaseAndPause {
                resume_epoch: NOW + 300,
            },
        ),
        (
            JobLookup::Unavailable {
                until_epoch: Some(NOW + 99_999),
            },
            0,
            Decision::ReleaseAndPause {
                resume_epoch: NOW + MAX_PAUSE_SECS,
            },
        ),
        (
            JobLookup::Unavailable {
                until_epoch: Some(NOW - 5),
            },
            0,
            Decision::ReleaseAndPause {
                resume_epoch: NOW + 1,
            },
        ),
        (JobLookup::Refused("403".into()), 0, requeue(0)),
        // A private repository the token cannot read: requeued with backoff, never dropped
        // as a job GitHub does not know.
        (
            JobLookup::NoAccess {
                repo: "octo/secret".into(),
            },
            1,
            requeue(1),
        ),
        (
            JobLookup::NoAccess {
                repo: "octo/secret".into(),
            },
            RETRY_LIMIT - 1,
            Decision::Drop(DropReason::RetryLimit),
        ),
        (
            JobLookup::Refused("403".into()),
            RETRY_LIMIT - 1,
            Decision::Drop(DropReason::RetryLimit),
        ),
    ];
    for (lookup, count, want) in rows {
        assert_eq!(
            decide_on_job(&lookup, count, NOW),
            want,
            "{lookup:?} count {count}"
        );
    }
}

/// Every row of the table after a runner was spawned (or not) for a job.
#[test]
fn settlement_table_after_the_pickup_wait() {
    let rows: Vec<(PickupOutcome, u32, Settlement)> = vec![
        (PickupOutcome::PickedByOurs, 0, Settlement::AckKeepRunner),
        (PickupOutcome::PickedByOurs, 4, Settlement::AckKeepRunner),
        (PickupOutcome::PickedByOther, 0, Settlement::AckRemoveRunner),
        // Our runner took a sibling's job: this one goes back uncounted, the runner stays.
        (PickupOutcome::CrossedOver, 0, Settlement::ReleaseKeepRunner),
        (
            PickupOutcome::RunnerGone,
            2,
            Settlement::RequeueRemoveRunner {
                not_before_epoch: NOW,
            },
        ),
        (
            PickupOutcome::RunnerGone,
            RETRY_LIMIT - 1,
            Settlement::DropRemoveRunner(DropReason::RetryLimit),
        ),
        (
            PickupOutcome::CrossedOver,
            RETRY_LIMIT - 1,
            Settlement::ReleaseKeepRunner,
        ),
        (
            PickupOutcome::NotPicked,
            0,
            Settlement::RequeueRemoveRunner {
                not_before_epoch: NOW + 120,
            },
        ),
        (
            PickupOutcome::NotPicked,
            3,
            Settlement::RequeueRemoveRunner {
                not_before_epoch: NOW + 960,
            },
        ),
        (
            PickupOutcome::NotPicked,
            RETRY_LIMIT - 1,
            Settlement::DropRemoveRunner(DropReason::RetryLimit),
        ),
        (
            PickupOutcome::JobGone,
            0,
            Settlement::DropRemoveRunner(DropReason::JobNotFound),
        ),
        // No room: back unchanged however often, never dropped for it.
        (
            PickupOutcome::NoRoom,
            0,
            Settlement::Defer {
                not_before_epoch: NOW + NO_ROOM_RETRY_SECS,
            },
        ),
        (
            PickupOutcome::NoRoom,
            RETRY_LIMIT - 1,
            Settlement::Defer {
                not_before_epoch: NOW + NO_ROOM_RETRY_SECS,
            },
        ),
        (
            PickupOutcome::SpawnFailed { retry_epoch: None },
            2,
            Settlement::ReleaseAndPause {
                resume_epoch: NOW + PAUSE_SECS,
            },
        ),
        (
            PickupOutcome::SpawnFailed {
                retry_epoch: Some(NOW + 60),
            },
            0,
            Settlement::ReleaseAndPause {
                resume_epoch: NOW + 60,
            },
        ),
    ];
    for (outcome, count, want) in rows {
        assert_eq!(
            settle_after_wait(&outcome, count, NOW),
            want,
            "{outcome:?} count {count}"
        );
    }
}

#[test]
fn drop_reasons_have_distinct_metric_names() {
    let reasons = [
        DropReason::Malformed(String::new()),
        DropReason::ForeignUrl(String::new()),
        DropReason::UnsupportedLabels(vec![]),
        DropReason::RetryLimit,
        DropReason::JobNotFound,
        DropReason::Duplicate,
    ];
    let names: std::collections::BTreeSet<&str> = reasons.iter().map(DropReason::name).collect();
    assert_eq!(names.len(), reasons.len());
}
