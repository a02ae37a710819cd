//! The ureq GitHub client against the fake GitHub: every endpoint for repo and org paths,
//! pagination at fleet scale, each fault mode with its retry count, GHES base URLs, group
//! resolution, proxies, and tokens that never leak.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{Endpoint, FakeGitHub, Fault};
use github_runner::clock::Clock;
use github_runner::github::calls::ApiCall;
use github_runner::github::proxy::ProxySettings;
use github_runner::github::status::status_for;
use github_runner::github::{
    Arch, ClientSettings, ClientSetupError, DeleteOutcome, GitHub, GitHubClient, GitHubError,
    GitHubPath, JobRef, RunnerOnline,
};
use github_runner::identity::UnitIdentity;
use github_runner::juju::Status;
use github_runner::secret::Secret;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NOW: u64 = 1_700_000_000;

/// Records sleeps instead of sleeping; time stands still at `now`.
#[derive(Default)]
struct FakeClock {
    now: AtomicU64,
    slept: Mutex<Vec<Duration>>,
}

impl FakeClock {
    fn new() -> Arc<FakeClock> {
        let c = FakeClock::default();
        c.now.store(NOW, Ordering::SeqCst);
        Arc::new(c)
    }
    fn sleeps(&self) -> Vec<Duration> {
        self.slept.lock().unwrap().clone()
    }
    fn total(&self) -> Duration {
        self.sleeps().iter().sum()
    }
}

impl Clock for FakeClock {
    fn now_epoch(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
    fn sleep(&self, d: Duration) {
        self.slept.lock().unwrap().push(d);
    }
}

fn identity() -> UnitIdentity {
    UnitIdentity::parse("github-runner/0", "model-uuid").unwrap()
}

fn repo() -> GitHubPath {
    GitHubPath::Repo {
        owner: "canonical".into(),
        repo: "hello".into(),
    }
}

fn org() -> GitHubPath {
    GitHubPath::Org("octo-org".into())
}

fn settings(gh: &FakeGitHub, path: GitHubPath) -> ClientSettings {
    let mut s = gh.client_settings(path, identity());
    s.call_timeout = Duration::from_secs(10);
    s
}

fn client_with(s: ClientSettings) -> (GitHubClient, Arc<FakeClock>) {
    let clock = FakeClock::new();
    let c = GitHubClient::new(s).unwrap().with_clock(clock.clone());
    (c, clock)
}

fn client(gh: &FakeGitHub, path: GitHubPath) -> (GitHubClient, Arc<FakeClock>) {
    client_with(settings(gh, path))
}

fn labels(l: &[&str]) -> Vec<String> {
    l.iter().map(|s| s.to_string()).collect()
}

fn path_str(p: &GitHubPath) -> String {
    p.display()
}

#[test]
fn every_endpoint_works_for_repo_and_org_paths() {
    for path in [repo(), org()] {
        let gh = FakeGitHub::start();
        let (c, clock) = client(&gh, path.clone());
        let scope = path_str(&path);
        assert_eq!(c.list_runners().unwrap(), vec![]);

        let name = identity().new_runner_name().unwrap();
        let wanted = labels(&["github-runner", "jammy", "gpu", "x64"]);
        let jit = c.generate_jit_config(name.as_str(), &wanted).unwrap();
        assert_eq!(jit.runner.name, name.as_str());
        assert_eq!(
            jit.runner.labels, wanted,
            "JIT labels are exactly the set passed"
        );
        assert!(!jit.encoded_jit_config.expose().is_empty());
        let registered = gh.runner(name.as_str()).unwrap();
        assert_eq!(registered.path, scope);
        assert_eq!(registered.labels, wanted);
        assert_eq!(registered.runner_group_id, 1);
        assert!(registered.ephemeral);

        // Other units' and apps' runners are not ours.
        gh.add_runner(&scope, "github-runner-1-abcdef012345", &["x"]);
        gh.add_runner(&scope, "github-runner-0-notours", &["x"]);
        gh.add_runner(&scope, "my-laptop", &["x"]);
        let listed = c.list_runners().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, name.as_str());
        assert_eq!(listed[0].status, RunnerOnline::Offline);
        gh.set_runner_online(name.as_str(), true);
        gh.set_runner_busy(name.as_str(), true);
        let listed = c.list_runners().unwrap();
        assert_eq!(
            (listed[0].status, listed[0].busy),
            (RunnerOnline::Online, true)
        );

        let id = jit.runner.id;
        let got = c.get_runner(id).unwrap().unwrap();
        assert_eq!((got.id, got.name.as_str()), (id, name.as_str()));
        assert_eq!(c.get_runner(999_999).unwrap(), None);

        assert!(!c.registration_token().unwrap().expose().is_empty());
        assert!(!c.remove_token().unwrap().expose().is_empty());

        for arch in [Arch::X64, Arch::Arm64] {
            let app = c.runner_application(arch).unwrap();
            assert_eq!(
                (app.os.as_str(), app.architecture.as_str()),
                ("linux", arch.github_name())
            );
            assert_eq!(app.download_url, gh.download_url(arch.github_name()));
            assert_eq!(app.sha256_checksum, Some(gh.runner_tarball_sha256()));
        }

        assert_eq!(c.delete_runner(id).unwrap(), DeleteOutcome::Busy);
        assert!(gh.runner(name.as_str()).is_some());
        gh.set_runner_busy(name.as_str(), false);
        assert_eq!(c.delete_runner(id).unwrap(), DeleteOutcome::Deleted);
        assert!(gh.runner(name.as_str()).is_none());
        assert_eq!(c.delete_runner(id).unwrap(), DeleteOutcome::AlreadyGone);

        // Jobs live in repos, whatever the runner path.
        let job_id = gh.add_job("canonical/hello", &["self-hosted", "gpu"]);
        let by_id = c
            .get_job(&JobRef::Id {
                owner: "canonical".into(),
                repo: "hello".into(),
                job_id,
            })
            .unwrap();
        assert_eq!(by_id.id, job_id);
        assert_eq!(by_id.status, "queued");
        assert_eq!(by_id.labels, labels(&["self-hosted", "gpu"]));
        assert_eq!(by_id.conclusion, None);
        let url = format!(
            "{}/repos/canonical/hello/actions/jobs/{job_id}",
            gh.api_base()
        );
        assert_eq!(c.get_job(&JobRef::ApiUrl(url)).unwrap(), by_id);

        // Headers on every API call.
        let api: Vec<_> = gh
            .requests()
            .into_iter()
            .filter(|r| r.endpoint.is_api())
            .collect();
        assert!(api.len() >= 14);
        for r in &api {
            assert_eq!(
                r.header("accept"),
                Some("application/vnd.github+json"),
                "{r:?}"
            );
            assert_eq!(r.header("x-github-api-version"), Some("2022-11-28"));
            assert_eq!(
                r.header("user-agent"),
                Some(format!("github-runner-charm/{}", env!("CARGO_PKG_VERSION")).as_str())
            );
            assert_eq!(
                r.header("authorization"),
                Some(format!("Bearer {}", gh.token()).as_str())
            );
            assert!(r.path.starts_with("/api/v3/"), "{}", r.path);
        }
        assert!(clock.sleeps().is_empty(), "no retries on a healthy GitHub");
        assert_eq!(c.calls().total() as usize, api.len());
    }
}

#[test]
fn a_fleet_of_250_runners_costs_exactly_three_list_requests() {
    let gh = FakeGitHub::start();
    let me = identity();
    let mut names = std::collections::BTreeSet::new();
    for _ in 0..250 {
        let n = me.new_runner_name().unwrap();
        gh.add_runner("canonical/hello", n.as_str(), &["x"]);
        names.insert(n.0);
    }
    let (c, _) = client(&gh, repo());
    let listed = c.list_runners().unwrap();
    let seen: std::collections::BTreeSet<String> = listed.into_iter().map(|r| r.name).collect();
    assert_eq!(seen, names);
    assert_eq!(gh.count(Endpoint::ListRunners), 3);
    assert_eq!(gh.api_request_count(), 3);
    assert_eq!(c.calls().get(ApiCall::ListRunners), 3);
    let queries: Vec<String> = gh.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        ["per_page=100", "per_page=100&page=2", "per_page=100&page=3"]
    );
}

/// 5 registrations of another unit, then 145 of ours: 2 pages. `delete` (while page 2 is
/// held back) and `add` change the scope between the pages; returns our names and the
/// listing.
fn list_while_page_two_waits(
    delete_other: bool,
    add_other: bool,
) -> (FakeGitHub, std::collections::BTreeSet<String>, Vec<String>) {
    let gh = FakeGitHub::start();
    let other = UnitIdentity::parse("github-runner/1", "model-uuid").unwrap();
    let others: Vec<String> = (0..5).map(|_| other.new_runner_name().unwrap().0).collect();
    for n in &others {
        gh.add_runner("canonical/hello", n, &["x"]);
    }
    let mut ours = std::collections::BTreeSet::new();
    for _ in 0..145 {
        let n = identity().new_runner_name().unwrap();
        gh.add_runner("canonical/hello", n.as_str(), &["x"]);
        ours.insert(n.0);
    }
    let (c, _) = client(&gh, repo());
    let listed = std::thread::scope(|scope| {
        let held = gh.hold_page(Endpoint::ListRunners, 2);
        let listing = scope.spawn(|| c.list_runners().unwrap());
        assert!(
            held.wait_held(Duration::from_secs(30)),
            "page 2 never asked for"
        );
        if delete_other {
            assert!(gh.remove_runner(&others[2]));
        }
        if add_other {
            gh.add_runner(
                "canonical/hello",
                &other.new_runner_name().unwrap().0,
                &["x"],
            );
        }
        held.release();
        listing.join().unwrap()
    });
    let names = listed.into_iter().map(|r| r.name).collect();
    (gh, ours, names)
}

#[test]
fn a_registration_deleted_between_pages_does_not_hide_a_live_one() {
    // GitHub drops the deleted entry and every later one moves one place back: the first
    // entry of page 2 is now the last of page 1, already read. The count moved (150 -> 149),
    // so the client lists again.
    let (gh, ours, listed) = list_while_page_two_waits(true, false);
    let listed_set: std::collections::BTreeSet<String> = listed.iter().cloned().collect();
    assert_eq!(listed.len(), listed_set.len(), "a runner listed twice");
    let missing: Vec<&String> = ours.difference(&listed_set).collect();
    assert!(
        missing.is_empty(),
        "live registrations missing from the listing: {missing:?}"
    );
    assert_eq!(listed_set, ours);
    let queries: Vec<String> = gh.requests().into_iter().map(|r| r.query).collect();
    assert_eq!(
        queries,
        [
            "per_page=100",
            "per_page=100&page=2",
            "per_page=100",
            "per_page=100&page=2"
        ]
    );
}

#[test]
fn a_deletion_and_an_addition_between_pages_hide_a_runner_that_get_runner_still_finds() {
    // The count is the same on both pages, so the listing cannot tell; this is why the
    // manager confirms a runner a listing lacks with GET …/runners/{id} before removing it.
    let (gh, ours, listed) = list_while_page_two_waits(true, true);
    let listed: std::collections::BTreeSet<String> = listed.into_iter().collect();
    let missed: Vec<&String> = ours.difference(&listed).collect();
    assert_eq!(missed.len(), 1, "{missed:?}");
    let (c, _) = client(&gh, repo());
    let id = gh.runner(missed[0]).unwrap().id;
    assert_eq!(
        c.get_runner(id).unwrap().map(|r| r.name),
        Some(missed[0].clone())
    );
    assert!(
        c.get_runner(999_999).unwrap().is_none(),
        "404 reads as gone"
    );
}

#[test]
fn the_jobs_of_a_run_come_from_every_page_and_only_from_that_run() {
    let gh = FakeGitHub::start();
    let (run, ids) = gh.add_run("canonical/hello", 150);
    gh.add_run("canonical/hello", 3); // another run of the same repo
    let (c, _) = client(&gh, org());
    let jobs = c.list_run_jobs("canonical/hello", run).unwrap();
    let listed: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(listed, ids);
    assert!(jobs.iter().all(|j| j.run_id == run && j.status == "queued"));
    assert_eq!(gh.count(Endpoint::ListRunJobs), 2);
    assert_eq!(c.calls().get(ApiCall::ListRunJobs), 2);
    let paths: Vec<String> = gh.requests().into_iter().map(|r| r.path).collect();
    assert!(
        paths
            .iter()
            .all(|p| p.ends_with(&format!("/repos/canonical/hello/actions/runs/{run}/jobs"))),
        "{paths:?}"
    );

    // The repo comes from inside a runner: anything but owner/repo never becomes a request.
    for bad in [
        "canonical",
        "a/b/c",
        "../x",
        "a/..",
        "o/r?x=1",
        "o/r#f",
        "",
        "/r",
    ] {
        let err = c.list_run_jobs(bad, run).unwrap_err();
        assert!(matches!(err, GitHubError::Protocol { .. }), "{bad}: {err}");
    }
    assert_eq!(gh.api_request_count(), 2);
}

#[test]
fn a_steady_state_listing_is_one_request_and_nothing_else() {
    let gh = FakeGitHub::start();
    for _ in 0..40 {
        gh.add_runner(
            "octo-org",
            identity().new_runner_name().unwrap().as_str(),
            &["x"],
        );
    }
    let (c, _) = client(&gh, org());
    assert_eq!(c.list_runners().unwrap().len(), 40);
    assert_eq!(gh.api_request_count(), 1);
    assert_eq!(c.calls().snapshot().to_string(), "list-runners=1");
}

#[test]
fn server_errors_are_retried_three_times_with_backoff() {
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());
    gh.fail_next(2, 502);
    assert_eq!(c.list_runners().unwrap(), vec![]);
    assert_eq!(gh.count(Endpoint::ListRunners), 3);
    let sleeps = clock.sleeps();
    assert_eq!(sleeps.len(), 2);
    assert!(sleeps[0] >= Duration::from_millis(500) && sleeps[0] < Duration::from_secs(1));
    assert!(sleeps[1] >= Duration::from_secs(1) && sleeps[1] < Duration::from_secs(2));

    gh.clear_requests();
    gh.inject_always(Fault::ServerError(503), None);
    let err = c.registration_token().unwrap_err();
    assert!(
        matches!(&err, GitHubError::Server { status: 503, method, path }
            if method == "POST" && path == "/api/v3/repos/canonical/hello/actions/runners/registration-token"),
        "{err:?}"
    );
    assert_eq!(
        gh.count(Endpoint::RegistrationToken),
        4,
        "1 attempt + 3 retries"
    );
    assert_eq!(clock.sleeps().len(), 5);
    assert!(matches!(status_for(&err), Status::Maintenance(_)));
}

#[test]
fn slow_answers_time_out_and_are_retried() {
    let gh = FakeGitHub::start();
    let mut s = settings(&gh, repo());
    s.call_timeout = Duration::from_millis(300);
    let (c, clock) = client_with(s);
    gh.slow_next(1, Duration::from_secs(3));
    assert_eq!(c.list_runners().unwrap(), vec![]);
    assert_eq!(gh.count(Endpoint::ListRunners), 2);
    assert_eq!(clock.sleeps().len(), 1);

    gh.inject_always(
        Fault::Slow(Duration::from_secs(3)),
        Some(Endpoint::ListRunners),
    );
    let err = c.list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::Transport { .. }), "{err:?}");
    assert_eq!(gh.count(Endpoint::ListRunners), 6);
    assert_eq!(clock.sleeps().len(), 4);
}

#[test]
fn connection_errors_are_retried_then_reported() {
    // A port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = ClientSettings::new(
        format!("http://127.0.0.1:{port}/api/v3"),
        repo(),
        Secret::new("ghp_unused"),
        "default",
        identity(),
    );
    s.proxy = ProxySettings::default();
    let (c, clock) = client_with(s);
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(&err, GitHubError::Transport { method, path, .. } if method == "GET" && path == "/api/v3/repos/canonical/hello/actions/runners"),
        "{err:?}"
    );
    assert_eq!(clock.sleeps().len(), 3);
    assert_eq!(c.calls().get(ApiCall::ListRunners), 4);
}

#[test]
fn primary_exhaustion_is_not_retried_and_reports_the_reset() {
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());
    let reset = NOW + 1234;
    gh.exhaust_primary(reset);
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { reset_epoch, .. } if reset_epoch == reset),
        "{err:?}"
    );
    assert_eq!(gh.api_request_count(), 1);
    assert!(clock.sleeps().is_empty());
    // 1700001234 is 22:33:54 UTC.
    assert_eq!(
        status_for(&err),
        Status::Maintenance("GitHub rate limit reached, retrying after 22:33 UTC".into())
    );
    gh.clear_faults();
    assert!(c.list_runners().is_ok());
}

#[test]
fn a_spent_primary_budget_answers_403_with_nothing_remaining_and_is_not_retried() {
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());
    let reset = fake_github::now_epoch() + 1800;
    gh.set_rate_budget(2, reset);
    assert!(c.list_runners().is_ok());
    assert!(c.list_runners().is_ok());
    assert_eq!(gh.rate_remaining(), 0);
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { reset_epoch, .. } if reset_epoch == reset),
        "{err:?}"
    );
    assert_eq!(
        gh.count(Endpoint::ListRunners),
        3,
        "a spent budget is not retried"
    );
    assert!(clock.sleeps().is_empty());
}

#[test]
fn a_secondary_limit_with_nothing_remaining_waits_for_the_primary_reset() {
    // GitHub: no retry-after and x-ratelimit-remaining 0 means wait until x-ratelimit-reset,
    // not the minute a secondary limit otherwise asks for.
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());
    let reset = fake_github::now_epoch() + 2400;
    gh.set_rate_budget(1, reset);
    assert!(c.list_runners().is_ok());
    gh.inject(
        Fault::SecondaryRateLimit {
            status: 403,
            retry_after: None,
        },
        1,
    );
    let err = c.remove_token().unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { reset_epoch, .. } if reset_epoch == reset),
        "{err:?}"
    );
    assert_eq!(gh.count(Endpoint::RemoveToken), 1);
    assert!(clock.sleeps().is_empty());
}

#[test]
fn secondary_limits_honour_retry_after_within_the_hook_budget() {
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());
    gh.secondary_limit_next(1, Some(5));
    assert!(c.list_runners().is_ok());
    assert_eq!(gh.count(Endpoint::ListRunners), 2);
    assert_eq!(clock.sleeps(), [Duration::from_secs(5)]);

    // Over the budget in one go: no wait, rate-limited until retry-after passes.
    gh.secondary_limit_next(1, Some(61));
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { reset_epoch, .. } if reset_epoch == NOW + 61),
        "{err:?}"
    );
    assert_eq!(gh.count(Endpoint::ListRunners), 3);

    // No retry-after: a minute at least, more than a hook waits.
    gh.secondary_limit_next(1, None);
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(err, GitHubError::RateLimited { reset_epoch, .. } if reset_epoch == NOW + 60),
        "{err:?}"
    );
    assert_eq!(gh.count(Endpoint::ListRunners), 4);

    // 5 s slept already; 25 + 25 fits in 60, a third 25 does not.
    gh.secondary_limit_next(3, Some(25));
    let err = c.list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::RateLimited { .. }), "{err:?}");
    assert_eq!(gh.count(Endpoint::ListRunners), 7);
    assert_eq!(clock.total(), Duration::from_secs(55));
    // The budget is per client (per hook): any later wait over 5 s is refused at once.
    gh.clear_faults();
    gh.inject(
        Fault::SecondaryRateLimit {
            status: 403,
            retry_after: Some(6),
        },
        1,
    );
    assert!(matches!(
        c.remove_token(),
        Err(GitHubError::RateLimited { .. })
    ));
    assert_eq!(gh.count(Endpoint::RemoveToken), 1);
    assert!(clock.total() <= Duration::from_secs(60));
    assert_eq!(c.slept(), clock.total());
}

#[test]
fn client_errors_are_never_retried() {
    let gh = FakeGitHub::start();
    let (c, clock) = client(&gh, repo());

    // 401: a wrong token.
    let mut s = settings(&gh, repo());
    s.credential = std::sync::Arc::new(
        github_runner::credential::provider::CredentialProvider::token(Secret::new(
            "ghp_wrongwrongwrong",
        )),
    );
    let (bad, _) = client_with(s);
    let err = bad.list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::Unauthorized { .. }), "{err:?}");
    assert!(matches!(status_for(&err), Status::Blocked(m) if m.contains("token")));
    assert_eq!(gh.api_request_count(), 1);

    // 403 without rate-limit markers: a permission error naming what is missing.
    gh.inject(
        Fault::Forbidden {
            accepted_permissions: Some("administration=write".into()),
        },
        1,
    );
    let err = c.list_runners().unwrap_err();
    match &err {
        GitHubError::Forbidden { needed, .. } => {
            assert!(needed.contains("`repo` scope"), "{needed}");
            assert!(needed.contains("administration=write"), "{needed}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(status_for(&err), Status::Blocked(_)));
    let (org_client, _) = client(&gh, org());
    gh.inject(
        Fault::Forbidden {
            accepted_permissions: None,
        },
        1,
    );
    match org_client.list_runners().unwrap_err() {
        GitHubError::Forbidden { needed, .. } => assert!(needed.contains("admin:org"), "{needed}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(gh.api_request_count(), 3);

    // 404: a wrong path.
    gh.set_path_missing("canonical/hello");
    let err = c.list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::NotFound { .. }), "{err:?}");
    assert!(matches!(status_for(&err), Status::Blocked(m) if m.contains("check `path`")));
    assert_eq!(gh.api_request_count(), 4);

    // 409: a duplicate JIT name.
    let name = identity().new_runner_name().unwrap();
    c.generate_jit_config(name.as_str(), &labels(&["a"])).ok();
    let (c2, _) = client(&gh, org());
    c2.generate_jit_config(name.as_str(), &labels(&["a"]))
        .unwrap();
    let before = gh.count(Endpoint::GenerateJitConfig);
    let err = c2
        .generate_jit_config(name.as_str(), &labels(&["a"]))
        .unwrap_err();
    assert!(matches!(err, GitHubError::Conflict { .. }), "{err:?}");
    assert_eq!(gh.count(Endpoint::GenerateJitConfig), before + 1);

    // 422: deleting a busy runner is Busy, once.
    let id = gh.runner(name.as_str()).unwrap().id;
    gh.set_runner_busy(name.as_str(), true);
    assert_eq!(c2.delete_runner(id).unwrap(), DeleteOutcome::Busy);
    assert_eq!(gh.count(Endpoint::DeleteRunner), 1);
    // 422 on JIT (no labels) is an error, not retried.
    let before = gh.count(Endpoint::GenerateJitConfig);
    let err = c2
        .generate_jit_config(identity().new_runner_name().unwrap().as_str(), &[])
        .unwrap_err();
    assert!(matches!(err, GitHubError::Unprocessable { .. }), "{err:?}");
    assert_eq!(gh.count(Endpoint::GenerateJitConfig), before + 1);
    assert!(clock.sleeps().is_empty());
}

#[test]
fn ghes_base_urls_are_used_as_given() {
    let gh = FakeGitHub::start();
    // A trailing slash changes nothing.
    let mut s = settings(&gh, org());
    s.api_base_url = format!("{}/", gh.api_base());
    let (c, _) = client_with(s);
    c.list_runners().unwrap();
    assert_eq!(
        gh.requests()[0].path,
        "/api/v3/orgs/octo-org/actions/runners"
    );
    // The github-url itself is not the API base on GHES: GitHub answers 404.
    let mut s = settings(&gh, org());
    s.api_base_url = gh.url();
    let (c, _) = client_with(s);
    assert!(matches!(
        c.list_runners(),
        Err(GitHubError::NotFound { .. })
    ));
    assert_eq!(gh.requests()[1].path, "/orgs/octo-org/actions/runners");
}

#[test]
fn insecure_or_odd_api_urls_are_refused_up_front() {
    let mk = |url: &str| {
        let mut s = ClientSettings::new(url, repo(), Secret::new("t"), "default", identity());
        s.proxy = ProxySettings::default();
        GitHubClient::new(s)
    };
    assert!(matches!(
        mk("http://github.example.com/api/v3"),
        Err(ClientSetupError::InsecureUrl { .. })
    ));
    assert!(matches!(
        mk("ftp://github.example.com"),
        Err(ClientSetupError::BadUrl { .. })
    ));
    assert!(matches!(
        mk("not a url"),
        Err(ClientSetupError::BadUrl { .. })
    ));
    assert!(matches!(
        mk("https://user:pw@github.example.com"),
        Err(ClientSetupError::BadUrl { .. })
    ));
    assert!(mk("https://api.github.com").is_ok());
    assert!(mk("http://127.0.0.1:1/api/v3").is_ok());
    assert!(mk("http://localhost:1/api/v3").is_ok());
}

#[test]
fn org_groups_resolve_by_name_once_per_client() {
    let gh = FakeGitHub::start();
    for i in 0..120 {
        gh.add_runner_group("octo-org", &format!("filler-{i}"));
    }
    let gpu = gh.add_runner_group("octo-org", "GPU-Runners");
    let mut s = settings(&gh, org());
    s.group = "gpu-runners".into();
    let (c, _) = client_with(s);
    for _ in 0..2 {
        let name = identity().new_runner_name().unwrap();
        c.generate_jit_config(name.as_str(), &labels(&["x"]))
            .unwrap();
        assert_eq!(gh.runner(name.as_str()).unwrap().runner_group_id, gpu);
    }
    // 122 groups at 100 a page: 2 requests, once for both registrations.
    assert_eq!(gh.count(Endpoint::ListRunnerGroups), 2);
    assert_eq!(c.calls().get(ApiCall::ListRunnerGroups), 2);

    // The config default "default" is GitHub's "Default" (id 1).
    let (c, _) = client(&gh, org());
    let name = identity().new_runner_name().unwrap();
    c.generate_jit_config(name.as_str(), &labels(&["x"]))
        .unwrap();
    assert_eq!(gh.runner(name.as_str()).unwrap().runner_group_id, 1);

    // A missing group is a Blocked-worthy error naming it; nothing gets registered.
    let mut s = settings(&gh, org());
    s.group = "no-such-group".into();
    let (c, _) = client_with(s);
    let before = gh.runners().len();
    let err = c
        .generate_jit_config("github-runner-0-abcdefabcdef", &labels(&["x"]))
        .unwrap_err();
    assert!(
        matches!(&err, GitHubError::GroupNotFound { org, group } if org == "octo-org" && group == "no-such-group"),
        "{err:?}"
    );
    assert!(matches!(status_for(&err), Status::Blocked(m) if m.contains("no-such-group")));
    assert_eq!(gh.runners().len(), before);

    // Repos never list groups: group 1.
    let mut s = settings(&gh, repo());
    s.group = "no-such-group".into();
    let (c, _) = client_with(s);
    let before = gh.count(Endpoint::ListRunnerGroups);
    c.generate_jit_config(
        identity().new_runner_name().unwrap().as_str(),
        &labels(&["x"]),
    )
    .unwrap();
    assert_eq!(gh.count(Endpoint::ListRunnerGroups), before);
}

#[test]
fn job_urls_on_other_servers_are_refused_without_a_request() {
    let gh = FakeGitHub::start();
    let elsewhere = FakeGitHub::start();
    let (c, _) = client(&gh, repo());
    for url in [
        format!("{}/repos/o/r/actions/jobs/1", elsewhere.api_base()),
        format!("{}/repos/o/r/actions/runs/1", gh.api_base()),
        format!("{}/repos/o/r/actions/jobs/x", gh.api_base()),
        format!("{}/api/v4/repos/o/r/actions/jobs/1", gh.url()),
        "not a url".to_string(),
    ] {
        let err = c.get_job(&JobRef::ApiUrl(url.clone())).unwrap_err();
        assert!(
            matches!(err, GitHubError::Protocol { .. }),
            "{url}: {err:?}"
        );
    }
    assert!(elsewhere.requests().is_empty());
    assert_eq!(gh.api_request_count(), 0);
}

/// A one-route server for answers the fake never gives (hostile links, sparse JSON).
fn serve_once(
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
) -> (String, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/api/v3",
        server.server_addr().to_ip().unwrap().port()
    );
    let t = std::thread::spawn(move || {
        if let Ok(Some(req)) = server.recv_timeout(Duration::from_secs(10)) {
            let mut resp = tiny_http::Response::from_string(body).with_status_code(status);
            for (n, v) in headers {
                resp.add_header(tiny_http::Header::from_bytes(n.as_bytes(), v.as_bytes()).unwrap());
            }
            let _ = req.respond(resp);
        }
    });
    (url, t)
}

#[test]
fn pagination_links_to_other_servers_are_not_followed() {
    let elsewhere = FakeGitHub::start();
    let next = format!(
        "{}/repos/canonical/hello/actions/runners?page=2",
        elsewhere.api_base()
    );
    let (base, t) = serve_once(
        200,
        vec![("Link".into(), format!("<{next}>; rel=\"next\""))],
        r#"{"total_count": 200, "runners": []}"#.into(),
    );
    let mut s = ClientSettings::new(base, repo(), Secret::new("ghp_mine"), "default", identity());
    s.proxy = ProxySettings::default();
    let (c, _) = client_with(s);
    let err = c.list_runners().unwrap_err();
    assert!(
        matches!(&err, GitHubError::Protocol { reason, .. } if reason.contains("another server")),
        "{err:?}"
    );
    t.join().unwrap();
    assert!(elsewhere.requests().is_empty(), "the token went elsewhere");
}

#[test]
fn sparse_and_unknown_fields_parse_tolerantly() {
    let body = r#"{"total_count": 2, "extra": {"x": 1}, "runners": [
        {"id": 7, "name": "github-runner-0-aaaaaaaaaaaa", "os": "linux", "status": "online", "busy": false,
         "labels": [{"name": "x", "future": true}], "version": null, "ephemeral": null, "runner_group_id": null,
         "brand_new_field": [1, 2]},
        {"id": 8, "name": "github-runner-0-bbbbbbbbbbbb", "status": "weird-new-status"}
    ]}"#;
    let (base, t) = serve_once(200, vec![], body.into());
    let mut s = ClientSettings::new(base, repo(), Secret::new("ghp_mine"), "default", identity());
    s.proxy = ProxySettings::default();
    let (c, _) = client_with(s);
    let runners = c.list_runners().unwrap();
    t.join().unwrap();
    assert_eq!(runners.len(), 2);
    assert_eq!(
        (runners[0].status, runners[0].labels.clone()),
        (RunnerOnline::Online, labels(&["x"]))
    );
    assert_eq!(
        (runners[1].status, runners[1].busy),
        (RunnerOnline::Offline, false)
    );
}

#[test]
fn a_garbled_answer_is_a_protocol_error() {
    let (base, t) = serve_once(200, vec![], "<html>proxy login</html>".into());
    let mut s = ClientSettings::new(base, repo(), Secret::new("ghp_mine"), "default", identity());
    s.proxy = ProxySettings::default();
    let (c, clock) = client_with(s);
    let err = c.registration_token().unwrap_err();
    t.join().unwrap();
    assert!(matches!(err, GitHubError::Protocol { .. }), "{err:?}");
    assert!(clock.sleeps().is_empty());
}

/// Records the first line of each connection; answers 502.
fn fake_proxy() -> (String, Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let t = std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let _ = BufReader::new(&stream).read_line(&mut line);
            if line.starts_with("STOP") {
                return;
            }
            log.lock().unwrap().push(line.trim().to_string());
            let _ = stream.write_all(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    (format!("http://{addr}"), seen, t)
}

fn stop_proxy(url: &str, t: std::thread::JoinHandle<()>) {
    let addr = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"STOP\r\n").unwrap();
    t.join().unwrap();
}

#[test]
fn proxies_apply_to_remote_hosts_but_not_to_no_proxy_or_loopback() {
    let (proxy, seen, t) = fake_proxy();
    let gh = FakeGitHub::start();
    let remote = |no_proxy: &str| {
        let mut s = ClientSettings::new(
            "https://ghe.example.invalid/api/v3",
            repo(),
            Secret::new("ghp_mine"),
            "default",
            identity(),
        );
        s.proxy = ProxySettings::from_values(Some(&proxy), Some(&proxy), Some(no_proxy));
        s.call_timeout = Duration::from_secs(5);
        client_with(s).0
    };
    let err = remote("").list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::Transport { .. }), "{err:?}");
    let lines = seen.lock().unwrap().clone();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("CONNECT ghe.example.invalid:443")),
        "{lines:?}"
    );

    // NO_PROXY: straight to the (unresolvable) host, the proxy sees nothing more.
    assert!(remote("example.invalid").list_runners().is_err());
    assert_eq!(seen.lock().unwrap().len(), 4);

    // Loopback always goes direct.
    let mut s = settings(&gh, repo());
    s.proxy = ProxySettings::from_values(Some(&proxy), Some(&proxy), None);
    let (c, _) = client_with(s);
    c.list_runners().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 4);
    assert_eq!(gh.api_request_count(), 1);
    stop_proxy(&proxy, t);
}

// ---- secrets ----

/// Every event, formatted with all its fields.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.push_str(&format!(" {}={value}", field.name()));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut f = Fields(format!(
            "{} {}",
            event.metadata().level(),
            event.metadata().target()
        ));
        event.record(&mut f);
        self.0.lock().unwrap().push(f.0);
    }
}

#[test]
fn the_token_never_reaches_logs_errors_debug_output_or_argv() {
    use tracing_subscriber::layer::SubscriberExt;
    let gh = FakeGitHub::start();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let token = gh.token();
    let mut seen_text: Vec<String> = Vec::new();
    let mut secrets = vec![token.clone()];
    tracing::subscriber::with_default(subscriber, || {
        for path in [repo(), org()] {
            let mut s = settings(&gh, path.clone());
            s.proxy =
                ProxySettings::from_values(Some("http://user:proxypw@127.0.0.1:9"), None, None);
            seen_text.push(format!("{s:?}"));
            let (c, _) = client_with(s);
            seen_text.push(format!("{c:?}"));
            let name = identity().new_runner_name().unwrap();
            let jit = c
                .generate_jit_config(name.as_str(), &labels(&["x"]))
                .unwrap();
            secrets.push(jit.encoded_jit_config.expose().to_string());
            seen_text.push(format!("{jit:?}"));
            let reg = c.registration_token().unwrap();
            let rem = c.remove_token().unwrap();
            seen_text.push(format!("{reg:?} {reg} {rem:?} {rem}"));
            secrets.push(reg.expose().to_string());
            secrets.push(rem.expose().to_string());
            c.list_runners().unwrap();
            // Every error kind, Display and Debug.
            gh.fail_next(4, 500);
            let mut errors = vec![c.list_runners().unwrap_err()];
            gh.exhaust_primary(NOW);
            errors.push(c.list_runners().unwrap_err());
            gh.clear_faults();
            gh.inject(
                Fault::Forbidden {
                    accepted_permissions: Some("x".into()),
                },
                1,
            );
            errors.push(c.list_runners().unwrap_err());
            errors.push(
                c.generate_jit_config(name.as_str(), &labels(&["x"]))
                    .unwrap_err(),
            );
            errors.push(
                c.generate_jit_config("github-runner-0-000000000000", &[])
                    .unwrap_err(),
            );
            errors.push(
                c.get_job(&JobRef::ApiUrl(format!("http://evil.example/?t={token}")))
                    .unwrap_err(),
            );
            gh.revoke_token(&token);
            errors.push(c.list_runners().unwrap_err());
            gh.add_token(&token);
            for e in &errors {
                seen_text.push(format!("{e} {e:?} {:?}", status_for(e)));
            }
        }
        // A client that cannot connect at all.
        let mut s = settings(&gh, repo());
        s.api_base_url = "http://127.0.0.1:9/api/v3".into();
        let (c, _) = client_with(s);
        let e = c.list_runners().unwrap_err();
        seen_text.push(format!("{e} {e:?}"));
    });
    let logs = capture.0.lock().unwrap().clone();
    assert!(
        logs.iter().any(|l| l.contains("GitHub API call")),
        "nothing captured: {logs:?}"
    );
    let argv = std::fs::read("/proc/self/cmdline").unwrap();
    let argv = String::from_utf8_lossy(&argv).to_string();
    for secret in &secrets {
        assert!(secret.len() >= 8, "{secret}");
        for line in logs
            .iter()
            .chain(seen_text.iter())
            .chain(std::iter::once(&argv))
        {
            assert!(!line.contains(secret.as_str()), "secret leaked: {line}");
        }
    }
    for line in logs.iter().chain(seen_text.iter()) {
        assert!(!line.contains("proxypw"), "proxy password leaked: {line}");
    }
}
