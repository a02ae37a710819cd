//! The effects host setup needs, as one trait ([`SetupEdges`]) with the production
//! implementation ([`HostEdges`]): host commands, systemctl, the LXD clients (built lazily:
//! `lxc` may only appear once setup installed LXD), storage, image build and cron.

use super::commands::{HostCommands, SystemCommands};
use super::lxd_host::{LxcQueryOps, LxdHostOps};
use crate::charm::context::Context;
use crate::charm::runtime::lxd_project_from;
use crate::host::timer::{Systemctl, Systemd};
use crate::lxd::{InstanceType, LxcCli, Lxd, LxdError};
use crate::paths::HostPaths;
use crate::runner::image::{self, BuildProxies, ImageError};
use crate::runner::storage::{self, StorageError, StoragePlan};
use std::cell::OnceCell;
use std::sync::Arc;

/// Test-only knob: the LXD project the charm works in (unset: LXD's default project); the
/// runtime reads the same one.
pub use crate::charm::runtime::LXD_PROJECT_ENV;

pub trait SetupEdges {
    fn commands(&self) -> &dyn HostCommands;
    fn systemd(&self) -> &dyn Systemd;
    /// The runner-facing LXD client (fails with [`LxdError::LxcMissing`] before LXD exists).
    fn lxd(&self) -> Result<&dyn Lxd, LxdError>;
    fn host_ops(&self) -> Result<&dyn LxdHostOps, LxdError>;
    /// The storage pool for runner disks (the runtime's `storage_pool`).
    fn pool_name(&self) -> String;
    /// The LXD project the charm works in (None: the default project).
    fn project(&self) -> Option<&str> {
        None
    }
    /// The runners' bridge and the client for it, when the charm manages one here
    /// ([`crate::network::runner_bridge`]).
    fn runner_network(&self) -> Option<(String, &dyn crate::lxd::network::LxdNetworks)> {
        None
    }
    /// Mount (memory), measure and ensure the pool ([`storage::apply_storage`]).
    fn apply_storage(&self, plan: &StoragePlan, lxd: &dyn Lxd) -> Result<(), StorageError>;
    /// Run the image build script for `alias`.
    fn build_image(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError>;
    /// Write the daily rebuild cron file.
    fn install_rebuild_cron(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError>;
}

/// The production edges.
pub struct HostEdges {
    commands: SystemCommands,
    systemd: Systemctl,
    project: Option<String>,
    pool: String,
    conf_dir: std::path::PathBuf,
    lxd: OnceCell<Arc<dyn Lxd>>,
    ops: OnceCell<LxcQueryOps<SystemCommands>>,
    networks: OnceCell<Option<LxcCli>>,
}

impl HostEdges {
    /// From the hook's environment: PATH (where tests put a fake `systemctl`), the LXD project
    /// knob, `LXD_CONF` = [`HostPaths::lxd_conf_dir`].
    pub fn from_env(paths: &HostPaths) -> Self {
        let project = lxd_project_from(|k| std::env::var(k).ok());
        HostEdges::new(paths, std::env::var("PATH").ok().as_deref(), project)
    }

    /// Programs are looked up on `hook_path` first, then the system directories.
    pub fn new(paths: &HostPaths, hook_path: Option<&str>, project: Option<String>) -> Self {
        let commands = SystemCommands::new(hook_path, &paths.lxd_conf_dir());
        let systemctl = commands
            .find("systemctl")
            .unwrap_or_else(|| "/usr/bin/systemctl".into());
        HostEdges {
            systemd: Systemctl::with_program(systemctl),
            commands,
            pool: crate::runner::resources::RUNNER_POOL.to_string(),
            project,
            conf_dir: paths.lxd_conf_dir(),
            lxd: OnceCell::new(),
            ops: OnceCell::new(),
            networks: OnceCell::new(),
        }
    }

    /// Another storage pool name (the runtime's, or a test's scratch pool).
    pub fn with_pool(mut self, pool: impl Into<String>) -> Self {
        self.pool = pool.into();
        self
    }

    /// Use an already built client (the charm's runtime has one).
    pub fn with_lxd(self, lxd: Arc<dyn Lxd>) -> Self {
        let _ = self.lxd.set(lxd);
        self
    }
}

impl SetupEdges for HostEdges {
    fn runner_network(&self) -> Option<(String, &dyn crate::lxd::network::LxdNetworks)> {
        let bridge = crate::network::runner_bridge(
            self.project.as_deref(),
            std::env::var(crate::network::BRIDGE_ENV).ok(),
        )?;
        let cli = self.networks.get_or_init(|| {
            let lxc = self.commands.find("lxc")?;
            let cli = LxcCli::with_binary(lxc, self.conf_dir.clone()).ok()?;
            Some(match &self.project {
                Some(p) => cli.in_project(p.clone()),
                None => cli,
            })
        });
        Some((bridge, cli.as_ref()?))
    }

    fn commands(&self) -> &dyn HostCommands {
        &self.commands
    }

    fn systemd(&self) -> &dyn Systemd {
        &self.systemd
    }

    fn lxd(&self) -> Result<&dyn Lxd, LxdError> {
        if let Some(lxd) = self.lxd.get() {
            return Ok(lxd.as_ref());
        }
        // Found through our search path so a freshly installed /snap/bin/lxc is used.
        let lxc = self.commands.find("lxc").ok_or(LxdError::LxcMissing)?;
        let mut cli = LxcCli::with_binary(lxc, self.conf_dir.clone())?;
        if let Some(p) = &self.project {
            cli = cli.in_project(p.clone());
        }
        Ok(self.lxd.get_or_init(|| Arc::new(cli)).as_ref())
    }

    fn host_ops(&self) -> Result<&dyn LxdHostOps, LxdError> {
        if let Some(ops) = self.ops.get() {
            return Ok(ops);
        }
        let ops = LxcQueryOps::new(self.commands.clone(), self.project.clone())?;
        Ok(self.ops.get_or_init(|| ops))
    }

    fn pool_name(&self) -> String {
        self.pool.clone()
    }

    fn project(&self) -> Option<&str> {
        self.project.as_deref()
    }

    fn apply_storage(&self, plan: &StoragePlan, lxd: &dyn Lxd) -> Result<(), StorageError> {
        storage::apply_storage(plan, lxd)
    }

    fn build_image(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError> {
        let cmd = build_command(ctx, &self.conf_dir, alias, instance_type);
        image::run_build(
            &cmd,
            alias,
            &ctx.paths.image_build_log(),
            image::BUILD_TIMEOUT,
        )
    }

    fn install_rebuild_cron(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError> {
        let cmd = build_command(ctx, &self.conf_dir, alias, instance_type);
        let (minute, hour) = image::rebuild_time(&ctx.hook.identity.unit_name());
        let content = image::render_rebuild_cron(&cmd, minute, hour, &ctx.paths.image_build_log());
        image::install_rebuild_cron(ctx.paths, &content).map(drop)
    }
}

fn build_command(
    ctx: &Context<'_>,
    conf_dir: &std::path::Path,
    alias: &str,
    instance_type: InstanceType,
) -> image::BuildCommand {
    let proxy = &ctx.hook.proxy;
    image::build_command(
        &ctx.hook.charm_dir,
        conf_dir,
        &ctx.paths.image_build_lock_file(),
        alias,
        instance_type,
        &BuildProxies {
            http: proxy.http.clone(),
            https: proxy.https.clone(),
            no_proxy: proxy.no_proxy.clone(),
        },
    )
}

/// A borrowed edge set is an edge set (lets a test hand out its fakes by reference).
impl<T: SetupEdges + ?Sized> SetupEdges for &T {
    fn commands(&self) -> &dyn HostCommands {
        (**self).commands()
    }
    fn systemd(&self) -> &dyn Systemd {
        (**self).systemd()
    }
    fn lxd(&self) -> Result<&dyn Lxd, LxdError> {
        (**self).lxd()
    }
    fn host_ops(&self) -> Result<&dyn LxdHostOps, LxdError> {
        (**self).host_ops()
    }
    fn pool_name(&self) -> String {
        (**self).pool_name()
    }
    fn project(&self) -> Option<&str> {
        (**self).project()
    }
    fn apply_storage(&self, plan: &StoragePlan, lxd: &dyn Lxd) -> Result<(), StorageError> {
        (**self).apply_storage(plan, lxd)
    }
    fn build_image(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError> {
        (**self).build_image(ctx, alias, instance_type)
    }
    fn install_rebuild_cron(
        &self,
        ctx: &Context<'_>,
        alias: &str,
        instance_type: InstanceType,
    ) -> Result<(), ImageError> {
        (**self).install_rebuild_cron(ctx, alias, instance_type)
    }
}
