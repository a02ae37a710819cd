//! Hook wall time through `dispatch` with the fake hook tools, and how much of it is the
//! charm's own code.
//!
//! `cargo bench --features testkit --bench hooks` (release build, 50 runs per row). Under
//! `cargo test` (no `--bench` argument) it makes a 3-run smoke pass instead.
//! `HOOKS_BENCH_BASELINE=<charm binary>` adds the same rows for another build (e.g. one from
//! before the MongoDB and Redis drivers were linked in: their async runtime runs only in
//! reactive workers, so a hook's wall time and peak memory must not grow).
//!
//! Columns: `wall` is spawn-to-exit of `./dispatch` (sh, exec, the charm, its hook tools);
//! `in main` is what the charm measures from entering main to leaving it; `tools` is the
//! part of that spent waiting on hook-tool processes; `own` = `in main` - `tools`, the
//! charm's own code; `startup` = `wall` - `in main` (sh + exec + dynamic loading); `peak
//! RSS` is the hook process's own (kernel accounting of the reaped process). Medians.

#[path = "../tests/support/executable.rs"]
mod executable;
#[path = "../tests/support/juju_harness/mod.rs"]
mod juju_harness;

use juju_harness::{run_with_deadline, Harness};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const WARMUP: usize = 3;

/// Prepares a harness for one scenario.
type Setup = dyn Fn(&mut Harness);

struct Sample {
    wall: Duration,
    in_main: Duration,
    tools: Duration,
    tool_calls: u64,
    peak_rss_kib: u64,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Run one scenario `runs` times (with `binary`, else this build's) and parse the charm's
/// timing line from each run.
fn measure(
    runs: usize,
    setup: impl Fn(&mut Harness),
    hook: &str,
    binary: Option<&Path>,
) -> Vec<Sample> {
    let mut h = match binary {
        Some(bin) => Harness::with_binary("github-runner/0", bin),
        None => Harness::new(),
    };
    setup(&mut h);
    h.env.insert("GITHUB_RUNNER_HOOK_TIMING".into(), "1".into());
    let mut samples = Vec::new();
    for i in 0..WARMUP + runs {
        let run = h.hook(hook);
        assert_eq!(run.code, 0, "{hook}: {run:#?}");
        let line: serde_json::Value = serde_json::from_str(run.stdout.trim())
            .unwrap_or_else(|e| panic!("{hook}: no timing line ({e}): {run:#?}"));
        let t = &line["hook_timing"];
        let us = |k: &str| Duration::from_micros(t[k].as_u64().expect("microseconds"));
        if i >= WARMUP {
            samples.push(Sample {
                wall: run.elapsed,
                in_main: us("total_us"),
                tools: us("tool_us"),
                tool_calls: t["tool_calls"].as_u64().expect("count"),
                peak_rss_kib: run.peak_rss_kib,
            });
        }
    }
    samples
}

fn floor(runs: usize, mut command: impl FnMut() -> Command) -> Duration {
    let walls: Vec<Duration> = (0..WARMUP + runs)
        .map(|_| {
            let run = run_with_deadline(&mut command());
            assert_eq!(run.code, 0, "{run:#?}");
            run.elapsed
        })
        .skip(WARMUP)
        .collect();
    median(walls)
}

fn row(label: &str, samples: &[Sample]) {
    let wall = median(samples.iter().map(|s| s.wall).collect());
    let in_main = median(samples.iter().map(|s| s.in_main).collect());
    let tools = median(samples.iter().map(|s| s.tools).collect());
    let own = median(
        samples
            .iter()
            .map(|s| s.in_main.saturating_sub(s.tools))
            .collect(),
    );
    let startup = median(
        samples
            .iter()
            .map(|s| s.wall.saturating_sub(s.in_main))
            .collect(),
    );
    let mut rss: Vec<u64> = samples.iter().map(|s| s.peak_rss_kib).collect();
    rss.sort_unstable();
    let calls = samples[0].tool_calls;
    println!(
        "{:<42} {:>9} {:>9} {:>14} {:>9} {:>9} {:>6.1}% {:>5} KiB",
        label,
        ms(wall),
        ms(in_main),
        format!("{} ({calls})", ms(tools)),
        ms(own),
        ms(startup),
        100.0 * own.as_secs_f64() / wall.as_secs_f64(),
        rss[rss.len() / 2]
    );
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let runs = if full { 50 } else { 3 };
    let invalid = |h: &mut Harness| {
        h.set_config("vm-memory", "7XB").set_config("path", "a/b/c");
    };
    let valid = |h: &mut Harness| {
        h.valid_config();
    };
    let reactive = |h: &mut Harness| {
        h.valid_config();
        // Reactive mode on (nothing listens there: update-status never calls the broker).
        h.set_config("mq-uri", "redis://127.0.0.1:9/0");
    };
    let scenarios: [(&str, &str, &Setup); 5] = [
        ("update-status, valid config", "update-status", &valid),
        ("update-status, invalid config", "update-status", &invalid),
        ("config-changed, invalid config", "config-changed", &invalid),
        ("config-changed, valid config", "config-changed", &valid),
        ("update-status, reactive mode", "update-status", &reactive),
    ];
    let baseline: Option<PathBuf> = std::env::var_os("HOOKS_BENCH_BASELINE").map(PathBuf::from);

    println!(
        "hooks through ./dispatch with fake hook tools; median of {runs} runs ({})",
        if full { "release build" } else { "smoke pass" }
    );
    println!(
        "{:<42} {:>9} {:>9} {:>14} {:>9} {:>9} {:>7} {:>9}",
        "hook", "wall", "in main", "tools (calls)", "own", "startup", "own %", "peak RSS"
    );
    let mut builds: Vec<(&str, Option<&Path>)> = vec![("", None)];
    if let Some(b) = baseline.as_deref() {
        builds.push((" [baseline]", Some(b)));
    }
    for (label, hook, setup) in scenarios {
        for (suffix, binary) in &builds {
            // The baseline may predate reactive mode: that row is this build's only.
            if binary.is_some() && label.contains("reactive") {
                continue;
            }
            row(
                &format!("{label}{suffix}"),
                &measure(runs, setup, hook, *binary),
            );
        }
    }

    // Floors: what any process and any hook tool call costs on this machine.
    let h = Harness::new();
    h.write_world();
    let env = h.hook_env("update-status");
    let true_floor = floor(runs, || {
        let mut c = Command::new("/bin/true");
        c.env_clear();
        c
    });
    let tool_floor = floor(runs, || {
        let mut c = Command::new(h.tools_dir.join("is-leader"));
        c.arg("--format=json").env_clear().envs(&env);
        c
    });
    println!("{:<32} {:>9}", "floor: spawn /bin/true", ms(true_floor));
    println!(
        "{:<32} {:>9}",
        "floor: one hook tool (is-leader)",
        ms(tool_floor)
    );
}
