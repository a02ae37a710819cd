//! github-runner charm library: the runner manager and the traits at its edges.
//!
//! See ARCHITECTURE.md for the module map and data flow.

pub mod charm;
pub mod clock;
pub mod config;
pub mod credential;
pub mod github;
pub mod host;
pub mod identity;
pub mod juju;
pub mod legacy;
pub mod lxd;
pub mod manager;
pub mod messages;
pub mod naming;
pub mod network;
pub mod observability;
pub mod paths;
pub mod reactive;
pub mod runner;
pub mod scaleset;
pub mod secret;

/// Tests write scripts and run them; this places them without the ETXTBSY race.
#[cfg(test)]
#[path = "../tests/support/executable.rs"]
mod test_executable;
