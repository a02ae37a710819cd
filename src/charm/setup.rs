//! Host setup: everything a unit's machine needs before runners can be created, done
//! idempotently so a hook killed anywhere converges when it (or the next hook) runs again.
//!
//! [`ensure_host`] order: guards first (an lxd-profile.yaml outside test mode, or a changed
//! runner-storage/base-image, blocks before anything is created); the logrotate rule and
//! the reconcile timer (local and cheap, so the periodic event retries what follows); LXD
//! present (else `snap install lxd` and, on a never-initialised server, `lxd init --auto`);
//! IPv6 off on the bridge and NIC filtering on the default profile's `eth0`, each only when
//! present; the runner storage pool with its capacity check; the runner and resource
//! profiles; the image (built when its alias is missing) and its daily rebuild cron; last,
//! the deploy-time runner-storage/base-image are recorded in unit state, with a fingerprint
//! of the inputs ([`HOST_READY_KEY`]) so the periodic event can skip a setup already done
//! ([`ensure_host_when`] with [`When::IfChanged`]).
//!
//! [`update_runner_binary`] keeps the verified runner tarball current.
//!
//! Every effect goes through [`SetupEdges`]; the decisions are in [`decide`].

pub mod binary;
pub mod commands;
pub mod decide;
pub mod edges;
#[cfg(test)]
pub(crate) mod fakes;
pub mod lxd_host;
pub mod runner_network;

pub use binary::{update_runner_binary, update_runner_binary_with, BinaryUpdate};
pub use edges::{HostEdges, SetupEdges};
pub use runner_network::{converge_acl_and_promises, converge_runner_network, tmate_endpoints};

use super::context::{Context, CHARM_VERSION};
use crate::config::CharmConfig;
use crate::github::status::Disposition;
use crate::github::GitHubError;
use crate::host::metrics::MetricsError;
use crate::host::timer::{self, InstallOutcome, TimerError, TimerSpec};
use crate::juju::{HookToolError, Status};
use crate::lxd::LxdError;
use crate::messages;
use crate::runner::guards::{self, DeploySettings, GuardError};
use crate::runner::image::{self, ImageError, ImageState};
use crate::runner::resources::{self, Resources};
use crate::runner::storage::{self, StorageError};
use commands::CommandError;
use decide::{DeployRecord, LxdInstall};
use std::collections::BTreeMap;
use std::time::Duration;

/// Unit-state key of the deploy-time runner-storage and base-image
/// ([`DeploySettings::to_state_value`]); the same key as `juju::state::DEPLOY_SETTINGS_KEY`.
pub const DEPLOY_SETTINGS_KEY: &str = crate::juju::state::DEPLOY_SETTINGS_KEY;
/// Unit-state key: [`host_fingerprint`] of the inputs of the last successful [`ensure_host`].
pub const HOST_READY_KEY: &str = "host-ready";
/// `snap install lxd` downloads the snap: bound it generously.
const SNAP_INSTALL_TIMEOUT: Duration = Duration::from_secs(900);
const LXD_INIT_TIMEOUT: Duration = Duration::from_secs(300);

/// What [`ensure_host`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReadiness {
    /// LXD was installed by this call.
    pub lxd_installed: bool,
    /// The storage pool runner disks go to.
    pub pool: String,
    /// Profiles to launch runners with: `default`, then the charm's.
    pub profiles: Vec<String>,
    pub image: ImageState,
    pub timer: InstallOutcome,
}

/// Why the host is not ready. [`SetupError::status`] says what the unit should show.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("LXD is not installed and snap is not available to install it: install LXD (snap install lxd)")]
    LxdNotInstallable,
    #[error("installing LXD failed: {0}")]
    LxdInstall(String),
    #[error("LXD is not answering: {0}")]
    LxdUnavailable(LxdError),
    #[error(
        "the LXD project {0} does not exist (GITHUB_RUNNER_LXD_PROJECT names it; create it first)"
    )]
    LxdProjectMissing(String),
    #[error("could not apply the LXD network settings: {0}")]
    Network(LxdError),
    #[error("could not set up the runners' network and firewall: {0}")]
    RunnerNetwork(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Aproxy(#[from] crate::network::aproxy::AproxyError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("could not create the runner profiles: {0}")]
    Profiles(LxdError),
    #[error("runner image not ready: {0}")]
    Image(#[from] ImageError),
    #[error("could not install the reconcile timer: {0}")]
    Timer(#[from] TimerError),
    #[error("could not install the metrics logrotate rule: {0}")]
    Logrotate(#[from] MetricsError),
    #[error("{}", messages::binary_update_failed(.0))]
    RunnerBinary(String),
    #[error("{}", messages::binary_update_failed(.0))]
    RunnerBinaryLookup(GitHubError),
    #[error(transparent)]
    HookTool(#[from] HookToolError),
    /// Another unit on this machine is setting up the LXD objects all units share.
    #[error("could not take the machine's LXD setup lock: {0}")]
    MachineLock(#[from] crate::host::lock::LockError),
}

impl SetupError {
    /// The status this failure should leave, or None when the hook itself must fail (a hook
    /// tool broke: Juju retries the hook).
    pub fn status(&self) -> Option<Status> {
        let message = self.to_string();
        Some(match self {
            SetupError::HookTool(_) => return None,
            SetupError::Guard(_) | SetupError::LxdNotInstallable | SetupError::Aproxy(_) => {
                Status::Blocked(message)
            }
            SetupError::Storage(
                StorageError::InsufficientSpace { .. }
                | StorageError::JujuStorageMissing
                | StorageError::NoRoomForOneRunner { .. }
                | StorageError::TmpfsOverRamShare { .. },
            ) => Status::Blocked(message),
            SetupError::LxdInstall(_)
            | SetupError::LxdUnavailable(_)
            | SetupError::LxdProjectMissing(_)
            | SetupError::Profiles(_)
            | SetupError::Image(_)
            | SetupError::Storage(StorageError::Lxd(_)) => Status::Waiting(message),
            // The token or path is wrong: only the operator can fix it, as for reconciles.
            SetupError::RunnerBinaryLookup(e) => match crate::github::status::disposition(e) {
                Disposition::Blocked(m) => Status::Blocked(m),
                Disposition::RateLimited { reset_epoch } => {
                    crate::github::status::rate_limit_status(reset_epoch)
                }
                Disposition::Transient(_) => Status::Maintenance(message),
            },
            SetupError::RunnerNetwork(
                crate::network::NetworkError::NotAManagedBridge { .. }
                | crate::network::NetworkError::PromiseBroken { .. },
            ) => Status::Blocked(message),
            SetupError::Network(_)
            | SetupError::RunnerNetwork(_)
            | SetupError::Storage(_)
            | SetupError::Timer(_)
            | SetupError::Logrotate(_)
            | SetupError::MachineLock(_)
            | SetupError::RunnerBinary(_) => Status::Maintenance(message),
        })
    }

    /// Blocked: only the operator can fix it; retrying the hook would not help.
    pub fn is_blocked(&self) -> bool {
        matches!(self.status(), Some(Status::Blocked(_)))
    }
}

impl From<CommandError> for SetupError {
    fn from(e: CommandError) -> Self {
        SetupError::LxdInstall(e.to_string())
    }
}

/// The runner-storage/base-image values of `config`.
pub fn deploy_settings(config: &CharmConfig) -> DeploySettings {
    DeploySettings {
        runner_storage: config.runner_storage,
        base_image: config.base_image,
    }
}

/// Both guards, before anything is created. Answers whether the deploy-time values still
/// need recording.
pub fn check_guards(ctx: &Context<'_>, config: &CharmConfig) -> Result<bool, SetupError> {
    check_guards_in(ctx, config, &ctx.tools.state_get()?)
}

/// [`check_guards`] with the unit state already read.
fn check_guards_in(
    ctx: &Context<'_>,
    config: &CharmConfig,
    state: &BTreeMap<String, String>,
) -> Result<bool, SetupError> {
    guards::check_lxd_profile(
        guards::charm_dir_has_lxd_profile(&ctx.hook.charm_dir),
        config.test_mode_insecure,
    )?;
    match decide::deploy_record(state.get(DEPLOY_SETTINGS_KEY).map(String::as_str)) {
        DeployRecord::Record => Ok(true),
        DeployRecord::Check(at_deploy) => {
            guards::check_immutable(&at_deploy, &deploy_settings(config))?;
            Ok(false)
        }
    }
}

/// Makes the machine ready for runners (see the module doc for the order). Idempotent.
pub fn ensure_host(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<HostReadiness, SetupError> {
    let state = ctx.tools.state_get()?;
    let record_deploy_settings = check_guards_in(ctx, config, &state)?;
    // Local and cheap, before anything that may fail for a while: the timer's periodic
    // event is what retries the rest.
    crate::host::metrics::install_logrotate(ctx.paths)?;
    let timer = install_timer(ctx, config, edges)?;
    crate::observability::ensure_exporter(ctx.paths, &timer_spec(ctx, config), edges.systemd());

    // LXD itself, the bridge, the pool, the profiles and the image are shared by every unit
    // on the machine: one unit at a time sets them up (the runners are each unit's own).
    let _shared = lock_machine(ctx, "host-setup")?;
    let lxd_installed = ensure_lxd(ctx, edges)?;
    apply_network_settings(edges)?;
    let broken_promise = converge_runner_network(ctx, config, edges)?;

    let pool = edges.pool_name();
    let location = juju_storage_location(ctx)?;
    let mut plan = storage::plan_storage(
        config.runner_storage,
        location.as_deref(),
        ctx.paths,
        config.vm_disk,
        config.virtual_machines,
    )?;
    storage::cap_tmpfs(
        &mut plan,
        crate::host::capacity::memory_bytes(ctx.paths),
        config.vm_disk,
    )?;
    plan.pool = pool.clone();
    if plan.tmpfs.is_none() {
        let existing = edges
            .host_ops()
            .and_then(|ops| ops.storage_pool_source(&pool))
            .map_err(SetupError::LxdUnavailable)?;
        plan.source = decide::pool_source(
            &plan.source,
            dir_is_empty(&plan.source),
            existing.as_deref(),
        );
    }
    let lxd = edges.lxd().map_err(SetupError::LxdUnavailable)?;
    edges.apply_storage(&plan, lxd)?;

    let instance_type = resources::instance_type(config.test_mode_insecure);
    let resources = Resources::from_config(config);
    let profiles = resources::ensure_profiles(lxd, &resources, instance_type, &pool, &[])
        .map_err(SetupError::Profiles)?;
    resources::prune_profiles(lxd, &resources.profile_name());

    let alias = config.base_image.alias();
    let mut status_err = None;
    let image = image::ensure_image(
        lxd,
        alias,
        &mut || {
            if let Err(e) = ctx
                .tools
                .status_set(&Status::Maintenance(messages::BUILDING_IMAGE.into()))
            {
                status_err = Some(e);
            }
        },
        &mut || edges.build_image(ctx, alias, instance_type),
    )?;
    if let Some(e) = status_err {
        return Err(e.into());
    }
    edges.install_rebuild_cron(ctx, alias, instance_type)?;

    let mut remember = BTreeMap::new();
    if record_deploy_settings {
        let value = deploy_settings(config).to_state_value();
        remember.insert(DEPLOY_SETTINGS_KEY.to_string(), value);
    }
    let fingerprint = host_fingerprint(ctx, config, &pool);
    if state.get(HOST_READY_KEY) != Some(&fingerprint) {
        remember.insert(HOST_READY_KEY.to_string(), fingerprint);
    }
    if !remember.is_empty() {
        ctx.tools.state_set(&remember)?;
    }
    tracing::info!(pool = %pool, image = ?image, timer = %timer, "host ready for runners");
    // Last, once everything else is set up: a broken promise blocks, it undoes nothing.
    if let Some(broken) = broken_promise {
        return Err(broken.into());
    }
    Ok(HostReadiness {
        lxd_installed,
        pool,
        profiles,
        image,
        timer,
    })
}

/// True for a missing or empty directory.
fn dir_is_empty(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none())
}

/// Everything [`ensure_host`] acts on, hashed: when it is what the last successful setup
/// saw, the periodic event need not check the host again. Reads nothing but whether the
/// charm dir has an lxd-profile file. (The Juju storage location is left out: its hooks
/// run the setup unconditionally.)
pub fn host_fingerprint(ctx: &Context<'_>, config: &CharmConfig, pool: &str) -> String {
    use sha2::{Digest, Sha256};
    let inputs = format!(
        "v1|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        CHARM_VERSION,
        ctx.hook.identity.unit_name(),
        ctx.hook.charm_dir.display(),
        config.virtual_machines,
        config.vm_cpu,
        config.vm_memory,
        config.vm_disk,
        config.reconcile_interval_minutes,
        deploy_settings(config).to_state_value(),
        config.test_mode_insecure,
        pool,
        ctx.paths.root().display(),
        guards::charm_dir_has_lxd_profile(&ctx.hook.charm_dir),
    );
    Sha256::digest(inputs.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// When [`ensure_host_when`] runs the setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// install, upgrade-charm, start, config-changed, storage attached.
    Always,
    /// The periodic event: only when the inputs changed since the last successful setup
    /// (or it never succeeded).
    IfChanged,
}

/// [`ensure_host`] when `when` asks for it: [`When::IfChanged`] skips a setup whose inputs
/// are those of the last successful one (no LXD call at all).
pub fn ensure_host_when(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
    when: When,
) -> Result<(), SetupError> {
    if when == When::IfChanged {
        let fingerprint = host_fingerprint(ctx, config, &edges.pool_name());
        if ctx.tools.state_get()?.get(HOST_READY_KEY) == Some(&fingerprint) {
            return converge_acl_and_promises(ctx, config, edges);
        }
    }
    ensure_host(ctx, config, edges).map(drop)
}

/// The machine's lock around the LXD objects all units share (LXD itself, the bridge and
/// its ACL list, the pool, the profiles, the image), for `purpose`.
pub(crate) fn lock_machine(
    ctx: &Context<'_>,
    purpose: &str,
) -> Result<crate::host::lock::UnitLock, SetupError> {
    Ok(crate::host::lock::UnitLock::acquire(
        &ctx.paths.machine_lock_file(),
        purpose,
        &crate::clock::SystemClock,
        crate::host::lock::LockWait::default(),
    )?)
}

/// LXD installed and answering; answers whether it was installed now.
pub fn ensure_lxd(ctx: &Context<'_>, edges: &dyn SetupEdges) -> Result<bool, SetupError> {
    let commands = edges.commands();
    let plan = decide::lxd_install(
        commands.find("lxc").is_some(),
        commands.find("snap").is_some(),
    );
    let installed = match plan {
        LxdInstall::Present => false,
        LxdInstall::Impossible => return Err(SetupError::LxdNotInstallable),
        LxdInstall::SnapInstall => {
            ctx.tools
                .status_set(&Status::Maintenance(messages::INSTALLING_LXD.into()))?;
            let snap = commands.find("snap").ok_or(SetupError::LxdNotInstallable)?;
            run_checked(
                commands,
                &snap,
                &["install", "lxd", "--channel=latest/stable"],
                SNAP_INSTALL_TIMEOUT,
            )?;
            true
        }
    };
    let ops = edges.host_ops().map_err(SetupError::LxdUnavailable)?;
    if !ops.project_exists().map_err(SetupError::LxdUnavailable)? {
        return Err(SetupError::LxdProjectMissing(
            edges.project().unwrap_or("default").to_string(),
        ));
    }
    let pools = ops
        .storage_pool_count()
        .map_err(SetupError::LxdUnavailable)?;
    let initialised = decide::lxd_init_needed(pools);
    if initialised {
        ctx.tools
            .status_set(&Status::Maintenance(messages::INITIALISING_LXD.into()))?;
        let lxd_bin = commands
            .find("lxd")
            .ok_or_else(|| SetupError::LxdInstall("the lxd command is missing".into()))?;
        run_checked(commands, &lxd_bin, &["init", "--auto"], LXD_INIT_TIMEOUT)?;
    }
    if installed || initialised {
        // A fresh daemon: make sure the runners' client reaches it too. Otherwise the pool
        // count above already proved LXD answers (one lxc spawn less per hook).
        edges
            .lxd()
            .map_err(SetupError::LxdUnavailable)?
            .server_info()
            .map_err(SetupError::LxdUnavailable)?;
    }
    Ok(installed)
}

fn run_checked(
    commands: &dyn commands::HostCommands,
    program: &std::path::Path,
    args: &[&str],
    timeout: Duration,
) -> Result<(), SetupError> {
    let out = commands.run(program, args, timeout)?;
    if out.success() {
        Ok(())
    } else {
        Err(SetupError::LxdInstall(format!(
            "{} {} exited with {}: {}",
            program.display(),
            args.join(" "),
            out.code,
            out.stderr.trim()
        )))
    }
}

/// IPv6 off on the bridge and NIC filtering on the default profile, each only when present.
pub fn apply_network_settings(edges: &dyn SetupEdges) -> Result<(), SetupError> {
    let ops = edges.host_ops().map_err(SetupError::LxdUnavailable)?;
    let bridge = ops
        .network_config(decide::BRIDGE)
        .map_err(SetupError::Network)?;
    if let Some(change) = decide::bridge_ipv6_change(bridge.as_ref()) {
        ops.set_network_config(decide::BRIDGE, &change)
            .map_err(SetupError::Network)?;
        tracing::info!(bridge = decide::BRIDGE, "IPv6 turned off on the LXD bridge");
    }
    let devices = ops
        .profile_devices(resources::DEFAULT_PROFILE)
        .map_err(SetupError::Network)?;
    if let Some(keys) = decide::nic_filtering_change(devices.as_ref()) {
        ops.set_profile_device_keys(resources::DEFAULT_PROFILE, decide::DEFAULT_NIC, &keys)
            .map_err(SetupError::Network)?;
        tracing::info!("NIC filtering turned on for the default profile's eth0");
    }
    Ok(())
}

/// The reconcile timer for this unit, (re)written when its content changes.
pub fn install_timer(
    ctx: &Context<'_>,
    config: &CharmConfig,
    edges: &dyn SetupEdges,
) -> Result<InstallOutcome, SetupError> {
    Ok(timer::install(
        ctx.paths,
        &timer_spec(ctx, config),
        edges.systemd(),
    )?)
}

pub fn timer_spec(ctx: &Context<'_>, config: &CharmConfig) -> TimerSpec {
    let charm_dir = if ctx.hook.charm_dir.is_absolute() {
        ctx.hook.charm_dir.clone()
    } else {
        std::env::current_dir()
            .map(|d| d.join(&ctx.hook.charm_dir))
            .unwrap_or_else(|_| ctx.hook.charm_dir.clone())
    };
    TimerSpec {
        unit_name: ctx.hook.identity.unit_name(),
        charm_dir,
        interval_minutes: config.reconcile_interval_minutes,
    }
}

/// The Juju storage `runner` location, when attached.
pub fn juju_storage_location(
    ctx: &Context<'_>,
) -> Result<Option<std::path::PathBuf>, HookToolError> {
    let hook_storage = ctx
        .hook
        .storage
        .as_ref()
        .map(|s| (s.storage_id.as_str(), s.location.as_deref()));
    if let Some(found) = decide::juju_storage_location(hook_storage, &[]) {
        return Ok(Some(found));
    }
    let mut listed = Vec::new();
    for id in ctx.tools.storage_list(Some("runner"))? {
        let info = ctx.tools.storage_get(&id)?;
        listed.push((id, info.location));
    }
    Ok(decide::juju_storage_location(None, &listed))
}

#[cfg(test)]
#[path = "setup/tests.rs"]
mod tests;
