//! GitHub's runner scale set protocol: the Actions service a scale-set listener talks to.
//! The listener process of scale-set mode (`run`) is built on top of [`ScaleSetClient`].
//!
//! - `urls` (pure): the config URL, the REST base (`/api/v3` on GHES), service URLs.
//! - `auth`: credential -> registration token (REST, [`crate::github::GitHub`]) ->
//!   `runner-registration` -> service URL + admin token, refreshed lazily before expiry.
//! - `transport`: one HTTP exchange with bounded retries (5xx, 429, connection errors).
//! - `wire` (pure): BOM stripping, key-case folding, the JSON shapes; `messages` (pure): job
//!   messages decoded without ever losing a batch.
//! - `client` (settings, call shapes, groups, scale sets), `runners` (JIT, registrations)
//!   and `session` (sessions, long poll, ack, acquire).
//! - `scaling` (pure): how many runners, which to create or remove.
//! - `process`: what the charm and the listener process share (argv, folders, settings,
//!   the published snapshot).
//! - `api`: the listener's edges (`ScaleSetApi` over the client, `ListenerRunners`);
//!   `listener_state` (pure): its decisions; `repair` (pure): the leftovers it removes;
//!   `listener`: its loop.
//! - `lxd_runners`: the runner side over the charm's runner engine; `run`: the listener
//!   process (`github-runner-worker --scale-set`).
//!
//! The service is undocumented; its clients (GitHub's Go `actions/scaleset`, ARC, GARM)
//! are the reference. Go decodes JSON keys case-insensitively, so the casing the service
//! answers with is unproven: every answer is decoded with its keys folded to lowercase.

pub mod api;
mod auth;
mod client;
mod error;
pub mod ledger;
pub mod listener;
pub mod listener_state;
pub mod lxd_runners;
#[cfg(any(test, feature = "testkit"))]
pub mod memory_runners;
mod messages;
pub mod process;
pub mod repair;
pub mod run;
mod runners;
pub mod scaling;
mod session;
mod transport;
mod urls;
mod wire;

pub use auth::{AdminConnection, RegistrationTokens};
pub use client::{ScaleSetClient, ScaleSetSettings};
pub use error::ScaleSetError;
pub use messages::{JobInfo, JobMessage, ScaleSetMessage};
pub use urls::{ConfigUrl, RegistrationScope};
pub use wire::{
    Label, NewScaleSet, ScaleSet, ScaleSetJitConfig, ScaleSetRunner, ScaleSetUpdate, Session,
    Statistics,
};

/// Runner group id the service gives the default group; nobody looks it up.
pub const DEFAULT_RUNNER_GROUP_ID: u64 = 1;
