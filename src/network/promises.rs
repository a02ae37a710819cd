//! What a unit's network options promise runners can reach, checked against the other ACLs
//! on the bridge. Units on one machine share the runners' bridge, and LXD applies every ACL
//! attached to a bridge to every instance on it, reject rules before allow rules: another
//! unit's `denylist` (or an operator's own ACL) can take away what this unit's options let
//! through. Such a promise cannot be kept, so the unit refuses it (Blocked) instead of
//! accepting it silently. Pure.

use super::acl::{AclInputs, AclRule, LINK_LOCAL};
use super::cidr::Ipv4Net;
use std::net::Ipv4Addr;

/// Cloud metadata, the address `allow-link-local=true` is about (HTTP).
const METADATA: (Ipv4Addr, u16) = (Ipv4Addr::new(169, 254, 169, 254), 80);

/// One destination runners were promised, as a TCP connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    /// The option or relation that promised it, for the operator.
    pub source: String,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// What `inputs` promise: each debug-ssh server (`tmate`: address and port) exempted from
/// the denylist, cloud metadata when link-local is not rejected, and the host's ports left
/// open to runners (aproxy's listener on every host address).
pub fn promises(inputs: &AclInputs, tmate: &[(Ipv4Addr, u16)]) -> Vec<Promise> {
    let mut out: Vec<Promise> = tmate
        .iter()
        .map(|(addr, port)| Promise {
            source: format!("the debug-ssh server {addr}:{port}"),
            addr: *addr,
            port: *port,
        })
        .collect();
    if !inputs.reject_link_local {
        out.push(Promise {
            source: format!("allow-link-local=true ({LINK_LOCAL})"),
            addr: METADATA.0,
            port: METADATA.1,
        });
    }
    for port in &inputs.allowed_host_tcp_ports {
        for addr in &inputs.host_addresses {
            out.push(Promise {
                source: format!("experimental-use-aproxy (aproxy on {addr}:{port})"),
                addr: *addr,
                port: *port,
            });
        }
    }
    out
}

/// Whether `rule` (an egress rule of any ACL) stops TCP to `addr:port`. Destinations LXD
/// allows that are not IPv4 (IPv6, subject names) never match.
pub fn stops(rule: &AclRule, addr: Ipv4Addr, port: u16) -> bool {
    let stopping = matches!(rule.action.as_str(), "reject" | "drop");
    let enabled = rule.state.is_empty() || rule.state == "enabled";
    let protocol = rule.protocol.is_empty() || rule.protocol == "tcp";
    stopping
        && enabled
        && protocol
        && destination_matches(&rule.destination, addr)
        && port_matches(&rule.destination_port, port)
}

fn destination_matches(destination: &str, addr: Ipv4Addr) -> bool {
    if destination.trim().is_empty() {
        return true;
    }
    destination.split(',').map(str::trim).any(|item| {
        if let Some((from, to)) = item.split_once('-') {
            return match (from.parse::<Ipv4Addr>(), to.parse::<Ipv4Addr>()) {
                (Ok(from), Ok(to)) => (from..=to).contains(&addr),
                _ => false,
            };
        }
        let (base, prefix) = match item.split_once('/') {
            Some((base, prefix)) => (base, prefix.parse::<u8>().ok()),
            None => (item, Some(32)),
        };
        match (base.parse::<Ipv4Addr>(), prefix) {
            // LXD accepts host bits set (`10.1.2.3/8`); the network is what counts.
            (Ok(base), Some(prefix)) => {
                Ipv4Net::new(base, prefix).is_some_and(|net| net.contains(addr))
            }
            _ => false,
        }
    })
}

fn port_matches(ports: &str, port: u16) -> bool {
    if ports.trim().is_empty() {
        return true;
    }
    ports
        .split(',')
        .map(str::trim)
        .any(|item| match item.split_once('-') {
            Some((from, to)) => match (from.parse::<u16>(), to.parse::<u16>()) {
                (Ok(from), Ok(to)) => (from..=to).contains(&port),
                _ => false,
            },
            None => item.parse::<u16>() == Ok(port),
        })
}

/// The first promise an ACL of `others` (name, egress rules) breaks, with that ACL's name.
pub fn broken_promise<'p>(
    promises: &'p [Promise],
    others: &[(String, Vec<AclRule>)],
) -> Option<(&'p Promise, String)> {
    promises.iter().find_map(|promise| {
        others
            .iter()
            .find(|(_, rules)| rules.iter().any(|r| stops(r, promise.addr, promise.port)))
            .map(|(name, _)| (promise, name.clone()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::acl::egress_rules;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Ipv4Net {
        Ipv4Net::parse(s).unwrap()
    }

    fn rule(action: &str, destination: &str, protocol: &str, ports: &str) -> AclRule {
        AclRule {
            action: action.into(),
            destination: destination.into(),
            protocol: protocol.into(),
            destination_port: ports.into(),
            description: String::new(),
            state: "enabled".into(),
        }
    }

    #[test]
    fn rule_matching_follows_lxds_fields() {
        let a = ip("10.1.2.3");
        for (r, stops_it) in [
            (rule("reject", "10.0.0.0/8", "", ""), true),
            (rule("drop", "10.1.2.3", "tcp", "22,10022"), true),
            (
                rule("reject", "10.1.2.1-10.1.2.9", "tcp", "10000-10100"),
                true,
            ),
            (rule("reject", "10.9.9.9/8", "", ""), true),
            (rule("reject", "", "", ""), true),
            (rule("allow", "10.0.0.0/8", "", ""), false),
            (rule("reject", "10.0.0.0/8", "udp", ""), false),
            (rule("reject", "10.0.0.0/8", "icmp4", ""), false),
            (rule("reject", "10.0.0.0/8", "tcp", "1-10021"), false),
            (rule("reject", "11.0.0.0/8,::/0,@external", "", ""), false),
            (rule("reject", "10.1.2.4-10.1.2.9", "", ""), false),
        ] {
            assert_eq!(stops(&r, a, 10022), stops_it, "{r:?}");
        }
        let mut off = rule("reject", "10.0.0.0/8", "", "");
        off.state = "disabled".into();
        assert!(!stops(&off, a, 10022));
    }

    fn inputs() -> AclInputs {
        AclInputs {
            host_addresses: vec![ip("10.0.0.1"), ip("192.168.1.5")],
            allowed_host_tcp_ports: vec![],
            denylist: vec![net("10.0.0.0/8")],
            exempt: vec![ip("10.1.2.3")],
            reject_link_local: true,
            ..AclInputs::default()
        }
    }

    #[test]
    fn a_unit_never_breaks_its_own_promises() {
        let mut own = inputs();
        own.allowed_host_tcp_ports = vec![54969];
        own.reject_link_local = false;
        let promised = promises(&own, &[(ip("10.1.2.3"), 10022)]);
        assert_eq!(
            promised.len(),
            4,
            "tmate, metadata, aproxy on 2 host addresses"
        );
        let rules = egress_rules(&own);
        assert_eq!(broken_promise(&promised, &[("own".into(), rules)]), None);
    }

    #[test]
    fn another_units_denylist_or_link_local_rule_breaks_them_and_is_named() {
        let mut own = inputs();
        own.reject_link_local = false;
        let promised = promises(&own, &[(ip("10.1.2.3"), 10022)]);
        // The other unit: no tmate server, link-local rejected, a wider denylist.
        let other = AclInputs {
            denylist: vec![net("10.1.0.0/16")],
            exempt: vec![],
            ..inputs()
        };
        let others = vec![("ghr-m-other-0".to_string(), egress_rules(&other))];
        let (broken, acl) = broken_promise(&promised, &others).unwrap();
        assert_eq!(acl, "ghr-m-other-0");
        assert_eq!(broken.source, "the debug-ssh server 10.1.2.3:10022");
        // With the same tmate server exempted there, only the link-local promise breaks.
        let other = AclInputs {
            exempt: vec![ip("10.1.2.3")],
            ..other
        };
        let others = vec![("ghr-m-other-0".to_string(), egress_rules(&other))];
        let (broken, _) = broken_promise(&promised, &others).unwrap();
        assert!(
            broken.source.starts_with("allow-link-local=true"),
            "{broken:?}"
        );
        // Allowing link-local there too: nothing breaks.
        let other = AclInputs {
            reject_link_local: false,
            ..other
        };
        assert_eq!(
            broken_promise(&promised, &[("o".into(), egress_rules(&other))]),
            None
        );
    }

    #[test]
    fn aproxy_on_one_unit_is_broken_by_the_host_rules_of_a_unit_without_it() {
        let mut own = inputs();
        own.allowed_host_tcp_ports = vec![54969];
        let promised = promises(&own, &[]);
        let without = egress_rules(&inputs());
        let (broken, _) = broken_promise(&promised, &[("o".into(), without)]).unwrap();
        assert_eq!(
            broken.source,
            "experimental-use-aproxy (aproxy on 10.0.0.1:54969)"
        );
        assert_eq!(
            broken_promise(&promised, &[("o".into(), egress_rules(&own))]),
            None
        );
    }
}
