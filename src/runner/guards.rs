//! Checks that must pass before any runner is created (pure decisions, thin file probe).

use crate::config::{BaseImage, RunnerStorage};
use std::path::Path;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GuardError {
    #[error("lxd-profile.yaml detected outside test mode: remove it from the charm or set test-mode=insecure")]
    LxdProfileOutsideTestMode,
    #[error("{option} config cannot be changed after deployment, redeploy if needed (deployed with {at_deploy}, now {now})")]
    Immutable {
        option: &'static str,
        at_deploy: String,
        now: String,
    },
}

/// True when the charm directory ships an `lxd-profile.yaml` (or `.yml`).
pub fn charm_dir_has_lxd_profile(charm_dir: &Path) -> bool {
    ["lxd-profile.yaml", "lxd-profile.yml"]
        .iter()
        .any(|f| charm_dir.join(f).exists())
}

/// An lxd-profile file loosens the machine's LXD container: allowed in test-mode=insecure only.
pub fn check_lxd_profile(
    has_lxd_profile: bool,
    test_mode_insecure: bool,
) -> Result<(), GuardError> {
    if has_lxd_profile && !test_mode_insecure {
        Err(GuardError::LxdProfileOutsideTestMode)
    } else {
        Ok(())
    }
}

/// The settings fixed at deployment (storage layout and image cannot move under live runners).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeploySettings {
    pub runner_storage: RunnerStorage,
    pub base_image: BaseImage,
}

impl DeploySettings {
    /// `runner-storage` as the config option spells it.
    pub fn runner_storage_value(&self) -> &'static str {
        match self.runner_storage {
            RunnerStorage::JujuStorage => "juju-storage",
            RunnerStorage::Memory => "memory",
        }
    }

    /// `runner-storage=...;base-image=...`: how the unit remembers them (no secret inside).
    pub fn to_state_value(&self) -> String {
        format!(
            "runner-storage={};base-image={}",
            self.runner_storage_value(),
            self.base_image.alias()
        )
    }

    pub fn from_state_value(value: &str) -> Option<DeploySettings> {
        let mut storage = None;
        let mut image = None;
        for part in value.split(';') {
            match part.split_once('=')? {
                ("runner-storage", "juju-storage") => storage = Some(RunnerStorage::JujuStorage),
                ("runner-storage", "memory") => storage = Some(RunnerStorage::Memory),
                ("base-image", "jammy") => image = Some(BaseImage::Jammy),
                ("base-image", "noble") => image = Some(BaseImage::Noble),
                _ => return None,
            }
        }
        Some(DeploySettings {
            runner_storage: storage?,
            base_image: image?,
        })
    }
}

/// runner-storage and base-image as deployed must equal their values now.
pub fn check_immutable(at_deploy: &DeploySettings, now: &DeploySettings) -> Result<(), GuardError> {
    if at_deploy.runner_storage != now.runner_storage {
        return Err(GuardError::Immutable {
            option: "runner-storage",
            at_deploy: at_deploy.runner_storage_value().to_string(),
            now: now.runner_storage_value().to_string(),
        });
    }
    if at_deploy.base_image != now.base_image {
        return Err(GuardError::Immutable {
            option: "base-image",
            at_deploy: at_deploy.base_image.alias().to_string(),
            now: now.base_image.alias().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const JUJU_JAMMY: DeploySettings = DeploySettings {
        runner_storage: RunnerStorage::JujuStorage,
        base_image: BaseImage::Jammy,
    };

    #[test]
    fn lxd_profile_is_refused_outside_insecure_test_mode() {
        assert_eq!(
            check_lxd_profile(true, false),
            Err(GuardError::LxdProfileOutsideTestMode)
        );
        assert_eq!(check_lxd_profile(true, true), Ok(()));
        assert_eq!(check_lxd_profile(false, false), Ok(()));
        assert_eq!(check_lxd_profile(false, true), Ok(()));
    }

    #[test]
    fn lxd_profile_file_is_found_by_either_extension() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!charm_dir_has_lxd_profile(dir.path()));
        std::fs::write(dir.path().join("lxd-profile.yml"), "config: {}\n").unwrap();
        assert!(charm_dir_has_lxd_profile(dir.path()));
    }

    #[test]
    fn unchanged_settings_pass() {
        assert_eq!(check_immutable(&JUJU_JAMMY, &JUJU_JAMMY), Ok(()));
    }

    #[test]
    fn a_changed_runner_storage_is_refused_with_the_python_message() {
        let now = DeploySettings {
            runner_storage: RunnerStorage::Memory,
            ..JUJU_JAMMY
        };
        let err = check_immutable(&JUJU_JAMMY, &now).unwrap_err();
        assert!(err.to_string().starts_with(
            "runner-storage config cannot be changed after deployment, redeploy if needed"
        ));
        assert!(err.to_string().contains("juju-storage") && err.to_string().contains("memory"));
    }

    #[test]
    fn a_changed_base_image_is_refused() {
        let now = DeploySettings {
            base_image: BaseImage::Noble,
            ..JUJU_JAMMY
        };
        assert_eq!(
            check_immutable(&JUJU_JAMMY, &now),
            Err(GuardError::Immutable {
                option: "base-image",
                at_deploy: "jammy".into(),
                now: "noble".into()
            })
        );
    }

    #[test]
    fn deploy_settings_round_trip_through_unit_state() {
        for s in [
            JUJU_JAMMY,
            DeploySettings {
                runner_storage: RunnerStorage::Memory,
                base_image: BaseImage::Noble,
            },
        ] {
            assert_eq!(
                DeploySettings::from_state_value(&s.to_state_value()),
                Some(s)
            );
        }
        assert_eq!(
            DeploySettings::from_state_value("runner-storage=memory"),
            None
        );
        assert_eq!(
            DeploySettings::from_state_value("base-image=focal;runner-storage=memory"),
            None
        );
    }
}
