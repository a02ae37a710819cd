//! `github-runner-worker`: the charm's long-running processes, started detached by a
//! reconcile: a reactive worker per worker slot (`github-runner-worker --dir D --logs L
//! --slot N`), or the unit's scale-set listener (`github-runner-worker --scale-set ...`).
//!
//! A binary of its own so that the MongoDB and Redis drivers (and the MongoDB driver's async
//! runtime) live only here: the hook binary does not carry them, so a hook's start-up time
//! and memory stay what they were before reactive mode.

use github_runner::reactive::run;
use github_runner::scaleset::process::LISTENER_FLAG;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = if args.iter().any(|a| a == LISTENER_FLAG) {
        github_runner::scaleset::run::main(&args)
    } else {
        run::main(&args, run::open_broker)
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
