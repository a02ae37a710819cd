//! The few machine-level LXD settings the setup tweaks (bridge IPv6, NIC filtering on the
//! default profile, whether LXD was ever initialised), through `lxc query`.
//!
//! Kept apart from [`crate::lxd::Lxd`], which is what runners need; these are only for
//! host setup.

use super::commands::{CommandOutput, HostCommands};
use crate::lxd::LxdError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Device name -> device keys.
pub type Devices = BTreeMap<String, BTreeMap<String, String>>;

const QUERY_TIMEOUT: Duration = Duration::from_secs(120);

pub trait LxdHostOps {
    /// The network's config, or None when no such network exists.
    fn network_config(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, LxdError>;
    /// Sets `config` keys on the network (others stay).
    fn set_network_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError>;
    /// The profile's devices, or None when no such profile exists.
    fn profile_devices(&self, profile: &str) -> Result<Option<Devices>, LxdError>;
    /// Sets `keys` on one device of the profile (other devices and keys stay).
    fn set_profile_device_keys(
        &self,
        profile: &str,
        device: &str,
        keys: &BTreeMap<String, String>,
    ) -> Result<(), LxdError>;
    /// How many storage pools the server has (0: `lxd init` never ran).
    fn storage_pool_count(&self) -> Result<usize, LxdError>;
}

/// [`LxdHostOps`] over `lxc query`, in the charm's project (the project goes into the URL:
/// `lxc query` refuses `--project`).
pub struct LxcQueryOps<C> {
    commands: C,
    lxc: PathBuf,
    project: Option<String>,
}

impl<C: HostCommands> LxcQueryOps<C> {
    pub fn new(commands: C, project: Option<String>) -> Result<Self, LxdError> {
        let lxc = commands.find("lxc").ok_or(LxdError::LxcMissing)?;
        Ok(LxcQueryOps {
            commands,
            lxc,
            project,
        })
    }

    fn url(&self, path: &str) -> String {
        match &self.project {
            Some(p) => format!("{path}?project={p}"),
            None => path.to_string(),
        }
    }

    fn query(
        &self,
        operation: &str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, LxdError> {
        let url = self.url(path);
        let body_text = body.map(Value::to_string);
        let mut args = vec!["query", "-X", method];
        if let Some(text) = &body_text {
            args.push("--data");
            args.push(text);
        }
        args.push(&url);
        let out: CommandOutput =
            self.commands
                .run(&self.lxc, &args, QUERY_TIMEOUT)
                .map_err(|e| LxdError::Io {
                    operation: operation.to_string(),
                    reason: e.to_string(),
                })?;
        if !out.success() {
            let message = out
                .stderr
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Error: "))
                .collect::<Vec<_>>()
                .join("; ");
            let message = if message.is_empty() {
                out.stderr.trim().to_string()
            } else {
                message
            };
            if message.to_ascii_lowercase().contains("not found") {
                return Ok(None);
            }
            return Err(LxdError::Command {
                operation: operation.to_string(),
                message,
            });
        }
        if out.stdout.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&out.stdout)
            .map(Some)
            .map_err(|e| LxdError::Parse {
                operation: operation.to_string(),
                reason: e.to_string(),
            })
    }

    fn parse<T: serde::de::DeserializeOwned>(operation: &str, v: Value) -> Result<T, LxdError> {
        serde_json::from_value(v).map_err(|e| LxdError::Parse {
            operation: operation.to_string(),
            reason: e.to_string(),
        })
    }
}

fn segment(name: &str) -> Result<&str, LxdError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        Ok(name)
    } else {
        Err(LxdError::Command {
            operation: "query".into(),
            message: format!("{name:?} is not a valid LXD object name"),
        })
    }
}

impl<C: HostCommands> LxdHostOps for LxcQueryOps<C> {
    /// In a project of its own (the test knob) the charm leaves the daemon's networks alone:
    /// they belong to the default project and to whoever else uses the daemon.
    fn network_config(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, LxdError> {
        if self.project.as_deref().is_some_and(|p| p != "default") {
            return Ok(None);
        }
        let op = format!("network {name}");
        let path = format!("/1.0/networks/{}", segment(name)?);
        match self.query(&op, "GET", &path, None)? {
            None => Ok(None),
            Some(mut v) => Self::parse(&op, v["config"].take()).map(Some),
        }
    }

    fn set_network_config(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        let op = format!("network set {name}");
        let path = format!("/1.0/networks/{}", segment(name)?);
        let body = serde_json::json!({ "config": config });
        self.query(&op, "PATCH", &path, Some(&body))?
            .map(drop)
            .ok_or_else(|| LxdError::Command {
                operation: op,
                message: "network vanished".into(),
            })
    }

    fn profile_devices(&self, profile: &str) -> Result<Option<Devices>, LxdError> {
        let op = format!("profile {profile}");
        let path = format!("/1.0/profiles/{}", segment(profile)?);
        match self.query(&op, "GET", &path, None)? {
            None => Ok(None),
            Some(mut v) => Self::parse(&op, v["devices"].take()).map(Some),
        }
    }

    fn set_profile_device_keys(
        &self,
        profile: &str,
        device: &str,
        keys: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        let op = format!("profile {profile} device {device}");
        let path = format!("/1.0/profiles/{}", segment(profile)?);
        let missing = || LxdError::Command {
            operation: op.clone(),
            message: "profile or device vanished".into(),
        };
        // GET then PUT the whole profile: PATCH would replace the device with only `keys`.
        let mut current = self.query(&op, "GET", &path, None)?.ok_or_else(missing)?;
        let dev = current["devices"]
            .get_mut(device)
            .and_then(Value::as_object_mut)
            .ok_or_else(missing)?;
        for (k, v) in keys {
            dev.insert(k.clone(), Value::String(v.clone()));
        }
        let body = serde_json::json!({
            "config": current["config"],
            "description": current["description"],
            "devices": current["devices"],
        });
        self.query(&op, "PUT", &path, Some(&body))?
            .map(drop)
            .ok_or_else(missing)
    }

    fn storage_pool_count(&self) -> Result<usize, LxdError> {
        let op = "storage pools";
        // Pools are global: the project parameter is ignored by LXD for them.
        match self.query(op, "GET", "/1.0/storage-pools", None)? {
            Some(Value::Array(pools)) => Ok(pools.len()),
            Some(other) => Err(LxdError::Parse {
                operation: op.into(),
                reason: format!("expected a list, got {other}"),
            }),
            None => Ok(0),
        }
    }
}
