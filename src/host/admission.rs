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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charm::fake_world::FakeWorld;
    use crate::clock::SystemClock;
    use crate::host::lock::tests::SignallingClock;
    use crate::lxd::{InstanceType, LaunchSpec};
    use std::sync::mpsc;

    const GIB: u64 = 1 << 30;
    const SEVEN_GIB: RunnerSize = RunnerSize {
        cpus: 2,
        memory_bytes: 7 * GIB,
        disk_bytes: 10 * GIB,
    };
    const QUICK: LockWait = LockWait {
        max: Duration::from_secs(20),
        poll: Duration::from_millis(10),
    };

    /// A host root whose /proc says `memory_gib` of memory and 64 CPUs.
    fn host_root(memory_gib: u64) -> (tempfile::TempDir, HostPaths) {
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        std::fs::create_dir_all(paths.proc_dir()).unwrap();
        std::fs::write(
            paths.proc_dir().join("meminfo"),
            format!("MemTotal: {} kB\n", memory_gib << 20),
        )
        .unwrap();
        let cpus: String = (0..64).map(|n| format!("processor : {n}\n")).collect();
        std::fs::write(paths.proc_dir().join("cpuinfo"), cpus).unwrap();
        (root, paths)
    }

    fn spec(name: &str) -> LaunchSpec {
        LaunchSpec {
            name: name.into(),
            image_alias: "jammy".into(),
            instance_type: InstanceType::Container,
            profiles: vec![],
            config: Default::default(),
            ephemeral: true,
        }
    }

    fn gate<'a>(lxd: &'a dyn Lxd, paths: &'a HostPaths, clock: &'a dyn Clock) -> MachineGate<'a> {
        MachineGate {
            lxd,
            paths,
            pool: "runner",
            size: SEVEN_GIB,
            clock,
            wait: QUICK,
        }
    }

    /// Two creators (threads here, hooks and workers on a machine) on a host that holds one
    /// runner: the second waits for the creation lock while the first launches, then sees
    /// the first's instance and is refused. Without the lock both would launch.
    #[test]
    fn a_second_creation_waits_for_the_first_launch_and_then_counts_its_instance() {
        let world = FakeWorld::new();
        let lxd = world.lxd();
        let (_root, paths) = host_root(8);
        let (in_launch, first_launching) = mpsc::channel();
        let (release, released) = mpsc::channel::<()>();
        let (contended_tx, contended) = mpsc::channel();
        let waiting_clock = SignallingClock {
            contended: std::sync::Mutex::new(Some(contended_tx)),
        };
        let (first, second) = std::thread::scope(|s| {
            let (lxd, paths) = (&lxd, &paths);
            let first = s.spawn(move || {
                gate(&**lxd, paths, &SystemClock).launch_admitted(&mut || {
                    in_launch.send(()).unwrap();
                    released.recv().unwrap();
                    lxd.launch(&spec("first"))
                })
            });
            first_launching
                .recv_timeout(Duration::from_secs(20))
                .expect("the first creation launches");
            let waiting_clock = &waiting_clock;
            let second = s.spawn(move || {
                gate(&**lxd, paths, waiting_clock)
                    .launch_admitted(&mut || lxd.launch(&spec("second")))
            });
            let waited = contended.recv_timeout(Duration::from_secs(20));
            release.send(()).unwrap();
            waited.expect("the second creation waits for the creation lock");
            (first.join().unwrap(), second.join().unwrap())
        });
        assert!(first.is_ok(), "{first:?}");
        match second {
            Err(StepFailure::NoRoom(message)) => assert_eq!(
                message,
                "no room on this machine for another runner (1 instance on it): \
                 host memory allows 1"
            ),
            other => panic!("the second creation was not refused: {other:?}"),
        }
        assert_eq!(world.instance_names(), vec!["first".to_string()]);
    }

    #[test]
    fn room_counts_every_instance_and_an_unlistable_machine_launches_nothing() {
        let world = FakeWorld::new();
        let lxd = world.lxd();
        // 90% of 16 GiB: two runners of 7 GiB.
        let (_root, paths) = host_root(16);
        let gate = gate(&*lxd, &paths, &SystemClock);
        assert!(gate.room().is_ok());
        lxd.launch(&spec("another-units-runner")).unwrap();
        assert!(gate.room().is_ok());
        lxd.launch(&spec("leftover")).unwrap();
        assert!(matches!(gate.room(), Err(StepFailure::NoRoom(_))));

        world.lock().lxd_down = true;
        let mut launched = false;
        let got = gate.launch_admitted(&mut || {
            launched = true;
            Ok(())
        });
        assert!(matches!(got, Err(StepFailure::Admission(_))), "{got:?}");
        assert!(!launched);
    }
}
