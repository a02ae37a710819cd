//! One runner = one ephemeral LXD instance + one GitHub JIT registration: create, check, remove.
//!
//! Pure planning (profiles, storage, guards, rendered files) is separate from the few
//! functions that act through [`crate::lxd::Lxd`] and [`crate::github::GitHub`]:
//! [`create_runner`], [`check_health`], [`remove_runner`], [`ensure_image`].

pub mod create;
pub mod files;
pub mod guards;
pub mod health;
pub mod image;
pub mod remove;
pub mod resources;
pub mod storage;

pub use create::{
    create_runner, CreateError, CreateRequest, CreateStep, CreateTimeouts, CreatedRunner,
    CreationPhases, JitSource,
};
pub use files::RunnerEnvironment;
pub use health::{check_health, Health};
pub use image::ensure_image;
pub use remove::{remove_runner, RemoveError, RemoveOutcome};

/// Uid and gid of the `ubuntu` user that runs the runner inside an instance.
pub const RUNNER_UID: u32 = 1000;
