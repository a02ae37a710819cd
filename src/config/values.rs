//! Parsers for single option values. Each returns the typed value or what was expected.

use crate::github::GitHubPath;
use std::net::{Ipv4Addr, Ipv6Addr};

pub const SIZE_EXPECTED: &str = "expected a whole number with KiB, MiB, GiB, TiB, PiB or EiB";

/// `7GiB` -> bytes. Zero is not a size a runner can use.
pub fn parse_size(text: &str) -> Result<u64, String> {
    const UNITS: [(&str, u32); 6] = [
        ("KiB", 10),
        ("MiB", 20),
        ("GiB", 30),
        ("TiB", 40),
        ("PiB", 50),
        ("EiB", 60),
    ];
    let (number, shift) = UNITS
        .iter()
        .find_map(|(unit, shift)| text.strip_suffix(unit).map(|n| (n, *shift)))
        .ok_or_else(|| SIZE_EXPECTED.to_string())?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(SIZE_EXPECTED.to_string());
    }
    let too_large = || format!("{SIZE_EXPECTED}, below 16EiB");
    let n: u64 = number.parse().map_err(|_| too_large())?;
    if n == 0 {
        return Err(format!("{SIZE_EXPECTED}, above zero"));
    }
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

pub const PATH_EXPECTED: &str = "expected <org> or <owner>/<repo> (owner: letters, digits and \
     inner single hyphens, up to 39; repo: letters, digits, '.', '_' and '-', up to 100)";

/// An organisation or `owner/repo`, with the characters GitHub allows in each.
pub fn parse_github_path(text: &str) -> Result<GitHubPath, String> {
    let owner_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 39
            && !s.starts_with('-')
            && !s.ends_with('-')
            && !s.contains("--")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    let repo_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 100
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    };
    match text.split_once('/') {
        None if owner_ok(text) => Ok(GitHubPath::Org(text.to_string())),
        Some((owner, repo)) if owner_ok(owner) && repo_ok(repo) => Ok(GitHubPath::Repo {
            owner: owner.to_string(),
            repo: repo.to_string(),
        }),
        _ => Err(PATH_EXPECTED.to_string()),
    }
}

/// Comma-separated labels, each `^[\w-]+$`; blanks around and between commas are ignored,
/// duplicates dropped (first one kept).
pub fn parse_labels(text: &str) -> Result<Vec<String>, String> {
    let mut labels: Vec<String> = Vec::new();
    let mut bad: Vec<String> = Vec::new();
    for label in text.split(',').map(str::trim).filter(|l| !l.is_empty()) {
        if !label
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            bad.push(format!("{label:?}"));
        } else if !labels.iter().any(|l| l == label) {
            labels.push(label.to_string());
        }
    }
    if bad.is_empty() {
        Ok(labels)
    } else {
        Err(format!(
            "invalid labels {}: expected comma-separated labels of letters, digits, '_' and '-'",
            bad.join(", ")
        ))
    }
}

/// The longest name of a unit's scale set (`<scale-set-name>-<unit number>`): the limit
/// GitHub's own controller (actions-runner-controller) puts on its scale set names.
pub const SCALE_SET_NAME_MAX: usize = 45;

pub const SCALE_SET_NAME_EXPECTED: &str = "expected letters, digits, '_' and '-', starting with \
     a letter or digit (it is also the runners' label)";

/// `scale-set-name`: empty for none. It is also a label, so a label's characters, and room
/// is left for the shortest unit suffix (`-0`); [`unit_scale_set_name`] checks the unit's own.
pub fn parse_scale_set_name(text: &str) -> Result<Option<String>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    let starts_well = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !starts_well
        || !text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(SCALE_SET_NAME_EXPECTED.to_string());
    }
    unit_scale_set_name(text, 0)?;
    Ok(Some(text.to_string()))
}

/// The unit's scale set: `<scale-set-name>-<unit number>`, at most [`SCALE_SET_NAME_MAX`]
/// characters (each unit holds its own: a session is exclusive).
pub fn unit_scale_set_name(name: &str, unit_number: u32) -> Result<String, String> {
    let full = format!("{name}-{unit_number}");
    if full.len() > SCALE_SET_NAME_MAX {
        return Err(format!(
            "too long: the unit's scale set {full:?} must have at most {SCALE_SET_NAME_MAX} \
             characters; use a shorter name"
        ));
    }
    Ok(full)
}

/// Comma-separated strict IPv4 networks (`10.0.0.0/8`; a bare address means `/32`), returned
/// as `a.b.c.d/n`. Host bits set (`10.0.0.1/8`) is an error, as with Python's `strict=True`.
pub fn parse_denylist(text: &str) -> Result<Vec<String>, String> {
    let mut networks = Vec::new();
    let mut bad = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        match parse_ipv4_network(entry) {
            Ok(net) => networks.push(net),
            Err(reason) => bad.push(format!("{entry:?} ({reason})")),
        }
    }
    if bad.is_empty() {
        Ok(networks)
    } else {
        Err(format!(
            "invalid entries {}: expected comma-separated IPv4 networks such as 10.0.0.0/8",
            bad.join(", ")
        ))
    }
}

fn parse_ipv4_network(entry: &str) -> Result<String, &'static str> {
    let (addr, prefix) = entry.split_once('/').unwrap_or((entry, "32"));
    let addr: Ipv4Addr = addr.parse().map_err(|_| "not an IPv4 address")?;
    let prefix_ok =
        !prefix.is_empty() && prefix.len() <= 2 && prefix.bytes().all(|b| b.is_ascii_digit());
    let prefix: u32 = match prefix.parse() {
        Ok(p) if prefix_ok && p <= 32 => p,
        _ => return Err("prefix length must be 0 to 32"),
    };
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    if u32::from(addr) & !mask != 0 {
        return Err("host bits set");
    }
    Ok(format!("{addr}/{prefix}"))
}

/// The parts of an http(s) URL the charm cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `http` or `https`, lowercase.
    pub scheme: String,
    /// Lowercase; IPv6 literals keep their brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Everything after the authority (path, query, fragment), possibly empty.
    pub rest: String,
}

impl HttpUrl {
    /// `scheme://host[:port]`.
    pub fn origin(&self) -> String {
        match self.port {
            Some(port) => format!("{}://{}:{port}", self.scheme, self.host),
            None => format!("{}://{}", self.scheme, self.host),
        }
    }

    /// localhost, 127.0.0.0/8 or ::1: traffic that never leaves the machine.
    pub fn is_loopback(&self) -> bool {
        if self.host == "localhost" {
            return true;
        }
        if let Ok(v4) = self.host.parse::<Ipv4Addr>() {
            return v4.is_loopback();
        }
        self.host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .and_then(|h| h.parse::<Ipv6Addr>().ok())
            .is_some_and(|v6| v6.is_loopback())
    }
}

/// A strict parse of `http(s)://host[:port][/...]`. No credentials (they would be shown
/// in status messages and logs), no whitespace.
pub fn parse_http_url(text: &str) -> Result<HttpUrl, &'static str> {
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace");
    }
    let (scheme, after) = text.split_once("://").ok_or("not a URL")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err("not an http(s) URL");
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (authority, rest) = after.split_at(end);
    if authority.contains('@') {
        return Err("credentials are not allowed in the URL");
    }
    let (host, port) = split_host_port(authority)?;
    Ok(HttpUrl {
        scheme,
        host,
        port,
        rest: rest.to_string(),
    })
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), &'static str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (literal, after) = v6.split_once(']').ok_or("bad IPv6 host")?;
        literal.parse::<Ipv6Addr>().map_err(|_| "bad IPv6 host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("bad port")?),
        };
        (format!("[{}]", literal.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
            return Err("bad host name");
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Some(n),
            _ => return Err("bad port"),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("7GiB"), Ok(7 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("3PiB"), Ok(3 << 50));
        assert_eq!(parse_size("15EiB"), Ok(15 << 60));
        assert_eq!(parse_size("007GiB"), Ok(7 << 30));
        for bad in [
            "", "GiB", "7", "7XB", "7gib", "7GB", "7 GiB", " 7GiB", "-1GiB", "1.5GiB", "+7GiB",
        ] {
            assert_eq!(parse_size(bad), Err(SIZE_EXPECTED.to_string()), "{bad}");
        }
        assert!(parse_size("0GiB").unwrap_err().contains("above zero"));
        assert!(parse_size("000KiB").unwrap_err().contains("above zero"));
        assert!(parse_size("16EiB").unwrap_err().contains("below 16EiB"));
        assert!(parse_size("99999999999999999999999KiB")
            .unwrap_err()
            .contains("below 16EiB"));
    }

    #[test]
    fn github_paths() {
        assert_eq!(
            parse_github_path("canonical"),
            Ok(GitHubPath::Org("canonical".into()))
        );
        assert_eq!(
            parse_github_path("canonical/github-runner-operator"),
            Ok(GitHubPath::Repo {
                owner: "canonical".into(),
                repo: "github-runner-operator".into()
            })
        );
        assert!(parse_github_path("a-b/.github").is_ok());
        assert!(parse_github_path("A1/x_y.z").is_ok());
        assert!(parse_github_path(&"o".repeat(39)).is_ok());
        assert!(parse_github_path(&format!("o/{}", "r".repeat(100))).is_ok());
        for bad in [
            "", "/", "a/", "/b", "a/b/c", "a b", "-a", "a-", "a--b", "a_b", "a.b", "a/.", "a/..",
            "a/b c", "a/b?", "ü", " a",
        ] {
            assert!(parse_github_path(bad).is_err(), "{bad:?}");
        }
        assert!(parse_github_path(&"o".repeat(40)).is_err());
        assert!(parse_github_path(&format!("o/{}", "r".repeat(101))).is_err());
    }

    #[test]
    fn labels() {
        assert_eq!(parse_labels(""), Ok(vec![]));
        assert_eq!(parse_labels(" , ,"), Ok(vec![]));
        assert_eq!(
            parse_labels("large, gpu_1,x-y,large"),
            Ok(vec!["large".into(), "gpu_1".into(), "x-y".into()])
        );
        assert_eq!(parse_labels("größe"), Ok(vec!["größe".into()]));
        let err = parse_labels("ok,a b,c$").unwrap_err();
        assert!(err.starts_with("invalid labels \"a b\", \"c$\":"), "{err}");
    }

    #[test]
    fn scale_set_names() {
        assert_eq!(parse_scale_set_name(""), Ok(None));
        assert_eq!(parse_scale_set_name("lxd_x-1"), Ok(Some("lxd_x-1".into())));
        assert_eq!(unit_scale_set_name("linux", 12), Ok("linux-12".into()));
        for bad in ["-a", "_a", "a b", "a.b", "a/b", "größe", "a,b"] {
            assert_eq!(
                parse_scale_set_name(bad),
                Err(SCALE_SET_NAME_EXPECTED.to_string()),
                "{bad:?}"
            );
        }
        // 43 characters leave room for "-0" but not for "-10".
        let longest = "n".repeat(43);
        assert!(parse_scale_set_name(&longest).is_ok());
        assert!(parse_scale_set_name(&"n".repeat(44))
            .unwrap_err()
            .contains("at most 45 characters"));
        assert!(unit_scale_set_name(&longest, 9).is_ok());
        let err = unit_scale_set_name(&longest, 10).unwrap_err();
        assert!(err.contains(&format!("\"{longest}-10\"")), "{err}");
    }

    #[test]
    fn denylists() {
        assert_eq!(parse_denylist(""), Ok(vec![]));
        assert_eq!(
            parse_denylist("10.0.0.0/8, 192.168.1.0/24,1.2.3.4,0.0.0.0/0"),
            Ok(vec![
                "10.0.0.0/8".into(),
                "192.168.1.0/24".into(),
                "1.2.3.4/32".into(),
                "0.0.0.0/0".into()
            ])
        );
        let err =
            parse_denylist("10.0.0.1/8,foo,1.2.3.0/33,010.0.0.0/8,::1/128,1.2.3.0/").unwrap_err();
        for part in [
            "\"10.0.0.1/8\" (host bits set)",
            "\"foo\" (not an IPv4 address)",
            "\"1.2.3.0/33\" (prefix length must be 0 to 32)",
            "\"010.0.0.0/8\" (not an IPv4 address)",
            "\"::1/128\" (not an IPv4 address)",
            "\"1.2.3.0/\" (prefix length",
        ] {
            assert!(err.contains(part), "{part} in {err}");
        }
        assert!(parse_denylist("1.2.3.0/+8").is_err());
        assert!(parse_denylist("1.2.3.0/008").is_err());
    }

    #[test]
    fn urls() {
        let u = parse_http_url("https://GHE.Example.com:8443/x?y").unwrap();
        assert_eq!(u.scheme, "https");
        assert_eq!(u.host, "ghe.example.com");
        assert_eq!(u.port, Some(8443));
        assert_eq!(u.rest, "/x?y");
        assert_eq!(u.origin(), "https://ghe.example.com:8443");
        let u = parse_http_url("http://[::1]:8080").unwrap();
        assert_eq!(u.host, "[::1]");
        assert!(u.is_loopback());
        for loopback in [
            "http://localhost",
            "http://127.0.0.1:1",
            "http://127.255.0.9",
        ] {
            assert!(
                parse_http_url(loopback).unwrap().is_loopback(),
                "{loopback}"
            );
        }
        for remote in [
            "http://example.com",
            "http://128.0.0.1",
            "http://[::2]",
            "http://localhost.evil.com",
        ] {
            assert!(!parse_http_url(remote).unwrap().is_loopback(), "{remote}");
        }
        for bad in [
            "",
            "github.com",
            "ftp://x",
            "https://",
            "https://a b",
            "https://u:p@h",
            "https://h:0",
            "https://h:99999",
            "https://h:",
            "https://h:8a",
            "https://[zz]",
            "https://-a.com",
            "https://a..b",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad:?}");
        }
    }
}
