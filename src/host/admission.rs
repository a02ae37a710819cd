//! The machine's one admission, applied at every runner launch (pull rounds and reactive
//! workers of every unit): under the machine-wide creation lock, list every instance on the
//! machine, ask `manager::admission::admit` for one runner, launch, release. The lock covers
//! only the check and the launch: once `lxc launch` returns the instance exists and the next
//! creation's listing counts it; the rest of the creation (boot, files, start) runs unlocked.

use crate::clock::Clock;
use crate::host::lock::{LockWait, UnitLock};
use crate::lxd::{Lxd, LxdError};
use crate::manager::admission::{admit, Machine, RoundLimits, RunnerSize};
use crate::paths::HostPaths;
use crate::runner::create::{LaunchGate, StepFailure};
use std::time::Duration;

/// How long a creation waits for the creation lock: other creations hold it for one launch
/// each (seconds), so a long wait means a launch hangs; the creation then fails and the next
/// round or message retries.
pub const CREATION_LOCK_WAIT: LockWait = LockWait {
    max: Duration::from_secs(600),
    poll: Duration::from_millis(100),
};

/// The host's capacity and every instance on the machine (`Lxd::list_machine_instances`).
pub fn observe_machine(paths: &HostPaths, lxd: &dyn Lxd, pool: &str) -> Result<Machine, LxdError> {
    let instances = lxd.list_machine_instances()?;
    Ok(Machine {
        host: crate::host::capacity::gather(paths, lxd, pool),
        instances,
    })
}

/// [`LaunchGate`] of one unit's creations on this machine.
pub struct MachineGate<'a> {
    pub lxd: &'a dyn Lxd,
    pub paths: &'a HostPaths,
    /// The runners' storage pool (its free space bounds new disks).
    pub pool: &'a str,
    /// What the runner being created takes.
    pub size: RunnerSize,
    pub clock: &'a dyn Clock,
    pub wait: LockWait,
}

impl MachineGate<'_> {
    /// Whether the machine holds one more runner now: `Ok`, or [`StepFailure::NoRoom`], or
    /// [`StepFailure::Admission`] when it cannot tell. Without the lock it is only a hint
    /// (a creation checks it before registering with GitHub); the launch asks again under it.
    pub fn room(&self) -> Result<(), StepFailure> {
        let machine = observe_machine(self.paths, self.lxd, self.pool)
            .map_err(|e| unavailable(e.to_string()))?;
        let load = machine.load(&self.size, &[]);
        let one = RoundLimits {
            max_creations: 1,
            ..RoundLimits::default()
        };
        let (admitted, held) = admit(1, load.instances, &load, &self.size, &machine.host, &one);
        if admitted == 1 {
            return Ok(());
        }
        let note = held.note().unwrap_or_default();
        tracing::info!(
            instances = load.instances,
            "no room for another runner: {note}"
        );
        Err(StepFailure::NoRoom(crate::messages::no_room(
            load.instances,
            &note,
        )))
    }
}

fn unavailable(reason: String) -> StepFailure {
    StepFailure::Admission(crate::messages::admission_unavailable(&reason))
}

impl LaunchGate for MachineGate<'_> {
    fn launch_admitted(
        &self,
        launch: &mut dyn FnMut() -> Result<(), LxdError>,
    ) -> Result<(), StepFailure> {
        let _lock = UnitLock::acquire(
            &self.paths.creation_lock_file(),
            "create-runner",
            self.clock,
            self.wait,
        )
        .map_err(|e| unavailable(format!("the machine's creation lock: {e}")))?;
        self.room()?;
        launch().map_err(StepFailure::from)
    }
}
