//! Where runner disks live: a `dir` pool named `runner` on the Juju storage, or on a tmpfs
//! for runner-storage=memory. Planning and the capacity check are pure; `apply_storage`
//! mounts, measures and ensures the pool.

use super::resources::{lxd_size, RUNNER_POOL};
use crate::config::RunnerStorage;
use crate::lxd::{Lxd, LxdError};
use crate::manager::admission::DISK_OVERCOMMIT;
use crate::paths::HostPaths;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("Required disk space for runners {required_mib}MiB is greater than storage total size {total_mib}MiB")]
    InsufficientSpace { required_mib: u64, total_mib: u64 },
    #[error("the runner storage has {free_mib}MiB free, not enough for one runner's disk (vm-disk {disk_mib}MiB; runner disks are sparse, so up to {DISK_OVERCOMMIT} times the free space counts): free space on it or lower vm-disk")]
    NoRoomForOneRunner { disk_mib: u64, free_mib: u64 },
    #[error("runner-storage=memory: one runner's disk (vm-disk {vm_disk_mib}MiB) does not fit in the tmpfs, which may take at most {TMPFS_RAM_SHARE_PERCENT}% of the host's memory ({cap_mib}MiB); lower vm-disk or use runner-storage=juju-storage")]
    TmpfsOverRamShare { vm_disk_mib: u64, cap_mib: u64 },
    #[error("runner-storage=juju-storage but the Juju storage 'runner' is not attached; add it (juju add-storage <unit> runner) or redeploy with --storage runner=...")]
    JujuStorageMissing,
    #[error("cannot measure the filesystem at {path}: {reason}")]
    Measure { path: String, reason: String },
    #[error("cannot mount a {size} tmpfs at {path} for runner-storage=memory: {reason}")]
    Mount {
        path: String,
        size: String,
        reason: String,
    },
    #[error("cannot create the storage directory {path}: {reason}")]
    CreateDir { path: String, reason: String },
    #[error(transparent)]
    Lxd(#[from] LxdError),
}

/// A tmpfs to mount (runner-storage=memory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsSpec {
    pub mount_point: PathBuf,
    pub size_bytes: u64,
}

/// What storage runners need and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoragePlan {
    pub pool: String,
    pub driver: &'static str,
    pub source: PathBuf,
    pub tmpfs: Option<TmpfsSpec>,
    /// vm-disk x virtual-machines.
    pub required_bytes: u64,
    /// vm-disk: one runner's disk.
    pub disk_bytes: u64,
}

/// The pool plan for `runner_storage`: the Juju storage location, or a tmpfs sized
/// vm-disk x virtual-machines (at least one disk, as size 0 would mean "unlimited").
pub fn plan_storage(
    runner_storage: RunnerStorage,
    juju_storage_location: Option<&Path>,
    paths: &HostPaths,
    vm_disk_bytes: u64,
    virtual_machines: u32,
) -> Result<StoragePlan, StorageError> {
    let required_bytes = vm_disk_bytes.saturating_mul(u64::from(virtual_machines));
    let (source, tmpfs) = match runner_storage {
        RunnerStorage::JujuStorage => (
            juju_storage_location
                .ok_or(StorageError::JujuStorageMissing)?
                .to_path_buf(),
            None,
        ),
        RunnerStorage::Memory => {
            let mount_point = paths.ram_storage_dir();
            let size_bytes = required_bytes.max(vm_disk_bytes).max(MIB);
            (
                mount_point.clone(),
                Some(TmpfsSpec {
                    mount_point,
                    size_bytes,
                }),
            )
        }
    };
    Ok(StoragePlan {
        pool: RUNNER_POOL.to_string(),
        driver: "dir",
        source,
        tmpfs,
        required_bytes,
        disk_bytes: vm_disk_bytes,
    })
}

/// Most of the host's memory the runner tmpfs (runner-storage=memory) may take, in percent:
/// tmpfs pages are RAM, and the runners' own memory and the host need the rest.
pub const TMPFS_RAM_SHARE_PERCENT: u64 = 50;

/// Caps a planned tmpfs at [`TMPFS_RAM_SHARE_PERCENT`] of `ram_bytes` (unknown: left as
/// planned). Admission then creates only the runners whose disks fit in it. Pure.
pub fn cap_tmpfs(
    plan: &mut StoragePlan,
    ram_bytes: Option<u64>,
    vm_disk_bytes: u64,
) -> Result<(), StorageError> {
    let (Some(tmpfs), Some(ram)) = (plan.tmpfs.as_mut(), ram_bytes) else {
        return Ok(());
    };
    let cap = (u128::from(ram) * u128::from(TMPFS_RAM_SHARE_PERCENT) / 100) as u64;
    if vm_disk_bytes > cap {
        return Err(StorageError::TmpfsOverRamShare {
            vm_disk_mib: vm_disk_bytes.div_ceil(MIB),
            cap_mib: cap / MIB,
        });
    }
    tmpfs.size_bytes = tmpfs.size_bytes.min(cap);
    Ok(())
}

/// Enough room for every runner's disk? Both numbers go into the error (in MiB).
pub fn check_capacity(required_bytes: u64, total_bytes: u64) -> Result<(), StorageError> {
    if required_bytes > total_bytes {
        Err(StorageError::InsufficientSpace {
            required_mib: required_bytes.div_ceil(MIB),
            total_mib: total_bytes / MIB,
        })
    } else {
        Ok(())
    }
}

/// Room for at least one runner's disk in what is free (disks are sparse: up to
/// [`DISK_OVERCOMMIT`] times the free space counts)? How many runners fit is admission's to
/// decide, round by round, from the pool's free space.
pub fn check_room_for_one(disk_bytes: u64, free_bytes: u64) -> Result<(), StorageError> {
    if disk_bytes > free_bytes.saturating_mul(DISK_OVERCOMMIT) {
        Err(StorageError::NoRoomForOneRunner {
            disk_mib: disk_bytes.div_ceil(MIB),
            free_mib: free_bytes / MIB,
        })
    } else {
        Ok(())
    }
}

/// Bytes an unprivileged writer may still use on the filesystem holding `path` (statvfs).
pub fn filesystem_free_bytes(path: &Path) -> Result<u64, StorageError> {
    let st = rustix::fs::statvfs(path).map_err(|e| StorageError::Measure {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Total size in bytes of the filesystem holding `path` (statvfs).
pub fn filesystem_total_bytes(path: &Path) -> Result<u64, StorageError> {
    let st = rustix::fs::statvfs(path).map_err(|e| StorageError::Measure {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok(st.f_blocks.saturating_mul(st.f_frsize))
}

/// True when `mountinfo` (the text of /proc/self/mountinfo) lists `path` as a mount point.
pub fn is_mount_point(mountinfo: &str, path: &Path) -> bool {
    let wanted = path.to_string_lossy();
    mountinfo.lines().any(|l| {
        l.split_whitespace().nth(4).map(|p| p.replace("\\040", " ")) == Some(wanted.to_string())
    })
}

/// `mount` arguments for the tmpfs: a fresh mount, or a resize of the existing one.
pub fn tmpfs_mount_args(spec: &TmpfsSpec, already_mounted: bool) -> Vec<String> {
    let size = format!("size={}", spec.size_bytes);
    let point = spec.mount_point.display().to_string();
    if already_mounted {
        vec!["-o".into(), format!("remount,{size}"), point]
    } else {
        vec![
            "-t".into(),
            "tmpfs".into(),
            "-o".into(),
            size,
            "tmpfs".into(),
            point,
        ]
    }
}

fn mount_tmpfs(spec: &TmpfsSpec) -> Result<(), StorageError> {
    let mount_err = |reason: String| StorageError::Mount {
        path: spec.mount_point.display().to_string(),
        size: lxd_size(spec.size_bytes),
        reason,
    };
    std::fs::create_dir_all(&spec.mount_point).map_err(|e| mount_err(e.to_string()))?;
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| mount_err(e.to_string()))?;
    let args = tmpfs_mount_args(spec, is_mount_point(&mountinfo, &spec.mount_point));
    let out = Command::new("mount")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("LANG", "C.UTF-8")
        .args(&args)
        .output()
        .map_err(|e| mount_err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(mount_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Mounts the tmpfs if planned, checks capacity, then ensures the `dir` pool on the source.
pub fn apply_storage(plan: &StoragePlan, lxd: &dyn Lxd) -> Result<(), StorageError> {
    if let Some(tmpfs) = &plan.tmpfs {
        mount_tmpfs(tmpfs)?;
    } else {
        std::fs::create_dir_all(&plan.source).map_err(|e| StorageError::CreateDir {
            path: plan.source.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    if plan.tmpfs.is_none() {
        // A tmpfs is sized (and capped) by the plan itself: checking it against its own size
        // proved nothing. What fits in it is the admission's to decide, round by round.
        // What is free, not the filesystem's size: other data (and existing runners) use
        // the rest.
        check_room_for_one(plan.disk_bytes, filesystem_free_bytes(&plan.source)?)?;
    }
    let source = plan.source.to_string_lossy();
    lxd.ensure_storage_pool(&plan.pool, plan.driver, &source)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn one_runner_must_fit_in_twice_the_free_space() {
        assert!(check_room_for_one(20 * GIB, 10 * GIB).is_ok());
        let err = check_room_for_one(20 * GIB + 1, 10 * GIB)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("10240MiB free") && err.contains("vm-disk 20481MiB"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let free = filesystem_free_bytes(dir.path()).unwrap();
        assert!(free > 0 && free <= filesystem_total_bytes(dir.path()).unwrap());
    }

    #[test]
    fn the_tmpfs_never_exceeds_half_the_hosts_memory() {
        let paths = HostPaths::new("/");
        // 100000 GiB asked for: the tmpfs is half of a 64 GiB host.
        let mut plan = plan_storage(RunnerStorage::Memory, None, &paths, 100 * GIB, 1000).unwrap();
        cap_tmpfs(&mut plan, Some(64 * GIB), 100 * GIB).unwrap_err();
        let mut plan = plan_storage(RunnerStorage::Memory, None, &paths, 10 * GIB, 10000).unwrap();
        assert_eq!(plan.tmpfs.as_ref().unwrap().size_bytes, 100_000 * GIB);
        cap_tmpfs(&mut plan, Some(64 * GIB), 10 * GIB).unwrap();
        assert_eq!(plan.tmpfs.as_ref().unwrap().size_bytes, 32 * GIB);
        // A small one stays as planned; juju-storage and an unknown memory are untouched.
        let mut small = plan_storage(RunnerStorage::Memory, None, &paths, GIB, 2).unwrap();
        cap_tmpfs(&mut small, Some(64 * GIB), GIB).unwrap();
        assert_eq!(small.tmpfs.as_ref().unwrap().size_bytes, 2 * GIB);
        let mut unknown = plan_storage(RunnerStorage::Memory, None, &paths, GIB, 2).unwrap();
        cap_tmpfs(&mut unknown, None, GIB).unwrap();
        assert_eq!(unknown.tmpfs.as_ref().unwrap().size_bytes, 2 * GIB);
        let err = cap_tmpfs(&mut plan, Some(GIB), 10 * GIB)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("vm-disk 10240MiB") && err.contains("(512MiB)"),
            "{err}"
        );
    }

    #[test]
    fn juju_storage_uses_the_storage_location() {
        let paths = HostPaths::new("/");
        let plan = plan_storage(
            RunnerStorage::JujuStorage,
            Some(Path::new("/storage/juju")),
            &paths,
            10 * GIB,
            3,
        )
        .unwrap();
        assert_eq!(plan.pool, "runner");
        assert_eq!(plan.driver, "dir");
        assert_eq!(plan.source, PathBuf::from("/storage/juju"));
        assert_eq!(plan.tmpfs, None);
        assert_eq!(plan.required_bytes, 30 * GIB);
        assert!(matches!(
            plan_storage(RunnerStorage::JujuStorage, None, &paths, GIB, 1),
            Err(StorageError::JujuStorageMissing)
        ));
    }

    #[test]
    fn memory_storage_is_a_tmpfs_sized_disk_times_runners() {
        let paths = HostPaths::new("/tmp/root");
        let plan = plan_storage(RunnerStorage::Memory, None, &paths, 10 * GIB, 4).unwrap();
        assert_eq!(plan.source, PathBuf::from("/tmp/root/storage/ram"));
        assert_eq!(
            plan.tmpfs,
            Some(TmpfsSpec {
                mount_point: PathBuf::from("/tmp/root/storage/ram"),
                size_bytes: 40 * GIB
            })
        );
        let zero = plan_storage(RunnerStorage::Memory, None, &paths, 10 * GIB, 0).unwrap();
        assert_eq!(
            zero.tmpfs.unwrap().size_bytes,
            10 * GIB,
            "never size=0, which is unlimited"
        );
        assert_eq!(zero.required_bytes, 0);
    }

    #[test]
    fn capacity_check_names_both_numbers() {
        assert!(check_capacity(10 * GIB, 10 * GIB).is_ok());
        assert!(check_capacity(0, 0).is_ok());
        let err = check_capacity(30 * GIB, 20 * GIB + 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Required disk space for runners 30720MiB is greater than storage total size 20480MiB"
        );
        let err = check_capacity(MIB + 1, MIB).unwrap_err();
        assert!(matches!(
            err,
            StorageError::InsufficientSpace {
                required_mib: 2,
                total_mib: 1
            }
        ));
    }

    #[test]
    fn statvfs_of_a_real_directory_fits_the_capacity_check() {
        let dir = tempfile::tempdir().unwrap();
        let total = filesystem_total_bytes(dir.path()).unwrap();
        assert!(total > MIB, "{total}");
        assert!(check_capacity(total, total).is_ok());
        let err = check_capacity(total + 64 * MIB, total)
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{}MiB", total / MIB)), "{err}");
        assert!(matches!(
            filesystem_total_bytes(&dir.path().join("missing")),
            Err(StorageError::Measure { .. })
        ));
    }

    #[test]
    fn mount_points_are_read_from_mountinfo() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    99 22 0:50 / /storage/ram rw,relatime - tmpfs tmpfs rw,size=1024k\n\
                    98 22 0:51 / /with\\040space rw - tmpfs tmpfs rw\n";
        assert!(is_mount_point(info, Path::new("/storage/ram")));
        assert!(is_mount_point(info, Path::new("/with space")));
        assert!(!is_mount_point(info, Path::new("/storage")));
    }

    #[test]
    fn tmpfs_mount_or_resize_arguments() {
        let spec = TmpfsSpec {
            mount_point: PathBuf::from("/storage/ram"),
            size_bytes: 2 * GIB,
        };
        assert_eq!(
            tmpfs_mount_args(&spec, false),
            vec![
                "-t",
                "tmpfs",
                "-o",
                "size=2147483648",
                "tmpfs",
                "/storage/ram"
            ]
        );
        assert_eq!(
            tmpfs_mount_args(&spec, true),
            vec!["-o", "remount,size=2147483648", "/storage/ram"]
        );
    }
}
