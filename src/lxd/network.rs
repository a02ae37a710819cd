//! LXD networks and network ACLs: what the charm needs to own the runners' bridge and its
//! egress firewall ([`LxdNetworks`]), implemented by [`LxcCli`] through `lxc query`.

use super::cli::{parse_json, url_segment, QueryAnswer};
use super::{LxcCli, LxdError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// One ACL rule in LXD's own JSON shape (`lxc network acl show`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclRule {
    pub action: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub destination_port: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default = "enabled")]
    pub state: String,
}

fn enabled() -> String {
    "enabled".into()
}

impl AclRule {
    pub fn reject(destination: String, protocol: &str, ports: String, description: &str) -> Self {
        AclRule {
            action: "reject".into(),
            destination,
            protocol: protocol.into(),
            destination_port: ports,
            description: description.into(),
            state: enabled(),
        }
    }
}

/// A network as LXD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct NetworkInfo {
    #[serde(default)]
    pub managed: bool,
    /// `bridge`, `physical`, `macvlan`, ...
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// URLs of what uses it (instances, profiles).
    #[serde(default, deserialize_with = "null_as_empty")]
    pub used_by: Vec<String>,
}

/// An ACL as LXD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct AclInfo {
    #[serde(default)]
    pub description: String,
    #[serde(default, deserialize_with = "null_rules_as_empty")]
    pub egress: Vec<AclRule>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub used_by: Vec<String>,
}

pub trait LxdNetworks {
    /// None when no such network exists.
    fn network(&self, name: &str) -> Result<Option<NetworkInfo>, LxdError>;
    fn create_bridge(
        &self,
        name: &str,
        description: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError>;
    /// Sets `config` keys (others stay); an empty value unsets the key.
    fn set_network_keys(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError>;
    /// Idempotent: deleting a missing network is Ok; LXD refuses one in use.
    fn delete_network(&self, name: &str) -> Result<(), LxdError>;
    fn acl(&self, name: &str) -> Result<Option<AclInfo>, LxdError>;
    /// Creates the ACL or replaces its egress rules (ingress stays empty).
    fn put_acl(&self, name: &str, description: &str, egress: &[AclRule]) -> Result<(), LxdError>;
    /// Idempotent: deleting a missing ACL is Ok; LXD refuses one in use.
    fn delete_acl(&self, name: &str) -> Result<(), LxdError>;
}

impl LxdNetworks for LxcCli {
    fn network(&self, name: &str) -> Result<Option<NetworkInfo>, LxdError> {
        let op = format!("network {name}");
        match self.query(
            &op,
            "GET",
            &format!("/1.0/networks/{}", url_segment(name)),
            None,
        )? {
            QueryAnswer::Found(bytes) => parse_json(&op, &bytes).map(Some),
            QueryAnswer::NotFound(_) => Ok(None),
        }
    }

    fn create_bridge(
        &self,
        name: &str,
        description: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        let body =
            json!({"name": name, "type": "bridge", "description": description, "config": config});
        self.query(
            &format!("network create {name}"),
            "POST",
            "/1.0/networks",
            Some(&body),
        )
        .map(drop)
    }

    fn set_network_keys(
        &self,
        name: &str,
        config: &BTreeMap<String, String>,
    ) -> Result<(), LxdError> {
        let op = format!("network set {name}");
        let path = format!("/1.0/networks/{}", url_segment(name));
        // PUT the merged config: PATCH cannot remove a key.
        let current = self.network(name)?.ok_or_else(|| LxdError::Command {
            operation: op.clone(),
            message: "network not found".into(),
        })?;
        let mut merged = current.config;
        for (k, v) in config {
            if v.is_empty() {
                merged.remove(k);
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
        let body = json!({"config": merged, "description": current.description});
        expect_found(&op, self.query(&op, "PUT", &path, Some(&body))?)
    }

    fn delete_network(&self, name: &str) -> Result<(), LxdError> {
        let op = format!("network delete {name}");
        let path = format!("/1.0/networks/{}", url_segment(name));
        self.query(&op, "DELETE", &path, None).map(drop)
    }

    fn acl(&self, name: &str) -> Result<Option<AclInfo>, LxdError> {
        let op = format!("network acl {name}");
        let path = format!("/1.0/network-acls/{}", url_segment(name));
        match self.query(&op, "GET", &path, None)? {
            QueryAnswer::Found(bytes) => parse_json(&op, &bytes).map(Some),
            QueryAnswer::NotFound(_) => Ok(None),
        }
    }

    fn put_acl(&self, name: &str, description: &str, egress: &[AclRule]) -> Result<(), LxdError> {
        let op = format!("network acl {name}");
        let path = format!("/1.0/network-acls/{}", url_segment(name));
        let body = json!({"description": description, "egress": egress, "ingress": []});
        if self.acl(name)?.is_some() {
            return expect_found(&op, self.query(&op, "PUT", &path, Some(&body))?);
        }
        let mut create = body;
        create["name"] = json!(name);
        self.query(&op, "POST", "/1.0/network-acls", Some(&create))
            .map(drop)
    }

    fn delete_acl(&self, name: &str) -> Result<(), LxdError> {
        let op = format!("network acl delete {name}");
        let path = format!("/1.0/network-acls/{}", url_segment(name));
        self.query(&op, "DELETE", &path, None).map(drop)
    }
}

/// LXD answers `"used_by": null` for an unused object.
fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

fn null_rules_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<AclRule>, D::Error> {
    Ok(Option::<Vec<AclRule>>::deserialize(d)?.unwrap_or_default())
}

fn expect_found(op: &str, answer: QueryAnswer) -> Result<(), LxdError> {
    match answer {
        QueryAnswer::Found(_) => Ok(()),
        QueryAnswer::NotFound(message) => Err(LxdError::Command {
            operation: op.to_string(),
            message,
        }),
    }
}
