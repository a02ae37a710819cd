//! The host as the pipeline reaches it: setup edges, the runtime over LXD and GitHub, the
//! machine's boot time. Production builds the real ones from the hook's environment; tests
//! put fakes in (`fake_world::WorldHost`).

use super::context::Context;
use super::runtime::{Runtime, RuntimeError};
use super::setup::{self, HostEdges, SetupEdges, SetupError, When};
use crate::config::CharmConfig;
use crate::host::boot;
use crate::paths::HostPaths;
use std::cell::OnceCell;

/// Everything effectful the pipeline needs besides the hook tools.
pub trait Host {
    /// Edges usable before a runtime exists (LXD may not be installed yet).
    fn edges(&self) -> &dyn SetupEdges;
    /// Edges sharing `rt`'s LXD client and storage pool.
    fn edges_for<'a>(&'a self, rt: &'a Runtime) -> Box<dyn SetupEdges + 'a>;
    /// The runtime for acting with `config` (LXD client, GitHub client, clock).
    fn runtime(&self, ctx: &Context<'_>, config: CharmConfig) -> Result<Runtime, RuntimeError>;
    /// When the machine booted (epoch seconds), None when unknown.
    fn boot_time_epoch(&self) -> Option<u64>;
    /// Host setup for `rt` (`setup::ensure_host_when` over [`Host::edges_for`]).
    fn ensure_host(&self, ctx: &Context<'_>, rt: &Runtime, when: When) -> Result<(), SetupError> {
        let edges = self.edges_for(rt);
        setup::ensure_host_when(ctx, &rt.config, edges.as_ref(), when)
    }
}

/// Production: edges from the hook's environment, [`Runtime::new`], the kernel's boot time.
/// The edges are built on first use: hooks with nothing to do look up no program.
pub struct ProductionHost {
    paths: HostPaths,
    edges: OnceCell<HostEdges>,
}

impl ProductionHost {
    pub fn new(ctx: &Context<'_>) -> Self {
        ProductionHost {
            paths: ctx.paths.clone(),
            edges: OnceCell::new(),
        }
    }
}

impl Host for ProductionHost {
    fn edges(&self) -> &dyn SetupEdges {
        self.edges.get_or_init(|| HostEdges::from_env(&self.paths))
    }

    fn edges_for<'a>(&'a self, rt: &'a Runtime) -> Box<dyn SetupEdges + 'a> {
        Box::new(
            HostEdges::from_env(&rt.paths)
                .with_lxd(rt.lxd.clone())
                .with_pool(rt.storage_pool.clone()),
        )
    }

    fn runtime(&self, ctx: &Context<'_>, config: CharmConfig) -> Result<Runtime, RuntimeError> {
        Runtime::new(ctx, config)
    }

    fn boot_time_epoch(&self) -> Option<u64> {
        boot::boot_time_epoch()
    }
}
