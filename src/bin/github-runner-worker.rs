//! `github-runner-worker`: the charm's reactive worker mode, one process per worker slot
//! (`github-runner-worker --dir D --logs L --slot N`), started detached by a reconcile.
//!
//! A binary of its own so that the MongoDB and Redis drivers (and the MongoDB driver's async
//! runtime) live only here: the hook binary does not carry them, so a hook's start-up time
//! and memory stay what they were before reactive mode.

use github_runner::reactive::run;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run::main(&args, run::open_broker);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
