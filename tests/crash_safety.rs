//! Crash safety (issue 5, item 8): SIGKILL the charm at random points of a reconcile from
//! zero and of a flush, then check the next reconcile converges to exactly the desired count
//! with no orphan instance and no orphan registration.
//!
//! The kill hits the dispatch process's whole group (the charm and the `lxc` clients it
//! runs), as a machine crash or Juju killing the hook would; LXD may still finish an
//! operation a killed client started, so each trial waits for the project's operations to
//! end before the recovering reconcile. Kill points are uniform over the measured length of
//! an uninterrupted run, drawn from a seeded RNG; the seed is printed, and `CRASH_SEED=<n>`
//! replays a run.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use charm_env::{kill_group, seed_from_env, wait_for, CharmEnv, SeededRng, ONLINE_WITHIN};
use std::time::{Duration, Instant};

/// Small, so 20+ trials stay within a few minutes.
const DESIRED: u32 = 2;
const RECONCILE_TRIALS: usize = 12;
const FLUSH_TRIALS: usize = 8;
/// How long an instance the killed run had started to remove may take to disappear.
const SETTLE: Duration = Duration::from_secs(30);

/// Start `dispatch_path`, SIGKILL its process group after `delay`; true when the run had
/// already finished by itself.
fn kill_after(env: &CharmEnv, dispatch_path: &str, delay: Duration) -> bool {
    let mut child = env.spawn_dispatch(dispatch_path);
    std::thread::sleep(delay);
    let finished = matches!(child.try_wait(), Ok(Some(_)));
    kill_group(child.id());
    let _ = child.wait();
    finished
}

/// After a crash: let LXD finish what the killed clients started, reconcile once, and check
/// the fleet is exactly `DESIRED` runners, each an instance with its registration. A runner
/// whose registration the killed run had deleted may still be powering itself off during
/// the recovering reconcile: allow it [`SETTLE`] to disappear, no more.
#[track_caller]
fn converge(env: &mut CharmEnv, what: &str) {
    env.wait_lxd_quiet();
    let run = env.reconcile();
    assert_eq!(
        run.code, 0,
        "{what}: the recovering reconcile failed: {run:#?}"
    );
    let settled = wait_for(SETTLE, || {
        let instances = env.instances();
        instances.len() == DESIRED as usize && instances == env.registrations()
    });
    let instances = env.instances();
    let registrations = env.registrations();
    assert!(
        settled,
        "{what}: after the recovering reconcile, want {DESIRED} runners each with its \
         registration; instances {instances:?}, registrations {registrations:?}, status {:?}",
        env.status()
    );
}

/// Wall time of one uninterrupted run of `dispatch_path`.
fn measure(env: &mut CharmEnv, dispatch_path: &str) -> Duration {
    let started = Instant::now();
    let run = if let Some(action) = dispatch_path.strip_prefix("actions/") {
        env.h.action(action)
    } else {
        env.h.dispatch_path(dispatch_path)
    };
    run.assert_ok();
    started.elapsed()
}

fn back_to_zero(env: &CharmEnv) {
    env.wipe_runners();
    assert!(
        env.wait_instances(Duration::from_secs(60), |names| names.is_empty()),
        "instances left after wiping: {:?}",
        env.instances()
    );
}

#[test]
fn sigkill_during_a_reconcile_from_zero_then_reconcile_converges() {
    let seed = seed_from_env();
    eprintln!("crash_safety reconcile: seed {seed} (replay with CRASH_SEED={seed})");
    let mut rng = SeededRng::new(seed);
    let mut env = CharmEnv::new(DESIRED);
    env.deploy();
    back_to_zero(&env);
    let window = measure(&mut env, "reconcile-runners");
    env.assert_runners(DESIRED as usize);
    eprintln!("an uninterrupted reconcile from zero takes {window:?}");

    for trial in 0..RECONCILE_TRIALS {
        back_to_zero(&env);
        let delay = rng.duration_up_to(window);
        let finished = kill_after(&env, "reconcile-runners", delay);
        eprintln!("trial {trial}: killed after {delay:?} (already finished: {finished})");
        converge(
            &mut env,
            &format!("seed {seed}, reconcile trial {trial}, killed after {delay:?}"),
        );
    }
}

#[test]
fn sigkill_during_a_flush_then_reconcile_converges() {
    let seed = seed_from_env() ^ 0xF1u64;
    eprintln!(
        "crash_safety flush: seed {seed} (replay with CRASH_SEED={})",
        seed ^ 0xF1
    );
    let mut rng = SeededRng::new(seed);
    let mut env = CharmEnv::new(DESIRED);
    env.deploy();
    env.wait_online(DESIRED as usize);
    let window = measure(&mut env, "actions/flush-runners");
    env.assert_runners(DESIRED as usize);
    eprintln!("an uninterrupted flush-runners takes {window:?}");

    for trial in 0..FLUSH_TRIALS {
        // Flush online runners when they get there; a runner still starting is flushed too.
        let online = env.gh.wait_until(ONLINE_WITHIN, |s| {
            s.runners.len() == DESIRED as usize && s.runners.iter().all(|r| r.online)
        });
        let delay = rng.duration_up_to(window);
        let finished = kill_after(&env, "actions/flush-runners", delay);
        eprintln!(
            "trial {trial}: killed after {delay:?} (all online before: {online}, already finished: {finished})"
        );
        converge(
            &mut env,
            &format!("seed {seed}, flush trial {trial}, killed after {delay:?}"),
        );
    }
}
