//! Removing one runner: its GitHub registration first (a busy runner is kept unless
//! forced), then the instance, force-stopped and deleted. Idempotent.

use crate::github::{DeleteOutcome, GitHub, GitHubError};
use crate::identity::OWNER_CONFIG_KEY;
use crate::lxd::{Instance, Lxd, LxdError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoveOutcome {
    /// Registration (if any) and instance are gone.
    Removed,
    /// Forced removal of a busy runner: the instance is gone but GitHub still counted the
    /// registration busy; it goes offline and is deleted by a later reconcile.
    RemovedRegistrationPending,
    /// The runner runs a job and removal was not forced: nothing was touched.
    KeptBusy,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("refusing to remove instance {name}: it does not carry this unit's owner key {key}")]
    NotOwned { name: String, key: &'static str },
    #[error("could not delete the GitHub registration of runner {name}: {source}{}", if *.instance_removed { " (instance removed)" } else { " (instance kept)" })]
    GitHub {
        name: String,
        instance_removed: bool,
        source: GitHubError,
    },
    #[error("could not delete instance {name}: {source}")]
    Lxd { name: String, source: LxdError },
}

/// What to remove: the instance as `list_owned_instances` gave it (None when only the
/// registration is left) and the registration id (None when unknown).
#[derive(Debug, Clone, Copy)]
pub struct RemovalTarget<'a> {
    pub name: &'a str,
    pub instance: Option<&'a Instance>,
    pub github_id: Option<u64>,
}

/// Removes one runner. `owner_value` is re-checked on the instance so a caller mistake can
/// never delete another unit's instance.
pub fn remove_runner(
    lxd: &dyn Lxd,
    github: &dyn GitHub,
    owner_value: &str,
    target: &RemovalTarget<'_>,
    force: bool,
) -> Result<RemoveOutcome, RemoveError> {
    let name = target.name;
    if let Some(instance) = target.instance {
        if instance.name != name
            || instance.config.get(OWNER_CONFIG_KEY).map(String::as_str) != Some(owner_value)
        {
            return Err(RemoveError::NotOwned {
                name: instance.name.clone(),
                key: OWNER_CONFIG_KEY,
            });
        }
    }
    let mut registration_pending = false;
    if let Some(id) = target.github_id {
        match github.delete_runner(id) {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => {}
            Ok(DeleteOutcome::Busy) if !force => return Ok(RemoveOutcome::KeptBusy),
            Ok(DeleteOutcome::Busy) => registration_pending = true,
            Err(source) if !force => {
                return Err(RemoveError::GitHub {
                    name: name.to_string(),
                    instance_removed: false,
                    source,
                })
            }
            Err(source) => {
                delete_instance(lxd, target)?;
                return Err(RemoveError::GitHub {
                    name: name.to_string(),
                    instance_removed: true,
                    source,
                });
            }
        }
    }
    delete_instance(lxd, target)?;
    if registration_pending {
        // The job died with the instance; GitHub may already let the registration go.
        if let Some(id) = target.github_id {
            if let Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) =
                github.delete_runner(id)
            {
                registration_pending = false;
            }
        }
    }
    Ok(if registration_pending {
        RemoveOutcome::RemovedRegistrationPending
    } else {
        RemoveOutcome::Removed
    })
}

fn delete_instance(lxd: &dyn Lxd, target: &RemovalTarget<'_>) -> Result<(), RemoveError> {
    if target.instance.is_none() {
        return Ok(());
    }
    // `delete --force` stops a running instance first; a missing one is already removed.
    lxd.delete(target.name, true)
        .map_err(|source| RemoveError::Lxd {
            name: target.name.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lxd::{InstanceState, InstanceType};
    use crate::runner::create::tests::{ScriptedGitHub, ScriptedLxd};
    use std::sync::Mutex;

    fn instance(owner: &str) -> Instance {
        Instance {
            name: "a-0-0123456789ab".into(),
            state: InstanceState::Running,
            instance_type: InstanceType::Container,
            created_at_epoch: 0,
            config: [(OWNER_CONFIG_KEY.to_string(), owner.to_string())]
                .into_iter()
                .collect(),
            profiles: vec![],
        }
    }

    fn target(inst: &Instance, id: Option<u64>) -> RemovalTarget<'_> {
        RemovalTarget {
            name: &inst.name,
            instance: Some(inst),
            github_id: id,
        }
    }

    #[test]
    fn idle_runner_loses_registration_then_instance() {
        let (lxd, gh) = (ScriptedLxd::default(), ScriptedGitHub::default());
        let inst = instance("m/a/0");
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &target(&inst, Some(7)), false).unwrap(),
            RemoveOutcome::Removed
        );
        assert_eq!(gh.calls(), vec!["delete 7"]);
        assert_eq!(lxd.calls(), vec!["delete a-0-0123456789ab force=true"]);
    }

    #[test]
    fn busy_runner_is_kept_unless_forced() {
        let inst = instance("m/a/0");
        let (lxd, gh) = (
            ScriptedLxd::default(),
            ScriptedGitHub {
                delete_outcomes: Mutex::new(vec![DeleteOutcome::Busy]),
                ..Default::default()
            },
        );
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &target(&inst, Some(7)), false).unwrap(),
            RemoveOutcome::KeptBusy
        );
        assert!(lxd.calls().is_empty());

        let busy_twice = Mutex::new(vec![DeleteOutcome::Busy, DeleteOutcome::Busy]);
        let (lxd, gh) = (
            ScriptedLxd::default(),
            ScriptedGitHub {
                delete_outcomes: busy_twice,
                ..Default::default()
            },
        );
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &target(&inst, Some(7)), true).unwrap(),
            RemoveOutcome::RemovedRegistrationPending
        );
        assert_eq!(lxd.calls(), vec!["delete a-0-0123456789ab force=true"]);

        // Outcomes pop from the back: busy first, then deleted once the instance is gone.
        let then_gone = Mutex::new(vec![DeleteOutcome::AlreadyGone, DeleteOutcome::Busy]);
        let (lxd, gh) = (
            ScriptedLxd::default(),
            ScriptedGitHub {
                delete_outcomes: then_gone,
                ..Default::default()
            },
        );
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &target(&inst, Some(7)), true).unwrap(),
            RemoveOutcome::Removed
        );
        assert_eq!(gh.calls(), vec!["delete 7", "delete 7"]);
    }

    #[test]
    fn another_units_instance_is_never_touched() {
        let (lxd, gh) = (ScriptedLxd::default(), ScriptedGitHub::default());
        let theirs = instance("m/a-0/1");
        let err = remove_runner(&lxd, &gh, "m/a/0", &target(&theirs, Some(7)), true).unwrap_err();
        assert!(matches!(err, RemoveError::NotOwned { .. }), "{err}");
        assert!(lxd.calls().is_empty() && gh.calls().is_empty());
    }

    #[test]
    fn registration_only_and_instance_only_removals() {
        let (lxd, gh) = (ScriptedLxd::default(), ScriptedGitHub::default());
        let t = RemovalTarget {
            name: "a-0-0123456789ab",
            instance: None,
            github_id: Some(9),
        };
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &t, false).unwrap(),
            RemoveOutcome::Removed
        );
        assert!(lxd.calls().is_empty());
        let inst = instance("m/a/0");
        assert_eq!(
            remove_runner(&lxd, &gh, "m/a/0", &target(&inst, None), false).unwrap(),
            RemoveOutcome::Removed
        );
        assert_eq!(gh.calls(), vec!["delete 9"]);
    }

    #[test]
    fn lxd_failure_is_typed() {
        let lxd = ScriptedLxd {
            fail: vec!["delete"],
            ..Default::default()
        };
        let inst = instance("m/a/0");
        let err = remove_runner(
            &lxd,
            &ScriptedGitHub::default(),
            "m/a/0",
            &target(&inst, None),
            true,
        )
        .unwrap_err();
        assert!(matches!(err, RemoveError::Lxd { .. }), "{err}");
    }
}
