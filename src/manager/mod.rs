//! Reconcile and flush: a pure planner over plain data and an executor that applies a plan.
//!
//! - [`planner`]: what to create and remove, from LXD's and GitHub's views (pure).
//! - [`admission`]: how many of the creations the machine and one round can take (pure),
//!   over [`footprint`]: what the instances already on the machine take (pure).
//! - [`executor`]: applies a plan through [`ops::RunnerOps`], a bounded number at a time.
//! - [`reconcile`]: one round, observe -> probe -> plan -> apply.
//! - [`flush`]: the flush modes: idle runners now, busy ones marked, kept or (forced) removed.
//! - [`replacement`]: runners that wait for their job before they go (flushed while busy,
//!   or of a previous scope).
//! - [`status`]: the status line and action results (pure).

pub mod admission;
pub mod executor;
pub mod flush;
pub mod footprint;
pub mod ops;
pub mod planner;
pub mod reconcile;
pub mod replacement;
pub mod status;

#[cfg(test)]
mod fake_fleet;
