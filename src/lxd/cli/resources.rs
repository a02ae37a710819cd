//! Images, storage pools, profiles and the server, over `lxc query`.

use super::instances::parse_instance_type;
use super::*;

#[derive(Deserialize, Serialize, PartialEq, Debug, Default)]
pub(super) struct RawProfile {
    #[serde(default)]
    config: BTreeMap<String, String>,
    #[serde(default)]
    devices: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
pub(super) struct RawProfileUse {
    name: String,
    #[serde(default)]
    description: String,
    /// `null` on a profile nothing uses, in some LXD versions.
    #[serde(default, deserialize_with = "null_as_empty")]
    used_by: Vec<String>,
}

pub(super) fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
pub(super) struct RawPool {
    driver: String,
    #[serde(default)]
    config: BTreeMap<String, String>,
}

#[derive(Deserialize)]
pub(super) struct RawServer {
    environment: RawServerEnvironment,
}

#[derive(Deserialize)]
pub(super) struct RawServerEnvironment {
    pub(super) server_version: String,
    /// Newer LXD lists instance types; 5.0 only names its drivers (`lxc | qemu`).
    #[serde(default)]
    pub(super) instance_types: Vec<String>,
    #[serde(default)]
    pub(super) driver: String,
}

/// Instance types a server supports, from `instance_types` or else its driver names.
pub(super) fn server_instance_types(env: &RawServerEnvironment) -> Vec<InstanceType> {
    let mut types: Vec<InstanceType> = env
        .instance_types
        .iter()
        .filter_map(|t| parse_instance_type(t))
        .collect();
    if types.is_empty() {
        types = env
            .driver
            .split('|')
            .filter_map(|d| match d.trim() {
                "lxc" => Some(InstanceType::Container),
                "qemu" => Some(InstanceType::VirtualMachine),
                _ => None,
            })
            .collect();
    }
    types
}

pub(super) fn image_exists(cli: &LxcCli, alias: &str) -> Result<bool, LxdError> {
    let found: Option<serde_json::Value> = cli.get_json(
        "image alias lookup",
        &format!("/1.0/images/aliases/{}", url_segment(alias)),
    )?;
    Ok(found.is_some())
}

pub(super) fn ensure_storage_pool(
    cli: &LxcCli,
    name: &str,
    driver: &str,
    source: &str,
) -> Result<(), LxdError> {
    let operation = format!("storage pool {name}");
    let path = format!("/1.0/storage-pools/{}", url_segment(name));
    let check = |pool: RawPool| -> Result<(), LxdError> {
        let live_source = pool.config.get("source").map(String::as_str).unwrap_or("");
        if pool.driver == driver && live_source == source {
            Ok(())
        } else {
            Err(LxdError::Command {
                operation: operation.clone(),
                message: format!(
                    "pool exists with driver {} and source {live_source:?}, wanted driver {driver} and source {source:?}; \
                     a pool cannot be moved: delete it (lxc storage delete {name}) or redeploy",
                    pool.driver
                ),
            })
        }
    };
    if let Some(pool) = cli.get_json::<RawPool>(&operation, &path)? {
        return check(pool);
    }
    // Storage pools are global: the project in the URL is ignored for them.
    let body = serde_json::json!({"name": name, "driver": driver, "config": {"source": source}});
    match cli.query(&operation, "POST", "/1.0/storage-pools", Some(&body)) {
        Ok(_) => Ok(()),
        // Another unit or hook created it meanwhile: accept it if it is the same pool.
        Err(err) => match cli.get_json::<RawPool>(&operation, &path)? {
            Some(pool) => check(pool),
            None => Err(err),
        },
    }
}

pub(super) fn ensure_profile(cli: &LxcCli, spec: &ProfileSpec) -> Result<(), LxdError> {
    let operation = format!("profile {}", spec.name);
    let path = format!("/1.0/profiles/{}", url_segment(&spec.name));
    let desired = |description: String| RawProfile {
        config: spec.config.clone(),
        devices: spec.devices.clone(),
        description,
    };
    let put = |current: RawProfile| -> Result<(), LxdError> {
        let wanted = desired(current.description.clone());
        if current == wanted {
            return Ok(());
        }
        let body = serde_json::to_value(&wanted).map_err(|e| LxdError::Parse {
            operation: operation.clone(),
            reason: e.to_string(),
        })?;
        match cli.query(&operation, "PUT", &path, Some(&body))? {
            QueryAnswer::Found(_) => Ok(()),
            QueryAnswer::NotFound(message) => Err(LxdError::Command {
                operation: operation.clone(),
                message,
            }),
        }
    };
    if let Some(current) = cli.get_json::<RawProfile>(&operation, &path)? {
        return put(current);
    }
    let body = serde_json::json!({
        "name": spec.name,
        "description": MANAGED_PROFILE_DESCRIPTION,
        "config": spec.config,
        "devices": spec.devices,
    });
    match cli.query(&operation, "POST", "/1.0/profiles", Some(&body)) {
        Ok(_) => Ok(()),
        // Created concurrently: converge it.
        Err(err) => match cli.get_json::<RawProfile>(&operation, &path)? {
            Some(current) => put(current),
            None => Err(err),
        },
    }
}

pub(super) fn list_profiles(cli: &LxcCli) -> Result<Vec<ProfileUse>, LxdError> {
    let raw: Vec<RawProfileUse> = cli
        .get_json("profile list", "/1.0/profiles?recursion=1")?
        .ok_or_else(|| LxdError::Command {
            operation: "profile list".into(),
            message: "GET /1.0/profiles answered not found".into(),
        })?;
    Ok(raw
        .into_iter()
        .map(|p| ProfileUse {
            managed: p.description == MANAGED_PROFILE_DESCRIPTION,
            name: p.name,
            used_by: p.used_by.len(),
        })
        .collect())
}

pub(super) fn delete_profile(cli: &LxcCli, name: &str) -> Result<(), LxdError> {
    let operation = format!("profile delete {name}");
    let path = format!("/1.0/profiles/{}", url_segment(name));
    // Not found: already gone, which is what was asked.
    cli.query(&operation, "DELETE", &path, None).map(drop)
}

pub(super) fn storage_pool_free_bytes(cli: &LxcCli, name: &str) -> Result<Option<u64>, LxdError> {
    let operation = format!("storage info {name}");
    let path = format!("/1.0/storage-pools/{}/resources", url_segment(name));
    let Some(resources) = cli.get_json::<serde_json::Value>(&operation, &path)? else {
        return Ok(None);
    };
    let space = &resources["space"];
    Ok(match (space["total"].as_u64(), space["used"].as_u64()) {
        (Some(total), Some(used)) if total > 0 => Some(total.saturating_sub(used)),
        _ => None,
    })
}

pub(super) fn delete_storage_pool(cli: &LxcCli, name: &str) -> Result<(), LxdError> {
    let operation = format!("storage delete {name}");
    let path = format!("/1.0/storage-pools/{}", url_segment(name));
    cli.query(&operation, "DELETE", &path, None).map(drop)
}

pub(super) fn server_info(cli: &LxcCli) -> Result<ServerInfo, LxdError> {
    let raw: RawServer = cli
        .get_json("server info", "/1.0")?
        .ok_or_else(|| LxdError::Command {
            operation: "server info".into(),
            message: "GET /1.0 answered not found".into(),
        })?;
    Ok(ServerInfo {
        instance_types: server_instance_types(&raw.environment),
        server_version: raw.environment.server_version,
    })
}
