//! The reactive worker loop (`reactive::worker`) with the real GitHub client against the fake
//! GitHub, over the in-memory queue, without LXD (runners are a double): a job of a private
//! repository the token cannot read is requeued and reported, not dropped as missing (issue
//! 20 item 3); the looks at a waiting job follow the rate-limit budget (item 14).

#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/worker_doubles.rs"]
mod worker_doubles;

use fake_github::{Endpoint, FakeGitHub};
use github_runner::clock::{Clock, ManualClock, SystemClock};
use github_runner::github::{GitHubClient, GitHubPath};
use github_runner::identity::UnitIdentity;
use github_runner::reactive::claim::ClaimDir;
use github_runner::reactive::job::UnitScope;
use github_runner::reactive::memory_queue::MemoryQueue;
use github_runner::reactive::worker::{GitHubJobs, Round, Worker, WorkerEvent, WorkerTimings};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use worker_doubles::{CountedRunners, Recorder};

/// The rate-limit budget a worker paces by is the process's last answer: tests of this
/// binary run one at a time so one's answers do not pace the other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const ORG: &str = "octo";

struct Env {
    gh: FakeGitHub,
    client: GitHubClient,
    queue: MemoryQueue,
    clock: Arc<ManualClock>,
    claims: ClaimDir,
    _tmp: tempfile::TempDir,
}

fn env() -> Env {
    let gh = FakeGitHub::start();
    let identity = UnitIdentity::parse("github-runner/0", "model-uuid").unwrap();
    let client =
        GitHubClient::new(gh.client_settings(GitHubPath::Org(ORG.into()), identity)).unwrap();
    // The worker's clock starts at the wall clock: the fake's rate-limit reset is wall time.
    let clock = Arc::new(ManualClock::at(SystemClock.now_epoch()));
    let tmp = tempfile::tempdir().unwrap();
    Env {
        queue: MemoryQueue::new(clock.clone()),
        claims: ClaimDir::open(tmp.path().join("claims")).unwrap(),
        gh,
        client,
        clock,
        _tmp: tmp,
    }
}

impl Env {
    fn put(&self, repo: &str, job_id: u64) {
        let body = serde_json::json!({
            "labels": [],
            "url": format!("{}/repos/{repo}/actions/jobs/{job_id}", self.gh.api_base()),
            "status": "queued",
        });
        self.queue.put(body.to_string().into_bytes(), 0);
    }

    fn round(&self, report: &Recorder) -> Round {
        let mut queue = self.queue.clone();
        let jobs = GitHubJobs::new(&self.client);
        let runners = CountedRunners::new(|| {});
        let scope = UnitScope {
            api_base_url: self.gh.api_base(),
            path: GitHubPath::Org(ORG.into()),
            labels: vec!["x64".into()],
        };
        let stop = AtomicBool::new(false);
        let timings = WorkerTimings {
            lease_wait: Duration::from_millis(10),
            ..WorkerTimings::default()
        };
        Worker::new(
            &mut queue,
            &jobs,
            &runners,
            &self.claims,
            &scope,
            &*self.clock,
            report,
            &stop,
            0,
            timings,
        )
        .round()
    }
}

#[test]
fn a_job_of_a_repository_the_token_cannot_read_is_requeued_and_reported_not_dropped() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let e = env();
    e.gh.set_repo_private("octo/secret");
    let job = e.gh.add_job("octo/secret", &[]);
    e.put("octo/secret", job);
    let report = Recorder::default();
    assert_eq!(e.round(&report), Round::Handled);
    assert_eq!(e.queue.acked(), 0, "not dropped as a missing job");
    let waiting = e.queue.waiting();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].1, 1, "requeued with its count");
    assert!(waiting[0].2 >= e.clock.now_epoch() + 60, "with a backoff");
    assert_eq!(
        report.last_state().job_access.as_deref(),
        Some("cannot read jobs of octo/secret: the token needs Actions read")
    );
    assert!(report
        .events
        .lock()
        .unwrap()
        .contains(&WorkerEvent::Requeued { process_count: 1 }));

    // A job GitHub really does not know, in a repository the token reads: dropped; the
    // repository is asked about once per worker.
    let before = e.gh.count(Endpoint::GetRepository);
    let jobs = GitHubJobs::new(&e.client);
    for missing in [987_654, 987_655] {
        use github_runner::reactive::job::{JobLookup, JobTarget};
        use github_runner::reactive::worker::JobSource;
        let target = JobTarget {
            owner: "octo".into(),
            repo: "hello".into(),
            job_id: missing,
            labels: vec![],
        };
        assert_eq!(jobs.lookup(&target).0, JobLookup::NotFound);
    }
    assert_eq!(e.gh.count(Endpoint::GetRepository) - before, 1, "cached");
}

/// Looks at one waiting job over the whole pickup bound (the job is never picked), with the
/// budget the fake GitHub reports.
fn looks_while_waiting(remaining: u64) -> usize {
    let e = env();
    e.gh.set_rate_budget(remaining, e.clock.now_epoch() + 3600);
    let job = e.gh.add_job("octo/hello", &[]);
    e.put("octo/hello", job);
    let report = Recorder::default();
    assert_eq!(e.round(&report), Round::Handled);
    assert_eq!(e.queue.waiting()[0].1, 1, "requeued at the bound");
    e.gh.count(Endpoint::GetJob)
}

#[test]
fn looks_at_a_waiting_job_follow_the_remaining_budget() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let bound = WorkerTimings::default().pickup_bound.as_secs() as usize;
    let plentiful = looks_while_waiting(5000);
    let scarce = looks_while_waiting(1000);
    println!(
        "job look-ups over a {bound} s wait: {plentiful} with 5000 left, {scarce} with 1000 left"
    );
    // Plenty left: about one look per 3 s once the runner can be online (10 s).
    assert!(plentiful >= (bound - 10) / 3 - 2, "{plentiful}");
    assert!(plentiful <= bound / 3 + 2, "{plentiful}");
    // 1000 left of 5000, 500 kept in reserve, one waiter: one look per 7.2 s at most
    // (taken at the worker's 3 s steps: every 9 s).
    assert!(scarce <= bound * 10 / 72 + 3, "{scarce}");
    assert!(scarce >= bound / 12, "{scarce}");
}
