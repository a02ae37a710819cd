//! The runners' network: the LXD bridge they sit on, the charm's egress ACL on it (the
//! `denylist` and host isolation enforced), and the NIC they get.
//!
//! Pure parts: [`cidr`] (IPv4 networks), [`acl::egress_rules`] (the firewall as data),
//! [`converge::bridge_changes`]. Effects go through [`crate::lxd::network::LxdNetworks`].

pub mod acl;
pub mod aproxy;
pub mod broker;
pub mod cidr;
pub mod converge;
pub mod debug_ssh;
pub mod promises;

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
    #[error(
        "{promise} cannot be kept: the LXD network ACL {acl} on the runners' bridge {bridge} \
         stops it, and LXD applies every ACL of a bridge to every runner on it (units on one \
         machine share it): set the other units of this machine alike, or deploy them to \
         separate machines"
    )]
    PromiseBroken {
        promise: String,
        acl: String,
        bridge: String,
    },
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

/// The instance config key that fixes the runner NIC's MAC address, set at creation.
pub const RUNNER_HWADDR_KEY: &str = "volatile.eth0.hwaddr";

/// The first three bytes of the MAC address of every runner NIC of the unit whose owner
/// value (`<model-uuid>/<unit-name>`) is `owner`: 22 bits of its SHA-256, marked locally
/// administered and unicast. How the unit's nft rules (aproxy) tell its runners from the
/// other units' on the shared bridge.
pub fn unit_mac_prefix(owner: &str) -> [u8; 3] {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(owner.as_bytes());
    [(digest[0] & 0xfc) | 0x02, digest[1], digest[2]]
}

/// The MAC address of a runner NIC: the unit's prefix ([`unit_mac_prefix`]) and three bytes
/// of the runner name's SHA-256 (the name is random, so the MAC is; the same name gives the
/// same MAC, so a rerun creation is no different).
pub fn runner_hwaddr(owner: &str, runner_name: &str) -> String {
    use sha2::Digest;
    let [a, b, c] = unit_mac_prefix(owner);
    let digest = sha2::Sha256::digest(runner_name.as_bytes());
    format!(
        "{a:02x}:{b:02x}:{c:02x}:{:02x}:{:02x}:{:02x}",
        digest[0], digest[1], digest[2]
    )
}

/// The charm's ACL name for a unit (`ghr-5bb2e5a4-github-runner-0`): one per unit and
/// model, so units sharing a machine never rewrite each other's rules; cut to LXD's limit
/// by [`crate::naming::unit_acl`].
pub fn acl_name(identity: &crate::identity::UnitIdentity) -> String {
    crate::naming::unit_acl(identity)
}

/// The bridge runners get: the test knob's when set; else, in a project of the charm's own
/// (the test knob), none (the daemon's networks are not the test's to change); else
/// [`DEFAULT_BRIDGE`].
pub fn runner_bridge(project: Option<&str>, knob: Option<String>) -> Option<String> {
    if let Some(bridge) = knob.map(|b| b.trim().to_string()).filter(|b| !b.is_empty()) {
        return Some(bridge);
    }
    match project {
        Some(p) if p != "default" => None,
        _ => Some(DEFAULT_BRIDGE.to_string()),
    }
}

/// The host's IPv4 addresses from `ip -4 -o addr show` (loopback left out: runners cannot
/// address it through the bridge).
pub fn parse_host_addresses(ip_output: &str) -> Vec<std::net::Ipv4Addr> {
    let mut addrs = addresses_after(ip_output, "inet");
    addrs.retain(|a| !a.is_loopback());
    addrs
}

/// The broadcast addresses of the host's networks (`brd` in `ip -4 -o addr show`).
pub fn parse_host_broadcasts(ip_output: &str) -> Vec<std::net::Ipv4Addr> {
    addresses_after(ip_output, "brd")
}

/// The address after `word` on each line (a `/prefix` dropped), sorted, without duplicates.
fn addresses_after(ip_output: &str, word: &str) -> Vec<std::net::Ipv4Addr> {
    let mut addrs: Vec<std::net::Ipv4Addr> = ip_output
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == word)?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// What the ACL rejects besides the configuration: the host (its addresses and broadcasts)
/// and the job queue broker.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rejected {
    pub host_addresses: Vec<std::net::Ipv4Addr>,
    pub host_broadcasts: Vec<std::net::Ipv4Addr>,
    pub brokers: Vec<std::net::Ipv4Addr>,
}

/// The ACL inputs for a validated configuration (an invalid denylist entry cannot reach
/// here: validation refused it).
pub fn acl_inputs(
    config: &crate::config::CharmConfig,
    rejected: Rejected,
    debug_ssh_servers: Vec<std::net::Ipv4Addr>,
    allowed_host_tcp_ports: Vec<u16>,
) -> acl::AclInputs {
    acl::AclInputs {
        host_addresses: rejected.host_addresses,
        host_broadcasts: rejected.host_broadcasts,
        brokers: rejected.brokers,
        allowed_host_tcp_ports,
        denylist: config
            .denylist
            .iter()
            .filter_map(|n| cidr::Ipv4Net::parse(n))
            .collect(),
        exempt: debug_ssh_servers,
        reject_link_local: !config.allow_link_local,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bridge_is_lxdbr0_unless_a_test_project_or_knob_says_otherwise() {
        assert_eq!(runner_bridge(None, None).as_deref(), Some("lxdbr0"));
        assert_eq!(
            runner_bridge(Some("default"), None).as_deref(),
            Some("lxdbr0")
        );
        assert_eq!(runner_bridge(Some("ghrt-1-2"), None), None);
        assert_eq!(
            runner_bridge(Some("ghrt-1-2"), Some("ghb1".into())).as_deref(),
            Some("ghb1")
        );
        assert_eq!(
            runner_bridge(None, Some(" ".into())).as_deref(),
            Some("lxdbr0")
        );
    }

    #[test]
    fn host_addresses_come_from_ip_addr_without_loopback() {
        let out = "1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever\n\
                   2: eth0    inet 192.0.2.2/24 brd 192.0.2.255 scope global eth0\n\
                   3: lxdbr0    inet 10.1.2.1/24 scope global lxdbr0\n";
        assert_eq!(
            parse_host_addresses(out),
            [
                "10.1.2.1".parse::<std::net::Ipv4Addr>().unwrap(),
                "192.0.2.2".parse().unwrap()
            ]
        );
        assert_eq!(
            parse_host_broadcasts(out),
            ["192.0.2.255".parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn the_runner_nic_filters_spoofing_and_unit_acls_have_lxd_names() {
        let nic = runner_nic("lxdbr0");
        assert_eq!(nic["network"], "lxdbr0");
        assert_eq!(nic["security.mac_filtering"], "true");
        assert_eq!(nic["security.ipv4_filtering"], "true");
        let unit = crate::identity::UnitIdentity {
            app: "github-runner".into(),
            unit_number: 0,
            model_uuid: "5bb2e5a4-1d0b-4d6e".into(),
        };
        assert_eq!(acl_name(&unit), "ghr-5bb2e5a4-github-runner-0");
    }

    #[test]
    fn a_units_runner_macs_share_its_prefix_and_are_local_unicast() {
        let owner = "5bb2e5a4/github-runner/0";
        let prefix = unit_mac_prefix(owner);
        assert_eq!(prefix[0] & 0x03, 0x02, "locally administered, unicast");
        assert_ne!(prefix, unit_mac_prefix("5bb2e5a4/github-runner/1"));
        let mac = runner_hwaddr(owner, "github-runner-0-0123456789ab");
        let want = format!("{:02x}:{:02x}:{:02x}:", prefix[0], prefix[1], prefix[2]);
        assert!(mac.starts_with(&want), "{mac}");
        assert_eq!(mac.len(), 17);
        assert_ne!(mac, runner_hwaddr(owner, "github-runner-0-0123456789ac"));
        assert_eq!(mac, runner_hwaddr(owner, "github-runner-0-0123456789ab"));
    }
}
