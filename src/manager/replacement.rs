//! Runners that go only when their job ends: flushed while busy, or made for a scope
//! (path, group, labels, github-url; not the credential) the unit no longer serves.
//!
//! Two instance config keys carry it, so every round derives it from LXD alone:
//! - [`SCOPE_CONFIG_KEY`], set at launch: the fingerprint of the scope the runner was
//!   registered for;
//! - [`REPLACE_CONFIG_KEY`], set by a flush on a runner it found busy: the fingerprint of the
//!   scope the flush acted in (it also tells the scope of an instance made before the launch
//!   key existed).
//!
//! An instance of another scope is invisible to GitHub with the current credentials (its
//! registration lives in the old scope: a 404 there proves nothing), so it is judged from
//! LXD alone: kept while it runs (an ephemeral runner powers off after its one job), removed
//! once stopped. Neither kind counts toward `virtual-machines`; both hold host resources.

use crate::lxd::Instance;

/// The scope fingerprint the runner was registered for (set at launch).
pub const SCOPE_CONFIG_KEY: &str = "user.github-runner.scope";

/// Set by a flush on a busy runner: the scope fingerprint the flush acted in. The runner
/// is removed once its job ends, never mid-job (unless a forced flush takes it).
pub const REPLACE_CONFIG_KEY: &str = "user.github-runner.replace";

/// How a runner stands against the scope the unit serves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// Of this scope and not flushed (or made before the scope key existed, unflushed: its
    /// scope is unknown and taken to be this one).
    Current,
    /// Of this scope, flushed while busy: replaced once its job ends.
    Flushed,
    /// Of another scope: GitHub's view with these credentials says nothing about it.
    OtherScope,
}

/// The scope `instance` serves: its launch key, else the scope a flush marked it in.
pub fn instance_scope(instance: &Instance) -> Option<&str> {
    instance
        .config
        .get(SCOPE_CONFIG_KEY)
        .or_else(|| instance.config.get(REPLACE_CONFIG_KEY))
        .map(String::as_str)
}

/// Where `instance` stands against `scope` (a fingerprint of the scope being served).
pub fn standing(instance: &Instance, scope: &str) -> Standing {
    if instance_scope(instance).is_some_and(|s| s != scope) {
        Standing::OtherScope
    } else if instance.config.contains_key(REPLACE_CONFIG_KEY) {
        Standing::Flushed
    } else {
        Standing::Current
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxd::{InstanceState, InstanceType};

    fn instance(keys: &[(&str, &str)]) -> Instance {
        Instance {
            name: "r".into(),
            state: InstanceState::Running,
            instance_type: InstanceType::Container,
            created_at_epoch: 0,
            config: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            profiles: vec![],
        }
    }

    #[test]
    fn standing_table() {
        use Standing::*;
        let cases: [(&[(&str, &str)], Standing); 7] = [
            (&[], Current),
            (&[(SCOPE_CONFIG_KEY, "new")], Current),
            (&[(SCOPE_CONFIG_KEY, "old")], OtherScope),
            (
                &[(SCOPE_CONFIG_KEY, "new"), (REPLACE_CONFIG_KEY, "new")],
                Flushed,
            ),
            (&[(REPLACE_CONFIG_KEY, "new")], Flushed),
            // Made before the scope key, flushed in the old scope.
            (&[(REPLACE_CONFIG_KEY, "old")], OtherScope),
            // The launch key wins: flushed in another scope than it was made for is a
            // bug's trace; the registration is where it was made.
            (
                &[(SCOPE_CONFIG_KEY, "old"), (REPLACE_CONFIG_KEY, "new")],
                OtherScope,
            ),
        ];
        for (keys, want) in cases {
            assert_eq!(standing(&instance(keys), "new"), want, "{keys:?}");
        }
    }
}
