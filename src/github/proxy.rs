//! Proxy settings from Juju's model config (`JUJU_CHARM_HTTP_PROXY`, `..._HTTPS_PROXY`,
//! `..._NO_PROXY`), which proxy a URL goes through, and building the HTTP agent.
//!
//! Never read from a process's own environment: a long-running process of the charm (a
//! reactive worker, the exporter) has none of the hook's variables. Every client gets its
//! proxies explicitly, from [`crate::juju::context::ProxySettings::for_clients`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

pub const HTTP_PROXY_ENV: &str = "JUJU_CHARM_HTTP_PROXY";
pub const HTTPS_PROXY_ENV: &str = "JUJU_CHARM_HTTPS_PROXY";
pub const NO_PROXY_ENV: &str = "JUJU_CHARM_NO_PROXY";

/// Proxies as Juju hands them to the charm. `Debug` hides proxy credentials.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub http: Option<String>,
    pub https: Option<String>,
    /// Hosts, `.domain` suffixes, IPv4 addresses or CIDRs, or `*`.
    pub no_proxy: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("proxy URL {shown} (from {HTTP_PROXY_ENV}/{HTTPS_PROXY_ENV}) is not usable: {reason}")]
    Invalid { shown: String, reason: String },
}

impl ProxySettings {
    /// Empty values mean unset.
    pub fn from_values(http: Option<&str>, https: Option<&str>, no_proxy: Option<&str>) -> Self {
        let clean = |v: Option<&str>| v.map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        ProxySettings {
            http: clean(http),
            https: clean(https),
            no_proxy: no_proxy
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(|e| e.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The proxy for a `scheme://host` URL, or None to go direct. Loopback never goes
    /// through a proxy.
    pub fn proxy_for(&self, scheme: &str, host: &str) -> Option<&str> {
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        if is_loopback_host(&host) || self.no_proxy.iter().any(|e| no_proxy_matches(e, &host)) {
            return None;
        }
        match scheme {
            "https" => self.https.as_deref(),
            "http" => self.http.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxySettings")
            .field("http", &self.http.as_deref().map(without_credentials))
            .field("https", &self.https.as_deref().map(without_credentials))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// `http://user:pass@host:3128` -> `http://[redacted]@host:3128`.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let rest = match rest[..authority_end].rfind('@') {
        Some(at) => format!("[redacted]@{}", &rest[at + 1..]),
        None => rest.to_string(),
    };
    match scheme {
        Some(s) => format!("{s}://{rest}"),
        None => rest,
    }
}

/// `localhost`, `127.0.0.0/8`, `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn no_proxy_matches(entry: &str, host: &str) -> bool {
    if entry == "*" {
        return true;
    }
    if let (Some((net, bits)), Ok(ip)) = (entry.split_once('/'), host.parse::<Ipv4Addr>()) {
        return match (net.parse::<Ipv4Addr>(), bits.parse::<u32>()) {
            (Ok(net), Ok(bits)) if bits <= 32 => {
                let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
                u32::from(ip) & mask == u32::from(net) & mask
            }
            _ => false,
        };
    }
    let domain = entry.trim_start_matches("*.").trim_start_matches('.');
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// Timeouts of an HTTP agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Whole request, body included.
    pub total: Duration,
}

/// An agent for requests to `scheme://host`, through the proxy that applies to it.
pub(crate) fn build_agent(
    proxy: &ProxySettings,
    scheme: &str,
    host: &str,
    timeouts: Timeouts,
    user_agent: &str,
) -> Result<ureq::Agent, ProxyError> {
    let mut builder = ureq::AgentBuilder::new()
        .timeout_connect(timeouts.connect)
        .timeout(timeouts.total)
        .user_agent(user_agent);
    if let Some(p) = proxy.proxy_for(scheme, host) {
        let parsed = ureq::Proxy::new(p).map_err(|e| ProxyError::Invalid {
            shown: without_credentials(p),
            reason: e.kind().to_string(),
        })?;
        builder = builder.proxy(parsed);
    }
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(no_proxy: &str) -> ProxySettings {
        ProxySettings::from_values(
            Some("http://proxy:3128"),
            Some("http://sproxy:3129"),
            Some(no_proxy),
        )
    }

    #[test]
    fn picks_the_proxy_by_scheme() {
        let p = settings("");
        assert_eq!(
            p.proxy_for("https", "api.github.com"),
            Some("http://sproxy:3129")
        );
        assert_eq!(
            p.proxy_for("http", "example.com"),
            Some("http://proxy:3128")
        );
        assert_eq!(p.proxy_for("ftp", "example.com"), None);
        assert_eq!(
            ProxySettings::default().proxy_for("https", "api.github.com"),
            None
        );
    }

    #[test]
    fn loopback_always_goes_direct() {
        let p = settings("");
        for host in [
            "127.0.0.1",
            "127.8.9.10",
            "localhost",
            "LOCALHOST",
            "::1",
            "[::1]",
        ] {
            assert_eq!(p.proxy_for("http", host), None, "{host}");
        }
        assert!(!is_loopback_host("128.0.0.1"));
        assert!(!is_loopback_host("localhost.example.com"));
    }

    #[test]
    fn no_proxy_hosts_suffixes_and_cidrs_go_direct() {
        let p =
            settings(" example.com, .corp.internal,*.wild.org , 10.0.0.0/8,192.168.1.7,GHE.Local");
        for host in [
            "example.com",
            "api.example.com",
            "git.corp.internal",
            "corp.internal",
            "a.wild.org",
            "10.20.30.40",
            "192.168.1.7",
            "ghe.local",
        ] {
            assert_eq!(p.proxy_for("https", host), None, "{host}");
        }
        for host in [
            "notexample.com",
            "example.com.evil",
            "11.0.0.1",
            "192.168.1.8",
            "github.com",
        ] {
            assert!(p.proxy_for("https", host).is_some(), "{host}");
        }
        assert_eq!(settings("*").proxy_for("https", "github.com"), None);
        assert_eq!(
            settings("10.0.0.0/33").proxy_for("https", "10.0.0.1"),
            Some("http://sproxy:3129")
        );
        assert_eq!(settings("0.0.0.0/0").proxy_for("https", "1.2.3.4"), None);
    }

    #[test]
    fn empty_values_mean_unset() {
        let p = ProxySettings::from_values(Some(""), Some("  "), Some(" , ,"));
        assert_eq!(p, ProxySettings::default());
    }

    #[test]
    fn debug_hides_proxy_credentials() {
        let p = ProxySettings::from_values(Some("http://user:s3cret@proxy:3128/"), None, None);
        let shown = format!("{p:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("user"),
            "{shown}"
        );
        assert!(shown.contains("proxy:3128"), "{shown}");
        assert_eq!(without_credentials("proxy:3128"), "proxy:3128");
        assert_eq!(without_credentials("a:b@proxy:1"), "[redacted]@proxy:1");
        assert_eq!(without_credentials("http://h/p@x"), "http://h/p@x");
    }

    #[test]
    fn a_bad_proxy_url_is_an_error_without_credentials() {
        let p = ProxySettings::from_values(None, Some("gopher://user:pw@x:1"), None);
        let t = Timeouts {
            connect: Duration::from_secs(1),
            total: Duration::from_secs(1),
        };
        let err = build_agent(&p, "https", "api.github.com", t, "ua").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(build_agent(&p, "https", "127.0.0.1", t, "ua").is_ok());
    }
}
