//! The runner image: present under the base-image alias, or built by
//! `scripts/build-runner-image.sh` (and rebuilt daily from cron).

use crate::host::child::{wait_with_deadline, HOST_PROGRAM_PATH};
use crate::lxd::{InstanceType, Lxd, LxdError};
use crate::paths::HostPaths;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The build script, relative to the charm directory.
pub const BUILD_SCRIPT: &str = "scripts/build-runner-image.sh";
/// Status shown while the image is built.
pub const BUILDING_IMAGE_STATUS: &str = crate::messages::BUILDING_IMAGE;
/// The cron file scheduling the daily rebuild, below HostPaths::cron_dir().
pub const REBUILD_CRON_FILE: &str = "github-runner-image";
/// A build downloads an Ubuntu image and upgrades it: bound it generously.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("could not check for image {alias}: {source}")]
    Lookup { alias: String, source: LxdError },
    #[error("could not run {script}: {reason}")]
    Spawn { script: String, reason: String },
    #[error("building the runner image {alias} failed (exit {exit_code}); see {log}")]
    BuildFailed {
        alias: String,
        exit_code: i32,
        log: String,
    },
    #[error("building the runner image {alias} took longer than {seconds}s and was stopped")]
    Timeout { alias: String, seconds: u64 },
    #[error("the image build finished but alias {alias} is still missing")]
    StillMissing { alias: String },
    #[error("could not write {path}: {reason}")]
    Write { path: String, reason: String },
}

/// How the charm invokes the build script: program, arguments and the whole environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// Proxies for the build (Juju's model proxies), passed in the environment, never argv.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildProxies {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

fn instance_type_arg(t: InstanceType) -> &'static str {
    match t {
        InstanceType::VirtualMachine => "virtual-machine",
        InstanceType::Container => "container",
    }
}

/// `bash <charm>/scripts/build-runner-image.sh --alias <alias> --type <type> --lock <lock>`
/// with an explicit environment: PATH, LXD_CONF (the charm's), LANG and the proxies. The
/// script waits for `lock` (`HostPaths::image_build_lock_file`, machine-wide), so the
/// install-time build and every unit's daily cron never run at once: they share the
/// builder instance and LXD's proxy settings.
pub fn build_command(
    charm_dir: &Path,
    lxd_conf_dir: &Path,
    lock: &Path,
    alias: &str,
    instance_type: InstanceType,
    proxies: &BuildProxies,
) -> BuildCommand {
    let mut env = vec![
        ("PATH".to_string(), HOST_PROGRAM_PATH.to_string()),
        ("LANG".to_string(), "C.UTF-8".to_string()),
        ("LXD_CONF".to_string(), lxd_conf_dir.display().to_string()),
        ("HOME".to_string(), lxd_conf_dir.display().to_string()),
    ];
    for (key, value) in [
        ("HTTP_PROXY", &proxies.http),
        ("HTTPS_PROXY", &proxies.https),
        ("NO_PROXY", &proxies.no_proxy),
    ] {
        if let Some(v) = value {
            env.push((key.to_string(), v.clone()));
        }
    }
    BuildCommand {
        program: PathBuf::from("/bin/bash"),
        args: vec![
            charm_dir.join(BUILD_SCRIPT).display().to_string(),
            "--alias".into(),
            alias.into(),
            "--type".into(),
            instance_type_arg(instance_type).into(),
            "--lock".into(),
            lock.display().to_string(),
        ],
        env,
    }
}

/// Runs the build, its output appended to `log`, bounded by `timeout`.
pub fn run_build(
    cmd: &BuildCommand,
    alias: &str,
    log: &Path,
    timeout: Duration,
) -> Result<(), ImageError> {
    let script = cmd.args.first().cloned().unwrap_or_default();
    let spawn_err = |reason: String| ImageError::Spawn {
        script: script.clone(),
        reason,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| spawn_err(e.to_string()))?;
    }
    // 0600: the build prints the model's proxy settings, which may carry credentials.
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .map_err(|e| spawn_err(e.to_string()))?;
    log_file
        .set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| spawn_err(e.to_string()))?;
    let log_err = log_file.try_clone().map_err(|e| spawn_err(e.to_string()))?;
    let mut child = Command::new(&cmd.program)
        .args(&cmd.args)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|e| spawn_err(e.to_string()))?;
    let status = wait_with_deadline(&mut child, timeout)
        .map_err(|e| spawn_err(e.to_string()))?
        .ok_or_else(|| ImageError::Timeout {
            alias: alias.to_string(),
            seconds: timeout.as_secs(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(ImageError::BuildFailed {
            alias: alias.to_string(),
            exit_code: status.code().unwrap_or(-1),
            log: log.display().to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageState {
    AlreadyPresent,
    Built,
}

/// Builds the image when `alias` is missing: `on_build_start` runs first (the charm sets
/// [`BUILDING_IMAGE_STATUS`]), then `build`, then the alias must exist.
pub fn ensure_image(
    lxd: &dyn Lxd,
    alias: &str,
    on_build_start: &mut dyn FnMut(),
    build: &mut dyn FnMut() -> Result<(), ImageError>,
) -> Result<ImageState, ImageError> {
    let lookup = |lxd: &dyn Lxd| {
        lxd.image_exists(alias)
            .map_err(|source| ImageError::Lookup {
                alias: alias.to_string(),
                source,
            })
    };
    if lookup(lxd)? {
        return Ok(ImageState::AlreadyPresent);
    }
    on_build_start();
    build()?;
    if lookup(lxd)? {
        Ok(ImageState::Built)
    } else {
        Err(ImageError::StillMissing {
            alias: alias.to_string(),
        })
    }
}

/// The daily rebuild cron file: one run a day at `minute`:`hour` (spread per unit by the
/// caller), as root, with the build's environment, output appended to `log`.
pub fn render_rebuild_cron(cmd: &BuildCommand, minute: u8, hour: u8, log: &Path) -> String {
    let mut out =
        String::from("# Managed by the github-runner charm: daily rebuild of the runner image.\n");
    for (k, v) in &cmd.env {
        out.push_str(&format!("{k}={v}\n"));
    }
    let args: Vec<String> = cmd.args.iter().map(|a| shell_quote(a)).collect();
    out.push_str(&format!(
        "{} {} * * * root {} {} >>{} 2>&1\n",
        minute % 60,
        hour % 24,
        cmd.program.display(),
        args.join(" "),
        shell_quote(&log.display().to_string())
    ));
    out
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// When a unit rebuilds daily: a minute and hour derived from its name, so the units of a
/// large deployment do not all hit the image server at once (stable across hooks).
pub fn rebuild_time(unit_name: &str) -> (u8, u8) {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(unit_name.as_bytes());
    (digest[0] % 60, digest[1] % 24)
}

/// Installs the cron file holding `content` unless it already does. The file is 0600: it
/// carries the model's proxy settings, which may hold credentials (cron only requires that
/// group and others cannot write it).
pub fn install_rebuild_cron(paths: &HostPaths, content: &str) -> Result<PathBuf, ImageError> {
    let path = paths.rebuild_cron_file();
    crate::host::file::replace_if_changed(&path, content, 0o600).map_err(|e| {
        ImageError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    // An older charm's machine-wide rule rebuilds the same shared image: once a unit has
    // its own, that one goes (whichever unit upgrades first removes it).
    let legacy = paths.legacy().rebuild_cron_file();
    if legacy != path {
        match std::fs::remove_file(&legacy) {
            Ok(()) => tracing::info!("removed the older machine-wide {}", legacy.display()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not remove {}: {e}", legacy.display()),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::create::tests::ScriptedLxd;

    fn cmd(t: InstanceType, proxies: &BuildProxies) -> BuildCommand {
        build_command(
            Path::new("/var/lib/juju/agents/unit-x-0/charm"),
            Path::new("/conf"),
            Path::new("/run/github-runner-charm/image-build.lock"),
            "jammy",
            t,
            proxies,
        )
    }

    #[test]
    fn build_command_names_alias_and_type_with_an_explicit_env() {
        let c = cmd(
            InstanceType::VirtualMachine,
            &BuildProxies {
                http: Some("http://p:3128".into()),
                ..Default::default()
            },
        );
        assert_eq!(c.program, PathBuf::from("/bin/bash"));
        assert_eq!(
            c.args,
            vec![
                "/var/lib/juju/agents/unit-x-0/charm/scripts/build-runner-image.sh",
                "--alias",
                "jammy",
                "--type",
                "virtual-machine",
                "--lock",
                "/run/github-runner-charm/image-build.lock"
            ]
        );
        let keys: Vec<&str> = c.env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "LANG", "LXD_CONF", "HOME", "HTTP_PROXY"]);
        assert_eq!(
            cmd(InstanceType::Container, &BuildProxies::default()).args[4],
            "container"
        );
    }

    #[test]
    fn missing_alias_triggers_status_then_build() {
        let lxd = ScriptedLxd {
            fail: vec![],
            ..Default::default()
        };
        let mut events = Vec::new();
        // ScriptedLxd answers image_exists with true: nothing to build.
        let state =
            ensure_image(&lxd, "jammy", &mut || events.push("status"), &mut || Ok(())).unwrap();
        assert_eq!(state, ImageState::AlreadyPresent);
        assert!(events.is_empty());
        let failing = ScriptedLxd {
            fail: vec!["image_exists"],
            ..Default::default()
        };
        assert!(matches!(
            ensure_image(&failing, "jammy", &mut || {}, &mut || Ok(())),
            Err(ImageError::Lookup { .. })
        ));
    }

    #[test]
    fn the_script_runs_with_the_given_args_and_only_the_given_env() {
        let dir = tempfile::tempdir().unwrap();
        let charm = dir.path().join("charm");
        std::fs::create_dir_all(charm.join("scripts")).unwrap();
        let record = dir.path().join("record");
        std::fs::write(
            charm.join(BUILD_SCRIPT),
            format!(
                "echo \"$@\" > {0}; env | sort >> {0}; echo building\n",
                record.display()
            ),
        )
        .unwrap();
        let c = build_command(
            &charm,
            Path::new("/conf"),
            &dir.path().join("build.lock"),
            "noble",
            InstanceType::Container,
            &BuildProxies::default(),
        );
        let log = dir.path().join("log/build.log");
        run_build(&c, "noble", &log, Duration::from_secs(30)).unwrap();
        let recorded = std::fs::read_to_string(&record).unwrap();
        assert!(
            recorded.starts_with(&format!(
                "--alias noble --type container --lock {}\n",
                dir.path().join("build.lock").display()
            )),
            "{recorded}"
        );
        assert!(recorded.contains("LXD_CONF=/conf\n"));
        assert!(
            !recorded.contains("CARGO"),
            "the test's environment leaked: {recorded}"
        );
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "building\n");

        std::fs::write(charm.join(BUILD_SCRIPT), "exit 4\n").unwrap();
        match run_build(&c, "noble", &log, Duration::from_secs(30)) {
            Err(ImageError::BuildFailed { exit_code: 4, .. }) => {}
            other => panic!("{other:?}"),
        }
        std::fs::write(charm.join(BUILD_SCRIPT), "exec sleep 30\n").unwrap();
        assert!(matches!(
            run_build(&c, "noble", &log, Duration::from_millis(200)),
            Err(ImageError::Timeout { .. })
        ));
    }

    #[test]
    fn rebuild_time_is_stable_per_unit_and_spread_across_units() {
        assert_eq!(
            rebuild_time("github-runner/0"),
            rebuild_time("github-runner/0")
        );
        let times: std::collections::BTreeSet<(u8, u8)> = (0..20)
            .map(|n| rebuild_time(&format!("github-runner/{n}")))
            .collect();
        assert!(times.len() > 10, "{times:?}");
        assert!(times.iter().all(|&(m, h)| m < 60 && h < 24));
    }

    #[test]
    fn cron_runs_the_same_command_daily_as_root() {
        let c = cmd(
            InstanceType::VirtualMachine,
            &BuildProxies {
                https: Some("http://p:3128".into()),
                ..Default::default()
            },
        );
        let text = render_rebuild_cron(&c, 17, 3, Path::new("/var/log/build-runner-image.log"));
        assert!(text.contains("\nHTTPS_PROXY=http://p:3128\n"), "{text}");
        assert!(text.contains("\nLXD_CONF=/conf\n"));
        assert!(text.ends_with(
            "17 3 * * * root /bin/bash /var/lib/juju/agents/unit-x-0/charm/scripts/build-runner-image.sh --alias jammy --type virtual-machine --lock /run/github-runner-charm/image-build.lock >>/var/log/build-runner-image.log 2>&1\n"
        ), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let path = install_rebuild_cron(&HostPaths::new(dir.path()), &text).unwrap();
        assert_eq!(path, dir.path().join("etc/cron.d/github-runner-image"));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "proxy settings may hold credentials");

        // A unit's own rule replaces an older charm's machine-wide one.
        let unit = HostPaths::for_unit(dir.path(), "github-runner/0");
        let own = install_rebuild_cron(&unit, &text).unwrap();
        assert_eq!(
            own,
            dir.path()
                .join("etc/cron.d/github-runner-image-github-runner-0")
        );
        assert!(own.exists() && !path.exists());
    }
}
