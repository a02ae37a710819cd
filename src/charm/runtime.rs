//! Everything a reconcile or flush acts through, built once per hook from the hook's context
//! and a validated configuration: the unit's identity, LXD, GitHub, the clock and host paths.
//!
//! Handlers build one [`Runtime`] with [`Runtime::new`]; tests build one from fakes with
//! [`Runtime::from_parts`]. A config change builds a second one with the PREVIOUS
//! credentials through [`Runtime::with_credentials`] (same LXD, another GitHub client).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::context::Context;
use crate::clock::{Clock, SystemClock};
use crate::config::CharmConfig;
use crate::credential::provider::CredentialProvider;
use crate::credential::store::CredentialStore;
use crate::github::proxy::ProxySettings as ClientProxy;
use crate::github::{ClientSettings, ClientSetupError, GitHub, GitHubClient};
use crate::host::lock::LockWait;
use crate::identity::UnitIdentity;
use crate::juju::context::ProxySettings;
use crate::lxd::{LxcCli, Lxd, LxdError};
use crate::manager::executor::Concurrency;
use crate::paths::HostPaths;
use crate::runner::RunnerEnvironment;

/// Test-only knob (Juju never sets it): the LXD project the charm works in. Unset: LXD's
/// default project. Integration tests point it at their own project so they never touch
/// anything else on the shared daemon.
pub const LXD_PROJECT_ENV: &str = "GITHUB_RUNNER_LXD_PROJECT";

/// How long a new runner may take to come online on GitHub before it counts as broken.
pub const PRODUCTION_GRACE: Duration = Duration::from_secs(600);
/// The same in test-mode=insecure (containers start in seconds).
pub const TEST_MODE_GRACE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot use LXD: {0}")]
    Lxd(#[from] LxdError),
    #[error("cannot set up the GitHub client: {0}")]
    GitHub(#[from] ClientSetupError),
    #[error(transparent)]
    Credential(#[from] crate::credential::store::StoreError),
}

/// The effects and settings of one hook. `Sync`: the executor shares it across threads.
pub struct Runtime {
    pub identity: UnitIdentity,
    pub config: CharmConfig,
    pub paths: HostPaths,
    pub lxd: Arc<dyn Lxd>,
    pub github: Arc<dyn GitHub>,
    pub clock: Arc<dyn Clock>,
    /// What runners get from the charm: Juju's proxies and the Docker Hub mirror.
    pub environment: RunnerEnvironment,
    /// The charm directory (`lxd-profile.yaml` lives there).
    pub charm_dir: PathBuf,
    /// Storage pool of the runners' root disks (the resource profile names it).
    pub storage_pool: String,
    pub lock_wait: LockWait,
    pub concurrency: Concurrency,
    /// Makes the GitHub client for other credentials ([`Runtime::with_credentials`]).
    pub github_factory: GitHubFactory,
    /// The model's proxies for the charm's own calls (GitHub, downloads).
    pub proxy: ClientProxy,
}

/// Builds a GitHub client for a configuration's credentials and scope (an App's tokens
/// cached in the unit's credential file under its paths).
pub type GitHubFactory = Arc<
    dyn Fn(
            &CharmConfig,
            &UnitIdentity,
            &ClientProxy,
            &HostPaths,
            Arc<dyn Clock>,
        ) -> Result<Arc<dyn GitHub>, ClientSetupError>
        + Send
        + Sync,
>;

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("identity", &self.identity)
            .field("config", &self.config)
            .field("paths", &self.paths)
            .field("storage_pool", &self.storage_pool)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// The production runtime: `lxc` with `LXD_CONF` = [`HostPaths::lxd_conf_dir`] in the
    /// project named by [`LXD_PROJECT_ENV`] (if set), the GitHub client for `config`, the
    /// system clock.
    pub fn new(ctx: &Context<'_>, config: CharmConfig) -> Result<Runtime, RuntimeError> {
        let identity = ctx.hook.identity.clone();
        let mut lxc = LxcCli::for_host(ctx.paths)?;
        if let Some(project) = lxd_project_from(|k| std::env::var(k).ok()) {
            lxc = lxc.in_project(project);
        }
        if let Some(credential) = &config.credential {
            // What the unit's long-running processes authenticate with from now on.
            CredentialStore::for_unit(ctx.paths).put(credential, &SystemClock)?;
        }
        let environment = runner_environment(
            &ctx.hook.proxy,
            &config,
            crate::network::debug_ssh::read_servers(ctx.tools),
        );
        Runtime::for_process(
            identity,
            config,
            ctx.paths.clone(),
            Arc::new(lxc),
            &ctx.hook.proxy,
            environment,
            ctx.hook.charm_dir.clone(),
        )
    }

    /// The runtime of a hook or of a long-running process of the charm (a reactive
    /// worker): the system clock and the GitHub client through the model's proxies
    /// ([`ProxySettings::for_clients`]), the same in both.
    pub fn for_process(
        identity: UnitIdentity,
        config: CharmConfig,
        paths: HostPaths,
        lxd: Arc<dyn Lxd>,
        model_proxy: &ProxySettings,
        environment: RunnerEnvironment,
        charm_dir: PathBuf,
    ) -> Result<Runtime, RuntimeError> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let proxy = model_proxy.for_clients();
        let github = github_client(&config, &identity, &proxy, &paths, clock.clone())?;
        let mut rt = Runtime::from_parts(
            identity,
            config,
            paths,
            lxd,
            github,
            clock,
            environment,
            charm_dir,
        );
        rt.proxy = proxy;
        Ok(rt)
    }

    /// A runtime over the given effects, with the default pool, lock wait and concurrency.
    #[allow(clippy::too_many_arguments)]
    pub fn from_parts(
        identity: UnitIdentity,
        config: CharmConfig,
        paths: HostPaths,
        lxd: Arc<dyn Lxd>,
        github: Arc<dyn GitHub>,
        clock: Arc<dyn Clock>,
        environment: RunnerEnvironment,
        charm_dir: PathBuf,
    ) -> Runtime {
        Runtime {
            identity,
            config,
            paths,
            lxd,
            github,
            clock,
            environment,
            charm_dir,
            storage_pool: crate::runner::resources::RUNNER_POOL.to_string(),
            lock_wait: LockWait::default(),
            concurrency: Concurrency::Default,
            github_factory: Arc::new(github_client),
            proxy: ClientProxy::default(),
        }
    }

    /// The same runtime acting with `config`'s credentials and scope (token, path, group,
    /// github-url): a new GitHub client, the same LXD, clock and paths.
    pub fn with_credentials(&self, config: CharmConfig) -> Result<Runtime, RuntimeError> {
        let github = (self.github_factory)(
            &config,
            &self.identity,
            &self.proxy,
            &self.paths,
            self.clock.clone(),
        )?;
        Ok(self.with_github(config, github))
    }

    /// As [`Runtime::with_credentials`] with a given GitHub (tests).
    pub fn with_github(&self, config: CharmConfig, github: Arc<dyn GitHub>) -> Runtime {
        Runtime {
            identity: self.identity.clone(),
            config,
            paths: self.paths.clone(),
            lxd: self.lxd.clone(),
            github,
            clock: self.clock.clone(),
            environment: self.environment.clone(),
            charm_dir: self.charm_dir.clone(),
            storage_pool: self.storage_pool.clone(),
            lock_wait: self.lock_wait,
            concurrency: self.concurrency,
            github_factory: self.github_factory.clone(),
            proxy: self.proxy.clone(),
        }
    }

    /// How long a new runner may stay offline: shorter in test mode.
    pub fn grace(&self) -> Duration {
        grace_for(self.config.test_mode_insecure)
    }
}

/// [`PRODUCTION_GRACE`], or [`TEST_MODE_GRACE`] when test-mode=insecure.
pub fn grace_for(test_mode_insecure: bool) -> Duration {
    if test_mode_insecure {
        TEST_MODE_GRACE
    } else {
        PRODUCTION_GRACE
    }
}

/// The LXD project from [`LXD_PROJECT_ENV`]; empty counts as unset.
pub fn lxd_project_from(var: impl Fn(&str) -> Option<String>) -> Option<String> {
    var(LXD_PROJECT_ENV)
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
}

/// The client a hook uses: the credential it resolved (`config.credential`). None (a
/// configuration nobody resolved) reads the unit's credential file, as a worker does.
fn github_client(
    config: &CharmConfig,
    identity: &UnitIdentity,
    proxy: &ClientProxy,
    paths: &HostPaths,
    clock: Arc<dyn Clock>,
) -> Result<Arc<dyn GitHub>, ClientSetupError> {
    let store = CredentialStore::for_unit(paths);
    let provider = match &config.credential {
        Some(credential) => CredentialProvider::resolved(credential.clone(), store, clock.clone()),
        // A long-running process: whatever the unit's hooks last recorded.
        None => CredentialProvider::following(store, clock.clone()),
    };
    let settings =
        ClientSettings::from_config(config, identity.clone(), proxy.clone(), Arc::new(provider));
    Ok(Arc::new(GitHubClient::new(settings)?.with_clock(clock)))
}

/// What a long-running process of the charm (a reactive worker, the scale-set listener)
/// builds its [`Runtime`] from: the fields of the 0600 settings file its unit's hook wrote.
pub struct ProcessSettings<'a> {
    pub unit_name: &'a str,
    pub model_uuid: &'a str,
    /// `config-get` as the hook read it (less the options only hooks read).
    pub config: &'a serde_json::Map<String, serde_json::Value>,
    /// The hook's proxies: the process's own environment has none.
    pub proxy: ProxySettings,
    pub charm_dir: &'a std::path::Path,
    pub lxd_project: Option<&'a str>,
    /// The debug-ssh relation's tmate servers (a process cannot read relations).
    pub debug_ssh: &'a [crate::network::debug_ssh::TmateServer],
}

impl Runtime {
    /// The runtime a unit's hooks use, for one of its long-running processes: the unit's own
    /// paths (runner tarball, `LXD_CONF`, state), its LXD project, the model's proxies for
    /// its own calls and the runners' environment by the hooks' rule. Its GitHub credential is
    /// the unit's credential file at every call (a process cannot read Juju secrets): a
    /// rotation reaches a running process, and an App's installation token is the one the
    /// unit's hooks and processes share.
    pub fn for_unit_process(settings: &ProcessSettings<'_>) -> Result<Runtime, String> {
        let identity = UnitIdentity::parse(settings.unit_name, settings.model_uuid)
            .map_err(|e| e.to_string())?;
        let ctx = crate::config::ConfigContext {
            app_name: &identity.app,
            juju_proxy_configured: settings.proxy.http.is_some() || settings.proxy.https.is_some(),
        };
        let mut config =
            crate::config::validate(settings.config, &ctx).map_err(|e| e.to_string())?;
        config.credential = None;
        let paths = HostPaths::from_env().with_unit(settings.unit_name);
        let mut lxc = LxcCli::for_host(&paths).map_err(|e| e.to_string())?;
        if let Some(project) = settings.lxd_project {
            lxc = lxc.in_project(project.to_string());
        }
        let environment = runner_environment(&settings.proxy, &config, settings.debug_ssh.to_vec());
        Runtime::for_process(
            identity,
            config,
            paths,
            Arc::new(lxc),
            &settings.proxy,
            environment,
            settings.charm_dir.to_path_buf(),
        )
        .map_err(|e| e.to_string())
    }
}

/// What a unit's runners get, for hooks and reactive workers alike: the model's proxies,
/// unless aproxy redirects their web traffic on the host (then none), the Docker Hub mirror
/// and the debug-ssh relation's tmate servers.
pub fn runner_environment(
    proxy: &ProxySettings,
    config: &CharmConfig,
    debug_ssh: Vec<crate::network::debug_ssh::TmateServer>,
) -> RunnerEnvironment {
    let environment = RunnerEnvironment::from_juju(
        |k| match k {
            "JUJU_CHARM_HTTP_PROXY" => proxy.http.clone(),
            "JUJU_CHARM_HTTPS_PROXY" => proxy.https.clone(),
            "JUJU_CHARM_NO_PROXY" => proxy.no_proxy.clone(),
            _ => None,
        },
        config.dockerhub_mirror.clone(),
    );
    let mut environment = if config.experimental_use_aproxy {
        environment.without_proxies()
    } else {
        environment
    };
    environment.debug_ssh = debug_ssh;
    environment
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_is_shorter_in_test_mode() {
        assert_eq!(grace_for(false), Duration::from_secs(600));
        assert_eq!(grace_for(true), Duration::from_secs(120));
    }

    #[test]
    fn lxd_project_comes_from_the_knob_only_when_set() {
        let env = |value: Option<&'static str>| {
            move |k: &str| {
                (k == LXD_PROJECT_ENV)
                    .then(|| value.map(String::from))
                    .flatten()
            }
        };
        assert_eq!(lxd_project_from(env(None)), None);
        assert_eq!(lxd_project_from(env(Some(""))), None);
        assert_eq!(lxd_project_from(env(Some("  "))), None);
        assert_eq!(
            lxd_project_from(env(Some("ghrt-1-2"))),
            Some("ghrt-1-2".to_string())
        );
    }
}
