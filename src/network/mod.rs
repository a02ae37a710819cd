//! The runners' network: the LXD bridge they sit on, the charm's egress ACL on it (the
//! `denylist` and host isolation enforced), and the NIC they get.
//!
//! Pure parts: [`cidr`] (IPv4 networks), [`acl::egress_rules`] (the firewall as data),
//! [`converge::bridge_changes`]. Effects go through [`crate::lxd::network::LxdNetworks`].

pub mod acl;
pub mod cidr;
pub mod converge;

use crate::lxd::LxdError;
use std::collections::BTreeMap;

/// The bridge `lxd init --auto` creates; the runners' network outside test mode.
pub const DEFAULT_BRIDGE: &str = "lxdbr0";
/// Test-only knob: the bridge runners get instead of [`DEFAULT_BRIDGE`] (a test's own).
pub const BRIDGE_ENV: &str = "GITHUB_RUNNER_LXD_BRIDGE";
/// The runner NIC's device name (replaces the default profile's `eth0`).
pub const RUNNER_NIC: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "LXD network {name} is a {kind} network, not an LXD-managed bridge: runners need one \
         (rename or remove it, or let `lxd init --auto` create {name})"
    )]
    NotAManagedBridge { name: String, kind: String },
    #[error(transparent)]
    Lxd(#[from] LxdError),
}

/// The runner NIC: on `bridge`, unable to spoof another instance's MAC or IPv4 address or to
/// talk to its neighbours on the bridge.
pub fn runner_nic(bridge: &str) -> BTreeMap<String, String> {
    [
        ("type", "nic"),
        ("network", bridge),
        ("security.mac_filtering", "true"),
        ("security.ipv4_filtering", "true"),
        ("security.port_isolation", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The charm's ACL name for a unit (`github-runner-0` -> `ghr-github-runner-0`): one per
/// unit, so units sharing a machine never rewrite each other's rules.
pub fn acl_name(unit_name: &str) -> String {
    let cleaned: String = unit_name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    format!("ghr-{cleaned}")
}
