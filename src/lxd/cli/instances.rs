//! The instance calls: list (one REST query), launch, exec, push, stop, delete.

use super::*;

#[derive(Deserialize)]
pub(super) struct RawInstance {
    name: String,
    status: String,
    #[serde(rename = "type")]
    instance_type: String,
    #[serde(default)]
    created_at: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    profiles: Vec<String>,
}

/// An instance of the machine-wide listing: its project and the limits it runs with.
#[derive(Deserialize)]
pub(super) struct RawMachineInstance {
    name: String,
    #[serde(default)]
    project: String,
    #[serde(default)]
    expanded_config: BTreeMap<String, String>,
}

impl RawMachineInstance {
    pub(super) fn into_machine_instance(mut self) -> MachineInstance {
        MachineInstance {
            project: self.project,
            name: self.name,
            limits: crate::manager::footprint::InstanceLimits {
                cpu: self.expanded_config.remove("limits.cpu"),
                memory: self.expanded_config.remove("limits.memory"),
            },
        }
    }
}

impl RawInstance {
    pub(super) fn into_instance(self) -> Result<Instance, LxdError> {
        let instance_type =
            parse_instance_type(&self.instance_type).ok_or_else(|| LxdError::Parse {
                operation: "list".into(),
                reason: format!(
                    "instance {} has unknown type {:?}",
                    self.name, self.instance_type
                ),
            })?;
        Ok(Instance {
            state: parse_state(&self.status),
            instance_type,
            created_at_epoch: rfc3339_to_epoch(&self.created_at).unwrap_or(0),
            name: self.name,
            config: self.config,
            profiles: self.profiles,
        })
    }
}

pub(crate) fn parse_state(status: &str) -> InstanceState {
    match status {
        "Running" => InstanceState::Running,
        "Stopped" => InstanceState::Stopped,
        "Error" => InstanceState::Error,
        other => InstanceState::Other(other.to_string()),
    }
}

pub(super) fn parse_instance_type(t: &str) -> Option<InstanceType> {
    match t {
        "container" => Some(InstanceType::Container),
        "virtual-machine" => Some(InstanceType::VirtualMachine),
        _ => None,
    }
}

/// Seconds since the epoch of an RFC 3339 UTC time as LXD writes it (`2024-01-02T03:04:05.6Z`).
pub(crate) fn rfc3339_to_epoch(s: &str) -> Option<u64> {
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let time = rest.get(..8)?;
    let mut t = time.split(':');
    let (h, mi, se): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&da) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    // Offset: LXD writes UTC ("Z"); honour an explicit +hh:mm / -hh:mm too.
    let tail = rest.get(8..)?;
    let tail = tail.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match tail {
        "Z" | "z" | "" => 0,
        o if o.len() == 6 => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o.get(1..3)?.parse::<i64>().ok()? * 3600
                + o.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, da);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(secs).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// How an `lxc file push` ended: a missing instance is told apart from other errors.
pub(super) fn file_transfer_result(
    out: &Captured,
    instance: &str,
    operation: String,
) -> Result<(), LxdError> {
    if out.code == 0 {
        return Ok(());
    }
    let message = lxd_message(&out.stderr);
    if message.contains("Instance not found") {
        Err(LxdError::InstanceNotFound(instance.to_string()))
    } else {
        Err(LxdError::Command { operation, message })
    }
}

pub(super) fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

pub(super) fn list_owned_instances(
    cli: &LxcCli,
    owner_value: &str,
) -> Result<Vec<Instance>, LxdError> {
    Ok(cli
        .list_all_instances()?
        .into_iter()
        .filter(|i| i.config.get(OWNER_CONFIG_KEY).map(String::as_str) == Some(owner_value))
        .collect())
}

pub(super) fn launch(cli: &LxcCli, spec: &LaunchSpec) -> Result<(), LxdError> {
    let mut args: Vec<String> = vec![
        "launch".into(),
        spec.image_alias.clone(),
        spec.name.clone(),
        "--quiet".into(),
    ];
    if spec.instance_type == InstanceType::VirtualMachine {
        args.push("--vm".into());
    }
    if spec.ephemeral {
        args.push("--ephemeral".into());
    }
    for p in &spec.profiles {
        args.push("--profile".into());
        args.push(p.clone());
    }
    for (k, v) in &spec.config {
        args.push("--config".into());
        args.push(format!("{k}={v}"));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli.run("launch", &argv, None, DEFAULT_COMMAND_TIMEOUT)?;
    if out.code == 0 {
        return Ok(());
    }
    let message = lxd_message(&out.stderr);
    if message.contains("Image not found") || message.contains("couldn't be found") {
        Err(LxdError::ImageNotFound(spec.image_alias.clone()))
    } else {
        Err(LxdError::Command {
            operation: format!("launch {}", spec.name),
            message,
        })
    }
}

pub(super) fn exec(cli: &LxcCli, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
    let (uid, gid) = (spec.uid.to_string(), spec.gid.to_string());
    let mut args: Vec<String> = vec![
        "exec".into(),
        instance.into(),
        "--force-noninteractive".into(),
        "--user".into(),
        uid,
        "--group".into(),
        gid,
    ];
    for (k, v) in &spec.env {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    args.push("--".into());
    args.extend(spec.argv.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let operation = format!("exec in {instance}");
    // Without stdin, lxc gets /dev/null so the command sees EOF, not a hang.
    let stdin = Some(spec.stdin.as_deref().unwrap_or(&[]));
    let out = cli.run_capped(&operation, &argv, stdin, spec.timeout, spec.output_cap)?;
    if exec_failed_in_lxd(out.code, &out.stderr) {
        let message = lxd_message(&out.stderr);
        return Err(if message.contains("Instance not found") {
            LxdError::InstanceNotFound(instance.to_string())
        } else {
            LxdError::Command { operation, message }
        });
    }
    Ok(ExecOutput {
        exit_code: out.code,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: out.stderr,
    })
}

pub(super) fn push_file(cli: &LxcCli, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
    let operation = format!("file push to {instance}{}", spec.target);
    // In-memory contents go through a 0600 temp file (tempfile's default mode) that only
    // lives for this call, so a secret never sits in a world-readable place or in argv.
    let temp;
    let source: &Path = match &spec.source {
        PushSource::File(path) => path,
        PushSource::Bytes(bytes) => {
            let mut file =
                crate::host::file::temp_file_in(&cli.conf_dir).map_err(|e| LxdError::Io {
                    operation: operation.clone(),
                    reason: e.to_string(),
                })?;
            file.write_all(bytes)
                .and_then(|_| file.flush())
                .map_err(|e| LxdError::Io {
                    operation: operation.clone(),
                    reason: e.to_string(),
                })?;
            temp = file;
            temp.path()
        }
    };
    let source = source.to_str().ok_or_else(|| LxdError::Io {
        operation: operation.clone(),
        reason: format!("source path {} is not UTF-8", source.display()),
    })?;
    let target = format!("{instance}/{}", spec.target.trim_start_matches('/'));
    let (mode, uid, gid) = (
        format!("{:04o}", spec.mode),
        spec.uid.to_string(),
        spec.gid.to_string(),
    );
    let args = [
        "file",
        "push",
        "--quiet",
        "--create-dirs",
        "--mode",
        &mode,
        "--uid",
        &uid,
        "--gid",
        &gid,
        source,
        &target,
    ];
    let out = cli.run(&operation, &args, None, DEFAULT_COMMAND_TIMEOUT)?;
    file_transfer_result(&out, instance, operation)
}

pub(super) fn stop(
    cli: &LxcCli,
    instance: &str,
    force: bool,
    timeout: Duration,
) -> Result<(), LxdError> {
    let secs = secs_ceil(timeout).max(1).to_string();
    let mut args = vec!["stop", instance, "--timeout", &secs];
    if force {
        args.push("--force");
    }
    let out = cli.run(
        &format!("stop {instance}"),
        &args,
        None,
        timeout + STOP_CLIENT_GRACE,
    )?;
    if out.code == 0 {
        return Ok(());
    }
    let message = lxd_message(&out.stderr);
    if message.contains("Instance not found") {
        Err(LxdError::InstanceNotFound(instance.to_string()))
    } else if message.contains("already stopped") || message.contains("is not running") {
        Ok(())
    } else {
        Err(LxdError::Command {
            operation: format!("stop {instance}"),
            message,
        })
    }
}

pub(super) fn delete(cli: &LxcCli, instance: &str, force: bool) -> Result<(), LxdError> {
    let mut args = vec!["delete", instance];
    if force {
        args.push("--force");
    }
    let out = cli.run(
        &format!("delete {instance}"),
        &args,
        None,
        DEFAULT_COMMAND_TIMEOUT,
    )?;
    if out.code == 0 {
        return Ok(());
    }
    let message = lxd_message(&out.stderr);
    // An ephemeral instance may vanish between our call and LXD's check: already deleted.
    if message.contains("Instance not found") || message.contains("not found") {
        Ok(())
    } else {
        Err(LxdError::Command {
            operation: format!("delete {instance}"),
            message,
        })
    }
}
