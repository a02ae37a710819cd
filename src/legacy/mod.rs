//! The Python github-runner charm this charm replaces in place (`juju refresh`): what of it
//! is still on the machine, and how it goes without killing a job. Pure; the effects are in
//! `charm::act::legacy`.
//!
//! - [`recognise`]: its runners, strictly (`<app>-<unit>-<24 lowercase hex>` of this unit,
//!   no key of this charm on the instance; registrations of exactly those names).
//! - [`drain`]: which of them to deregister and delete now, which to leave to their job.
//! - [`cleanup`]: what it left on the host, removed once no old runner needs it.

pub mod cleanup;
pub mod drain;
pub mod recognise;

pub use drain::{plan_drain, DrainPlan};
pub use recognise::{is_old_runner, is_old_runner_name};
