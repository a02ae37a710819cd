//! aproxy (experimental-use-aproxy): a transparent proxy on the host, in front of the
//! model's HTTP(S) proxy. Runners get no proxy settings; nft redirects their TCP 80/443 to
//! non-private destinations to aproxy's listener. The ruleset and the snap calls are pure
//! functions; [`converge`] runs them through [`HostCommands`].

use crate::charm::setup::commands::{CommandError, HostCommands};
use std::path::Path;
use std::time::Duration;

/// Where aproxy listens on the host (the ACL keeps this one host port open to runners).
pub const LISTEN_PORT: u16 = 54969;
/// The nft table the charm owns (the whole table is replaced or deleted, nothing else).
pub const NFT_TABLE: &str = "github-runner-aproxy";
const SNAP_TIMEOUT: Duration = Duration::from_secs(600);
const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// Destinations never redirected: private and loopback networks.
const PRIVATE: &str = "10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16";

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

/// The ruleset: the charm's table replaced as a whole (declared, deleted, declared again,
/// so `nft -f` is atomic and idempotent), redirecting TCP 80/443 that enters from `bridge`
/// towards a non-private destination to aproxy on the host.
pub fn nft_ruleset(bridge: &str) -> String {
    format!(
        "table ip {NFT_TABLE} {{}}\n\
         delete table ip {NFT_TABLE}\n\
         table ip {NFT_TABLE} {{\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tiifname \"{bridge}\" ip daddr != {{ {PRIVATE} }} tcp dport {{ 80, 443 }} redirect to :{LISTEN_PORT}\n\
         \t}}\n\
         }}\n"
    )
}

/// The ruleset that deletes the charm's table (whether or not it exists).
pub fn nft_removal() -> String {
    format!("table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n")
}

/// With `upstream`: aproxy installed and configured, the redirect in place. Without: the
/// redirect gone (the snap stays: removing it is the operator's call).
pub fn converge(
    commands: &dyn HostCommands,
    nft_file: &Path,
    bridge: &str,
    upstream: Option<&str>,
) -> Result<(), AproxyError> {
    let nft = commands.find("nft");
    let Some(upstream) = upstream else {
        // Off: the file is there exactly when rules were applied (no nft spawn otherwise).
        if let (Some(nft), true) = (nft, nft_file.exists()) {
            apply_nft(commands, &nft, nft_file, &nft_removal())?;
            std::fs::remove_file(nft_file).map_err(|e| AproxyError::Io(e.to_string()))?;
        }
        return Ok(());
    };
    let snap = commands.find("snap").ok_or(AproxyError::SnapMissing)?;
    let nft = nft.ok_or(AproxyError::NftMissing)?;
    for args in snap_commands(upstream) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(commands.run(&snap, &args, SNAP_TIMEOUT)?, "snap", &args)?;
    }
    apply_nft(commands, &nft, nft_file, &nft_ruleset(bridge))
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
    fn the_ruleset_redirects_only_runner_web_traffic_to_public_destinations() {
        let rules = nft_ruleset("lxdbr0");
        assert!(rules.starts_with(
            "table ip github-runner-aproxy {}\ndelete table ip github-runner-aproxy\n"
        ));
        assert!(rules.contains(
            "iifname \"lxdbr0\" ip daddr != { 10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 } tcp dport { 80, 443 } redirect to :54969"
        ));
        assert!(rules.contains("type nat hook prerouting priority dstnat"));
        assert!(
            !rules.contains("hook output"),
            "the host's own traffic is left alone"
        );
        assert_eq!(
            nft_removal(),
            "table ip github-runner-aproxy {}\ndelete table ip github-runner-aproxy\n"
        );
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
