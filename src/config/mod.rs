//! The charm's configuration: parsed from `config-get` JSON and validated all at once.

pub mod credential;
pub mod error;
pub mod validate;
pub mod values;

pub use error::{ConfigError, Problem};
pub use validate::{validate, ConfigContext};

use crate::credential::{Credential, CredentialSource};
use crate::github::GitHubPath;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseImage {
    Jammy,
    Noble,
}

impl BaseImage {
    /// The LXD image alias (the codename).
    pub fn alias(self) -> &'static str {
        match self {
            BaseImage::Jammy => "jammy",
            BaseImage::Noble => "noble",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerStorage {
    JujuStorage,
    Memory,
}

/// A validated configuration. Built only by validation, so every field is usable as is.
#[derive(Debug, Clone, PartialEq)]
pub struct CharmConfig {
    pub path: GitHubPath,
    /// What `token` / `github-app-*` name.
    pub credential_source: CredentialSource,
    /// What they resolve to. None until resolved: by `charm::observe` in a hook (which reads
    /// the secret), from the unit's credential file in a reactive worker.
    pub credential: Option<Credential>,
    pub group: String,
    /// Custom labels from `labels`, in order, without duplicates.
    pub labels: Vec<String>,
    pub virtual_machines: u32,
    pub vm_cpu: u32,
    /// Bytes.
    pub vm_memory: u64,
    /// Bytes.
    pub vm_disk: u64,
    pub reconcile_interval_minutes: u32,
    /// Most runners one reconcile round creates (`creations-per-round`); the next round
    /// goes on.
    pub creations_per_round: u32,
    pub base_image: BaseImage,
    /// IPv4 networks runners must not reach, as written (`a.b.c.d/n`).
    pub denylist: Vec<String>,
    /// allow-link-local: runners may reach 169.254.0.0/16 (cloud metadata) too.
    pub allow_link_local: bool,
    pub dockerhub_mirror: Option<String>,
    pub experimental_use_aproxy: bool,
    pub runner_storage: RunnerStorage,
    /// test-mode=insecure: containers instead of VMs, `http://` on loopback accepted.
    pub test_mode_insecure: bool,
    /// `github-url` normalised to `scheme://host[:port]` (lowercase host, no trailing slash).
    pub github_url: String,
    /// REST API base: `https://api.github.com` or `<github-url>/api/v3`.
    pub api_base_url: String,
    /// `mq-uri`: the broker of reactive mode (wins over the `mongodb` relation).
    pub mq_uri: Option<crate::reactive::source::MqUri>,
    /// `scale-set-name`: scale-set mode's name (None: the mode is off). The unit's scale
    /// set is [`values::unit_scale_set_name`] of it.
    pub scale_set_name: Option<String>,
    /// `min-idle-runners`: idle runners a scale-set listener keeps on top of its assigned
    /// jobs; at most `virtual_machines`.
    pub min_idle_runners: u32,
}

impl CharmConfig {
    /// The scale set of the unit numbered `unit_number` (`<scale-set-name>-<n>`), None
    /// outside scale-set mode.
    pub fn unit_scale_set(&self, unit_number: u32) -> Option<String> {
        let name = self.scale_set_name.as_deref()?;
        // Hooks validate the unit's name (`validate::for_unit`); should it not fit, GitHub
        // refuses it and the listener says so.
        Some(
            values::unit_scale_set_name(name, unit_number)
                .unwrap_or_else(|_| format!("{name}-{unit_number}")),
        )
    }

    /// The personal access token, when that is the resolved credential.
    pub fn token(&self) -> Option<&crate::secret::Secret> {
        match &self.credential {
            Some(Credential::Token(token)) => Some(token),
            _ => None,
        }
    }
}
