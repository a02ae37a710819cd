//! Which profiles, instance type and labels a runner is launched with (pure).

use crate::config::CharmConfig;
use crate::lxd::{InstanceType, Lxd, LxdError, ProfileSpec, ProfileUse};
use std::collections::BTreeMap;

/// LXD's default profile: first, so an operator's NIC or proxy device reaches every runner.
pub const DEFAULT_PROFILE: &str = "default";
/// The charm's own profile: the runner NIC on the runners' bridge. Not `runner`: the
/// Python charm's profile of that name is what its VMs, still running jobs after a
/// `juju refresh` onto this charm, use; converging it would change their NIC live.
pub const RUNNER_PROFILE: &str = "ghr-runner";
/// The Python charm's runner profile, also this charm's before it was renamed
/// [`RUNNER_PROFILE`]: this charm deletes it only once unused and only if it made it.
pub const PYTHON_RUNNER_PROFILE: &str = "runner";
/// Storage pool holding runner root disks.
pub const RUNNER_POOL: &str = "runner";

/// What one runner may use: from vm-cpu, vm-memory, vm-disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
}

impl Resources {
    pub fn from_config(config: &CharmConfig) -> Self {
        Resources {
            cpu: config.vm_cpu,
            memory_bytes: config.vm_memory,
            disk_bytes: config.vm_disk,
        }
    }

    /// What admission counts one runner as.
    pub fn admission_size(&self) -> crate::manager::admission::RunnerSize {
        crate::manager::admission::RunnerSize {
            cpus: self.cpu.into(),
            memory_bytes: self.memory_bytes,
            disk_bytes: self.disk_bytes,
        }
    }

    /// `cpu-{c}-mem-{m}-disk-{d}`: the values are in the name, so a vm-* change makes a new
    /// profile for new runners and never alters the one running runners use.
    pub fn profile_name(&self) -> String {
        format!(
            "cpu-{}-mem-{}-disk-{}",
            self.cpu,
            lxd_size(self.memory_bytes),
            lxd_size(self.disk_bytes)
        )
    }

    /// The resource profile: CPU and memory limits and a root disk of the given size in `pool`.
    pub fn profile(&self, instance_type: InstanceType, pool: &str) -> ProfileSpec {
        let config: BTreeMap<String, String> = [
            ("limits.cpu".to_string(), self.cpu.to_string()),
            ("limits.memory".to_string(), lxd_size(self.memory_bytes)),
        ]
        .into_iter()
        .collect();
        let mut root: BTreeMap<String, String> = [("type", "disk"), ("path", "/"), ("pool", pool)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        root.insert("size".into(), lxd_size(self.disk_bytes));
        if instance_type == InstanceType::VirtualMachine {
            // Runner disks are throwaway: skip host-side flushes (as the Python charm did).
            root.insert("io.cache".into(), "unsafe".into());
        }
        ProfileSpec {
            name: self.profile_name(),
            config,
            devices: [("root".to_string(), root)].into_iter().collect(),
        }
    }
}

/// True for names [`Resources::profile_name`] produces (to tell our old profiles apart).
pub fn is_resource_profile_name(name: &str) -> bool {
    let parts: Vec<&str> = name.split('-').collect();
    matches!(parts.as_slice(), ["cpu", c, "mem", m, "disk", d]
        if c.bytes().all(|b| b.is_ascii_digit()) && !c.is_empty() && is_lxd_size(m) && is_lxd_size(d))
}

fn is_lxd_size(s: &str) -> bool {
    let digits = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"].contains(&&s[digits.len()..])
}

/// The profile holding the charm's own settings (empty today).
/// The runner profile for runners launched through `lxd`: the runner NIC on the bridge
/// [`crate::network::runner_bridge`] picks for `lxd`'s project and the bridge knob.
pub fn runner_profile(lxd: &dyn Lxd) -> ProfileSpec {
    let knob = std::env::var(crate::network::BRIDGE_ENV).ok();
    runner_profile_on(crate::network::runner_bridge(lxd.project(), knob).as_deref())
}

/// The runner profile; with a bridge, it carries the runner NIC
/// ([`crate::network::runner_nic`]), which replaces the default profile's `eth0`.
pub fn runner_profile_on(bridge: Option<&str>) -> ProfileSpec {
    let devices = bridge
        .map(|b| {
            (
                crate::network::RUNNER_NIC.to_string(),
                crate::network::runner_nic(b),
            )
        })
        .into_iter()
        .collect();
    ProfileSpec {
        name: RUNNER_PROFILE.to_string(),
        devices,
        ..ProfileSpec::default()
    }
}

/// A size as LXD takes it, in the largest binary unit that divides it exactly (`7GiB`).
pub fn lxd_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["EiB", "PiB", "TiB", "GiB", "MiB", "KiB"];
    for (i, unit) in UNITS.iter().enumerate() {
        let factor = 1u64 << (10 * (UNITS.len() - i));
        // `factor` is a power of two: divisible means no bit below it is set.
        if bytes >= factor && bytes & (factor - 1) == 0 {
            return format!("{}{unit}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

/// Virtual machines normally; containers when test-mode=insecure (where VMs cannot run).
pub fn instance_type(test_mode_insecure: bool) -> InstanceType {
    if test_mode_insecure {
        InstanceType::Container
    } else {
        InstanceType::VirtualMachine
    }
}

/// `default`, the charm's profiles, then `extra` (tests add a loopback proxy profile there).
pub fn launch_profiles(resource_profile: &str, extra: &[String]) -> Vec<String> {
    let mut profiles = vec![
        DEFAULT_PROFILE.to_string(),
        RUNNER_PROFILE.to_string(),
        resource_profile.to_string(),
    ];
    profiles.extend(extra.iter().cloned());
    profiles
}

/// Ensures the runner profile and the resource profile for `resources` exist (each call
/// converges them) and answers the profile list to launch with: `default`, ours, `extra`.
/// A changed vm-* makes a new resource profile; the old one, still used by running
/// runners, is left as it is until [`prune_profiles`] finds it unused.
pub fn ensure_profiles(
    lxd: &dyn Lxd,
    resources: &Resources,
    instance_type: InstanceType,
    pool: &str,
    extra: &[String],
) -> Result<Vec<String>, LxdError> {
    lxd.ensure_profile(&runner_profile(lxd))?;
    let profile = resources.profile(instance_type, pool);
    lxd.ensure_profile(&profile)?;
    Ok(launch_profiles(&profile.name, extra))
}

/// Resource profiles the charm made for an earlier vm-* setting, and the runner profile of
/// its earlier revisions ([`PYTHON_RUNNER_PROFILE`], made by the charm), that nothing uses
/// any more. Pure.
pub fn stale_profiles(profiles: &[ProfileUse], current: &str) -> Vec<String> {
    profiles
        .iter()
        .filter(|p| {
            p.managed
                && p.used_by == 0
                && p.name != current
                && (is_resource_profile_name(&p.name) || p.name == PYTHON_RUNNER_PROFILE)
        })
        .map(|p| p.name.clone())
        .collect()
}

/// Deletes the [`stale_profiles`]; answers the names deleted. Best effort: LXD refusing one
/// (an instance took it meanwhile; another unit on this machine re-creates its own before
/// launching) is logged and left for a later round.
pub fn prune_profiles(lxd: &dyn Lxd, current: &str) -> Vec<String> {
    let profiles = match lxd.list_profiles() {
        Ok(profiles) => profiles,
        Err(e) => {
            tracing::warn!("could not list LXD profiles to drop unused old ones: {e}");
            return Vec::new();
        }
    };
    stale_profiles(&profiles, current)
        .into_iter()
        .filter(|name| match lxd.delete_profile(name) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!("old resource profile {name} kept: {e}");
                false
            }
        })
        .collect()
}

/// What [`remove_charm_leftovers`] deleted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Leftovers {
    pub profiles: Vec<String>,
    pub pool: bool,
}

/// On `remove`: deletes every profile the charm made that nothing uses any more (the runner
/// profile and the resource profiles), then `pool` when nothing uses it. Best effort: what
/// LXD refuses (another unit on this machine still uses it) is logged and left.
pub fn remove_charm_leftovers(lxd: &dyn Lxd, pool: &str) -> Leftovers {
    let mut left = Leftovers::default();
    match lxd.list_profiles() {
        Ok(profiles) => {
            for p in profiles.iter().filter(|p| p.managed && p.used_by == 0) {
                match lxd.delete_profile(&p.name) {
                    Ok(()) => left.profiles.push(p.name.clone()),
                    Err(e) => tracing::info!("profile {} kept: {e}", p.name),
                }
            }
        }
        Err(e) => tracing::warn!("could not list LXD profiles to remove the charm's: {e}"),
    }
    match lxd.delete_storage_pool(pool) {
        Ok(()) => left.pool = true,
        Err(e) => tracing::info!("storage pool {pool} kept: {e}"),
    }
    left
}

/// Labels a runner registers with: the application, the base image, then the custom labels,
/// each once (GitHub adds self-hosted, Linux and the architecture itself).
pub fn runner_labels(app: &str, base_image_alias: &str, custom: &[String]) -> Vec<String> {
    let mut labels: Vec<String> = Vec::new();
    for label in [app, base_image_alias]
        .into_iter()
        .chain(custom.iter().map(String::as_str))
    {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.to_string());
        }
    }
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runner_profile_carries_the_runner_nic_only_with_a_bridge() {
        let with = runner_profile_on(Some("lxdbr0"));
        assert_eq!(with.devices["eth0"], crate::network::runner_nic("lxdbr0"));
        assert!(runner_profile_on(None).devices.is_empty());
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn only_unused_old_resource_profiles_are_stale() {
        let p = |name: &str, used_by: usize| ProfileUse {
            name: name.into(),
            used_by,
            managed: true,
        };
        let operators = ProfileUse {
            managed: false,
            ..p("cpu-1-mem-1GiB-disk-1GiB", 0)
        };
        let profiles = [
            p("default", 0),
            p("runner", 0),
            p("cpu-2-mem-7GiB-disk-10GiB", 0), // current
            p("cpu-2-mem-8GiB-disk-10GiB", 0), // old, unused
            p("cpu-4-mem-8GiB-disk-10GiB", 3), // old, still used
            p("cpu-x-mem-8GiB-disk-10GiB", 0), // not a name we make
            p("my-profile", 0),
            operators, // our kind of name, not made by the charm
        ];
        assert_eq!(
            stale_profiles(&profiles, "cpu-2-mem-7GiB-disk-10GiB"),
            ["runner", "cpu-2-mem-8GiB-disk-10GiB"]
        );
    }

    #[test]
    fn the_python_charms_runner_profile_is_never_converged_nor_deleted() {
        assert_ne!(
            runner_profile_on(Some("lxdbr0")).name,
            PYTHON_RUNNER_PROFILE
        );
        assert!(!launch_profiles("cpu-2-mem-7GiB-disk-10GiB", &[])
            .contains(&PYTHON_RUNNER_PROFILE.to_string()));
        let profile = |managed, used_by| ProfileUse {
            name: PYTHON_RUNNER_PROFILE.into(),
            used_by,
            managed,
        };
        // The Python charm's (not made by this charm), or this charm's still in use: kept.
        assert!(stale_profiles(&[profile(false, 0)], "cpu-1-mem-1GiB-disk-1GiB").is_empty());
        assert!(stale_profiles(&[profile(true, 2)], "cpu-1-mem-1GiB-disk-1GiB").is_empty());
    }

    #[test]
    fn sizes_use_the_largest_exact_unit() {
        assert_eq!(lxd_size(7 * GIB), "7GiB");
        assert_eq!(lxd_size(1536 << 20), "1536MiB");
        assert_eq!(lxd_size(1 << 10), "1KiB");
        assert_eq!(lxd_size(1000), "1000B");
        assert_eq!(lxd_size(0), "0B");
        assert_eq!(lxd_size(2 << 40), "2TiB");
    }

    #[test]
    fn resource_profile_matches_the_python_charm_naming() {
        let r = Resources {
            cpu: 2,
            memory_bytes: 7 * GIB,
            disk_bytes: 10 * GIB,
        };
        assert_eq!(r.profile_name(), "cpu-2-mem-7GiB-disk-10GiB");
        assert!(is_resource_profile_name(&r.profile_name()));
        for not_ours in [
            "runner",
            "default",
            "cpu-x-mem-7GiB-disk-10GiB",
            "cpu-2-mem-7GB-disk-10GiB",
            "cpu-2-mem-7GiB",
        ] {
            assert!(!is_resource_profile_name(not_ours), "{not_ours}");
        }
    }

    #[test]
    fn vm_profile_has_limits_root_disk_and_unsafe_cache() {
        let r = Resources {
            cpu: 3,
            memory_bytes: 2 * GIB,
            disk_bytes: 20 * GIB,
        };
        let p = r.profile(InstanceType::VirtualMachine, "runner");
        assert_eq!(p.config.get("limits.cpu").map(String::as_str), Some("3"));
        assert_eq!(
            p.config.get("limits.memory").map(String::as_str),
            Some("2GiB")
        );
        let root = &p.devices["root"];
        assert_eq!(root["type"], "disk");
        assert_eq!(root["path"], "/");
        assert_eq!(root["pool"], "runner");
        assert_eq!(root["size"], "20GiB");
        assert_eq!(root["io.cache"], "unsafe");
        let c = r.profile(InstanceType::Container, "other-pool");
        assert!(
            !c.devices["root"].contains_key("io.cache"),
            "io.cache is VM-only"
        );
        assert_eq!(c.devices["root"]["pool"], "other-pool");
    }

    #[test]
    fn a_vm_setting_change_yields_a_different_profile() {
        let a = Resources {
            cpu: 2,
            memory_bytes: 7 * GIB,
            disk_bytes: 10 * GIB,
        };
        let b = Resources { cpu: 4, ..a };
        assert_ne!(a.profile_name(), b.profile_name());
    }

    #[test]
    fn instance_type_is_vm_unless_insecure_test_mode() {
        assert_eq!(instance_type(false), InstanceType::VirtualMachine);
        assert_eq!(instance_type(true), InstanceType::Container);
    }

    #[test]
    fn profiles_are_default_then_ours_then_extra() {
        assert_eq!(
            launch_profiles("cpu-1-mem-1GiB-disk-1GiB", &["test-proxy".to_string()]),
            vec![
                "default",
                "ghr-runner",
                "cpu-1-mem-1GiB-disk-1GiB",
                "test-proxy"
            ]
        );
    }

    #[test]
    fn ensure_profiles_makes_ours_and_answers_the_launch_order() {
        use crate::runner::create::tests::ScriptedLxd;
        let lxd = ScriptedLxd::default();
        let r = Resources {
            cpu: 2,
            memory_bytes: 7 * GIB,
            disk_bytes: 10 * GIB,
        };
        let profiles =
            ensure_profiles(&lxd, &r, InstanceType::VirtualMachine, RUNNER_POOL, &[]).unwrap();
        assert_eq!(
            profiles,
            vec!["default", "ghr-runner", "cpu-2-mem-7GiB-disk-10GiB"]
        );
        assert_eq!(
            lxd.calls(),
            vec!["profile ghr-runner", "profile cpu-2-mem-7GiB-disk-10GiB"]
        );
    }

    #[test]
    fn labels_are_app_base_then_custom_without_duplicates() {
        let custom = vec![
            "gpu".to_string(),
            "JAMMY".to_string(),
            "gpu".to_string(),
            "large".to_string(),
        ];
        assert_eq!(
            runner_labels("github-runner", "jammy", &custom),
            vec!["github-runner", "jammy", "gpu", "large"]
        );
    }
}
