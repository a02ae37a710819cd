//! The `debug-ssh` relation: tmate servers jobs may open a debugging session to. Each
//! related unit publishes `host`, `port`, `rsa_fingerprint` and `ed25519_fingerprint`; a
//! runner gets one server as `TMATE_SERVER_*` variables, and the egress ACL lets runners
//! reach the servers even inside a denied network.

use crate::juju::HookTools;
use std::net::Ipv4Addr;

pub const ENDPOINT: &str = "debug-ssh";

/// One tmate server, validated: every field is safe to write into an environment file.
/// Serialised only into the reactive workers' 0600 settings file, which the charm writes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct TmateServer {
    pub host: String,
    pub port: u16,
    pub rsa_fingerprint: String,
    pub ed25519_fingerprint: String,
}

impl TmateServer {
    /// The runner environment variables for this server.
    pub fn env_vars(&self) -> [(&'static str, String); 4] {
        [
            ("TMATE_SERVER_HOST", self.host.clone()),
            ("TMATE_SERVER_PORT", self.port.to_string()),
            ("TMATE_SERVER_RSA_FINGERPRINT", self.rsa_fingerprint.clone()),
            (
                "TMATE_SERVER_ED25519_FINGERPRINT",
                self.ed25519_fingerprint.clone(),
            ),
        ]
    }

    /// The host as an IPv4 address, when it is one; a host name must be resolved first
    /// (see [`parse_ahostsv4`]) to be exempted in the ACL.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.host.parse().ok()
    }
}

/// The IPv4 addresses in `getent ahostsv4 <name>` output (`<addr> STREAM <name>` lines,
/// then DGRAM and RAW ones for the same addresses), sorted, without duplicates. Pure.
pub fn parse_ahostsv4(output: &str) -> Vec<Ipv4Addr> {
    let mut addrs: Vec<Ipv4Addr> = output
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect();
    addrs.sort();
    addrs.dedup();
    addrs
}

/// A unit's relation data as a server, or why not.
pub fn parse_unit_data(
    data: &std::collections::BTreeMap<String, String>,
) -> Result<TmateServer, String> {
    let field = |key: &str| {
        data.get(key)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("{key} is missing"))
    };
    let host = field("host")?;
    let host_ok = host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !host_ok {
        return Err(format!("host {host:?} is not a host name or IPv4 address"));
    }
    let port_text = field("port")?;
    let port = port_text
        .parse::<u16>()
        .ok()
        .filter(|p| *p >= 1)
        .ok_or_else(|| format!("port {port_text:?} is not within 1-65535"))?;
    let fingerprint = |key: &str| {
        let value = field(key)?;
        let ok = value.len() <= 128
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+/=:".contains(&b));
        ok.then_some(value)
            .ok_or_else(|| format!("{key} is not an SSH fingerprint (SHA256:<base64>)"))
    };
    Ok(TmateServer {
        host,
        rsa_fingerprint: fingerprint("rsa_fingerprint")?,
        ed25519_fingerprint: fingerprint("ed25519_fingerprint")?,
        port,
    })
}

/// The server a runner gets: spread over the servers by the runner's name, the same one
/// for the same name.
pub fn pick<'a>(servers: &'a [TmateServer], instance_name: &str) -> Option<&'a TmateServer> {
    if servers.is_empty() {
        return None;
    }
    let hash = instance_name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    // The modulo keeps the index below len, which fits in usize.
    servers.get((hash % servers.len() as u64) as usize)
}

/// Every valid server of every debug-ssh relation, sorted; invalid units are skipped with a
/// warning. A hook tool failure reads as no servers (logged): debugging is optional.
pub fn read_servers(tools: &dyn HookTools) -> Vec<TmateServer> {
    let mut servers = Vec::new();
    let result = (|| -> Result<(), crate::juju::HookToolError> {
        for relation in tools.relation_ids(ENDPOINT)? {
            for unit in tools.relation_list(&relation)? {
                let data = tools.relation_get(&relation, &unit, false)?;
                if data.is_empty() {
                    continue; // joined, nothing published yet
                }
                match parse_unit_data(&data) {
                    Ok(server) => servers.push(server),
                    Err(why) => {
                        tracing::warn!("ignoring debug-ssh data of {unit}: {why}")
                    }
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("could not read the debug-ssh relation: {e}");
    }
    servers.sort();
    servers.dedup();
    servers
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn valid() -> BTreeMap<String, String> {
        data(&[
            ("host", "10.1.2.3"),
            ("port", "10022"),
            ("rsa_fingerprint", "SHA256:abc+/="),
            ("ed25519_fingerprint", "SHA256:def"),
        ])
    }

    #[test]
    fn valid_data_becomes_the_four_variables() {
        let server = parse_unit_data(&valid()).unwrap();
        assert_eq!(server.ipv4(), Some(Ipv4Addr::new(10, 1, 2, 3)));
        let vars = server.env_vars();
        assert_eq!(vars[0], ("TMATE_SERVER_HOST", "10.1.2.3".to_string()));
        assert_eq!(vars[1], ("TMATE_SERVER_PORT", "10022".to_string()));
        assert_eq!(vars[3].1, "SHA256:def");
    }

    #[test]
    fn invalid_data_is_refused_with_the_reason() {
        for (key, bad, why) in [
            ("port", "0", "1-65535"),
            ("port", "65536", "1-65535"),
            ("port", "x", "1-65535"),
            ("host", "a b", "host"),
            ("host", "evil\nLD_PRELOAD=/x", "host"),
            ("rsa_fingerprint", "SHA256:a\nB=1", "fingerprint"),
            ("ed25519_fingerprint", "", "missing"),
        ] {
            let mut d = valid();
            d.insert(key.into(), bad.into());
            let err = parse_unit_data(&d).unwrap_err();
            assert!(err.contains(why), "{key}={bad:?}: {err}");
        }
        let mut d = valid();
        d.remove("host");
        assert_eq!(parse_unit_data(&d).unwrap_err(), "host is missing");
    }

    #[test]
    fn getent_output_gives_each_address_once() {
        let out = "203.0.113.7     STREAM tmate.example\n203.0.113.7     DGRAM  \n\
                   203.0.113.7     RAW    \n198.51.100.2    STREAM \n198.51.100.2    DGRAM  \n";
        assert_eq!(
            parse_ahostsv4(out),
            vec![
                Ipv4Addr::new(198, 51, 100, 2),
                Ipv4Addr::new(203, 0, 113, 7)
            ]
        );
        assert!(parse_ahostsv4("").is_empty());
        assert!(parse_ahostsv4("garbage line\n::1 STREAM x\n").is_empty());
    }

    #[test]
    fn the_real_getent_output_parses() {
        let out = std::process::Command::new("getent")
            .args(["ahostsv4", "localhost"])
            .output()
            .expect("getent (libc-bin) is on every Debian/Ubuntu machine");
        assert!(out.status.success());
        let addrs = parse_ahostsv4(&String::from_utf8_lossy(&out.stdout));
        assert!(addrs.contains(&Ipv4Addr::LOCALHOST), "{addrs:?}");
    }

    #[test]
    fn each_runner_gets_one_server_the_same_for_the_same_name() {
        let a = parse_unit_data(&valid()).unwrap();
        let mut b = a.clone();
        b.host = "tmate.example".into();
        let servers = vec![a, b];
        assert_eq!(pick(&[], "r1"), None);
        assert_eq!(pick(&servers, "r1"), pick(&servers, "r1"));
        let names: Vec<String> = (0..20).map(|i| format!("runner-{i}")).collect();
        let hosts: std::collections::BTreeSet<&str> = names
            .iter()
            .map(|n| pick(&servers, n).unwrap().host.as_str())
            .collect();
        assert_eq!(hosts.len(), 2, "both servers get runners");
    }
}
