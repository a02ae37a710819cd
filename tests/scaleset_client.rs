//! The scale-set protocol client (`github_runner::scaleset`) against the fake service in
//! `tests/support/fake_scaleset`: the auth chain and its refresh, sessions and their 409,
//! the long poll, acks and redelivery, GHES acquisition, JIT runners and their removal,
//! and answers with a BOM or keys in another case. Token lifetimes run on a manual clock
//! shared by the client and the fake; waits are on conditions with deadlines.

#[path = "support/fake_scaleset/mod.rs"]
mod fake_scaleset;

use fake_scaleset::{Endpoint, FakeScaleSetService, Fault, JobState, KeyCase};
use github_runner::clock::ManualClock;
use github_runner::github::DeleteOutcome;
use github_runner::scaleset::{
    JobMessage, NewScaleSet, ScaleSet, ScaleSetClient, ScaleSetError, ScaleSetUpdate, Session,
};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct World {
    clock: Arc<ManualClock>,
    fake: FakeScaleSetService,
    client: ScaleSetClient,
}

fn world_for(path: &str) -> World {
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let fake = FakeScaleSetService::start(clock.clone());
    let client = fake.client(path, clock.clone());
    World {
        clock,
        fake,
        client,
    }
}

fn world() -> World {
    world_for("octo/hello")
}

impl World {
    fn scale_set(&self, name: &str, labels: &[&str]) -> ScaleSet {
        self.client
            .create_scale_set(&NewScaleSet {
                name: name.into(),
                runner_group_id: 1,
                labels: labels.iter().map(|l| l.to_string()).collect(),
            })
            .unwrap()
    }

    fn session(&self, name: &str) -> Session {
        let set = self.scale_set(name, &[]);
        self.client
            .create_session(set.id, "github-runner-0")
            .unwrap()
    }

    fn exchanges(&self) -> usize {
        self.fake.requests_to(Endpoint::RunnerRegistration).len()
    }

    fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}

fn assigned_ids(jobs: &[JobMessage]) -> Vec<String> {
    jobs.iter()
        .filter_map(|j| match j {
            JobMessage::Assigned(info) => Some(info.job_id.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn the_chain_reaches_the_service_through_remote_auth_with_the_config_url() {
    for path in ["octo/hello", "octo"] {
        let w = world_for(path);
        assert_eq!(w.client.runner_group_id("").unwrap(), 1);
        assert_eq!(w.client.runner_group_id("Default").unwrap(), 1);
        assert!(
            w.fake.requests().is_empty(),
            "the default group is never looked up"
        );
        let set = w.scale_set("lxd", &["jammy"]);
        let requests = w.fake.requests();
        let kinds: Vec<Endpoint> = requests.iter().map(|r| r.endpoint).collect();
        assert_eq!(
            kinds,
            [
                Endpoint::RegistrationToken,
                Endpoint::RunnerRegistration,
                Endpoint::CreateScaleSet
            ]
        );
        let scope = if path.contains('/') {
            "repos/octo/hello"
        } else {
            "orgs/octo"
        };
        assert_eq!(
            requests[0].path,
            format!("/api/v3/{scope}/actions/runners/registration-token")
        );
        assert_eq!(
            requests[0].header("authorization"),
            Some(format!("Bearer {}", w.fake.pat()).as_str())
        );
        let issued = w.fake.with_state(|st| st.registration_tokens.clone());
        assert_eq!(requests[1].path, "/api/v3/actions/runner-registration");
        assert_eq!(
            requests[1].header("authorization"),
            Some(format!("RemoteAuth {}", issued[0]).as_str())
        );
        let body: serde_json::Value = serde_json::from_str(&requests[1].body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"url": w.fake.config_url(path), "runner_event": "register"})
        );
        let admin = w.client.admin_connection().unwrap();
        assert_eq!(
            admin.service_url.as_str(),
            format!("{}/tenant/123/", w.fake.url())
        );
        assert_eq!(
            requests[2].path,
            "/tenant/123/_apis/runtime/runnerscalesets"
        );
        assert_eq!(
            requests[2].query_param("api-version").as_deref(),
            Some("6.0-preview")
        );
        assert_eq!(
            requests[2].header("authorization"),
            Some(format!("Bearer {}", admin.token.expose()).as_str())
        );
        let sent: serde_json::Value = serde_json::from_str(&requests[2].body).unwrap();
        assert_eq!(
            sent["labels"],
            serde_json::json!([{"name": "lxd", "type": "System"}, {"name": "jammy", "type": "System"}])
        );
        assert_eq!(set.labels.len(), 2);
    }
}

#[test]
fn scale_sets_are_found_by_name_in_their_group_updated_and_deleted() {
    let w = world();
    let group = w.fake.add_runner_group("ci");
    assert_eq!(w.client.runner_group_id("CI").unwrap(), group);
    assert!(matches!(
        w.client.runner_group_id("nope"),
        Err(ScaleSetError::RunnerGroupNotFound { .. })
    ));
    let set = w
        .client
        .create_scale_set(&NewScaleSet {
            name: "lxd-0".into(),
            runner_group_id: group,
            labels: vec![],
        })
        .unwrap();
    assert_eq!(
        w.client
            .scale_set_by_name(group, "lxd-0")
            .unwrap()
            .map(|s| s.id),
        Some(set.id)
    );
    assert_eq!(
        w.client.scale_set_by_name(1, "lxd-0").unwrap(),
        None,
        "the name is per group"
    );
    let duplicate = w.client.create_scale_set(&NewScaleSet {
        name: "lxd-0".into(),
        runner_group_id: group,
        labels: vec![],
    });
    assert!(
        matches!(duplicate, Err(ScaleSetError::Service { status: 400, .. })),
        "{duplicate:?}"
    );
    let renamed = w
        .client
        .update_scale_set(
            set.id,
            &ScaleSetUpdate {
                name: Some("lxd-1".into()),
                runner_group_id: None,
            },
        )
        .unwrap();
    assert_eq!(
        (renamed.name.as_str(), renamed.runner_group_id),
        ("lxd-1", group)
    );
    let patch = w.fake.requests_to(Endpoint::UpdateScaleSet);
    assert_eq!(patch[0].body, r#"{"name":"lxd-1"}"#, "a partial body");
    w.client.delete_scale_set(set.id).unwrap();
    assert_eq!(w.client.scale_set(set.id).unwrap(), None);
    w.client.delete_scale_set(set.id).unwrap();
}

#[test]
fn the_admin_token_is_renewed_when_under_a_minute_is_left() {
    let w = world();
    w.fake.set_admin_token_lifetime(120);
    w.scale_set("a", &[]);
    assert_eq!(w.exchanges(), 1);
    w.advance(59);
    w.client.scale_set_by_name(1, "a").unwrap();
    assert_eq!(w.exchanges(), 1, "61 s left: kept");
    let before = w.client.admin_connection().unwrap().token;
    w.advance(2);
    w.client.scale_set_by_name(1, "a").unwrap();
    assert_eq!(w.exchanges(), 2, "59 s left: the whole chain again");
    assert_eq!(w.fake.requests_to(Endpoint::RegistrationToken).len(), 2);
    let after = w.client.admin_connection().unwrap().token;
    assert_ne!(before, after);
    let last = w
        .fake
        .requests_to(Endpoint::GetScaleSetByName)
        .pop()
        .unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {}", after.expose()).as_str())
    );
}

#[test]
fn an_admin_token_the_service_rejects_is_replaced_once() {
    let w = world();
    w.scale_set("a", &[]);
    w.fake.with_state(|st| st.admin_tokens.clear());
    assert!(w.client.scale_set_by_name(1, "a").unwrap().is_some());
    assert_eq!(w.exchanges(), 2);
    let unauthorized = Fault::Status {
        status: 401,
        type_name: "x".into(),
        message: "no".into(),
    };
    w.fake.inject(Endpoint::GetScaleSetByName, unauthorized, 2);
    let err = w.client.scale_set_by_name(1, "a").unwrap_err();
    assert!(
        matches!(err, ScaleSetError::AdminUnauthorized { .. }),
        "{err:?}"
    );
    assert_eq!(w.exchanges(), 3, "one fresh chain, then the error");
}

#[test]
fn a_second_session_conflicts_until_the_first_is_deleted_or_stale() {
    let w = world();
    let first = w.session("lxd");
    let id = first.scale_set_id;
    assert_eq!(first.owner_name, "github-runner-0");
    let conflict = w.client.create_session(id, "other").unwrap_err();
    assert!(
        matches!(&conflict, ScaleSetError::SessionConflict { scale_set_id, .. } if *scale_set_id == id),
        "{conflict:?}"
    );
    assert!(
        conflict.to_string().contains("waiting and retrying"),
        "{conflict}"
    );
    w.client.delete_session(&first).unwrap();
    w.client.delete_session(&first).unwrap(); // 400 SessionExpired: done already
    let second = w.client.create_session(id, "github-runner-0").unwrap();
    assert_ne!(second.session_id, first.session_id);
    w.fake.set_stale_session_after(Some(300));
    assert!(matches!(
        w.client.create_session(id, "x"),
        Err(ScaleSetError::SessionConflict { .. })
    ));
    w.advance(300);
    let third = w.client.create_session(id, "github-runner-0").unwrap();
    assert_eq!(w.fake.sessions().len(), 1);
    assert_eq!(w.fake.sessions()[0].id, third.session_id);
}

#[test]
fn the_long_poll_returns_as_soon_as_a_job_is_assigned() {
    let w = world();
    let set = w.scale_set("lxd", &["jammy"]);
    let session = w.client.create_session(set.id, "github-runner-0").unwrap();
    assert_eq!(session.statistics.total_assigned_jobs, 0);
    std::thread::scope(|s| {
        let poll = s.spawn(|| w.client.get_message(&session, 0, 3));
        assert!(
            w.fake.wait_until(WAIT, |st| st.polls_waiting == 1),
            "the poll is held"
        );
        let job = w.fake.enqueue_job(&["LXD", "jammy"]);
        let message = poll.join().unwrap().unwrap().expect("a message");
        assert_eq!(assigned_ids(&message.jobs), [job]);
        assert_eq!(message.statistics.total_assigned_jobs, 1);
        assert_eq!(message.message_type, "RunnerScaleSetJobMessages");
    });
    let poll = &w.fake.requests_to(Endpoint::GetMessage)[0];
    assert_eq!(poll.header("x-scalesetmaxcapacity"), Some("3"));
    assert_eq!(
        poll.header("accept"),
        Some("application/json; api-version=6.0-preview")
    );
    assert_eq!(
        poll.header("authorization"),
        Some(format!("Bearer {}", session.message_queue_token.expose()).as_str())
    );
    assert_eq!(poll.query_param("lastMessageId"), None, "omitted while 0");
    assert_eq!(
        poll.query_param("sessionId").as_deref(),
        Some(session.session_id.as_str())
    );
    assert_eq!(poll.query_param("api-version"), None);
}

#[test]
fn an_idle_poll_or_an_empty_200_is_no_message() {
    let w = world();
    let session = w.session("lxd");
    w.fake.set_poll_timeout(Duration::from_millis(50));
    assert!(w.client.get_message(&session, 0, 1).unwrap().is_none());
    w.fake.inject(Endpoint::GetMessage, Fault::EmptyOk, 1);
    assert!(w.client.get_message(&session, 0, 1).unwrap().is_none());
}

#[test]
fn an_unacked_message_comes_again_an_acked_one_never() {
    let w = world();
    let session = w.session("lxd");
    let id = session.scale_set_id;
    w.fake.set_poll_timeout(Duration::from_millis(50));
    let job = w.fake.enqueue_job(&["lxd"]);
    let first = w.client.get_message(&session, 0, 5).unwrap().unwrap();
    let again = w.client.get_message(&session, 0, 5).unwrap().unwrap();
    assert_eq!(
        (again.id, assigned_ids(&again.jobs)),
        (first.id, vec![job.clone()]),
        "redelivered"
    );
    assert!(
        w.client
            .get_message(&session, first.id, 5)
            .unwrap()
            .is_none(),
        "past lastMessageId"
    );
    assert_eq!(w.fake.unacked(id), [first.id]);
    w.client.delete_message(&session, first.id).unwrap();
    assert!(w.fake.unacked(id).is_empty());
    let ack = &w.fake.requests_to(Endpoint::DeleteMessage)[0];
    assert_eq!(
        ack.path,
        format!("/_broker/scalesets/{id}/message/{}", first.id)
    );
    assert_eq!(
        ack.query_param("sessionId").as_deref(),
        Some(session.session_id.as_str())
    );
    assert!(
        w.client.get_message(&session, 0, 5).unwrap().is_none(),
        "acked: never again"
    );
    w.fake.enqueue_job(&["lxd"]);
    let next = w
        .client
        .get_message(&session, first.id, 5)
        .unwrap()
        .unwrap();
    assert!(next.id > first.id);
}

#[test]
fn the_capacity_header_bounds_the_jobs_assigned() {
    let w = world();
    let session = w.session("lxd");
    let (a, b) = (w.fake.enqueue_job(&["lxd"]), w.fake.enqueue_job(&["lxd"]));
    let m = w.client.get_message(&session, 0, 1).unwrap().unwrap();
    assert_eq!(m.statistics.total_assigned_jobs, 1, "{m:?}");
    assert_eq!(w.fake.job(&b).unwrap().state, JobState::Queued);
    assert_eq!(
        w.fake.job(&a).unwrap().state,
        JobState::Assigned(session.scale_set_id)
    );
}

#[test]
fn an_expired_queue_token_is_its_own_error_and_a_refresh_cures_it() {
    let w = world();
    w.fake.set_queue_token_lifetime(60);
    w.fake.set_poll_timeout(Duration::from_millis(50));
    let session = w.session("lxd");
    w.advance(61);
    let err = w.client.get_message(&session, 0, 1).unwrap_err();
    assert!(
        matches!(err, ScaleSetError::MessageQueueTokenExpired { .. }),
        "{err:?}"
    );
    assert!(matches!(
        w.client.delete_message(&session, 1),
        Err(ScaleSetError::MessageQueueTokenExpired { .. })
    ));
    assert!(matches!(
        w.client.acquire_jobs(&session, &[1]),
        Err(ScaleSetError::MessageQueueTokenExpired { .. })
    ));
    let refreshed = w.client.refresh_session(&session).unwrap();
    assert_eq!(refreshed.session_id, session.session_id);
    assert_ne!(refreshed.message_queue_token, session.message_queue_token);
    assert!(w.client.get_message(&refreshed, 0, 1).unwrap().is_none());
    w.fake.evict_sessions(session.scale_set_id);
    assert!(matches!(
        w.client.get_message(&refreshed, 0, 1),
        Err(ScaleSetError::SessionNotFound { .. })
    ));
    assert!(matches!(
        w.client.refresh_session(&refreshed),
        Err(ScaleSetError::SessionNotFound { .. })
    ));
}

#[test]
fn a_scale_set_github_deleted_is_its_own_error() {
    let w = world();
    let set = w.scale_set("lxd", &[]);
    w.fake.vanish_scale_set(set.id);
    let err = w.client.create_session(set.id, "o").unwrap_err();
    assert!(
        matches!(err, ScaleSetError::ScaleSetNotFound { scale_set_id, .. } if scale_set_id == set.id),
        "{err:?}"
    );
    assert_eq!(w.client.scale_set(set.id).unwrap(), None);
    assert!(matches!(
        w.client.generate_jit_config(set.id, "r", ""),
        Err(ScaleSetError::ScaleSetNotFound { .. })
    ));
}

#[test]
fn ghes_jobs_are_acquired_with_the_queue_token_before_assignment() {
    let w = world();
    w.fake.set_ghes_mode(true);
    w.fake.set_poll_timeout(Duration::from_millis(50));
    let session = w.session("lxd");
    let job = w.fake.enqueue_job(&["lxd"]);
    let offer = w.client.get_message(&session, 0, 2).unwrap().unwrap();
    let JobMessage::Available(info) = &offer.jobs[0] else {
        panic!("{offer:?}")
    };
    assert_eq!(offer.statistics.total_available_jobs, 1);
    assert_eq!(info.job_id, job);
    assert_eq!(
        w.client
            .acquire_jobs(&session, &[info.runner_request_id, 999])
            .unwrap(),
        [info.runner_request_id]
    );
    let acquire = &w.fake.requests_to(Endpoint::AcquireJobs)[0];
    assert_eq!(
        acquire.header("authorization"),
        Some(format!("Bearer {}", session.message_queue_token.expose()).as_str())
    );
    assert_eq!(acquire.body, format!("[{},999]", info.runner_request_id));
    w.client.delete_message(&session, offer.id).unwrap();
    let assigned = w
        .client
        .get_message(&session, offer.id, 2)
        .unwrap()
        .unwrap();
    assert_eq!(assigned_ids(&assigned.jobs), [job]);
    assert_eq!(assigned.statistics.total_assigned_jobs, 1);
    assert!(w.client.acquire_jobs(&session, &[]).unwrap().is_empty());
    assert_eq!(
        w.fake.requests_to(Endpoint::AcquireJobs).len(),
        1,
        "nothing to acquire, no call"
    );
}

#[test]
fn jit_runners_take_jobs_and_are_removed() {
    let w = world();
    w.fake.set_poll_timeout(Duration::from_millis(50));
    w.fake.set_zero_runner_request_ids(true);
    let session = w.session("lxd");
    let id = session.scale_set_id;
    let jit = w
        .client
        .generate_jit_config(id, "github-runner-0-0123456789ab", "_work")
        .unwrap();
    assert_eq!(
        (jit.runner.name.as_str(), jit.runner.runner_scale_set_id),
        ("github-runner-0-0123456789ab", id)
    );
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        jit.encoded_jit_config.expose(),
    )
    .unwrap();
    let config: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&decoded).unwrap();
    assert!(config.values().all(|v| v.is_string()));
    assert!(!format!("{jit:?}").contains(jit.encoded_jit_config.expose()));
    let dup = w
        .client
        .generate_jit_config(id, "github-runner-0-0123456789ab", "_work")
        .unwrap_err();
    assert!(matches!(dup, ScaleSetError::RunnerExists { .. }), "{dup:?}");
    assert_eq!(
        w.client
            .runner_by_name("github-runner-0-0123456789ab")
            .unwrap()
            .map(|r| r.id),
        Some(jit.runner.id)
    );
    assert_eq!(w.client.list_runners().unwrap().len(), 1);

    let job = w.fake.enqueue_job(&["lxd"]);
    let m1 = w.client.get_message(&session, 0, 1).unwrap().unwrap();
    let JobMessage::Assigned(info) = &m1.jobs[0] else {
        panic!("{m1:?}")
    };
    assert_eq!(
        (info.runner_request_id, info.job_id.as_str()),
        (0, job.as_str()),
        "jobId is the identity"
    );
    assert_eq!(
        w.fake.runner_starts_job("github-runner-0-0123456789ab"),
        Some(job.clone())
    );
    let m2 = w.client.get_message(&session, m1.id, 1).unwrap().unwrap();
    assert!(
        matches!(&m2.jobs[0], JobMessage::Started { runner_id, runner_name, .. }
        if *runner_id == jit.runner.id && runner_name == "github-runner-0-0123456789ab"),
        "{m2:?}"
    );
    assert_eq!(
        (
            m2.statistics.total_busy_runners,
            m2.statistics.total_running_jobs
        ),
        (1, 1)
    );
    assert_eq!(
        w.client.remove_runner(jit.runner.id).unwrap(),
        DeleteOutcome::Busy
    );
    assert!(w.fake.complete_job(&job, "succeeded"));
    let m3 = w.client.get_message(&session, m2.id, 1).unwrap().unwrap();
    assert!(
        matches!(&m3.jobs[0], JobMessage::Completed { result, .. } if result == "succeeded"),
        "{m3:?}"
    );
    assert_eq!(m3.statistics.total_assigned_jobs, 0);
    assert_eq!(
        w.client.runner(jit.runner.id).unwrap(),
        None,
        "the ephemeral runner left"
    );
    assert_eq!(
        w.client.remove_runner(jit.runner.id).unwrap(),
        DeleteOutcome::Deleted,
        "204 when gone too"
    );
}

#[test]
fn a_cancelled_assignment_arrives_as_a_completion_without_a_runner() {
    let w = world();
    w.fake.set_poll_timeout(Duration::from_millis(50));
    let session = w.session("lxd");
    assert!(
        w.client.get_message(&session, 0, 4).unwrap().is_none(),
        "capacity announced"
    );
    let job = w.fake.enqueue_job(&["lxd"]);
    assert!(w.fake.cancel_assignment(&job));
    let m = w.client.get_message(&session, 0, 4).unwrap().unwrap();
    let kinds: Vec<&str> = m
        .jobs
        .iter()
        .map(|j| match j {
            JobMessage::Assigned(_) => "assigned",
            JobMessage::Completed {
                result,
                runner_name,
                ..
            } if result == "canceled" && runner_name.is_empty() => "canceled",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        ["assigned", "canceled", "assigned"],
        "assigned again after the cancel"
    );
}

#[test]
fn a_bom_and_keys_in_any_case_are_read() {
    for case in [KeyCase::Upper, KeyCase::Pascal] {
        let w = world();
        w.fake.set_bom(true);
        w.fake.set_key_case(case);
        w.fake.set_poll_timeout(Duration::from_millis(50));
        let group = w.fake.add_runner_group("ci");
        assert_eq!(w.client.runner_group_id("ci").unwrap(), group, "{case:?}");
        let set = w.scale_set("lxd", &["jammy"]);
        assert_eq!(
            (set.name.as_str(), set.labels.len()),
            ("lxd", 2),
            "{case:?}"
        );
        let session = w.client.create_session(set.id, "o").unwrap();
        assert!(!session.message_queue_token.is_empty());
        let job = w.fake.enqueue_job(&["jammy"]);
        let m = w.client.get_message(&session, 0, 2).unwrap().unwrap();
        assert_eq!(assigned_ids(&m.jobs), [job], "{case:?}");
        assert_eq!(m.statistics.total_assigned_jobs, 1);
        let jit = w.client.generate_jit_config(set.id, "r-1", "").unwrap();
        assert!(!jit.encoded_jit_config.is_empty() && jit.runner.id > 0);
        assert_eq!(
            w.client.runner_by_name("r-1").unwrap().map(|r| r.id),
            Some(jit.runner.id)
        );
    }
}

#[test]
fn transient_failures_are_retried_and_no_secret_reaches_an_error() {
    let w = world();
    let server_error = Fault::Text {
        status: 503,
        text: "busy".into(),
    };
    w.fake
        .inject(Endpoint::CreateScaleSet, server_error.clone(), 2);
    w.fake.inject(
        Endpoint::CreateScaleSet,
        Fault::TooManyRequests {
            retry_after_secs: 7,
        },
        1,
    );
    let set = w.scale_set("lxd", &[]);
    assert_eq!(w.fake.requests_to(Endpoint::CreateScaleSet).len(), 4);
    assert!(
        w.clock.sleeps().contains(&Duration::from_secs(7)),
        "{:?}",
        w.clock.sleeps()
    );
    w.fake.inject(
        Endpoint::RunnerRegistration,
        Fault::Status {
            status: 401,
            type_name: String::new(),
            message: "not yet".into(),
        },
        1,
    );
    w.fake.with_state(|st| st.admin_tokens.clear());
    w.client.scale_set(set.id).unwrap();
    assert_eq!(w.exchanges(), 3, "a 401 on the exchange is retried");
    w.fake.inject(Endpoint::GetScaleSet, server_error, 5);
    let err = w.client.scale_set(set.id).unwrap_err();
    assert!(
        matches!(err, ScaleSetError::Server { status: 503, .. }),
        "{err:?}"
    );
    w.fake
        .inject(Endpoint::CreateSession, Fault::EmptyQueueUrl, 1);
    let empty = w.client.create_session(set.id, "o").unwrap_err();
    assert!(
        empty.to_string().contains("no message queue URL"),
        "{empty}"
    );
    let session = w.client.create_session(set.id, "o").unwrap();
    let conflict = w.client.create_session(set.id, "o").unwrap_err();
    let admin = w.client.admin_connection().unwrap().token;
    let issued = w.fake.with_state(|st| st.registration_tokens.clone());
    let mut secrets = vec![
        w.fake.pat(),
        admin.expose().to_string(),
        session.message_queue_token.expose().to_string(),
    ];
    secrets.extend(issued);
    let shown = [
        format!("{err} {err:?} {empty} {empty:?} {conflict} {conflict:?}"),
        format!(
            "{session:?} {:?} {:?}",
            w.client,
            w.client.admin_connection().unwrap()
        ),
    ];
    for text in shown {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "a secret in {text}");
        }
    }
}
