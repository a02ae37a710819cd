//! What the charm needs from LXD, as a trait, plus the shared types.
//!
//! The implementation driving the `lxc` command lives in `cli`; tests run it against a real
//! LXD daemon (see tests/README.md).

pub mod cli;
mod instance_config;
pub mod network;

pub use cli::LxcCli;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceState {
    Running,
    Stopped,
    /// LXD's `Error` status.
    Error,
    /// Starting, Stopping, Frozen, ...: transitional, leave alone this round.
    Other(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceType {
    Container,
    VirtualMachine,
}

/// An instance anywhere on the machine, as admission counts it (`manager::footprint`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineInstance {
    pub project: String,
    pub name: String,
    /// Its CPU and memory limits as it runs (own config over its profiles').
    pub limits: crate::manager::footprint::InstanceLimits,
}

/// An instance as `lxc list --format json` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub name: String,
    pub state: InstanceState,
    pub instance_type: InstanceType,
    /// Creation time, seconds since the epoch.
    pub created_at_epoch: u64,
    pub config: BTreeMap<String, String>,
    pub profiles: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    pub name: String,
    pub image_alias: String,
    pub instance_type: InstanceType,
    /// Applied in order; `default` first so operator settings reach every runner.
    pub profiles: Vec<String>,
    pub config: BTreeMap<String, String>,
    pub ephemeral: bool,
}

/// Debug shows env names and the stdin size only: stdin carries secrets (JIT configs) and env
/// values may hold proxy credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub argv: Vec<String>,
    pub uid: u32,
    pub gid: u32,
    pub env: BTreeMap<String, String>,
    /// Fed to the command's stdin (how secrets reach a command without argv).
    pub stdin: Option<Vec<u8>>,
    pub timeout: Duration,
    /// Most bytes the command may print on stdout, and on stderr; past it the exec is killed
    /// and fails with [`LxdError::OutputTooLarge`]. A job has root in its runner and decides
    /// what a command there prints, so this is never unbounded.
    pub output_cap: usize,
}

/// [`ExecSpec::output_cap`] unless a call asks for another: every probe the charm runs in a
/// runner prints a few lines.
pub const DEFAULT_EXEC_OUTPUT_CAP: usize = 64 * 1024;

impl Default for ExecSpec {
    fn default() -> Self {
        ExecSpec {
            argv: Vec::new(),
            uid: 0,
            gid: 0,
            env: BTreeMap::new(),
            stdin: None,
            timeout: Duration::ZERO,
            output_cap: DEFAULT_EXEC_OUTPUT_CAP,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// What to put in a file pushed into an instance. Debug shows the size of in-memory contents,
/// never the bytes (a start script holds a JIT config).
#[derive(Clone, PartialEq, Eq)]
pub enum PushSource {
    /// In-memory contents; written to a 0600 temp file on the host first.
    Bytes(Vec<u8>),
    /// A host file pushed as is (large files such as the runner tarball).
    File(PathBuf),
}

impl std::fmt::Debug for ExecSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSpec")
            .field("argv", &self.argv)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("stdin_bytes", &self.stdin.as_ref().map(Vec::len))
            .field("timeout", &self.timeout)
            .field("output_cap", &self.output_cap)
            .finish()
    }
}

impl std::fmt::Debug for PushSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushSource::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
            PushSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSpec {
    pub source: PushSource,
    pub target: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A profile's desired content; `ensure_profile` converges the live profile to it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProfileSpec {
    pub name: String,
    pub config: BTreeMap<String, String>,
    /// Device name -> device keys (e.g. `root` -> {type: disk, path: /, pool: runner, size: 10GiB}).
    pub devices: BTreeMap<String, BTreeMap<String, String>>,
}

/// A profile and how many instances (or other objects) use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileUse {
    pub name: String,
    pub used_by: usize,
    /// Whether the charm created it ([`MANAGED_PROFILE_DESCRIPTION`]); only those are ever
    /// deleted, never an operator's profile that happens to have a name like ours.
    pub managed: bool,
}

/// The description `ensure_profile` gives the profiles it creates (and keeps afterwards).
pub const MANAGED_PROFILE_DESCRIPTION: &str = "managed by the github-runner charm";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub server_version: String,
    pub instance_types: Vec<InstanceType>,
}

#[derive(Debug, thiserror::Error)]
pub enum LxdError {
    #[error("the lxc command was not found on PATH; install LXD (snap install lxd)")]
    LxcMissing,
    #[error("lxc {operation} failed: {message}")]
    Command { operation: String, message: String },
    #[error("instance {0} not found")]
    InstanceNotFound(String),
    #[error("image alias {0:?} not found; build it with scripts/build-runner-image.sh")]
    ImageNotFound(String),
    #[error("lxc {operation} timed out after {seconds}s")]
    Timeout { operation: String, seconds: u64 },
    #[error("lxc {operation} printed more than {cap} bytes and was stopped")]
    OutputTooLarge { operation: String, cap: usize },
    #[error("could not parse lxc {operation} output: {reason}")]
    Parse { operation: String, reason: String },
    #[error("I/O error during lxc {operation}: {reason}")]
    Io { operation: String, reason: String },
}

/// What the charm needs from LXD. `Sync` so the executor can share it across threads.
pub trait Lxd: Send + Sync {
    /// Instances whose `user.github-runner.owner` equals `owner_value` (and only those).
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError>;
    /// Every instance of this client's project, whoever made it (the Python charm's runners
    /// carry no owner key: `crate::legacy` recognises them by name).
    fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError>;
    /// Every instance on the machine, whoever made it, in every project: they all share the
    /// host's CPUs and memory. A client bound to a project of its own (the tests' knob)
    /// answers that project's, the machine it is given.
    fn list_machine_instances(&self) -> Result<Vec<MachineInstance>, LxdError>;
    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError>;
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError>;
    fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError>;
    fn stop(&self, instance: &str, force: bool, timeout: Duration) -> Result<(), LxdError>;
    /// Idempotent: deleting a missing instance is Ok.
    fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError>;
    /// Set one `user.*` key in a running instance's config (it takes effect without a
    /// restart); [`LxdError::InstanceNotFound`] when it is gone.
    fn set_instance_config(&self, instance: &str, key: &str, value: &str) -> Result<(), LxdError>;
    fn image_exists(&self, alias: &str) -> Result<bool, LxdError>;
    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError>;
    /// Idempotent: deleting a missing pool is Ok; LXD refuses one that profiles, instances
    /// or volumes still use (another unit's, on a shared machine).
    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError>;
    /// Free bytes of pool `name` (total minus used, as LXD reports its resources); None when
    /// there is no such pool or the driver does not tell.
    fn storage_pool_free_bytes(&self, name: &str) -> Result<Option<u64>, LxdError>;
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError>;
    fn list_profiles(&self) -> Result<Vec<ProfileUse>, LxdError>;
    /// Idempotent: deleting a missing profile is Ok; LXD refuses one in use.
    fn delete_profile(&self, name: &str) -> Result<(), LxdError>;
    fn server_info(&self) -> Result<ServerInfo, LxdError>;
    /// The LXD project this client works in (None: the default project).
    fn project(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_pushed_bytes_stdin_or_env_values() {
        let push = PushSpec {
            source: PushSource::Bytes(b"jit_config='JITSECRET'".to_vec()),
            target: "/root/start.sh".into(),
            mode: 0o700,
            uid: 0,
            gid: 0,
        };
        let exec = ExecSpec {
            argv: vec!["sh".into()],
            env: [(
                "HTTPS_PROXY".to_string(),
                "http://u:PROXYPASS@p".to_string(),
            )]
            .into(),
            stdin: Some(b"JITSECRET".to_vec()),
            ..ExecSpec::default()
        };
        let text = format!("{push:?} {exec:?}");
        assert!(!text.contains("JITSECRET"), "{text}");
        assert!(!text.contains("PROXYPASS"), "{text}");
        assert!(text.contains("Bytes(22 bytes)"), "{text}");
        assert!(text.contains("HTTPS_PROXY"), "{text}");
        assert!(text.contains("stdin_bytes: Some(9)"), "{text}");
    }
}
