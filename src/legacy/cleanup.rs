//! What the Python charm left on the host, and the steps removing it once no old runner
//! needs it (its running jobs call the policy service and write to their runner-fs). Pure:
//! the steps are computed from what is there, so each is taken (and logged) only while
//! its object exists, and a rerun after a kill takes what is left.
//!
//! Logs stay (`/var/log/github-runner-metrics.log`, crashed runners' logs).

use std::path::{Path, PathBuf};

/// Its ACL on the runners' bridge (the old `denylist`).
pub const ACL: &str = "github";
/// The repo-policy-compliance service its runners' pre-job script calls at
/// `http://<bridge IP>:8080`; its unit file holds the token in clear.
pub const POLICY_SERVICE: &str = "repo-policy-compliance.service";
/// The host TCP port of [`POLICY_SERVICE`], kept open to runners while it is there.
pub const POLICY_PORT: u16 = 8080;
/// Files in the charm directory holding the token (ops' state store holds the charm's
/// stored state; `charm_state.json` the token and broker URI in clear; `service_token` the
/// policy service's token).
pub const CHARM_DIR_FILES: [&str; 3] = ["charm_state.json", ".unit-state.db", "service_token"];

/// What is on the host now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// The policy service's unit file, when present.
    pub policy_service: Option<PathBuf>,
    /// Present files of this unit to delete (its charm directory's, holding the token).
    pub unit_files: Vec<PathBuf>,
    /// Present machine-wide files to delete (the image rebuild cron file).
    pub files: Vec<PathBuf>,
    /// Mount points below the runner-fs folder (from the mount table).
    pub mounts: Vec<PathBuf>,
    /// Present folders to delete (runner-binary cache, runner-fs and its images).
    pub dirs: Vec<PathBuf>,
    /// [`ACL`] exists; `attached`: on the runners' bridge.
    pub acl: Option<AclFound>,
}

impl Found {
    /// Only this unit's files: the rest is the machine's, which the Python charm's units
    /// share (one policy service, cron file, ACL, cache and runner-fs), and goes once no
    /// Python-charm runner of any unit is left on the machine.
    pub fn unit_part(self) -> Found {
        Found {
            unit_files: self.unit_files,
            ..Found::default()
        }
    }
}

impl Found {
    /// Anything but the ACL: only these tell that the Python charm ran here (an ACL named
    /// `github` alone may well be an operator's own).
    pub fn shows_the_python_charm(&self) -> bool {
        self.policy_service.is_some()
            || !self.unit_files.is_empty()
            || !self.files.is_empty()
            || !self.mounts.is_empty()
            || !self.dirs.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclFound {
    pub attached: bool,
}

/// One cleanup step, in the order [`steps`] gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `systemctl disable --now`, delete the unit file, `daemon-reload`.
    StopPolicyService(PathBuf),
    DeleteFile(PathBuf),
    DetachAcl,
    DeleteAcl,
    Unmount(PathBuf),
    /// Only once nothing below it is mounted (never delete into a mounted file system).
    DeleteDir(PathBuf),
}

/// The steps for what is `found`: the service first (it holds the token), files, the ACL
/// (detached, then deleted), mounts deepest first, then folders with no mount left below.
pub fn steps(found: &Found) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(unit) = &found.policy_service {
        steps.push(Step::StopPolicyService(unit.clone()));
    }
    steps.extend(
        found
            .unit_files
            .iter()
            .chain(&found.files)
            .cloned()
            .map(Step::DeleteFile),
    );
    if let Some(acl) = found.acl {
        if acl.attached {
            steps.push(Step::DetachAcl);
        }
        steps.push(Step::DeleteAcl);
    }
    let mut mounts = found.mounts.clone();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    steps.extend(mounts.into_iter().map(Step::Unmount));
    steps.extend(found.dirs.iter().cloned().map(Step::DeleteDir));
    steps
}

/// True when `dir` may be deleted: no mount point of `mounts` is in it (or is it).
pub fn nothing_mounted_in(dir: &Path, mounts: &[PathBuf]) -> bool {
    !mounts.iter().any(|m| m.starts_with(dir))
}

/// Mount points of a mount table (`/proc/mounts`: `device mountpoint type options 0 0`,
/// with spaces as `\040`) that lie in `base`.
pub fn mounts_in(table: &str, base: &Path) -> Vec<PathBuf> {
    table
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(|field| PathBuf::from(unescape_mount_field(field)))
        .filter(|m| m.starts_with(base))
        .collect()
}

/// `\040`, `\011`, `\012`, `\134` as the kernel escapes them.
fn unescape_mount_field(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn everything_found_goes_in_order_and_nothing_found_is_no_step() {
        assert!(steps(&Found::default()).is_empty());
        let found = Found {
            policy_service: Some(p("/etc/systemd/system/repo-policy-compliance.service")),
            unit_files: vec![p("/charm/charm_state.json")],
            files: vec![p("/etc/cron.d/build-runner-image")],
            mounts: vec![p("/home/ubuntu/runner-fs"), p("/home/ubuntu/runner-fs/r1")],
            dirs: vec![
                p("/home/ubuntu/github-runner-app"),
                p("/home/ubuntu/runner-fs"),
            ],
            acl: Some(AclFound { attached: true }),
        };
        assert_eq!(
            steps(&found),
            vec![
                Step::StopPolicyService(p("/etc/systemd/system/repo-policy-compliance.service")),
                Step::DeleteFile(p("/charm/charm_state.json")),
                Step::DeleteFile(p("/etc/cron.d/build-runner-image")),
                Step::DetachAcl,
                Step::DeleteAcl,
                Step::Unmount(p("/home/ubuntu/runner-fs/r1")),
                Step::Unmount(p("/home/ubuntu/runner-fs")),
                Step::DeleteDir(p("/home/ubuntu/github-runner-app")),
                Step::DeleteDir(p("/home/ubuntu/runner-fs")),
            ]
        );
        // Another unit's Python-charm runners still on the machine: only this unit's files.
        assert_eq!(
            steps(&found.clone().unit_part()),
            vec![Step::DeleteFile(p("/charm/charm_state.json"))]
        );
        let detached = Found {
            acl: Some(AclFound { attached: false }),
            ..Found::default()
        };
        assert_eq!(steps(&detached), vec![Step::DeleteAcl]);
    }

    #[test]
    fn the_mount_table_gives_the_mounts_in_runner_fs_only() {
        let table = "/dev/sda1 / ext4 rw 0 0\n\
                     /dev/loop3 /home/ubuntu/runner-fs/gr-0-abc ext4 rw 0 0\n\
                     /dev/loop4 /home/ubuntu/runner-fs/with\\040space ext4 rw 0 0\n\
                     /dev/loop5 /home/ubuntu/runner-fs-images ext4 rw 0 0\n\
                     tmpfs /home/ubuntu/runner-fsx tmpfs rw 0 0\n";
        let base = p("/home/ubuntu/runner-fs");
        let mounts = mounts_in(table, &base);
        assert_eq!(
            mounts,
            vec![
                p("/home/ubuntu/runner-fs/gr-0-abc"),
                p("/home/ubuntu/runner-fs/with space")
            ]
        );
        assert!(!nothing_mounted_in(&base, &mounts));
        assert!(nothing_mounted_in(
            &p("/home/ubuntu/runner-fs-images"),
            &mounts
        ));
        assert!(nothing_mounted_in(
            &p("/home/ubuntu/github-runner-app"),
            &mounts
        ));
    }
}
