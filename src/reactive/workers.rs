//! The unit's worker processes: counted by the slot locks they hold, started up to the target,
//! stopped idle-first then newest-first, replaced when they crash.
//!
//! Each worker holds an exclusive `flock` on `<unit dir>/workers/slot-<n>` for its whole life
//! and writes its state there (JSON, rewritten in place). The kernel drops the lock when the
//! process dies, however it dies, so "the lock is held" is exactly "the worker lives": the
//! count never comes from `ps` text (defect D5) and a crashed worker's slot is free for the
//! next reconcile. [`plan_workers`] is the pure decision; [`ProcessControl`] spawns and
//! signals, [`DetachedWorkers`] is the real one (the charm's worker binary in a new session,
//! stdin/stdout/stderr on /dev/null and its log file, no other inherited descriptor).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::health::{crashes_before, SlotHealth, WorkerFailure};
use super::queue::QueueLength;
use super::worker::WorkerState;

/// Longest slot file read (one JSON line).
const MAX_SLOT_BYTES: u64 = 4096;
/// The charm's worker binary, beside the hook binary in the charm's `bin/`.
pub const WORKER_BINARY: &str = "github-runner-worker";

/// The per-unit folder of reactive mode: settings, worker slots, job claims, logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitDirs {
    /// 0700: the settings file in it holds the token and the broker URI.
    pub state: PathBuf,
    /// Workers' logs (one file per slot, rotated daily).
    pub logs: PathBuf,
}

impl UnitDirs {
    pub fn new(state: impl Into<PathBuf>, logs: impl Into<PathBuf>) -> Self {
        UnitDirs {
            state: state.into(),
            logs: logs.into(),
        }
    }

    /// The 0600 settings file workers read at start (token, broker URI, configuration).
    pub fn settings_file(&self) -> PathBuf {
        self.state.join("worker-settings.json")
    }

    pub fn slots_dir(&self) -> PathBuf {
        self.state.join("workers")
    }

    pub fn claims_dir(&self) -> PathBuf {
        self.state.join("claims")
    }

    pub fn slot_file(&self, slot: u32) -> PathBuf {
        self.slots_dir().join(format!("slot-{slot}"))
    }

    pub fn log_file(&self, slot: u32) -> PathBuf {
        self.logs.join(format!("worker-{slot}.log"))
    }

    /// Creates the folders (state ones 0700).
    pub fn create(&self) -> std::io::Result<()> {
        let mut b = std::fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(&self.state)?;
        b.create(self.slots_dir())?;
        b.create(self.claims_dir())?;
        b.mode(0o750).create(&self.logs)
    }
}

/// What a live worker wrote into its slot file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub pid: u32,
    /// Start time, milliseconds since the epoch (newest-first order).
    pub started_ms: u64,
    /// Fingerprint of the settings it runs with; a reconcile restarts workers whose differs.
    pub settings: String,
    /// SIGTERM received: finishing or handing back what it holds, then exiting.
    #[serde(default)]
    pub stopping: bool,
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub runner: Option<String>,
    #[serde(default)]
    pub queue_waiting: Option<u64>,
    #[serde(default)]
    pub queue_leased: Option<u64>,
    /// Broker host of the last failure (never credentials).
    #[serde(default)]
    pub broker_error: Option<String>,
    /// When the worker last wrote this file (ms since the epoch): with `started_ms`, how
    /// long a dead worker lived.
    #[serde(default)]
    pub updated_ms: u64,
    /// The worker's last failure that still holds (`reactive::health`).
    #[serde(default)]
    pub failure: Option<WorkerFailure>,
    /// Workers of this slot that died in a row before this one ([`crashes_before`]).
    #[serde(default)]
    pub crashes: u32,
    /// The worker exited on request (SIGTERM): its end is no crash.
    #[serde(default)]
    pub stopped: bool,
    /// Admission's last refusal, while its job waits for room (`WorkerState::no_room`).
    #[serde(default)]
    pub no_room: Option<String>,
    /// A repository whose jobs the token cannot read (`WorkerState::job_access`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_access: Option<String>,
    /// A scale-set listener's own state (`scaleset::process`); None for reactive workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<crate::scaleset::process::ListenerSnapshot>,
}

impl SlotStatus {
    pub fn apply(&mut self, state: &WorkerState) {
        self.busy = state.busy;
        self.runner = state.runner.clone();
        self.queue_waiting = state.queue.map(|q| q.waiting);
        self.queue_leased = state.queue.map(|q| q.leased);
        self.broker_error = state.broker_error.clone();
        self.no_room = state.no_room.clone();
        self.job_access = state.job_access.clone();
    }

    pub fn queue(&self) -> Option<QueueLength> {
        Some(QueueLength {
            waiting: self.queue_waiting?,
            leased: self.queue_leased.unwrap_or(0),
        })
    }
}

/// A worker's hold on its slot. Dropping it (or dying) frees the slot.
#[derive(Debug)]
pub struct SlotHold {
    file: File,
    pub slot: u32,
    pub status: SlotStatus,
}

impl SlotHold {
    /// Takes `slot`, waiting up to `wait` (a reconcile's probe holds it for an instant).
    /// None: another live worker has it.
    pub fn acquire(dirs: &UnitDirs, slot: u32, wait: Duration) -> std::io::Result<Option<Self>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(dirs.slot_file(slot))?;
        let deadline = Instant::now() + wait;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(e),
            }
        }
        // What the previous worker of the slot left says whether it crashed.
        let previous = read_slot_status(&mut (&file));
        Ok(Some(SlotHold {
            file,
            slot,
            status: SlotStatus {
                crashes: crashes_before(&previous),
                ..SlotStatus::default()
            },
        }))
    }

    /// Rewrites the slot file with `status`, stamped with the time.
    pub fn publish(&mut self) -> std::io::Result<()> {
        self.status.updated_ms = now_ms();
        let mut line = serde_json::to_vec(&self.status).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&line)
    }
}

/// A slot a live worker holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveWorker {
    pub slot: u32,
    pub status: SlotStatus,
}

/// Milliseconds since the epoch (0 before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A slot file's status (blank when empty or unreadable: a worker that has not written yet).
fn read_slot_status(file: &mut impl Read) -> SlotStatus {
    let mut text = String::new();
    match file.take(MAX_SLOT_BYTES).read_to_string(&mut text) {
        Ok(_) => serde_json::from_str(text.trim()).unwrap_or_default(),
        Err(_) => SlotStatus::default(),
    }
}

/// Every slot of the unit, by slot: held (a live worker) or not (what the last one left).
pub fn survey_slots(dirs: &UnitDirs) -> Vec<SlotHealth> {
    let Ok(entries) = std::fs::read_dir(dirs.slots_dir()) else {
        return Vec::new();
    };
    let mut slots: Vec<SlotHealth> = entries
        .flatten()
        .filter_map(|e| {
            let slot: u32 = e
                .file_name()
                .to_str()?
                .strip_prefix("slot-")?
                .parse()
                .ok()?;
            let mut file = File::open(e.path()).ok()?;
            let live = match file.try_lock_shared() {
                Err(TryLockError::WouldBlock) => true,
                Ok(()) => false,
                // Unreadable: nothing to say about it.
                Err(TryLockError::Error(_)) => return None,
            };
            let status = read_slot_status(&mut file);
            Some(SlotHealth { slot, live, status })
        })
        .collect();
    slots.sort_by_key(|s| s.slot);
    slots
}

/// The live workers of the unit, by slot: the slots whose lock is held.
pub fn survey(dirs: &UnitDirs) -> Vec<LiveWorker> {
    survey_slots(dirs)
        .into_iter()
        .filter(|s| s.live)
        .map(|s| LiveWorker {
            slot: s.slot,
            status: s.status,
        })
        .collect()
}

/// What to do about the unit's workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerPlan {
    /// Slots to start a worker in.
    pub start: Vec<u32>,
    /// Workers to send SIGTERM: (slot, pid).
    pub stop: Vec<(u32, u32)>,
}

/// The pure decision: `target` workers running `settings`. Workers with other settings are
/// stopped (they hand back what they hold); surplus ones are stopped idle first, then
/// newest first (defect D6); new ones take the lowest free slots. Workers already stopping
/// count for nothing.
pub fn plan_workers(live: &[LiveWorker], target: u32, settings: &str) -> WorkerPlan {
    let mut plan = WorkerPlan::default();
    let mut current: Vec<&LiveWorker> = Vec::new();
    for w in live.iter().filter(|w| !w.status.stopping) {
        if w.status.settings == settings {
            current.push(w);
        } else {
            plan.stop.push((w.slot, w.status.pid));
        }
    }
    let target = target as usize;
    if current.len() > target {
        // Keep busy before idle, then oldest before newest; stop the tail, from its end
        // (idle newest first).
        current.sort_by_key(|w| (!w.status.busy, w.status.started_ms, w.slot));
        for w in current.split_off(target).into_iter().rev() {
            plan.stop.push((w.slot, w.status.pid));
        }
    }
    let taken: Vec<u32> = live.iter().map(|w| w.slot).collect();
    let mut slot = 0;
    while current.len() + plan.start.len() < target {
        if !taken.contains(&slot) {
            plan.start.push(slot);
        }
        slot += 1;
    }
    plan
}

/// Starting and signalling worker processes.
pub trait ProcessControl {
    fn start(&self, dirs: &UnitDirs, slot: u32) -> Result<(), String>;
    /// SIGTERM `pid` (a worker found holding its slot lock just now).
    fn terminate(&self, pid: u32) -> Result<(), String>;
    /// SIGKILL `pid`: one that outlived its SIGTERM and the wait ([`stop_or_kill`]).
    fn kill(&self, pid: u32) -> Result<(), String>;
}

/// What [`ensure_workers`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkersOutcome {
    pub started: u32,
    pub stopped: u32,
    pub problems: Vec<String>,
}

/// Brings the unit to `target` workers running `settings`.
pub fn ensure_workers(
    dirs: &UnitDirs,
    control: &dyn ProcessControl,
    target: u32,
    settings: &str,
) -> WorkersOutcome {
    let mut out = WorkersOutcome::default();
    if let Err(e) = dirs.create() {
        out.problems
            .push(format!("cannot create {}: {e}", dirs.state.display()));
        return out;
    }
    let plan = plan_workers(&survey(dirs), target, settings);
    for (slot, pid) in plan.stop {
        match control.terminate(pid) {
            Ok(()) => out.stopped += 1,
            Err(e) => out.problems.push(format!("worker {slot}: {e}")),
        }
    }
    for slot in plan.start {
        match control.start(dirs, slot) {
            Ok(()) => out.started += 1,
            Err(e) => out.problems.push(format!("worker {slot}: {e}")),
        }
    }
    out
}

/// Stops every worker and waits up to `wait` for them to exit (they hand back what they
/// hold first). Returns how many still run.
pub fn stop_all(dirs: &UnitDirs, control: &dyn ProcessControl, wait: Duration) -> usize {
    for w in survey(dirs) {
        if let Err(e) = control.terminate(w.status.pid) {
            tracing::warn!(slot = w.slot, "cannot stop worker: {e}");
        }
    }
    let deadline = Instant::now() + wait;
    loop {
        let left = survey(dirs).len();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How long [`stop_or_kill`] waits for the kernel to free the slots of the processes it
/// killed (SIGKILL cannot be caught: they go at once).
const KILL_WAIT: Duration = Duration::from_secs(5);

/// [`stop_all`], then SIGKILL for what still runs after `wait`: for a process whose
/// at-least-once work makes a kill safe (the scale-set listener). Returns how many still
/// hold their slot afterwards.
pub fn stop_or_kill(dirs: &UnitDirs, control: &dyn ProcessControl, wait: Duration) -> usize {
    if stop_all(dirs, control, wait) == 0 {
        return 0;
    }
    for w in survey(dirs) {
        tracing::warn!(
            slot = w.slot,
            pid = w.status.pid,
            "still running after {wait:?}: killing it"
        );
        if let Err(e) = control.kill(w.status.pid) {
            tracing::warn!(slot = w.slot, "cannot kill: {e}");
        }
    }
    let deadline = Instant::now() + KILL_WAIT.min(wait.max(Duration::from_millis(100)));
    loop {
        let left = survey(dirs).len();
        if left == 0 || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a worker process of the charm's worker binary runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerRole {
    /// A reactive worker: one job at a time from the queue.
    Reactive,
    /// The unit's scale-set listener (`scaleset::process`).
    Listener,
}

impl WorkerRole {
    /// The worker binary's flag for the role (none: a reactive worker).
    fn flag(self) -> Option<&'static str> {
        match self {
            WorkerRole::Reactive => None,
            WorkerRole::Listener => Some(crate::scaleset::process::LISTENER_FLAG),
        }
    }

    /// What its systemd scope says it is.
    fn description(self) -> &'static str {
        match self {
            WorkerRole::Reactive => "reactive worker",
            WorkerRole::Listener => "scale-set listener",
        }
    }
}

/// Where systemd runs the machine, each worker starts in a transient scope of its own
/// (`systemd-run --scope`): out of the unit agent's cgroup, so an agent restart (systemd
/// stopping `jujud-machine-N`'s cgroup) does not reach it. systemd-run registers the scope
/// for its own pid, then execs the worker: the scope's process is the worker.
///
/// A scope, not a service per worker: the slot locks and the reconcile already refill a dead
/// worker's slot, and a unit's own `Restart=` would race them. Not through
/// `host::timer::Systemd` either: the scope must be the worker process itself, so it is part
/// of the spawn; tests record it with a stand-in `systemd-run` on PATH, as they do
/// `systemctl`. Without systemd (`/run/systemd/system` absent: a container) workers start
/// directly and share the agent's fate until the next reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerScope {
    pub systemd_run: PathBuf,
    /// `github-runner-worker-<app>-<n>`: the unit's scopes are `<prefix>-<slot>-<ms>.scope`.
    pub unit_prefix: String,
}

/// The prefix of a unit's worker scopes: `github-runner-worker-<app>-<n>` (its listener's:
/// `github-runner-listener-<app>-<n>`).
pub fn scope_prefix(unit_key: &str, role: WorkerRole) -> String {
    match role {
        WorkerRole::Reactive => format!("github-runner-worker-{unit_key}"),
        WorkerRole::Listener => format!("github-runner-listener-{unit_key}"),
    }
}

/// The argv that starts a worker in `slot` (pure): the worker binary and its arguments, run
/// by `systemd-run --scope` when there is a scope. The scope name ends in the start time:
/// the scope of a worker that just died may still be on its way out.
pub fn worker_argv(
    binary: &Path,
    role: WorkerRole,
    dirs: &UnitDirs,
    slot: u32,
    scope: Option<&WorkerScope>,
    started_ms: u64,
) -> Vec<std::ffi::OsString> {
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(scope) = scope {
        argv.extend([
            scope.systemd_run.as_os_str().to_owned(),
            "--scope".into(),
            "--quiet".into(),
            "--collect".into(),
            format!("--unit={}-{slot}-{started_ms}", scope.unit_prefix).into(),
            format!(
                "--description=github-runner {} {slot} ({})",
                role.description(),
                scope.unit_prefix
            )
            .into(),
            "--".into(),
        ]);
    }
    argv.push(binary.as_os_str().to_owned());
    argv.extend(role.flag().map(std::ffi::OsString::from));
    argv.extend(["--dir".into(), dirs.state.clone().into_os_string()]);
    argv.extend(["--logs".into(), dirs.logs.clone().into_os_string()]);
    argv.extend(["--slot".into(), slot.to_string().into()]);
    argv
}

/// The real [`ProcessControl`]: `github-runner-worker --dir <state dir> --logs <log dir>
/// --slot <n>` (no secret in argv: the worker reads the 0600 settings file), in a new
/// session so it outlives the hook, with an explicit environment; in a systemd scope of its
/// own when `scope` is set ([`WorkerScope`]).
#[derive(Debug, Clone)]
pub struct DetachedWorkers {
    pub binary: PathBuf,
    pub role: WorkerRole,
    /// The whole environment the worker gets (test knobs such as the host root included).
    pub env: Vec<(String, String)>,
    pub scope: Option<WorkerScope>,
}

impl ProcessControl for DetachedWorkers {
    fn start(&self, dirs: &UnitDirs, slot: u32) -> Result<(), String> {
        use std::os::unix::process::CommandExt;
        let log = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(dirs.log_file(slot))
            .map_err(|e| format!("cannot open {}: {e}", dirs.log_file(slot).display()))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let argv = worker_argv(
            &self.binary,
            self.role,
            dirs,
            slot,
            self.scope.as_ref(),
            now_ms(),
        );
        let (program, args) = argv.split_first().ok_or("empty worker command")?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: only async-signal-safe calls between fork and exec (setsid, a syscall).
        unsafe {
            cmd.pre_exec(|| {
                rustix::process::setsid().map_err(std::io::Error::from)?;
                mark_inherited_fds_cloexec();
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", Path::new(program).display()))?;
        // Not waited for: the worker outlives this process (init reaps it).
        drop(child);
        Ok(())
    }

    fn terminate(&self, pid: u32) -> Result<(), String> {
        signal(pid, rustix::process::Signal::TERM)
    }

    fn kill(&self, pid: u32) -> Result<(), String> {
        signal(pid, rustix::process::Signal::KILL)
    }
}

/// `signal` to `pid`; one already gone is no error.
fn signal(pid: u32, signal: rustix::process::Signal) -> Result<(), String> {
    let pid = rustix::process::Pid::from_raw(pid as i32).ok_or("pid 0")?;
    match rustix::process::kill_process(pid, signal) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(format!("kill {pid:?}: {e}")),
    }
}

/// Every descriptor above stderr closes at exec (the hook's pipes among them: Juju waits for
/// them to close). `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`; the worker also closes what a
/// kernel without it left (see [`close_inherited_fds`]).
fn mark_inherited_fds_cloexec() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: a plain syscall on integers; failure (old kernel) is handled by the worker.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// Closes every descriptor above stderr except `keep` (run first thing in a worker).
pub fn close_inherited_fds(keep: &[i32]) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && !keep.contains(fd))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor this process does not use (read_dir's own is gone).
        unsafe {
            libc::close(fd);
        }
    }
}

/// The settings fingerprint workers compare: SHA-256 of the settings file's bytes.
pub fn settings_fingerprint(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the settings file (0600, atomically).
pub fn write_settings(dirs: &UnitDirs, bytes: &[u8]) -> std::io::Result<()> {
    dirs.create()?;
    let mut tmp = tempfile::NamedTempFile::new_in(&dirs.state)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_data()?;
    // NamedTempFile is created 0600.
    tmp.persist(dirs.settings_file()).map_err(|e| e.error)?;
    Ok(())
}

/// Removes the settings file (leaving a mode); one already gone is fine.
pub fn remove_settings(dirs: &UnitDirs) {
    match std::fs::remove_file(dirs.settings_file()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", dirs.settings_file().display()),
    }
}

/// A [`ProcessControl`] that records what it is asked and starts nothing.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct RecordingControl {
    pub calls: std::cell::RefCell<Vec<String>>,
}

#[cfg(test)]
impl ProcessControl for RecordingControl {
    fn start(&self, _: &UnitDirs, slot: u32) -> Result<(), String> {
        self.calls.borrow_mut().push(format!("start {slot}"));
        Ok(())
    }
    fn terminate(&self, pid: u32) -> Result<(), String> {
        self.calls.borrow_mut().push(format!("term {pid}"));
        Ok(())
    }
    fn kill(&self, pid: u32) -> Result<(), String> {
        self.calls.borrow_mut().push(format!("kill {pid}"));
        Ok(())
    }
}

/// The logrotate rule for the workers' logs: daily, a week kept, copytruncate (a worker
/// keeps its file open; a moved file would go on growing unseen, defect D16).
pub fn render_logrotate(logs: &Path) -> String {
    format!(
        "{}/*.log {{\n    daily\n    rotate 7\n    missingok\n    notifempty\n    compress\n    delaycompress\n    copytruncate\n}}\n",
        logs.display()
    )
}

#[cfg(test)]
#[path = "workers_tests.rs"]
mod tests;
