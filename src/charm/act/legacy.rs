//! Taking the machine over from the Python charm (`juju refresh` onto this charm): its
//! runners drained without killing a job ([`crate::legacy::drain`]), then what it left on
//! the host removed ([`crate::legacy::cleanup`]). Every round until nothing is left; then a
//! marker in the unit's state folder spares later rounds the search.

use super::super::context::Context;
use super::super::edge::Host;
use super::super::error::CharmError;
use super::super::runtime::Runtime;
use crate::github::{DeleteOutcome, GitHubRunner};
use crate::legacy::cleanup::{self, AclFound, Found, Step};
use crate::legacy::drain::{plan_drain, DrainWhen, Retire};
use crate::lxd::Instance;
use std::path::PathBuf;
use std::time::Duration;

/// The take-over's share of a round: how many old runners still finish their job (None:
/// the machine was cleared earlier, or LXD could not be listed).
pub fn take_over(
    ctx: &Context<'_>,
    host: &dyn Host,
    rt: &Runtime,
) -> Result<Option<usize>, CharmError> {
    let marker = rt.paths.python_charm_cleared_marker();
    if marker.exists() {
        return Ok(None);
    }
    let (lock, _) = super::runners::acquire(rt, "python-charm-drain")?;
    let Some((instances, registrations)) = observe(rt) else {
        return Ok(None);
    };
    let plan = plan_drain(
        &rt.identity,
        &instances,
        registrations.as_deref(),
        DrainWhen::JobsFinished,
    );
    let mut finishing = plan.finishing.len();
    for retire in &plan.retire {
        if !retire_one(rt, retire) {
            finishing += 1;
        }
    }
    drop(lock);
    if finishing > 0 {
        tracing::info!(
            finishing,
            "the Python charm's runners still finishing their jobs"
        );
        return Ok(Some(finishing));
    }
    // Another unit's (still the Python charm, or not drained yet) runners need what its
    // units share: only this unit's own files go until none is left on the machine.
    let others_remain = instances.iter().any(|i| {
        crate::legacy::recognise::is_any_python_runner(i)
            && !crate::legacy::recognise::is_old_runner(&rt.identity, i)
    });
    let runners_seen = !plan.retire.is_empty() || others_remain;
    let cleaned = clean_up(ctx, host, rt, others_remain, runners_seen);
    if cleaned && registrations.is_some() && !others_remain {
        let written = crate::host::file::create_private_dir(&rt.paths.state_dir())
            .and_then(|()| crate::host::file::replace_if_changed(&marker, "", 0o600));
        if let Err(e) = written {
            tracing::warn!("could not write {}: {e}", marker.display());
        }
    }
    Ok(Some(0))
}

/// stop, remove: the machine is going away, so the Python charm's runners go as this
/// charm's own do, busy ones too (else they would keep running and taking jobs after
/// `juju remove-unit`). The host's leftovers stay for the take-over of a later deploy.
pub fn remove_every_old_runner(rt: &Runtime) {
    if rt.paths.python_charm_cleared_marker().exists() {
        return;
    }
    let Some((instances, registrations)) = observe(rt) else {
        return;
    };
    let plan = plan_drain(
        &rt.identity,
        &instances,
        registrations.as_deref(),
        DrainWhen::Now,
    );
    for retire in &plan.retire {
        retire_one(rt, retire);
    }
}

/// The project's instances (None: LXD could not be listed) and GitHub's registrations of
/// the old names (None: unreadable, then no running instance can be told idle).
fn observe(rt: &Runtime) -> Option<(Vec<Instance>, Option<Vec<GitHubRunner>>)> {
    let instances = rt
        .lxd
        .list_project_instances()
        .map_err(|e| {
            tracing::warn!("cannot list LXD instances to find the Python charm's runners: {e}")
        })
        .ok()?;
    let registrations = rt
        .github
        .list_old_runners()
        .map_err(|e| tracing::warn!("cannot list GitHub runners to find the Python charm's: {e}"))
        .ok();
    Some((instances, registrations))
}

/// Deregisters `retire`, then deletes its instance (a running one only once GitHub no
/// longer has it registered). True when it is gone.
fn retire_one(rt: &Runtime, retire: &Retire) -> bool {
    let mut deregistered = true;
    for id in &retire.registrations {
        match rt.github.delete_runner(*id) {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => {}
            Ok(DeleteOutcome::Busy) => {
                tracing::info!(runner = %retire.name, "the Python charm's runner took a job: kept");
                deregistered = false;
            }
            Err(e) => {
                tracing::warn!(runner = %retire.name, "could not deregister the Python charm's runner: {e}");
                deregistered = false;
            }
        }
    }
    if retire.instance.is_none() {
        if deregistered {
            tracing::info!(runner = %retire.name, "deregistered the Python charm's runner");
        }
        return deregistered;
    }
    if !deregistered && retire.instance_waits_for_deregistration() {
        return false;
    }
    match rt.lxd.delete(&retire.name, true) {
        Ok(()) => {
            tracing::info!(runner = %retire.name, "removed the Python charm's runner");
            deregistered
        }
        Err(e) => {
            tracing::warn!(runner = %retire.name, "could not delete the Python charm's runner: {e}");
            false
        }
    }
}

/// What the Python charm left on the host now (only this unit's part while `others_remain`).
fn found(ctx: &Context<'_>, host: &dyn Host, rt: &Runtime, others_remain: bool) -> Found {
    let paths = &rt.paths;
    let present = |p: &PathBuf| p.symlink_metadata().is_ok();
    let mut unit_files: Vec<PathBuf> = cleanup::CHARM_DIR_FILES
        .iter()
        .map(|name| ctx.hook.charm_dir.join(name))
        .collect();
    unit_files.retain(present);
    if others_remain {
        return Found {
            unit_files,
            ..Found::default()
        };
    }
    let files: Vec<PathBuf> = vec![paths.python_rebuild_cron_file()]
        .into_iter()
        .filter(present)
        .collect();
    let mut dirs = vec![
        paths.python_runner_binary_dir(),
        paths.python_runner_fs_dir(),
    ];
    dirs.extend(paths.python_runner_fs_extra_dirs());
    dirs.retain(present);
    let table = read_capped(&paths.mount_table(), MOUNT_TABLE_CAP);
    let edges = host.edges_for(rt);
    let acl = edges.runner_network().and_then(|(bridge, net)| {
        net.acl(cleanup::ACL).ok().flatten().map(|_| AclFound {
            attached: net.network(&bridge).ok().flatten().is_some_and(|info| {
                !crate::network::converge::detach_changes(&info.config, cleanup::ACL).is_empty()
            }),
        })
    });
    Found {
        policy_service: Some(paths.python_policy_service_unit()).filter(present),
        unit_files,
        files,
        mounts: cleanup::mounts_in(&table, &paths.python_runner_fs_dir()),
        dirs,
        acl,
    }
}

/// The mount table is the kernel's; a machine with thousands of mounts still fits.
const MOUNT_TABLE_CAP: u64 = 4 << 20;

/// The first `cap` bytes of `path` as text; empty when unreadable (a test root has no
/// mount table: nothing is mounted there).
fn read_capped(path: &std::path::Path, cap: u64) -> String {
    crate::host::file::read_capped(path, cap).unwrap_or_default()
}

/// Takes every [`cleanup::steps`] step; true when all were taken. The `github` ACL counts
/// as the Python charm's only where it left other traces (`runners_seen`, or what
/// [`found`] finds, now or in an earlier round): never an operator's ACL of that name on a
/// machine the Python charm never ran on.
fn clean_up(
    ctx: &Context<'_>,
    host: &dyn Host,
    rt: &Runtime,
    others_remain: bool,
    runners_seen: bool,
) -> bool {
    let mut found = found(ctx, host, rt, others_remain);
    let seen = rt.paths.python_charm_seen_marker();
    if runners_seen || found.shows_the_python_charm() {
        // Written before any step: a kill after the last trace went still leaves the ACL
        // known as the Python charm's to the rerun.
        let written = crate::host::file::create_private_dir(&rt.paths.state_dir())
            .and_then(|()| crate::host::file::replace_if_changed(&seen, "", 0o600));
        if let Err(e) = written {
            tracing::warn!("could not write {}: {e}", seen.display());
            return false;
        }
    } else if found.acl.is_some() && !seen.exists() {
        tracing::info!(
            "an LXD network ACL named {:?} exists, but nothing else of the Python charm: \
             left alone (it is not this charm's to remove)",
            cleanup::ACL
        );
        found.acl = None;
    }
    let steps = cleanup::steps(&found);
    if steps.is_empty() {
        return true;
    }
    let edges = host.edges_for(rt);
    let mut mounted = found.mounts.clone();
    let mut all_done = true;
    let mut policy_stopped = false;
    for step in steps {
        let done: Result<(), String> = match &step {
            Step::StopPolicyService(unit) => edges
                .systemd()
                .disable_now(cleanup::POLICY_SERVICE)
                .map_err(|e| e.to_string())
                .and_then(|()| std::fs::remove_file(unit).map_err(|e| e.to_string()))
                .and_then(|()| edges.systemd().daemon_reload().map_err(|e| e.to_string()))
                .map(|()| policy_stopped = true),
            Step::DeleteFile(file) => remove_file(file),
            Step::DetachAcl | Step::DeleteAcl => acl_step(ctx, edges.as_ref(), &step),
            Step::Unmount(point) => unmount(edges.commands(), point).map(|()| {
                mounted.retain(|m| m != point);
            }),
            Step::DeleteDir(dir) if cleanup::nothing_mounted_in(dir, &mounted) => {
                std::fs::remove_dir_all(dir).map_err(|e| e.to_string())
            }
            Step::DeleteDir(dir) => Err(format!("{} still has a mount in it", dir.display())),
        };
        match done {
            Ok(()) => tracing::info!("removed what the Python charm left: {step:?}"),
            Err(e) => {
                all_done = false;
                tracing::warn!("could not remove what the Python charm left ({step:?}): {e}");
            }
        }
    }
    if policy_stopped {
        // Port 8080 was open to runners for the policy service: closed again now.
        if let Err(e) = super::super::setup::runner_network::converge_acl_and_promises(
            ctx,
            &rt.config,
            edges.as_ref(),
        ) {
            tracing::warn!("could not close the policy service's port to runners: {e}");
        }
    }
    all_done
}

fn remove_file(file: &PathBuf) -> Result<(), String> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn unmount(
    commands: &dyn super::super::setup::commands::HostCommands,
    point: &std::path::Path,
) -> Result<(), String> {
    let umount = commands
        .find("umount")
        .ok_or("the umount command is missing")?;
    let point = point.to_str().ok_or("the mount point is not UTF-8")?;
    let out = commands
        .run(&umount, &[point], Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if out.code == 0 {
        Ok(())
    } else {
        Err(format!("umount exited {}: {}", out.code, out.stderr.trim()))
    }
}

/// The Python charm's ACL off the runners' bridge, then deleted; under the machine lock
/// (units share the bridge's ACL list).
fn acl_step(
    ctx: &Context<'_>,
    edges: &dyn super::super::setup::SetupEdges,
    step: &Step,
) -> Result<(), String> {
    let Some((bridge, net)) = edges.runner_network() else {
        return Ok(());
    };
    let _shared =
        super::super::setup::lock_machine(ctx, "python-charm-acl").map_err(|e| e.to_string())?;
    let lxd = |e: crate::lxd::LxdError| e.to_string();
    match step {
        Step::DetachAcl => match net.network(&bridge).map_err(lxd)? {
            Some(info) => {
                let changes = crate::network::converge::detach_changes(&info.config, cleanup::ACL);
                if changes.is_empty() {
                    Ok(())
                } else {
                    net.set_network_keys(&bridge, &changes).map_err(lxd)
                }
            }
            None => Ok(()),
        },
        _ => match net.acl(cleanup::ACL).map_err(lxd)? {
            Some(info) if info.used_by.is_empty() => net.delete_acl(cleanup::ACL).map_err(lxd),
            Some(info) => Err(format!("still used by {:?}", info.used_by)),
            None => Ok(()),
        },
    }
}
