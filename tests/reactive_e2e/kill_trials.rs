//! At-least-once under SIGKILL (issue 10, item 4): the charm's own detached workers, started
//! through `dispatch`, consume a real redis-server fed by the real kombu producer and create
//! runners on the real LXD daemon against the fake GitHub. Twenty times, a worker is killed
//! at a random point of handling a job: right after the put (leasing, claiming, looking the
//! job up, registering, launching), while its runner is being created, while the runner is
//! online waiting for the job, or while the runner runs it. The timer's reconcile runs after
//! each kill, as it would. In the end every job is served (no message lost), each by one
//! runner, at most one runner more than jobs per kill was ever registered, and no runner,
//! registration or message is left.
//!
//! The seed is printed; `CRASH_SEED=<n>` replays one, `CRASH_SWEEP=1` draws a new one. In
//! the `reactive_e2e` binary, so it runs beside the other end-to-end test.

use crate::charm_env::{kill_process, seed_from_env, wait_for, CharmEnv, SeededRng, REPO};
use crate::claim_files::{claim_of, runner_jobs};
use crate::fake_github::{Endpoint, FakeGitHub};
use crate::kombu;
use crate::redis_server::RedisServer;
use crate::{body, QUEUE};
use github_runner::paths::HostPaths;
use github_runner::reactive::mode::unit_dirs;
use github_runner::reactive::workers::{survey, LiveWorker, UnitDirs};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WORKERS: u32 = 3;
const TRIALS: usize = 20;
/// Time for one phase to show up (a container's creation on a loaded CI machine).
const PHASE_WITHIN: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum KillPoint {
    /// A random delay after the put, whatever the worker is doing then.
    AfterPut,
    /// Its runner is named in the claim but not online yet.
    Creating,
    /// Its runner is online, GitHub has not handed it the job yet.
    WaitingForPickup,
    /// Its runner runs the job.
    Running,
}

const KILL_POINTS: [KillPoint; 4] = [
    KillPoint::AfterPut,
    KillPoint::Creating,
    KillPoint::WaitingForPickup,
    KillPoint::Running,
];

fn live(dirs: &UnitDirs) -> Vec<LiveWorker> {
    survey(dirs)
        .into_iter()
        .filter(|w| w.status.pid != 0)
        .collect()
}

fn pid_of_slot(dirs: &UnitDirs, slot: u32) -> Option<u32> {
    live(dirs)
        .into_iter()
        .find(|w| w.slot == slot)
        .map(|w| w.status.pid)
}

/// GitHub's scheduler for the test's jobs: a queued job goes to the idle online runner its
/// worker spawned for it (read from the claims), unless the test holds the job back.
fn schedule(gh: &FakeGitHub, claims: &Path, held_back: &Mutex<BTreeSet<u64>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let mut pairs = Vec::new();
        gh.wait_until(Duration::from_millis(200), |snap| {
            let mapping = runner_jobs(claims);
            let held_back = held_back.lock().unwrap();
            pairs = snap
                .runners
                .iter()
                .filter(|r| r.online && r.job_id.is_none())
                .filter_map(|r| mapping.get(&r.name).map(|j| (*j, r.name.clone())))
                .filter(|(j, _)| !held_back.contains(j))
                .filter(|(j, _)| {
                    snap.jobs
                        .iter()
                        .any(|job| job.id == *j && job.status == "queued")
                })
                .filter(|(j, _)| !snap.runners.iter().any(|r| r.job_id == Some(*j)))
                .collect();
            !pairs.is_empty()
        });
        for (job, runner) in pairs {
            gh.dispatch_job(job, &runner);
        }
    }
}

/// Keys holding messages: the queue, leases, delayed (requeued) ones. Left out: kombu's own
/// exchange bindings and the registrations of workers blocked waiting for a message.
fn message_keys(uri: &str) -> Vec<String> {
    let client = redis::Client::open(uri).expect("redis uri");
    let mut con = client.get_connection().expect("connect to redis");
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).expect("KEYS");
    keys.into_iter()
        .filter(|k| !k.starts_with("_kombu") && !k.starts_with("github-runner.claims."))
        .collect()
}

#[test]
fn sigkilled_workers_lose_no_job_and_leave_at_most_one_surplus_runner_per_kill() {
    let seed = seed_from_env();
    eprintln!("kill trials: seed {seed} (CRASH_SEED={seed} replays it)");
    let mut rng = SeededRng::new(seed);
    let redis = RedisServer::start();
    let mut env = CharmEnv::new(WORKERS);
    env.set_config("mq-uri", redis.uri());
    env.deploy();
    let dirs = unit_dirs(&HostPaths::new(&env.h.host_root), &env.unit);
    let claims = dirs.claims_dir();
    assert!(
        wait_for(Duration::from_secs(30), || live(&dirs).len()
            == WORKERS as usize),
        "{WORKERS} workers"
    );

    let stop = AtomicBool::new(false);
    let held_back = Mutex::new(BTreeSet::new());
    let mut jobs = Vec::new();
    let mut hit: BTreeMap<KillPoint, usize> = BTreeMap::new();
    std::thread::scope(|s| {
        s.spawn(|| schedule(&env.gh, &claims, &held_back, &stop));
        for trial in 0..TRIALS {
            let point = KILL_POINTS[(rng.next_u64() % KILL_POINTS.len() as u64) as usize];
            let job = env.gh.add_job(REPO, &[]);
            jobs.push(job);
            if point == KillPoint::WaitingForPickup {
                held_back.lock().unwrap().insert(job);
            }
            if point == KillPoint::Running {
                env.gh.update_job(job, |j| j.held = true);
            }
            kombu::put(&redis.uri(), QUEUE, &[&body(&env.gh, job, &[])]);

            // Find the worker at the chosen point.
            let runner_of = || claim_of(&claims, job).and_then(|(_, r)| r);
            let reached = match point {
                KillPoint::AfterPut => {
                    std::thread::sleep(rng.duration_up_to(Duration::from_millis(1500)));
                    true
                }
                KillPoint::Creating => wait_for(PHASE_WITHIN, || runner_of().is_some()),
                KillPoint::WaitingForPickup => wait_for(PHASE_WITHIN, || {
                    runner_of().is_some_and(|r| env.online().contains(&r))
                }),
                KillPoint::Running => wait_for(PHASE_WITHIN, || {
                    env.gh.job(job).is_some_and(|j| j.status == "in_progress")
                }),
            };
            assert!(reached, "trial {trial}: job {job} never reached {point:?}");
            // The job's holder, else a busy worker, else any: all are points of handling.
            let workers = live(&dirs);
            let victim = claim_of(&claims, job)
                .and_then(|(slot, _)| pid_of_slot(&dirs, slot))
                .or_else(|| workers.iter().find(|w| w.status.busy).map(|w| w.status.pid))
                .or_else(|| workers.first().map(|w| w.status.pid))
                .expect("a live worker to kill");
            kill_process(victim);
            *hit.entry(point).or_default() += 1;
            held_back.lock().unwrap().remove(&job);
            env.gh.update_job(job, |j| j.held = false);
            // The timer's reconcile: replaces the worker, removes what no live worker holds.
            env.h.dispatch_path("reconcile-runners").assert_ok();
        }

        // Then only the timer: reconcile until every job is served and nothing is left.
        let deadline = Instant::now() + Duration::from_secs(300);
        let done = loop {
            let served = jobs
                .iter()
                .all(|j| env.gh.job(*j).is_some_and(|j| j.status == "completed"));
            let clean = served
                && env.instances().is_empty()
                && env.registrations().is_empty()
                && message_keys(&redis.uri()).is_empty();
            if clean || Instant::now() >= deadline {
                break clean;
            }
            env.h.dispatch_path("reconcile-runners").assert_ok();
            // The timer's interval, shortened: leases run out meanwhile.
            std::thread::sleep(Duration::from_secs(1));
        };
        stop.store(true, Ordering::SeqCst);
        let unserved: Vec<_> = jobs
            .iter()
            .filter_map(|j| env.gh.job(*j))
            .filter(|j| j.status != "completed")
            .map(|j| (j.id, j.status))
            .collect();
        assert!(
            done,
            "not converged: unserved {unserved:?}, instances {:?}, registrations {:?}, \
             redis {:?}",
            env.instances(),
            env.registrations(),
            message_keys(&redis.uri())
        );
    });

    // Each job ran on exactly one runner, one of this unit's.
    for job in &jobs {
        let j = env.gh.job(*job).unwrap();
        let runner = j.runner_name.expect("served by a runner");
        assert!(env.unit.owns_name(&runner), "job {job} ran on {runner}");
    }
    let registered = env.gh.count(Endpoint::GenerateJitConfig);
    eprintln!(
        "kill trials: {} jobs, {TRIALS} kills {hit:?}, {registered} runners registered",
        jobs.len()
    );
    assert!(
        registered <= jobs.len() + TRIALS,
        "{registered} runners for {} jobs and {TRIALS} kills",
        jobs.len()
    );
    assert_eq!(
        live(&dirs).len(),
        WORKERS as usize,
        "every killed worker replaced"
    );
    env.h.hook("stop").assert_ok();
    assert!(live(&dirs).is_empty());
}
