//! The few machine-level LXD settings the setup tweaks (bridge IPv6, NIC filtering on the
//! default profile, whether LXD was ever initialised), through `lxc query`.
//!
//! Kept apart from [`crate::lxd::Lxd`], which is what runners need; these are only for
//! host setup.

use super::commands::{CommandOutput, HostCommands};
use crate::lxd::cli::lxd_message;
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
    /// The `source` of storage pool `name`, or None when there is no such pool.
    fn storage_pool_source(&self, name: &str) -> Result<Option<String>, LxdError>;
    /// The LXD project the charm works in exists (always true for the default project).
    /// Checked before anything is created: LXD ignores an unknown project for global
    /// objects such as storage pools, and reports a project-scoped object in it as "not
    /// found" rather than the project.
    fn project_exists(&self) -> Result<bool, LxdError>;
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
            let message = lxd_message(&out.stderr);
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

    fn storage_pool_source(&self, name: &str) -> Result<Option<String>, LxdError> {
        let op = format!("storage pool {name}");
        let path = format!("/1.0/storage-pools/{}", segment(name)?);
        Ok(self.query(&op, "GET", &path, None)?.map(|v| {
            v["config"]["source"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }))
    }

    fn project_exists(&self) -> Result<bool, LxdError> {
        let Some(project) = self.project.as_deref() else {
            return Ok(true);
        };
        let op = format!("project {project}");
        // Asked without the project parameter: a project is not inside itself.
        let path = format!("/1.0/projects/{}", segment(project)?);
        let unscoped = LxcQueryOps {
            commands: &self.commands,
            lxc: self.lxc.clone(),
            project: None,
        };
        Ok(unscoped.query(&op, "GET", &path, None)?.is_some())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::setup::commands::CommandError;
    use std::path::Path;
    use std::sync::Mutex;

    /// Answers every `lxc query` with the next scripted output; records the arguments.
    struct Scripted {
        answers: Mutex<Vec<CommandOutput>>,
        calls: Mutex<Vec<String>>,
    }

    fn out(code: i32, stdout: &str, stderr: &str) -> CommandOutput {
        CommandOutput {
            code,
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    impl Scripted {
        fn new(mut answers: Vec<CommandOutput>) -> Self {
            answers.reverse();
            Scripted {
                answers: Mutex::new(answers),
                calls: Mutex::new(Vec::new()),
            }
        }
    }

    impl HostCommands for Scripted {
        fn find(&self, program: &str) -> Option<PathBuf> {
            Some(PathBuf::from(format!("/usr/bin/{program}")))
        }
        fn run(
            &self,
            _program: &Path,
            args: &[&str],
            _timeout: Duration,
        ) -> Result<CommandOutput, CommandError> {
            self.calls.lock().unwrap().push(args.join(" "));
            Ok(self
                .answers
                .lock()
                .unwrap()
                .pop()
                .expect("a scripted answer"))
        }
    }

    #[test]
    fn not_found_is_none_other_errors_carry_lxds_words() {
        let s = Scripted::new(vec![
            out(1, "", "Error: Network not found\n"),
            out(1, "", "Error: Failed to connect to local LXD\n"),
            out(
                0,
                r#"{"config":{"ipv6.address":"auto"},"name":"lxdbr0"}"#,
                "",
            ),
        ]);
        let ops = LxcQueryOps::new(&s, None).unwrap();
        assert_eq!(ops.network_config("lxdbr0").unwrap(), None);
        match ops.network_config("lxdbr0") {
            Err(LxdError::Command { message, .. }) => {
                assert_eq!(message, "Failed to connect to local LXD")
            }
            other => panic!("{other:?}"),
        }
        let config = ops.network_config("lxdbr0").unwrap().unwrap();
        assert_eq!(config["ipv6.address"], "auto");
        assert_eq!(
            s.calls.lock().unwrap()[0],
            "query -X GET /1.0/networks/lxdbr0"
        );
    }

    #[test]
    fn the_project_goes_into_the_url_and_networks_are_left_alone_there() {
        let s = Scripted::new(vec![out(0, r#"{"devices":{}}"#, "")]);
        let ops = LxcQueryOps::new(&s, Some("ghrt-1-2".into())).unwrap();
        assert_eq!(ops.network_config("lxdbr0").unwrap(), None);
        assert_eq!(
            ops.profile_devices("default").unwrap(),
            Some(Devices::new())
        );
        assert_eq!(
            *s.calls.lock().unwrap(),
            ["query -X GET /1.0/profiles/default?project=ghrt-1-2"],
            "no network query at all in a test project"
        );
    }

    #[test]
    fn the_project_is_looked_up_without_the_project_parameter() {
        let s = Scripted::new(vec![
            out(0, r#"{"name":"ghrt-1-2"}"#, ""),
            out(1, "", "Error: Project not found\n"),
        ]);
        let ops = LxcQueryOps::new(&s, Some("ghrt-1-2".into())).unwrap();
        assert!(ops.project_exists().unwrap());
        assert!(!ops.project_exists().unwrap());
        assert_eq!(
            s.calls.lock().unwrap()[0],
            "query -X GET /1.0/projects/ghrt-1-2"
        );
        let default = LxcQueryOps::new(&s, None).unwrap();
        assert!(default.project_exists().unwrap(), "no lxc call needed");
        assert_eq!(s.calls.lock().unwrap().len(), 2);
    }

    #[test]
    fn setting_network_keys_patches_only_those_keys() {
        let s = Scripted::new(vec![out(0, "", "")]);
        let ops = LxcQueryOps::new(&s, None).unwrap();
        let keys = BTreeMap::from([("ipv6.address".to_string(), "none".to_string())]);
        ops.set_network_config("lxdbr0", &keys).unwrap();
        assert_eq!(
            s.calls.lock().unwrap()[0],
            r#"query -X PATCH --data {"config":{"ipv6.address":"none"}} /1.0/networks/lxdbr0"#
        );
    }

    #[test]
    fn names_that_are_not_lxd_names_never_reach_a_url() {
        let s = Scripted::new(vec![]);
        let ops = LxcQueryOps::new(&s, None).unwrap();
        assert!(ops.profile_devices("../instances").is_err());
        assert!(ops.network_config("a b").is_err());
        assert!(s.calls.lock().unwrap().is_empty());
    }
}
