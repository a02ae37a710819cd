//! Converging the runners' bridge and the charm's egress ACL over [`LxdNetworks`], and
//! taking them away again on `remove`. The decisions ([`bridge_changes`], [`detach_changes`])
//! are pure; the two entry points only read, decide and write what differs.

use super::NetworkError;
use crate::lxd::network::{AclRule, LxdNetworks};
use std::collections::BTreeMap;

/// The description the charm gives what it creates; only those are ever deleted.
pub const MANAGED_DESCRIPTION: &str = "managed by the github-runner charm";
const ACLS_KEY: &str = "security.acls";
const EGRESS_DEFAULT_KEY: &str = "security.acls.default.egress.action";
const INGRESS_DEFAULT_KEY: &str = "security.acls.default.ingress.action";

/// What [`converge`] changed (for the log and tests).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Converged {
    pub bridge_created: bool,
    pub acl_written: bool,
    pub bridge_keys_set: BTreeMap<String, String>,
    /// Default actions an operator set on a bridge the charm did not create, kept as they
    /// are (the caller warns: runners get their allowlist, not the charm's allow).
    pub kept_defaults: BTreeMap<String, String>,
}

/// What the bridge needs ([`bridge_changes`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BridgeChanges {
    /// Keys to set (empty: nothing differs).
    pub set: BTreeMap<String, String>,
    /// Default actions left as the operator set them.
    pub kept_defaults: BTreeMap<String, String>,
}

/// A fresh bridge: IPv4 with NAT (runners reach the internet through the host), no IPv6.
pub fn new_bridge_config() -> BTreeMap<String, String> {
    [
        ("ipv4.address", "auto"),
        ("ipv4.nat", "true"),
        ("ipv6.address", "none"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The keys to set on the bridge so it has no IPv6 and the charm's ACL is attached (other
/// ACLs an operator attached stay). The default actions become `allow` (traffic no rule
/// rejects passes; LXD's default for an attached ACL is reject) only on a bridge the charm
/// created (`charm_created`) or where they are unset: an operator's own default (an
/// allowlist of theirs, `reject`) is kept.
pub fn bridge_changes(
    config: &BTreeMap<String, String>,
    acl: &str,
    charm_created: bool,
) -> BridgeChanges {
    let mut changes = BridgeChanges::default();
    if config.get("ipv6.address").map(String::as_str) != Some("none") {
        changes
            .set
            .insert("ipv6.address".to_string(), "none".to_string());
    }
    let mut acls = acl_list(config);
    if !acls.iter().any(|a| a == acl) {
        acls.push(acl.to_string());
        changes.set.insert(ACLS_KEY.to_string(), acls.join(","));
    }
    for key in [EGRESS_DEFAULT_KEY, INGRESS_DEFAULT_KEY] {
        match config.get(key).map(String::as_str) {
            Some("allow") => {}
            Some(theirs) if !charm_created && !theirs.is_empty() => {
                changes
                    .kept_defaults
                    .insert(key.to_string(), theirs.to_string());
            }
            _ => {
                changes.set.insert(key.to_string(), "allow".to_string());
            }
        }
    }
    changes
}

/// The keys that take the charm's ACL off the bridge (empty value: unset). The default
/// actions go too when no ACL is left.
pub fn detach_changes(config: &BTreeMap<String, String>, acl: &str) -> BTreeMap<String, String> {
    let acls = acl_list(config);
    if !acls.iter().any(|a| a == acl) {
        return BTreeMap::new();
    }
    let rest: Vec<String> = acls.into_iter().filter(|a| a != acl).collect();
    let mut changes = BTreeMap::from([(ACLS_KEY.to_string(), rest.join(","))]);
    if rest.is_empty() {
        for key in [EGRESS_DEFAULT_KEY, INGRESS_DEFAULT_KEY] {
            if config.contains_key(key) {
                changes.insert(key.to_string(), String::new());
            }
        }
    }
    changes
}

/// The egress rules of every ACL on `bridge` but `own` (other units', an operator's), to
/// check this unit's promises against ([`super::promises`]). One query when `own` is alone.
pub fn other_acls(
    net: &dyn LxdNetworks,
    bridge: &str,
    own: &str,
) -> Result<Vec<(String, Vec<AclRule>)>, NetworkError> {
    let Some(info) = net.network(bridge)? else {
        return Ok(Vec::new());
    };
    let mut others = Vec::new();
    for name in acl_list(&info.config).into_iter().filter(|a| a != own) {
        if let Some(acl) = net.acl(&name)? {
            others.push((name, acl.egress));
        }
    }
    Ok(others)
}

fn acl_list(config: &BTreeMap<String, String>) -> Vec<String> {
    config
        .get(ACLS_KEY)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// The bridge exists (created when missing), has no IPv6, and carries the charm's ACL with
/// exactly `rules`. Writes nothing when all of that already holds. Never touches another
/// network, and refuses a network of that name that is not an LXD-managed bridge.
pub fn converge(
    net: &dyn LxdNetworks,
    bridge: &str,
    acl: &str,
    rules: &[AclRule],
) -> Result<Converged, NetworkError> {
    converge_creating(net, bridge, &new_bridge_config(), acl, rules)
}

/// [`converge`], creating a missing bridge with `new_config` (tests give a fixed subnet
/// without NAT).
pub fn converge_creating(
    net: &dyn LxdNetworks,
    bridge: &str,
    new_config: &BTreeMap<String, String>,
    acl: &str,
    rules: &[AclRule],
) -> Result<Converged, NetworkError> {
    let mut done = Converged::default();
    let (config, charm_created) = match net.network(bridge)? {
        Some(info) if info.managed && info.kind == "bridge" => {
            (info.config, info.description == MANAGED_DESCRIPTION)
        }
        Some(info) => {
            return Err(NetworkError::NotAManagedBridge {
                name: bridge.to_string(),
                kind: info.kind,
            })
        }
        None => {
            net.create_bridge(bridge, MANAGED_DESCRIPTION, new_config)?;
            done.bridge_created = true;
            (new_config.clone(), true)
        }
    };
    let current = net.acl(acl)?;
    if current.as_ref().map(|a| a.egress.as_slice()) != Some(rules) {
        net.put_acl(acl, MANAGED_DESCRIPTION, rules)?;
        done.acl_written = true;
    }
    let changes = bridge_changes(&config, acl, charm_created);
    if !changes.set.is_empty() {
        net.set_network_keys(bridge, &changes.set)?;
        done.bridge_keys_set = changes.set;
    }
    done.kept_defaults = changes.kept_defaults;
    Ok(done)
}

/// Takes the charm's ACL off the bridge and deletes it when nothing else uses it, then the
/// bridge when the charm created it and nothing uses it. Missing pieces are fine.
pub fn remove(net: &dyn LxdNetworks, bridge: &str, acl: &str) -> Result<(), NetworkError> {
    if let Some(info) = net.network(bridge)? {
        let changes = detach_changes(&info.config, acl);
        if !changes.is_empty() {
            net.set_network_keys(bridge, &changes)?;
        }
    }
    if let Some(info) = net.acl(acl)? {
        if info.used_by.is_empty() && info.description == MANAGED_DESCRIPTION {
            net.delete_acl(acl)?;
        }
    }
    if let Some(info) = net.network(bridge)? {
        if info.used_by.is_empty() && info.description == MANAGED_DESCRIPTION {
            net.delete_network(bridge)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::juju::state::string_map as map;

    #[test]
    fn a_fresh_bridge_gets_the_acl_attached_and_ipv6_stays_off() {
        assert_eq!(
            bridge_changes(&new_bridge_config(), "ghr", true).set,
            map(&[
                (ACLS_KEY, "ghr"),
                (EGRESS_DEFAULT_KEY, "allow"),
                (INGRESS_DEFAULT_KEY, "allow"),
            ])
        );
    }

    #[test]
    fn an_operators_acls_stay_and_a_converged_bridge_needs_nothing() {
        let theirs = map(&[("ipv6.address", "fd00::1/64"), (ACLS_KEY, "theirs")]);
        let changes = bridge_changes(&theirs, "ghr", false).set;
        assert_eq!(changes["ipv6.address"], "none");
        assert_eq!(changes[ACLS_KEY], "theirs,ghr");
        assert_eq!(
            changes[EGRESS_DEFAULT_KEY], "allow",
            "unset: the charm sets it"
        );
        let mut converged = theirs.clone();
        converged.extend(changes);
        assert_eq!(
            bridge_changes(&converged, "ghr", false),
            BridgeChanges::default()
        );
    }

    #[test]
    fn an_operators_default_actions_stay_on_their_bridge_but_not_on_the_charms() {
        let theirs = map(&[
            (ACLS_KEY, "theirs,ghr"),
            ("ipv6.address", "none"),
            (EGRESS_DEFAULT_KEY, "reject"),
            (INGRESS_DEFAULT_KEY, "drop"),
        ]);
        let kept = bridge_changes(&theirs, "ghr", false);
        assert!(kept.set.is_empty(), "{kept:?}");
        assert_eq!(
            kept.kept_defaults,
            map(&[
                (EGRESS_DEFAULT_KEY, "reject"),
                (INGRESS_DEFAULT_KEY, "drop")
            ])
        );
        let ours = bridge_changes(&theirs, "ghr", true);
        assert_eq!(
            ours.set,
            map(&[
                (EGRESS_DEFAULT_KEY, "allow"),
                (INGRESS_DEFAULT_KEY, "allow")
            ])
        );
        assert!(ours.kept_defaults.is_empty());
    }

    #[test]
    fn detaching_leaves_other_acls_and_their_defaults() {
        let both = map(&[(ACLS_KEY, "theirs,ghr"), (EGRESS_DEFAULT_KEY, "allow")]);
        assert_eq!(detach_changes(&both, "ghr"), map(&[(ACLS_KEY, "theirs")]));
        let ours = map(&[
            (ACLS_KEY, "ghr"),
            (EGRESS_DEFAULT_KEY, "allow"),
            (INGRESS_DEFAULT_KEY, "allow"),
        ]);
        assert_eq!(
            detach_changes(&ours, "ghr"),
            map(&[
                (ACLS_KEY, ""),
                (EGRESS_DEFAULT_KEY, ""),
                (INGRESS_DEFAULT_KEY, "")
            ])
        );
        assert!(detach_changes(&map(&[(ACLS_KEY, "theirs")]), "ghr").is_empty());
    }
}
