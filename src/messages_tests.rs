//! Every message kind, rendered, against the vocabulary's rules.

use super::*;
use crate::github::GitHubError;
use crate::juju::Status;
use crate::manager::flush::FlushMode;

/// 2026-11-30 12:46:19 UTC.
const RESET: u64 = 1_796_215_579;

/// Every message the module makes, by name, with sample arguments.
fn every_kind() -> Vec<(&'static str, String)> {
    let mode = FlushMode::FlushIdle;
    vec![
        ("SETTING_UP", SETTING_UP.into()),
        ("credential_fix", credential_fix("app")),
        ("app_option_fix", app_option_fix("app", "github-app-id")),
        ("token_and_app_both_set", token_and_app_both_set("app")),
        (
            "app_key_option_not_a_secret",
            app_key_option_not_a_secret("app"),
        ),
        (
            "secret_unreadable",
            secret_unreadable("secret:abc", "app", "permission denied"),
        ),
        (
            "secret_key_missing",
            secret_key_missing("secret:abc", "token"),
        ),
        (
            "app_key_unusable",
            app_key_unusable("secret:abc", "not PEM"),
        ),
        ("github_app_rejected", github_app_rejected(7, 99)),
        ("STARTING", STARTING.into()),
        ("STOPPING", STOPPING.into()),
        ("DETACHING", DETACHING.into()),
        ("DOWNLOADING_BINARY", DOWNLOADING_BINARY.into()),
        ("INSTALLING_LXD", INSTALLING_LXD.into()),
        ("INITIALISING_LXD", INITIALISING_LXD.into()),
        ("BUILDING_IMAGE", BUILDING_IMAGE.into()),
        (
            "config_change_flush",
            config_change_flush(&["token", "path"]),
        ),
        ("flush_failed", flush_failed(mode, "LXD is down")),
        ("binary_update_failed", binary_update_failed("502")),
        ("rate_limited", rate_limited(RESET)),
        (
            "rate_limited_on",
            rate_limited_on("GET", "/orgs/o/actions/runners", RESET),
        ),
        ("rate_limited_with", rate_limited_with(RESET, "1/2 runners")),
        ("reactive_summary", reactive_summary(2, 4, 1, Some(3))),
        (
            "reactive_waiting_for_room",
            reactive_waiting_for_room(
                "reactive: 4/4 workers",
                2,
                &no_room(8, "host memory allows 8"),
            ),
        ),
        ("no_room", no_room(8, "host memory allows 8")),
        (
            "admission_unavailable",
            admission_unavailable("LXD did not answer"),
        ),
        (
            "broker_unreachable",
            broker_unreachable("redis.internal:6379", 1, 4),
        ),
        (
            "reactive_token_rejected",
            reactive_token_rejected("GitHub rejected the token (401 on GET /x)"),
        ),
        (
            "reactive_crash_loop",
            reactive_crash_loop(1, 3, Some("cannot start")),
        ),
        (
            "reactive_failing",
            reactive_failing("runner-creation", "LXD is down", 2, RESET),
        ),
        (
            "worker_failure_line",
            worker_failure_line(0, false, 2, Some(("runner-creation", "LXD is down", RESET))),
        ),
        (
            "held_back",
            held_back(Some(("host memory", 4)), Some((16, 4))).unwrap_or_default(),
        ),
        (
            "retrying_next_round",
            retrying_next_round("1/2 runners", "boom", 2, 3),
        ),
        (
            "runner_summary",
            runner_summary(3, 2, 1, &[(1, "creating"), (0, "offline")]),
        ),
        ("GITHUB_TOKEN_INVALID", GITHUB_TOKEN_INVALID.into()),
        (
            "github_token_lacks_permission",
            github_token_lacks_permission("POST", "/orgs/o/actions/runners", "admin:org"),
        ),
        ("github_not_found", github_not_found("GET", "/repos/o/r")),
        ("github_transient", github_transient("502 Bad Gateway")),
        ("FIRST_RECONCILE", FIRST_RECONCILE.into()),
        (
            "waiting_for_lxd_install",
            waiting_for_lxd_install("lxc missing"),
        ),
        ("waiting_for_lxd", waiting_for_lxd("socket refused")),
        (
            "waiting_for_image",
            waiting_for_image("jammy", Some("0/1 runners")),
        ),
        ("waiting_for_binary", waiting_for_binary("0/1 runners")),
        (
            "old_runners_finishing",
            old_runners_finishing("2 idle, 1 busy", 3),
        ),
        ("RECONCILING", RECONCILING.into()),
        ("BINARY_UPDATED_FLUSHING", BINARY_UPDATED_FLUSHING.into()),
        (
            "BINARY_UPDATED_FLUSH_FAILED",
            BINARY_UPDATED_FLUSH_FAILED.into(),
        ),
        (
            "flush_incomplete",
            flush_incomplete("github-runner-0-a1b2c3d4e5f6: 502"),
        ),
        ("reconciled", reconciled(1, 2, 0)),
        ("flushing_then_reconciling", flushing_then_reconciling(mode)),
        (
            "busy_runners_replaced_after_job",
            busy_runners_replaced_after_job(&["github-runner-0-a1b2c3d4e5f6".into()]),
        ),
        ("awaiting_job_end", awaiting_job_end(2).into()),
        (
            "flush_wait_exhausted",
            flush_wait_exhausted(Duration::from_secs(90)),
        ),
        ("lock_waited", lock_waited(75).unwrap()),
        ("observe_failed", observe_failed("GitHub is down")),
        ("unknown_action", unknown_action("dance")),
        ("hh_mm_utc", hh_mm_utc(RESET)),
        ("minutes_seconds", minutes_seconds(75)),
        ("MONGODB_TLS_UNSUPPORTED", MONGODB_TLS_UNSUPPORTED.into()),
        (
            "reactive_held",
            reactive_held("mongodb relation: no provider unit yet"),
        ),
        ("cannot_read_jobs", cannot_read_jobs("octo/private")),
        (
            "scale_set_listener_starting",
            scale_set_listener_starting("lxd-jammy-0"),
        ),
        (
            "scale_set_waiting_for_session",
            scale_set_waiting_for_session("lxd-jammy-0"),
        ),
        ("scale_set_listening", scale_set_listening("lxd-jammy-0")),
        (
            "scale_set_listener_retrying",
            scale_set_listener_retrying("lxd-jammy-0", "GitHub answered 503"),
        ),
        (
            "scale_set_listener_stopped",
            scale_set_listener_stopped("lxd-jammy-0"),
        ),
        (
            "min_idle_above_virtual_machines",
            min_idle_above_virtual_machines(2),
        ),
        ("SCALE_SET_WITH_MQ_URI", SCALE_SET_WITH_MQ_URI.into()),
        (
            "scale_set_with_mongodb_relation",
            scale_set_with_mongodb_relation("app"),
        ),
        (
            "scale_set_listening_with_jobs",
            scale_set_listening_with_jobs(&scale_set_listening("lxd-jammy-0"), 3, 1),
        ),
        (
            "scale_set_listener_crash_loop",
            scale_set_listener_crash_loop("lxd-jammy-0", 3, "/var/log/x/worker-0.log"),
        ),
        ("scale_set_name_missing", scale_set_name_missing("app")),
        (
            "scale_set_held_by_another",
            scale_set_held_by_another("lxd-jammy-0", "uuid-2/github-runner/0"),
        ),
    ]
}

#[test]
fn every_message_kind_follows_the_rules() {
    let kinds = every_kind();
    // A new message must join the list above: count the module's public makers.
    let source = include_str!("messages.rs");
    let declared = source
        .lines()
        .filter(|l| l.starts_with("pub fn ") || l.starts_with("pub const "))
        .count();
    assert_eq!(kinds.len(), declared, "every message kind is checked here");
    for (name, text) in kinds {
        assert!(!text.trim().is_empty(), "{name}");
        assert_eq!(text.trim(), text, "{name}: no stray whitespace");
        assert!(!text.ends_with('.'), "{name}: statuses are not sentences");
        assert!(!text.contains("epoch"), "{name}: {text}");
        let digits_run = text
            .split(|c: char| !c.is_ascii_digit())
            .map(str::len)
            .max()
            .unwrap_or(0);
        assert!(digits_run < 9, "{name}: a raw epoch time in {text:?}");
        for (at, _) in text.match_indices(" UTC") {
            let time = &text[at.saturating_sub(5)..at];
            let b = time.as_bytes();
            assert!(
                b.len() == 5
                    && b[2] == b':'
                    && time.chars().filter(char::is_ascii_digit).count() == 4,
                "{name}: times for people are HH:MM UTC: {text:?}"
            );
        }
    }
}

#[test]
fn a_rate_limit_reads_the_same_in_the_status_and_in_a_failure() {
    let when = "retrying after 12:46 UTC";
    let status = crate::github::status::rate_limit_status(RESET);
    let Status::Maintenance(status) = status else {
        panic!("{status:?}")
    };
    let failure = GitHubError::RateLimited {
        method: "GET".into(),
        path: "/orgs/o/actions/runners".into(),
        reset_epoch: RESET,
    }
    .to_string();
    for text in [status, failure, observe_failed(rate_limited(RESET))] {
        assert!(text.contains("GitHub rate limit reached"), "{text}");
        assert!(text.contains(when), "{text}");
    }
}

#[test]
fn times_are_hours_and_minutes_in_utc() {
    assert_eq!(hh_mm_utc(0), "00:00");
    assert_eq!(hh_mm_utc(RESET), "12:46");
    assert_eq!(hh_mm_utc(86_399), "23:59");
    assert_eq!(minutes_seconds(5), "5s");
    assert_eq!(minutes_seconds(60), "1m00s");
}

#[test]
fn lock_wait_is_reported_in_words() {
    assert_eq!(lock_waited(0), None);
    assert_eq!(
        lock_waited(75).unwrap(),
        "waited 1m15s for another reconcile or flush to finish"
    );
    assert_eq!(
        lock_waited(5).unwrap(),
        "waited 5s for another reconcile or flush to finish"
    );
}
