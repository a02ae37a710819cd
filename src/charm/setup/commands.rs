//! Host programs the setup runs (`snap`, `lxd`, `lxc query`), behind a small trait so tests
//! check what would run without running snap.

use crate::host::child::{collect_with_deadline, Collected, HOST_PROGRAM_PATH};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where programs are looked up: the usual system directories and the snap's.
pub const SEARCH_PATH: &str = HOST_PROGRAM_PATH;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CommandOutput {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("could not run {program}: {reason}")]
    Spawn { program: String, reason: String },
    #[error("{program} {args} did not finish within {seconds}s and was killed")]
    Timeout {
        program: String,
        args: String,
        seconds: u64,
    },
}

/// Finding and running host programs.
pub trait HostCommands {
    /// The absolute path of `program`, when installed.
    fn find(&self, program: &str) -> Option<PathBuf>;
    /// Runs `program args...` with the implementation's explicit environment, bounded by
    /// `timeout`; a non-zero exit is an `Ok` with that code.
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, CommandError>;
}

impl<T: HostCommands + ?Sized> HostCommands for &T {
    fn find(&self, program: &str) -> Option<PathBuf> {
        (**self).find(program)
    }
    fn run(
        &self,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, CommandError> {
        (**self).run(program, args, timeout)
    }
}

/// The real thing: an explicit environment (Juju hooks run without HOME), PATH searched
/// from the hook's PATH then [`SEARCH_PATH`].
#[derive(Debug, Clone)]
pub struct SystemCommands {
    search_path: String,
    env: BTreeMap<String, String>,
}

impl SystemCommands {
    /// `hook_path` is the hook's PATH (where Juju and the tests put their tools first);
    /// `lxd_conf_dir` becomes `LXD_CONF` and `HOME` of the children.
    pub fn new(hook_path: Option<&str>, lxd_conf_dir: &Path) -> Self {
        let search_path = match hook_path.filter(|p| !p.is_empty()) {
            Some(p) => format!("{p}:{SEARCH_PATH}"),
            None => SEARCH_PATH.to_string(),
        };
        let conf = lxd_conf_dir.display().to_string();
        let mut env: BTreeMap<String, String> = [
            ("PATH", SEARCH_PATH.to_string()),
            ("LANG", "C.UTF-8".to_string()),
            ("LXD_CONF", conf.clone()),
            ("HOME", conf),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        // The same daemon the charm's lxc client talks to.
        env.extend(crate::lxd::cli::daemon_env());
        SystemCommands { search_path, env }
    }

    /// From the process environment (the hook's).
    pub fn from_env(lxd_conf_dir: &Path) -> Self {
        let path = std::env::var("PATH").ok();
        SystemCommands::new(path.as_deref(), lxd_conf_dir)
    }
}

impl HostCommands for SystemCommands {
    fn find(&self, program: &str) -> Option<PathBuf> {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        which::which_in(program, Some(&self.search_path), cwd).ok()
    }

    fn run(
        &self,
        program: &Path,
        args: &[&str],
        timeout: Duration,
    ) -> Result<CommandOutput, CommandError> {
        let spawn_err = |reason: String| CommandError::Spawn {
            program: program.display().to_string(),
            reason,
        };
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| spawn_err(e.to_string()))?;
        let Collected {
            status,
            stdout,
            stderr,
        } = collect_with_deadline(&mut child, timeout)
            .map_err(|e| spawn_err(e.to_string()))?
            .ok_or_else(|| CommandError::Timeout {
                program: program.display().to_string(),
                args: args.join(" "),
                seconds: timeout.as_secs(),
            })?;
        let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
        Ok(CommandOutput {
            // Killed by a signal: no code; -1 keeps it distinct from any exit status.
            code: status.code().unwrap_or(-1),
            stdout: text(stdout),
            stderr: text(stderr),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_executable::write_executable;

    #[test]
    fn runs_with_only_the_explicit_environment_and_finds_on_the_hook_path() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("probe-tool");
        write_executable(
            &tool,
            "#!/bin/sh\necho \"$@\"; env | sort; echo oops >&2; exit 3\n",
        );
        let cmds = SystemCommands::new(Some(dir.path().to_str().unwrap()), Path::new("/conf-dir"));
        let found = cmds.find("probe-tool").unwrap();
        assert_eq!(found, tool);
        let out = cmds
            .run(&found, &["a", "b c"], Duration::from_secs(30))
            .unwrap();
        assert_eq!(out.code, 3);
        assert!(out.stdout.starts_with("a b c\n"), "{}", out.stdout);
        assert!(out.stdout.contains("LXD_CONF=/conf-dir\n"));
        assert!(out.stdout.contains("HOME=/conf-dir\n"));
        assert!(!out.stdout.contains("CARGO"), "leaked env: {}", out.stdout);
        assert_eq!(out.stderr, "oops\n");
        assert!(cmds.find("surely-not-a-program-xyz").is_none());
    }

    #[test]
    fn a_hung_program_is_killed_at_the_deadline() {
        let cmds = SystemCommands::new(None, Path::new("/tmp"));
        let sleep = cmds.find("sleep").unwrap();
        let err = cmds
            .run(&sleep, &["30"], Duration::from_millis(100))
            .unwrap_err();
        assert!(matches!(err, CommandError::Timeout { .. }), "{err}");
    }
}
