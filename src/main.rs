//! `github-runner-charm`: the binary Juju runs (through `dispatch`) for every hook and action.
//!
//! Thin shell: read the environment, pick the event, run its handler, exit 0 or 1.

use github_runner::charm::{self, Context};
use github_runner::juju::context::{HookContext, HookEnv};
use github_runner::juju::event::Event;
use github_runner::juju::log;
use github_runner::juju::process::ProcessHookTools;
use github_runner::observability::server;
use github_runner::paths::HostPaths;
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

/// When set (Juju never sets it), print one JSON line of timing to stdout, which Juju logs
/// at DEBUG: total time in main and time spent waiting on hook tools. For benchmarks.
const TIMING_ENV: &str = "GITHUB_RUNNER_HOOK_TIMING";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(server::SUBCOMMAND) {
        return metrics_exporter(&args[1..]);
    }
    let started = Instant::now();
    let env = HookEnv::from_process();
    let vars = env.to_map();
    let hook = match HookContext::from_vars(&vars) {
        Ok(hook) => hook,
        Err(e) => {
            eprintln!("github-runner-charm: {e}");
            return ExitCode::FAILURE;
        }
    };
    let tools = Arc::new(ProcessHookTools::new(env));
    log::install(tools.clone(), hook.debug);

    // Old Juju runs hooks/<name> without JUJU_DISPATCH_PATH: the name we were invoked by.
    let dispatch_path = hook
        .dispatch_path
        .clone()
        .or_else(|| std::env::args().next())
        .unwrap_or_default();
    let event = Event::from_dispatch_path(&dispatch_path);
    // Every host path and systemd unit name of this unit is its own (units may share a machine).
    let paths = HostPaths::from_env().with_unit(&hook.identity.unit_name());
    let ctx = Context {
        tools: tools.as_ref(),
        hook: &hook,
        paths: &paths,
    };
    let code = match charm::dispatch(&ctx, &event) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{event} failed: {e}");
            ExitCode::FAILURE
        }
    };

    if vars.get(TIMING_ENV).is_some_and(|v| !v.is_empty()) {
        let tool_time = tools.tool_time();
        let line = serde_json::json!({
            "hook_timing": {
                "event": event.name(),
                "total_us": started.elapsed().as_micros() as u64,
                "tool_us": tool_time.total.as_micros() as u64,
                "tool_calls": tool_time.calls,
            }
        });
        // Diagnostics only: a closed stdout must not change the hook's result.
        let _ = writeln!(std::io::stdout(), "{line}");
    }
    code
}

/// `github-runner-charm metrics-exporter --listen ADDR --unit app/N`: the exporter service
/// (not a hook).
fn metrics_exporter(args: &[String]) -> ExitCode {
    let parsed = match server::parse_args(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("github-runner-charm: {e}");
            return ExitCode::from(2);
        }
    };
    let mut paths = HostPaths::from_env();
    if let Some(unit) = &parsed.unit {
        paths = paths.with_unit(unit);
    }
    match server::serve(parsed.listen, &paths) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("github-runner-charm: {e}");
            ExitCode::FAILURE
        }
    }
}
