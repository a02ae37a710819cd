//! Crash safety (issue 5, item 8): SIGKILL the charm at random points of a reconcile from
//! zero and of a flush, then check the next reconcile converges to exactly the desired count
//! with no orphan instance and no orphan registration.
//!
//! Trials alternate between killing the dispatch process alone (the `lxc` clients it
//! started run on, orphaned, to their end) and its whole process group (the charm and its
//! `lxc` clients, as a machine crash would). The first two tests wait, before the recovering
//! reconcile, for the killed run's processes to end and for LXD to finish the operations
//! they started. Production does not wait: the unit lock goes with the killed hook, so the
//! next reconcile may start while the orphans still work. The third test reconciles at once
//! after the kill (it must not fail), then checks convergence once everything settled.
//! Kill points are uniform over the measured length of an uninterrupted run, drawn from a
//! seeded RNG: a fixed seed by default (CI), `CRASH_SWEEP=1` for a random one (printed),
//! `CRASH_SEED=<n>` to replay one.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use charm_env::{
    group_alive, kill_group, kill_process, seed_from_env, wait_for, CharmEnv, SeededRng,
};
use std::time::{Duration, Instant};

/// Small, so 20+ trials stay within a few minutes.
const DESIRED: u32 = 2;
const RECONCILE_TRIALS: usize = 12;
const FLUSH_TRIALS: usize = 8;
/// How long an instance the killed run had started to remove may take to disappear.
const SETTLE: Duration = Duration::from_secs(30);
/// How long a flush trial waits for its runners to be online before flushing anyway.
const ONLINE_SOON: Duration = Duration::from_secs(20);
/// How long the `lxc` clients of a killed hook may run on by themselves.
const ORPHANS_END_WITHIN: Duration = Duration::from_secs(120);
/// Trials of the reconcile-at-once test, per operation killed.
const AT_ONCE_RECONCILE_TRIALS: usize = 4;
const AT_ONCE_FLUSH_TRIALS: usize = 3;

/// When the recovering reconcile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recovery {
    /// Once the killed run's orphans ended and LXD is quiet.
    AfterSettling,
    /// Right after the kill, orphans still running (as production does); convergence is
    /// checked once things settled.
    AtOnce,
}

/// How a run given a kill deadline ended.
#[derive(Debug)]
enum Ending {
    /// SIGKILLed at the deadline.
    Killed,
    /// Finished by itself first, after this long: the kill came too late to test anything.
    Finished(Duration),
}

/// What the SIGKILL hits.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// The hook process and every `lxc` client it runs (a machine or agent crash).
    Group,
    /// The hook process only: the `lxc` clients it started run on to their end, orphaned.
    Process,
}

/// Start `dispatch_path`; SIGKILL `target` when `delay` has passed, unless the run finished
/// first (its exit is waited for, with the deadline as the bound). Returns the ending and the
/// process group, whose orphans may still run.
fn kill_after(
    env: &CharmEnv,
    dispatch_path: &str,
    delay: Duration,
    target: Target,
) -> (Ending, u32) {
    let started = Instant::now();
    let mut child = env.spawn_dispatch(dispatch_path);
    let deadline = started + delay;
    let ending = loop {
        if let Ok(Some(_)) = child.try_wait() {
            break Ending::Finished(started.elapsed());
        }
        let now = Instant::now();
        if now >= deadline {
            break Ending::Killed;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
    };
    let pgid = child.id();
    match target {
        Target::Group => kill_group(pgid),
        Target::Process => kill_process(pgid),
    }
    let _ = child.wait();
    (ending, pgid)
}

/// Wait until nothing of the killed run's process group runs (orphans get
/// [`ORPHANS_END_WITHIN`]).
#[track_caller]
fn wait_orphans(pgid: u32) {
    assert!(
        wait_for(ORPHANS_END_WITHIN, || !group_alive(pgid)),
        "processes of the killed run still alive after {ORPHANS_END_WITHIN:?}"
    );
}

/// Run trials until `kills` of them were killed mid-run: `prepare`, then kill
/// `dispatch_path` at a point uniform over `window`, then recover as `recovery` says and
/// [`converge`]. A run that finished before its kill point still converges, shrinks the
/// window to its duration, and does not count (at most `kills` such misses).
#[allow(clippy::too_many_arguments)]
fn trials(
    env: &mut CharmEnv,
    label: &str,
    seed: u64,
    dispatch_path: &str,
    kills: usize,
    mut window: Duration,
    recovery: Recovery,
    prepare: impl Fn(&CharmEnv),
) {
    let mut rng = SeededRng::new(seed);
    let (mut killed, mut missed) = (0, 0);
    while killed < kills {
        prepare(env);
        let delay = rng.duration_up_to(window);
        // Alternate: the hook alone, then the hook with its children.
        let target = if (killed + missed) % 2 == 0 {
            Target::Process
        } else {
            Target::Group
        };
        let (ending, pgid) = kill_after(env, dispatch_path, delay, target);
        eprintln!(
            "{label} trial {}: kill {target:?} at {delay:?}: {ending:?}",
            killed + missed
        );
        let what = format!(
            "seed {seed}, {label} trial {}, kill {target:?} at {delay:?}",
            killed + missed
        );
        if recovery == Recovery::AtOnce {
            // The killed run's lxc clients and LXD operations may still be at work.
            let run = env.reconcile();
            assert_eq!(
                run.code, 0,
                "{what}: the reconcile right after the kill failed: {run:#?}"
            );
        }
        wait_orphans(pgid);
        converge(env, &what);
        match ending {
            Ending::Killed => killed += 1,
            Ending::Finished(took) => {
                missed += 1;
                assert!(
                    missed <= kills,
                    "{label}: {missed} runs finished before their kill point; window {window:?}"
                );
                window = window.min(took);
            }
        }
    }
    eprintln!("{label}: {killed} runs killed mid-way, {missed} finished before their kill point");
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
    let mut env = CharmEnv::new(DESIRED);
    env.deploy();
    back_to_zero(&env);
    let window = measure(&mut env, "reconcile-runners");
    env.assert_runners(DESIRED as usize);
    eprintln!("an uninterrupted reconcile from zero takes {window:?}");

    trials(
        &mut env,
        "reconcile",
        seed,
        "reconcile-runners",
        RECONCILE_TRIALS,
        window,
        Recovery::AfterSettling,
        back_to_zero,
    );
}

#[test]
fn sigkill_during_a_flush_then_reconcile_converges() {
    let seed = seed_from_env() ^ 0xF1u64;
    eprintln!(
        "crash_safety flush: seed {seed} (replay with CRASH_SEED={})",
        seed ^ 0xF1
    );
    let mut env = CharmEnv::new(DESIRED);
    env.deploy();
    env.wait_online(DESIRED as usize);
    let window = measure(&mut env, "actions/flush-runners");
    env.assert_runners(DESIRED as usize);
    eprintln!("an uninterrupted flush-runners takes {window:?}");

    trials(
        &mut env,
        "flush",
        seed,
        "actions/flush-runners",
        FLUSH_TRIALS,
        window,
        Recovery::AfterSettling,
        wait_online_soon,
    );
}

/// Flush online runners when they get there; a runner a crash left half-started stays
/// offline until its grace period ends, and is flushed as it is.
fn wait_online_soon(env: &CharmEnv) {
    env.gh.wait_until(ONLINE_SOON, |s| {
        s.runners.len() == DESIRED as usize && s.runners.iter().all(|r| r.online)
    });
}

/// As production: the next reconcile starts right after the kill, while the killed run's
/// orphaned `lxc` clients and LXD operations still work. It must not fail, and once
/// everything settled the fleet converges.
#[test]
fn sigkill_then_an_immediate_reconcile_with_orphans_still_running_converges() {
    let seed = seed_from_env() ^ 0xA7u64;
    eprintln!(
        "crash_safety at once: seed {seed} (replay with CRASH_SEED={})",
        seed ^ 0xA7
    );
    let mut env = CharmEnv::new(DESIRED);
    env.deploy();
    back_to_zero(&env);
    let window = measure(&mut env, "reconcile-runners");
    env.assert_runners(DESIRED as usize);
    trials(
        &mut env,
        "reconcile at once",
        seed,
        "reconcile-runners",
        AT_ONCE_RECONCILE_TRIALS,
        window,
        Recovery::AtOnce,
        back_to_zero,
    );

    // A runner the last kill left registered but never started only goes once its start
    // window passed: start the flush trials from a fresh fleet instead.
    back_to_zero(&env);
    env.reconcile().assert_ok();
    env.wait_online(DESIRED as usize);
    let window = measure(&mut env, "actions/flush-runners");
    trials(
        &mut env,
        "flush at once",
        seed ^ 0xF1,
        "actions/flush-runners",
        AT_ONCE_FLUSH_TRIALS,
        window,
        Recovery::AtOnce,
        wait_online_soon,
    );
}
