//! IPv4 networks as plain numbers: parsing `a.b.c.d/n` and taking addresses out of a network
//! (what Python's `address_exclude` did for the denylist).

use std::fmt;
use std::net::Ipv4Addr;

/// An IPv4 network with its host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    base: u32,
    prefix: u8,
}

impl Ipv4Net {
    /// None when `prefix` > 32; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Ipv4Net> {
        (prefix <= 32).then(|| Ipv4Net {
            base: u32::from(addr) & mask(prefix),
            prefix,
        })
    }

    pub fn host(addr: Ipv4Addr) -> Ipv4Net {
        Ipv4Net {
            base: u32::from(addr),
            prefix: 32,
        }
    }

    /// `a.b.c.d/n` or a bare address (`/32`); host bits must be clear.
    pub fn parse(text: &str) -> Option<Ipv4Net> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().ok()?),
            None => (text, 32),
        };
        let addr: Ipv4Addr = addr.parse().ok()?;
        let net = Ipv4Net::new(addr, prefix)?;
        (net.base == u32::from(addr)).then_some(net)
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix) == self.base
    }

    /// The network's parts left after taking `addr` out (the network itself when `addr` is
    /// outside it; nothing for a /32 equal to `addr`).
    pub fn exclude(&self, addr: Ipv4Addr) -> Vec<Ipv4Net> {
        if !self.contains(addr) {
            return vec![*self];
        }
        let addr = u32::from(addr);
        // Walk down from this network to the /32: at each level keep the half without `addr`.
        (self.prefix + 1..=32)
            .map(|prefix| {
                let bit = 1u32 << (32 - prefix);
                Ipv4Net {
                    base: (addr & mask(prefix)) ^ bit,
                    prefix,
                }
            })
            .collect()
    }

    /// The network minus every address of `addrs`, as few networks as the halving gives.
    pub fn exclude_all(&self, addrs: &[Ipv4Addr]) -> Vec<Ipv4Net> {
        let mut parts = vec![*self];
        for addr in addrs {
            parts = parts.iter().flat_map(|p| p.exclude(*addr)).collect();
        }
        parts.sort();
        parts
    }
}

fn mask(prefix: u8) -> u32 {
    match prefix {
        0 => 0,
        p => u32::MAX << (32 - u32::from(p)),
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        Ipv4Net::parse(s).unwrap()
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_strict_networks_only() {
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("1.2.3.4").to_string(), "1.2.3.4/32");
        assert_eq!(net("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(Ipv4Net::parse("10.0.0.1/8"), None, "host bits set");
        assert_eq!(Ipv4Net::parse("10.0.0.0/33"), None);
        assert_eq!(Ipv4Net::parse("::1/128"), None);
    }

    #[test]
    fn excluding_an_address_outside_keeps_the_network() {
        assert_eq!(
            net("10.0.0.0/8").exclude(ip("192.168.1.1")),
            [net("10.0.0.0/8")]
        );
    }

    #[test]
    fn excluding_an_address_inside_covers_everything_else_exactly() {
        let parts = net("10.0.0.0/30").exclude(ip("10.0.0.2"));
        let mut parts: Vec<String> = parts.iter().map(ToString::to_string).collect();
        parts.sort();
        assert_eq!(parts, ["10.0.0.0/31", "10.0.0.3/32"]);
        let big = net("10.0.0.0/8").exclude_all(&[ip("10.1.2.3"), ip("10.200.0.1")]);
        let size: u64 = big.iter().map(|n| 1u64 << (32 - n.prefix)).sum();
        assert_eq!(size, (1 << 24) - 2, "every address but the two");
        assert!(big.iter().all(|n| !n.contains(ip("10.1.2.3"))));
        assert!(big.iter().all(|n| !n.contains(ip("10.200.0.1"))));
        assert!(big.iter().any(|n| n.contains(ip("10.1.2.4"))));
        assert_eq!(net("1.2.3.4/32").exclude(ip("1.2.3.4")), []);
    }
}
