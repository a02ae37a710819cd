//! aproxy (experimental-use-aproxy): a transparent proxy on the host, in front of the
//! model's HTTP(S) proxy. Runners get no proxy settings; nft redirects their TCP 80/443 to
//! non-private destinations to aproxy's listener. The ruleset and the snap calls are pure
//! functions; [`converge`] runs them through [`HostCommands`].
//!
//! Per unit: units sharing a machine share the bridge, so each unit's redirect lives in an
//! nft table of its own ([`table_name`]), written from a ruleset file of its own, and
//! matches only its own runners, by the MAC prefix every runner NIC of the unit carries
//! ([`crate::network::unit_mac_prefix`]; LXD's MAC filtering keeps a runner from taking
//! another's). No set to keep up to date: a runner is matched from its first packet, and a
//! gone runner leaves nothing behind. The snap is machine-wide and never removed (another
//! unit may use it; removing it is the operator's call).

use crate::charm::setup::commands::{CommandError, HostCommands};
use crate::identity::UnitIdentity;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where aproxy listens on the host (the ACL keeps this one host port open to runners).
pub const LISTEN_PORT: u16 = 54969;
/// The machine-wide table of earlier revisions (redirecting every runner on the bridge):
/// deleted by the first converge of this revision.
pub const LEGACY_NFT_TABLE: &str = "github-runner-aproxy";
const SNAP_TIMEOUT: Duration = Duration::from_secs(600);
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Destinations never redirected: private and loopback networks.
const PRIVATE: &str = "10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16";

/// The unit's nft table (`ghr-aproxy-5bb2e5a4-github-runner-0`): one per unit and model,
/// through the one naming rule ([`crate::naming::aproxy_nft_table`]), so two units never
/// share one.
pub fn table_name(identity: &UnitIdentity) -> String {
    crate::naming::aproxy_nft_table(identity)
}

/// What one unit's redirect is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AproxyTarget {
    /// [`table_name`] of the unit.
    pub table: String,
    /// The unit's ruleset file ([`crate::paths::HostPaths::aproxy_nft_file`]).
    pub nft_file: PathBuf,
    /// The machine-wide file of earlier revisions (the unit-less layout's).
    pub legacy_nft_file: PathBuf,
    /// The runners' bridge.
    pub bridge: String,
    /// [`crate::network::unit_mac_prefix`] of the unit.
    pub runner_mac_prefix: [u8; 3],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AproxyError {
    #[error("experimental-use-aproxy needs the snap command to install aproxy; install snapd or set experimental-use-aproxy=false")]
    SnapMissing,
    #[error("experimental-use-aproxy needs the nft command (nftables) on the host; install nftables or set experimental-use-aproxy=false")]
    NftMissing,
    #[error("the model's proxy {0:?} has no host:port aproxy can use; fix juju-http(s)-proxy")]
    BadProxy(String),
    #[error("{command} failed: {message}")]
    Command { command: String, message: String },
    #[error("could not write the aproxy nft rules: {0}")]
    Io(String),
}

impl From<CommandError> for AproxyError {
    fn from(e: CommandError) -> Self {
        AproxyError::Command {
            command: "a host command".into(),
            message: e.to_string(),
        }
    }
}

/// aproxy's upstream as `host:port`, from the model's https proxy (else http): scheme,
/// path dropped; credentials are refused (aproxy takes none, and they would reach argv).
pub fn upstream(https: Option<&str>, http: Option<&str>) -> Result<String, AproxyError> {
    let raw = https
        .or(http)
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| AproxyError::BadProxy(String::new()))?;
    let bad = || AproxyError::BadProxy(redact(raw));
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = url::Url::parse(&with_scheme).map_err(|_| bad())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad());
    }
    let host = url.host_str().ok_or_else(bad)?;
    let port = url.port_or_known_default().ok_or_else(bad)?;
    Ok(format!("{host}:{port}"))
}

fn redact(proxy: &str) -> String {
    match proxy.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => proxy.to_string(),
    }
}

/// The snap commands that install and configure aproxy.
pub fn snap_commands(upstream: &str) -> Vec<Vec<String>> {
    vec![
        vec!["install".into(), "aproxy".into(), "--edge".into()],
        vec![
            "set".into(),
            "aproxy".into(),
            format!("proxy={upstream}"),
            format!("listen=:{LISTEN_PORT}"),
        ],
    ]
}

/// nft's match for a source MAC starting with `prefix`.
fn mac_match(prefix: [u8; 3]) -> String {
    let [a, b, c] = prefix;
    format!("ether saddr & ff:ff:ff:00:00:00 == {a:02x}:{b:02x}:{c:02x}:00:00:00")
}

/// The unit's ruleset: its table replaced as a whole (declared, deleted, declared again, so
/// `nft -f` is atomic and idempotent). From the unit's runners only (on `bridge`, by MAC
/// prefix): TCP 80/443 to a non-private destination is redirected to aproxy on the host,
/// and every protocol to the host but TCP, UDP and ICMP is rejected (the ACL closes those
/// three but for aproxy's port; LXD rules cannot name other protocols apart).
pub fn nft_ruleset(table: &str, bridge: &str, runner_mac_prefix: [u8; 3]) -> String {
    let runners = format!("iifname \"{bridge}\" {}", mac_match(runner_mac_prefix));
    format!(
        "table ip {table} {{}}\n\
         delete table ip {table}\n\
         table ip {table} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\t{runners} ip daddr != {{ {PRIVATE} }} tcp dport {{ 80, 443 }} redirect to :{LISTEN_PORT}\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\t{runners} fib daddr type local meta l4proto != {{ tcp, udp, icmp }} reject\n\
         \t}}\n\
         }}\n"
    )
}

/// The ruleset that deletes `table` (whether or not it exists).
pub fn nft_removal(table: &str) -> String {
    format!("table ip {table} {{}}\ndelete table ip {table}\n")
}

/// With `upstream`: aproxy installed and configured, the unit's redirect in place. Without:
/// the unit's redirect gone (other units' tables and the snap stay). Either way the
/// machine-wide table of earlier revisions goes.
pub fn converge(
    commands: &dyn HostCommands,
    target: &AproxyTarget,
    upstream: Option<&str>,
) -> Result<(), AproxyError> {
    let nft = commands.find("nft");
    // A file is there exactly when its rules were applied (no nft spawn otherwise).
    if let Some(nft) = &nft {
        remove_table(commands, nft, &target.legacy_nft_file, LEGACY_NFT_TABLE)?;
    }
    let Some(upstream) = upstream else {
        if let Some(nft) = &nft {
            remove_table(commands, nft, &target.nft_file, &target.table)?;
        }
        return Ok(());
    };
    let snap = commands.find("snap").ok_or(AproxyError::SnapMissing)?;
    let nft = nft.ok_or(AproxyError::NftMissing)?;
    for args in snap_commands(upstream) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(commands.run(&snap, &args, SNAP_TIMEOUT)?, "snap", &args)?;
    }
    let ruleset = nft_ruleset(&target.table, &target.bridge, target.runner_mac_prefix);
    apply_nft(commands, &nft, &target.nft_file, &ruleset)
}

/// Deletes `table` when its ruleset `file` says it was applied, then the file.
fn remove_table(
    commands: &dyn HostCommands,
    nft: &Path,
    file: &Path,
    table: &str,
) -> Result<(), AproxyError> {
    if !file.exists() {
        return Ok(());
    }
    apply_nft(commands, nft, file, &nft_removal(table))?;
    std::fs::remove_file(file).map_err(|e| AproxyError::Io(e.to_string()))
}

fn apply_nft(
    commands: &dyn HostCommands,
    nft: &Path,
    file: &Path,
    ruleset: &str,
) -> Result<(), AproxyError> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(|e| AproxyError::Io(e.to_string()))?;
    }
    std::fs::write(file, ruleset).map_err(|e| AproxyError::Io(e.to_string()))?;
    let path = file.to_string_lossy();
    let args = ["-f", path.as_ref()];
    check(commands.run(nft, &args, NFT_TIMEOUT)?, "nft", &args)
}

fn check(
    out: crate::charm::setup::commands::CommandOutput,
    program: &str,
    args: &[&str],
) -> Result<(), AproxyError> {
    if out.success() {
        return Ok(());
    }
    Err(AproxyError::Command {
        // Arguments hold no secret: credentials in the proxy are refused by `upstream`.
        command: format!("{program} {}", args.join(" ")),
        message: out.stderr.trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_is_host_and_port_of_the_models_proxy() {
        assert_eq!(
            upstream(Some("http://squid.internal:3128"), None).unwrap(),
            "squid.internal:3128"
        );
        assert_eq!(upstream(None, Some("squid:3128")).unwrap(), "squid:3128");
        assert_eq!(upstream(None, Some("http://squid")).unwrap(), "squid:80");
        let err = upstream(Some("http://u:SECRET@squid:3128"), None).unwrap_err();
        assert!(!err.to_string().contains("SECRET"), "{err}");
        assert!(upstream(None, None).is_err());
    }

    #[test]
    fn the_ruleset_redirects_only_the_units_runner_web_traffic_to_public_destinations() {
        let rules = nft_ruleset("ghr-aproxy-m-app-0", "lxdbr0", [0x02, 0xab, 0x0c]);
        assert!(rules
            .starts_with("table ip ghr-aproxy-m-app-0 {}\ndelete table ip ghr-aproxy-m-app-0\n"));
        assert!(rules.contains(
            "iifname \"lxdbr0\" ether saddr & ff:ff:ff:00:00:00 == 02:ab:0c:00:00:00 ip daddr != { 10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 } tcp dport { 80, 443 } redirect to :54969"
        ));
        assert!(rules.contains("type nat hook prerouting priority dstnat"));
        assert!(rules.contains(
            "02:ab:0c:00:00:00 fib daddr type local meta l4proto != { tcp, udp, icmp } reject"
        ));
        assert!(
            !rules.contains("hook output"),
            "the host's own traffic is left alone"
        );
        assert_eq!(nft_removal("t"), "table ip t {}\ndelete table ip t\n");
    }

    fn unit(app: &str, n: u32) -> UnitIdentity {
        UnitIdentity {
            app: app.into(),
            unit_number: n,
            model_uuid: "5bb2e5a4-1d0b-4d6e".into(),
        }
    }

    #[test]
    fn each_unit_has_its_own_table_within_the_name_limit() {
        assert_eq!(
            table_name(&unit("github-runner", 0)),
            "ghr-aproxy-5bb2e5a4-github-runner-0"
        );
        assert_ne!(
            table_name(&unit("github-runner", 0)),
            table_name(&unit("github-runner", 1))
        );
        let long = "a".repeat(59);
        let (a, b) = (
            table_name(&unit(&long, 0)),
            table_name(&unit(&format!("{long}b"), 0)),
        );
        assert_eq!(a.len(), crate::naming::HOSTNAME_MAX);
        assert!(a.ends_with("-0"), "{a}");
        assert_ne!(a, b, "cut names still differ");
        assert_eq!(a, table_name(&unit(&long, 0)), "deterministic");
    }

    #[test]
    fn snap_installs_then_configures_aproxy() {
        assert_eq!(
            snap_commands("squid:3128"),
            [
                vec!["install", "aproxy", "--edge"],
                vec!["set", "aproxy", "proxy=squid:3128", "listen=:54969"],
            ]
        );
    }
}
