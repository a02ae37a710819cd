//! Every name the charm gives a thing on the machine that another program limits: LXD
//! instances and ACLs, nft tables, systemd units and per-unit file names. One rule, [`fit`]:
//! a name that fits its object's limit is kept as it is (so existing deployments keep their
//! objects); a longer one keeps its fixed parts, cuts the part that came from the
//! deployment (the application name) and puts 8 hex of that part's SHA-256 in place of
//! what was cut. Deterministic (every hook of a unit derives the same names), and two
//! names that differ anywhere still differ once cut.
//!
//! Juju's application names (`juju/names`: `[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*`)
//! have no length limit there, so no limit below may assume one.
//!
//! Names the charm does not derive from the deployment are constants, each within its
//! limit (the tests check them): the storage pool and profile `runner`
//! ([`crate::runner::resources`]), the resource profiles `cpu-N-mem-…` (LXD sets no length
//! limit on profile or pool names), the bridge `lxdbr0` ([`crate::network::DEFAULT_BRIDGE`],
//! a Linux interface name: at most [`INTERFACE_MAX`]).

use crate::identity::UnitIdentity;

/// Longest LXD instance or network ACL name: both are hostnames (LXD's `IsHostname`:
/// 1-63 of ASCII letters, digits and `-`, neither first nor last a `-`, not all digits).
pub const HOSTNAME_MAX: usize = 63;
/// Longest Linux network interface name (`IFNAMSIZ` 16 with its NUL), so the longest LXD
/// bridge name.
pub const INTERFACE_MAX: usize = 15;
/// Longest nft table name (`NFT_NAME_MAXLEN` 256 with its NUL).
pub const NFT_NAME_MAX: usize = 255;
/// Longest file name (`NAME_MAX`) and systemd unit name (`UNIT_NAME_MAX` 256 with its NUL).
pub const FILE_NAME_MAX: usize = 255;
/// Longest unit folder name ([`unit_folder`]): file and systemd unit names wrap it in at
/// most 55 more characters (`ghro.reconcile-runners-<unit>.service` adds 31).
pub const UNIT_FOLDER_MAX: usize = 200;
/// Hex digits of the SHA-256 that stand in for a cut part.
pub const HASH_HEX_LEN: usize = 8;
/// Random hex digits ending a runner name.
pub const RUNNER_SUFFIX_HEX_LEN: usize = 12;

/// Which characters a name may hold; [`fit`] replaces the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// LXD instance and ACL names, nft tables: ASCII letters and digits kept, anything else
    /// becomes `-`.
    Hostname,
    /// File and systemd unit name parts: a-z, 0-9 and `-` kept, `/` becomes `-`, anything
    /// else `_`, so a name never climbs out of its folder.
    FileName,
}

impl Charset {
    fn clean(self, s: &str) -> String {
        s.chars()
            .map(|c| match self {
                Charset::Hostname if c.is_ascii_alphanumeric() => c,
                Charset::Hostname => '-',
                Charset::FileName if c.is_ascii_lowercase() || c.is_ascii_digit() => c,
                Charset::FileName if c == '-' || c == '/' => '-',
                Charset::FileName => '_',
            })
            .collect()
    }
}

/// `head` + `body` + `tail`, characters outside `charset` replaced, in at most `limit`
/// characters: unchanged when it fits; else `body` keeps its first characters and 8 hex of
/// the SHA-256 of the whole unshortened `body` follow them, so the fixed `head` and
/// `tail` stay readable (a unit number, a model) and two bodies sharing a prefix differ.
/// Should `head` and `tail` leave no room for a hash, the whole name is the body.
pub fn fit(head: &str, body: &str, tail: &str, limit: usize, charset: Charset) -> String {
    let (head_c, body_c, tail_c) = (
        charset.clean(head),
        charset.clean(body),
        charset.clean(tail),
    );
    if head_c.len() + body_c.len() + tail_c.len() <= limit {
        return format!("{head_c}{body_c}{tail_c}");
    }
    let fixed = head_c.len() + tail_c.len();
    if fixed + HASH_HEX_LEN >= limit {
        if fixed == 0 {
            // No room even for the hash: a limit no constructor here uses.
            return body_c.chars().take(limit).collect();
        }
        return fit("", &format!("{head}{body}{tail}"), "", limit, charset);
    }
    // Cleaned names are ASCII, so byte lengths are character counts.
    let kept: String = body_c.chars().take(limit - fixed - HASH_HEX_LEN).collect();
    format!("{head_c}{kept}{}{tail_c}", sha256_hex(body, HASH_HEX_LEN))
}

/// The first `digits` hex digits of the SHA-256 of `text`.
fn sha256_hex(text: &str, digits: usize) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex[..digits.min(hex.len())].to_string()
}

/// `{app}-{n}-`: every runner name of the unit starts with it and ends in
/// [`RUNNER_SUFFIX_HEX_LEN`] random hex, an LXD instance name (and GitHub runner name)
/// within [`HOSTNAME_MAX`].
pub fn runner_prefix(identity: &UnitIdentity) -> String {
    fit(
        "",
        &identity.app,
        &format!("-{}-", identity.unit_number),
        HOSTNAME_MAX - RUNNER_SUFFIX_HEX_LEN,
        Charset::Hostname,
    )
}

/// The first 8 characters of the model UUID: enough to tell models apart on one machine.
fn model_part(identity: &UnitIdentity) -> String {
    identity.model_uuid.chars().take(8).collect()
}

/// `<prefix>-<model 8>-<app>-<n>` within [`HOSTNAME_MAX`]: one per unit and model.
fn per_unit_hostname(prefix: &str, identity: &UnitIdentity) -> String {
    fit(
        &format!("{prefix}-{}-", model_part(identity)),
        &identity.app,
        &format!("-{}", identity.unit_number),
        HOSTNAME_MAX,
        Charset::Hostname,
    )
}

/// The unit's LXD network ACL, `ghr-<model 8>-<app>-<n>`, within [`HOSTNAME_MAX`].
pub fn unit_acl(identity: &UnitIdentity) -> String {
    per_unit_hostname("ghr", identity)
}

/// The unit's aproxy nft table, `ghr-aproxy-<model 8>-<app>-<n>`, within [`HOSTNAME_MAX`]
/// (far below nft's [`NFT_NAME_MAX`], so `nft list tables` stays readable).
pub fn aproxy_nft_table(identity: &UnitIdentity) -> String {
    per_unit_hostname("ghr-aproxy", identity)
}

/// `github-runner/0` -> `github-runner-0`: the unit's folder name and the part naming it in
/// file and systemd unit names, within [`UNIT_FOLDER_MAX`].
pub fn unit_folder(unit_name: &str) -> String {
    match unit_name.rsplit_once('/') {
        Some((app, number)) => fit(
            "",
            app,
            &format!("/{number}"),
            UNIT_FOLDER_MAX,
            Charset::FileName,
        ),
        None => fit("", unit_name, "", UNIT_FOLDER_MAX, Charset::FileName),
    }
}

/// The unit's metrics exporter service, `ghro.metrics-exporter.<unit folder>.service`.
pub fn exporter_service(unit_name: &str) -> String {
    format!("ghro.metrics-exporter.{}.service", unit_folder(unit_name))
}

/// The unit's reconcile timer and service, `ghro.reconcile-runners-<unit folder>.<kind>`.
pub fn reconcile_unit(unit_folder: &str, kind: &str) -> String {
    format!("ghro.reconcile-runners-{unit_folder}.{kind}")
}

#[cfg(test)]
#[path = "naming_tests.rs"]
mod tests;
