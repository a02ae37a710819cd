//! Which runners belong to this unit.
//!
//! A runner is ours when its name is exactly `{app}-{unit}-{12 hex}` and, for LXD instances,
//! when it also carries our owner key. A prefix check alone would let app "x" unit 1 claim
//! the runners of app "x-1".
//!
//! LXD refuses instance names over 63 characters (they are hostnames). When `{app}` would
//! make the name longer, it is cut by the charm's one naming rule ([`crate::naming::fit`]):
//! every hook of the unit derives the same names, two long application names sharing a
//! prefix still differ, and the owner key (which holds the full application name) stays
//! the real identity of an instance.

use std::fmt;

/// LXD instance config key holding `<model-uuid>/<unit-name>`.
pub const OWNER_CONFIG_KEY: &str = "user.github-runner.owner";

const SUFFIX_HEX_LEN: usize = crate::naming::RUNNER_SUFFIX_HEX_LEN;
/// Longest instance name LXD accepts (a hostname label).
pub const MAX_RUNNER_NAME_LEN: usize = crate::naming::HOSTNAME_MAX;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitIdentity {
    pub app: String,
    pub unit_number: u32,
    pub model_uuid: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("JUJU_UNIT_NAME {0:?} is not of the form <application>/<number>")]
    BadUnitName(String),
    #[error("could not read random bytes for a runner name: {0}")]
    Random(String),
}

impl UnitIdentity {
    /// From `JUJU_UNIT_NAME` (`app/N`) and `JUJU_MODEL_UUID`.
    pub fn parse(unit_name: &str, model_uuid: &str) -> Result<Self, IdentityError> {
        let bad = || IdentityError::BadUnitName(unit_name.to_string());
        let (app, num) = unit_name.split_once('/').ok_or_else(bad)?;
        if app.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) || num.is_empty() {
            return Err(bad());
        }
        Ok(UnitIdentity {
            app: app.to_string(),
            unit_number: num.parse().map_err(|_| bad())?,
            model_uuid: model_uuid.to_string(),
        })
    }

    /// `app/N`, as Juju writes it.
    pub fn unit_name(&self) -> String {
        format!("{}/{}", self.app, self.unit_number)
    }

    /// `{app}-{unit}-` ([`crate::naming::runner_prefix`]): every runner name of this unit
    /// starts with it.
    pub fn name_prefix(&self) -> String {
        crate::naming::runner_prefix(self)
    }

    /// Value of [`OWNER_CONFIG_KEY`] on our instances.
    pub fn owner_value(&self) -> String {
        format!("{}/{}", self.model_uuid, self.unit_name())
    }

    /// True when `name` is exactly `{app}-{unit}-{12 lowercase hex}`.
    pub fn owns_name(&self, name: &str) -> bool {
        match name.strip_prefix(&self.name_prefix()) {
            Some(suffix) => {
                suffix.len() == SUFFIX_HEX_LEN
                    && suffix
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            }
            None => false,
        }
    }

    /// A fresh runner name; random so a rerun hook never reuses a name GitHub still knows
    /// (a reused name makes generate-jitconfig answer 409).
    pub fn new_runner_name(&self) -> Result<RunnerName, IdentityError> {
        let mut bytes = [0u8; SUFFIX_HEX_LEN / 2];
        getrandom::getrandom(&mut bytes).map_err(|e| IdentityError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(RunnerName(format!("{}{}", self.name_prefix(), hex)))
    }
}

/// A runner's name: its LXD instance name and its GitHub runner name are the same.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunnerName(pub String);

impl RunnerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunnerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(name: &str) -> UnitIdentity {
        UnitIdentity::parse(name, "uuid-1").unwrap()
    }

    #[test]
    fn parses_unit_names() {
        let u = unit("github-runner/3");
        assert_eq!(u.app, "github-runner");
        assert_eq!(u.unit_number, 3);
        assert_eq!(u.owner_value(), "uuid-1/github-runner/3");
        for bad in ["", "x", "x/", "/1", "x/1a", "x/-1"] {
            assert!(UnitIdentity::parse(bad, "u").is_err(), "{bad}");
        }
    }

    #[test]
    fn new_names_are_owned_hostnames() {
        let u = unit("github-runner/0");
        let n = u.new_runner_name().unwrap();
        assert!(u.owns_name(n.as_str()), "{n}");
        assert!(n.as_str().len() <= 63);
        assert_ne!(n, u.new_runner_name().unwrap());
    }

    /// Juju allows application names LXD cannot fit in a 63-character instance name.
    #[test]
    fn a_60_character_application_gets_names_lxd_accepts() {
        let app = format!("a{}", "-long-app-name".repeat(5))
            .chars()
            .take(60)
            .collect::<String>();
        assert_eq!(app.len(), 60);
        let u = unit(&format!("{app}/7"));
        let name = u.new_runner_name().unwrap();
        assert_eq!(name.as_str().len(), MAX_RUNNER_NAME_LEN, "{name}");
        assert!(u.owns_name(name.as_str()), "{name}");
        assert!(name
            .as_str()
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
        assert!(!name.as_str().ends_with('-'));
        // Every hook derives the same names; the owner key keeps the full name.
        assert_eq!(unit(&format!("{app}/7")).name_prefix(), u.name_prefix());
        assert!(u.owner_value().ends_with(&format!("/{app}/7")));
        // Another long application with the same first 60 characters but one more differs.
        let other = unit(&format!("{app}x/7"));
        assert_ne!(other.name_prefix(), u.name_prefix());
        assert!(!other.owns_name(name.as_str()));
        // The largest unit number still fits.
        let big = unit(&format!("{app}/{}", u32::MAX));
        assert_eq!(
            big.new_runner_name().unwrap().as_str().len(),
            MAX_RUNNER_NAME_LEN
        );
        // Short names are unchanged.
        assert_eq!(unit("github-runner/0").name_prefix(), "github-runner-0-");
        let longest_kept = "a".repeat(MAX_RUNNER_NAME_LEN - SUFFIX_HEX_LEN - 3);
        assert_eq!(
            unit(&format!("{longest_kept}/0")).name_prefix(),
            format!("{longest_kept}-0-")
        );
    }

    #[test]
    fn lookalike_app_does_not_collide() {
        let x1 = unit("x/1");
        let x_1_unit_2 = unit("x-1/2");
        let theirs = x_1_unit_2.new_runner_name().unwrap();
        assert!(!x1.owns_name(theirs.as_str()));
        assert!(!x1.owns_name("x-1-abcdef01234"));
        assert!(!x1.owns_name("x-1-abcdef0123456"));
        assert!(!x1.owns_name("x-1-ABCDEF012345"));
        assert!(x1.owns_name("x-1-abcdef012345"));
    }
}
