//! The runners' egress firewall as data: the rules of the charm's LXD network ACL, a pure
//! function of the configuration, the host's addresses and the debug-ssh servers.
//!
//! LXD applies a bridge's ACL where the bridge meets the host: to traffic from runners to
//! the host itself and to everything routed beyond it (not between two instances on the
//! bridge). LXD lets DHCP and DNS to the host (and the ICMP errors path MTU needs) through
//! before the ACL, so runners keep an address and a resolver. LXD orders an ACL's rules by
//! action (drop, reject, then allow, then the default action), so an allow rule can never
//! open what a reject rule closes: what runners may reach is cut out of the reject rules.
//! Whatever no rule rejects is allowed (`security.acls.default.egress.action=allow`).
//!
//! The host is closed to every protocol (not only TCP, UDP and ICMP), and so are broadcast
//! and multicast, which the host receives too. With aproxy on, its TCP port stays open: LXD
//! rules can name only tcp, udp, icmp4 or any protocol, so the host's other protocols are
//! then closed by aproxy's own nft table ([`super::aproxy::nft_ruleset`]).

use super::cidr::Ipv4Net;
pub use crate::lxd::network::AclRule;
use std::net::Ipv4Addr;

/// Cloud metadata (169.254.169.254) lives here and hands out the machine's credentials.
pub const LINK_LOCAL: &str = "169.254.0.0/16";

/// What the rules depend on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AclInputs {
    /// Every IPv4 address of the host (bridge gateway included).
    pub host_addresses: Vec<Ipv4Addr>,
    /// Host TCP ports runners may still reach (aproxy's listener when it is on).
    pub allowed_host_tcp_ports: Vec<u16>,
    /// The `denylist` networks.
    pub denylist: Vec<Ipv4Net>,
    /// Addresses reachable even inside a denied network (the debug-ssh servers).
    pub exempt: Vec<Ipv4Addr>,
    /// Reject 169.254.0.0/16 (the default; an operator may opt out).
    pub reject_link_local: bool,
    /// The broadcast addresses of the host's networks (`brd` of `ip addr`).
    pub host_broadcasts: Vec<Ipv4Addr>,
    /// The job queue broker's addresses in reactive mode: rejected like the host, so a job
    /// cannot forge, delete or read the queue's messages.
    pub brokers: Vec<Ipv4Addr>,
}

/// Destinations the host receives that are none of its addresses.
pub const BROADCAST_AND_MULTICAST: [&str; 2] = ["255.255.255.255", "224.0.0.0/4"];

/// The egress rules, in a stable order (equal inputs give equal rules, so convergence
/// writes only on a real change).
pub fn egress_rules(inputs: &AclInputs) -> Vec<AclRule> {
    let mut rules = Vec::new();
    let mut hosts = inputs.host_addresses.clone();
    hosts.sort();
    hosts.dedup();
    if !hosts.is_empty() {
        let host_list = join(hosts.iter());
        let ports = tcp_port_ranges_except(&inputs.allowed_host_tcp_ports);
        if inputs.allowed_host_tcp_ports.is_empty() {
            rules.push(AclRule::reject(
                host_list,
                "",
                String::new(),
                "host: every protocol",
            ));
        } else {
            if !ports.is_empty() {
                rules.push(AclRule::reject(
                    host_list.clone(),
                    "tcp",
                    ports,
                    "host: tcp",
                ));
            }
            rules.push(AclRule::reject(
                host_list.clone(),
                "udp",
                String::new(),
                "host: udp",
            ));
            rules.push(AclRule::reject(
                host_list,
                "icmp4",
                String::new(),
                "host: icmp",
            ));
        }
    }
    let mut broadcasts: Vec<String> = inputs
        .host_broadcasts
        .iter()
        .map(ToString::to_string)
        .collect();
    broadcasts.sort();
    broadcasts.dedup();
    broadcasts.extend(BROADCAST_AND_MULTICAST.iter().map(|d| d.to_string()));
    rules.push(AclRule::reject(
        broadcasts.join(","),
        "",
        String::new(),
        "host: broadcast and multicast",
    ));
    rules.push(AclRule::reject("::/0".into(), "", String::new(), "no IPv6"));
    if inputs.reject_link_local {
        rules.push(AclRule::reject(
            LINK_LOCAL.into(),
            "",
            String::new(),
            "link-local",
        ));
    }
    let mut brokers = inputs.brokers.clone();
    brokers.sort();
    brokers.dedup();
    if !brokers.is_empty() {
        rules.push(AclRule::reject(
            join(brokers.iter()),
            "",
            String::new(),
            "job queue broker",
        ));
    }
    let mut keep_reachable = hosts;
    keep_reachable.extend(&inputs.exempt);
    let mut denied: Vec<Ipv4Net> = inputs
        .denylist
        .iter()
        .flat_map(|net| net.exclude_all(&keep_reachable))
        .collect();
    denied.sort();
    denied.dedup();
    if !denied.is_empty() {
        rules.push(AclRule::reject(
            join(denied.iter()),
            "",
            String::new(),
            "denylist",
        ));
    }
    rules
}

/// `1-65535` without `allowed`, as LXD port ranges (`1-8079,8081-65535`).
pub fn tcp_port_ranges_except(allowed: &[u16]) -> String {
    let mut allowed: Vec<u16> = allowed.iter().copied().filter(|p| *p > 0).collect();
    allowed.sort_unstable();
    allowed.dedup();
    let mut ranges = Vec::new();
    let mut start: u32 = 1;
    for port in allowed.iter().map(|p| u32::from(*p)).chain([65536]) {
        if port > start {
            let end = port - 1;
            ranges.push(if end == start {
                start.to_string()
            } else {
                format!("{start}-{end}")
            });
        }
        start = port + 1;
    }
    ranges.join(",")
}

fn join<T: ToString>(items: impl Iterator<Item = T>) -> String {
    items.map(|i| i.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn inputs() -> AclInputs {
        AclInputs {
            host_addresses: vec![ip("192.0.2.2"), ip("10.99.0.1")],
            allowed_host_tcp_ports: vec![],
            denylist: vec![],
            exempt: vec![],
            reject_link_local: true,
            host_broadcasts: vec![ip("10.99.0.255")],
            brokers: vec![],
        }
    }

    fn summary(rules: &[AclRule]) -> Vec<String> {
        rules
            .iter()
            .map(|r| {
                format!(
                    "{} {} {} {}",
                    r.action, r.destination, r.protocol, r.destination_port
                )
                .trim_end()
                .to_string()
            })
            .collect()
    }

    #[test]
    fn without_a_denylist_only_host_ipv6_and_link_local_are_rejected() {
        assert_eq!(
            summary(&egress_rules(&inputs())),
            [
                "reject 10.99.0.1,192.0.2.2",
                "reject 10.99.0.255,255.255.255.255,224.0.0.0/4",
                "reject ::/0",
                "reject 169.254.0.0/16",
            ]
        );
    }

    #[test]
    fn the_host_is_closed_to_every_protocol_but_aproxys_port() {
        let closed = egress_rules(&inputs());
        assert_eq!(
            closed[0].protocol, "",
            "any protocol, not only tcp/udp/icmp"
        );
        let mut on = inputs();
        on.allowed_host_tcp_ports = vec![54969];
        assert_eq!(
            summary(&egress_rules(&on))[..4],
            [
                "reject 10.99.0.1,192.0.2.2 tcp 1-54968,54970-65535",
                "reject 10.99.0.1,192.0.2.2 udp",
                "reject 10.99.0.1,192.0.2.2 icmp4",
                "reject 10.99.0.255,255.255.255.255,224.0.0.0/4",
            ]
        );
    }

    #[test]
    fn the_job_queue_broker_is_rejected_even_inside_no_denylist() {
        let mut i = inputs();
        i.brokers = vec![ip("203.0.113.9"), ip("198.51.100.4"), ip("203.0.113.9")];
        let rules = egress_rules(&i);
        let broker = rules
            .iter()
            .find(|r| r.description == "job queue broker")
            .expect("a broker rule");
        assert_eq!(broker.destination, "198.51.100.4,203.0.113.9");
        assert_eq!(broker.protocol, "", "every protocol");
        assert!(!summary(&egress_rules(&inputs()))
            .iter()
            .any(|r| r.contains("203.0.113.9")));
    }

    #[test]
    fn allowed_host_ports_are_cut_out_of_the_tcp_range() {
        assert_eq!(tcp_port_ranges_except(&[8080]), "1-8079,8081-65535");
        assert_eq!(tcp_port_ranges_except(&[1, 65535]), "2-65534");
        assert_eq!(tcp_port_ranges_except(&[3, 5, 4]), "1-2,6-65535");
        assert_eq!(tcp_port_ranges_except(&[2]), "1,3-65535");
        assert_eq!(tcp_port_ranges_except(&[]), "1-65535");
        let mut i = inputs();
        i.allowed_host_tcp_ports = vec![54969];
        assert_eq!(egress_rules(&i)[0].destination_port, "1-54968,54970-65535");
    }

    #[test]
    fn the_link_local_rule_goes_when_the_operator_opts_out() {
        let mut i = inputs();
        i.reject_link_local = false;
        assert!(!summary(&egress_rules(&i))
            .iter()
            .any(|r| r.contains("169.254")));
    }

    #[test]
    fn denied_networks_keep_the_host_and_debug_ssh_servers_reachable() {
        let mut i = inputs();
        i.denylist = vec![
            Ipv4Net::parse("10.0.0.0/8").unwrap(),
            Ipv4Net::parse("172.16.0.0/12").unwrap(),
        ];
        i.exempt = vec![ip("172.16.5.5")];
        let rules = egress_rules(&i);
        let deny = rules.last().unwrap();
        assert_eq!(deny.description, "denylist");
        let nets: Vec<Ipv4Net> = deny
            .destination
            .split(',')
            .map(|n| Ipv4Net::parse(n).unwrap())
            .collect();
        for reachable in ["10.99.0.1", "172.16.5.5", "192.0.2.2", "8.8.8.8"] {
            assert!(
                !nets.iter().any(|n| n.contains(ip(reachable))),
                "{reachable}"
            );
        }
        for denied in ["10.0.0.1", "10.99.0.2", "172.16.5.4", "172.31.255.255"] {
            assert!(nets.iter().any(|n| n.contains(ip(denied))), "{denied}");
        }
    }

    #[test]
    fn equal_inputs_in_any_order_give_equal_rules() {
        let mut a = inputs();
        a.denylist = vec![
            Ipv4Net::parse("10.0.0.0/8").unwrap(),
            Ipv4Net::parse("192.168.0.0/16").unwrap(),
        ];
        let mut b = a.clone();
        b.denylist.reverse();
        b.host_addresses.reverse();
        assert_eq!(egress_rules(&a), egress_rules(&b));
    }

    #[test]
    fn rules_serialise_in_lxds_shape() {
        let rule = &egress_rules(&inputs())[2];
        assert_eq!(
            serde_json::to_value(rule).unwrap(),
            serde_json::json!({"action": "reject", "destination": "::/0",
                "description": "no IPv6", "state": "enabled"})
        );
    }
}
