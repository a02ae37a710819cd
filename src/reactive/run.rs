//! The worker process: `github-runner-worker --dir D --logs L --slot N`.
//!
//! Started detached by a reconcile (`reactive::workers`). It closes whatever it inherited,
//! takes its slot lock (or exits: another worker has the slot), reads the 0600 settings file
//! the charm wrote (broker URI, configuration: never argv or environment) and its GitHub
//! credential from the unit's credential file (`crate::credential`), and runs
//! [`Worker`] until SIGTERM. Logs go to stderr, which is its own log file.

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::claim::ClaimDir;
use super::health::FailureKind as Failure;
use super::job::UnitScope;
use super::observed::{ObservedGitHub, ReportingRunners, SharedSlot};
use super::queue::{JobQueue, QueueError};
use super::worker::{
    GitHubJobs, JobRunners, RunnerRemoval, SpawnFailure, Worker, WorkerEvent, WorkerReport,
    WorkerState, WorkerTimings,
};
use super::workers::{close_inherited_fds, now_ms, settings_fingerprint, SlotHold, UnitDirs};
use crate::charm::fleet::CharmRunnerOps;
use crate::charm::runtime::{ProcessSettings, Runtime};
use crate::clock::{Clock, SystemClock};
use crate::github::Arch;
use crate::host::metrics::{MetricEvent, MetricsLog, ReactiveJobPickedUp};
use crate::identity::RunnerName;
use crate::juju::context::ProxySettings;
use crate::manager::ops::FailureKind;
use crate::manager::planner::RUNNER_ID_CONFIG_KEY;
use crate::paths::HostPaths;

/// How long a runner waits for its job in test-mode=insecure (5 minutes otherwise).
pub const TEST_MODE_PICKUP_BOUND: Duration = Duration::from_secs(15);
/// A message's lease in test-mode=insecure (15 minutes otherwise): a killed worker's message
/// is served again sooner. Still longer than a container's creation.
pub const TEST_MODE_LEASE: Duration = Duration::from_secs(20);

/// Largest settings file read.
const MAX_SETTINGS_BYTES: u64 = 1024 * 1024;

/// What a worker needs, written by the charm into the 0600 settings file. Holds secrets:
/// no `Debug`.
#[derive(Serialize, Deserialize, Clone, PartialEq)]
pub struct WorkerSettings {
    /// The broker URI with its password.
    pub mq_uri: String,
    /// Broker hosts without credentials (status).
    pub broker_host: String,
    /// The queue (the application's name).
    pub queue_name: String,
    pub unit_name: String,
    pub model_uuid: String,
    /// `config-get` as the hook read it (token included), minus [`HOOK_ONLY_OPTIONS`].
    pub config: serde_json::Map<String, serde_json::Value>,
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub charm_dir: PathBuf,
    pub lxd_project: Option<String>,
    /// The charm binary's path and modification time: a new binary restarts the workers.
    #[serde(default)]
    pub binary: String,
    /// The debug-ssh relation's tmate servers (workers cannot read relations): a change
    /// restarts the workers, so new runners see it.
    #[serde(default)]
    pub debug_ssh: Vec<crate::network::debug_ssh::TmateServer>,
    /// The broker came from the `mongodb` relation (not `mq-uri`): while the relation is
    /// unusable for a moment the unit goes on with it (`reactive::mode::choose_queue`).
    #[serde(default)]
    pub from_relation: bool,
}

/// Options only the hooks read: how many workers run (`virtual-machines` scales them, idle
/// first, newest first), when the timer fires, and the pull round's creation cap. They stay
/// out of the workers' settings, so changing one never restarts a worker (the settings
/// fingerprint is of the file's bytes).
pub const HOOK_ONLY_OPTIONS: &[&str] = &[
    "virtual-machines",
    "reconcile-interval",
    "creations-per-round",
];

/// `config-get` as workers get it: without [`HOOK_ONLY_OPTIONS`] (a missing option takes its
/// default when the worker validates the rest).
pub fn worker_config(
    mut config: serde_json::Map<String, serde_json::Value>,
) -> serde_json::Map<String, serde_json::Value> {
    config.retain(|k, _| !HOOK_ONLY_OPTIONS.contains(&k.as_str()));
    config
}

impl WorkerSettings {
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising plain strings and maps cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// Opens the broker named by the settings. The transports live with the broker side.
pub type QueueOpener = fn(&WorkerSettings, Arc<dyn Clock>) -> Result<Box<dyn JobQueue>, QueueError>;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct StderrLayer;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for StderrLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        use std::io::Write;
        let mut line = crate::juju::log::LineVisitor::default();
        event.record(&mut line);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let _ = writeln!(
            std::io::stderr(),
            "{now} {} {}",
            event.metadata().level(),
            line.finish()
        );
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// What a long-running process of the charm (a reactive worker, the scale-set listener)
/// holds once started: its folders, its slot (locked, pid and settings fingerprint
/// published) and its settings file's bytes.
pub struct StartedProcess {
    /// `worker` or `listener`: how its messages name it.
    pub kind: &'static str,
    pub dirs: UnitDirs,
    pub slot: u32,
    pub slot_file: SharedSlot,
    pub settings: Vec<u8>,
}

/// Set by SIGTERM: the process finishes what it holds and exits.
pub fn stop_flag() -> &'static AtomicBool {
    &STOP
}

/// The start every long-running process of the charm shares: close what it inherited,
/// SIGTERM sets [`stop_flag`], logs to stderr (its log file), `--dir D --logs L --slot N`,
/// the slot lock, the settings file read (capped). `Err`: the exit code (0 when another
/// process holds the slot).
pub fn start_process(args: &[String], kind: &'static str) -> Result<StartedProcess, i32> {
    close_inherited_fds(&[]);
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(
            libc::SIGTERM,
            on_sigterm as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::Layer;
        let subscriber = tracing_subscriber::registry()
            .with(StderrLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO));
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
    let (Some(dir), Some(logs), Some(slot)) = (
        arg(args, "--dir"),
        arg(args, "--logs"),
        arg(args, "--slot").and_then(|s| s.parse::<u32>().ok()),
    ) else {
        eprintln!("usage: github-runner-worker [--scale-set] --dir <dir> --logs <dir> --slot <n>");
        return Err(2);
    };
    let dirs = UnitDirs::new(dir, logs);
    let mut hold = match SlotHold::acquire(&dirs, slot, Duration::from_secs(2)) {
        Ok(Some(h)) => h,
        Ok(None) => {
            tracing::info!(slot, "slot taken by another {kind}; exiting");
            return Err(0);
        }
        Err(e) => {
            tracing::error!(slot, "cannot take the {kind} slot: {e}");
            return Err(1);
        }
    };
    hold.status.pid = std::process::id();
    hold.status.started_ms = now_ms();
    let slot_file = SharedSlot::new(hold);
    let bytes = match read_settings(&dirs) {
        Ok(b) => b,
        Err(e) => {
            let why = format!("cannot read the {kind} settings: {e}");
            return Err(start_failed(&slot_file, &why));
        }
    };
    slot_file.update(|s| {
        s.settings = settings_fingerprint(&bytes);
        true
    });
    Ok(StartedProcess {
        kind,
        dirs,
        slot,
        slot_file,
        settings: bytes,
    })
}

impl StartedProcess {
    /// The settings file's content; `Err`: the exit code, the reason in the slot file
    /// (never serde's message, which may quote secrets).
    pub fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, i32> {
        serde_json::from_slice(&self.settings).map_err(|e| {
            let why = format!("{} settings unreadable: {}", self.kind, e.classify_name());
            start_failed(&self.slot_file, &why)
        })
    }

    /// The exit code of a process whose work ended with `outcome`: a stop request ends it
    /// well (`stopped` in the slot: no crash); an error is recorded in the slot.
    pub fn finish(&self, outcome: Result<(), String>) -> i32 {
        let code = match outcome {
            Ok(()) => {
                self.slot_file.update(|s| {
                    s.stopped = true;
                    true
                });
                0
            }
            Err(e) => start_failed(&self.slot_file, &format!("{} stopped: {e}", self.kind)),
        };
        tracing::info!(slot = self.slot, "{} exiting", self.kind);
        code
    }
}

/// The worker process's main. `args` are argv after the program name.
pub fn main(args: &[String], open: QueueOpener) -> i32 {
    let started = match start_process(args, "worker") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let settings: WorkerSettings = match started.decode() {
        Ok(s) => s,
        Err(code) => return code,
    };
    let (slot, pid) = (started.slot, std::process::id());
    tracing::info!(slot, pid, broker = %settings.broker_host, "worker started");
    let outcome = serve(&started.dirs, slot, &started.slot_file, &settings, open);
    started.finish(outcome)
}

/// Records why the worker could not run in its slot file, and its exit code.
fn start_failed(slot_file: &SharedSlot, why: &str) -> i32 {
    tracing::error!("{why}");
    slot_file.fail(Failure::StartFailed, why);
    1
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    /// serde_json's message may quote the input, which holds secrets.
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "a field is missing or of the wrong type",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}

/// The settings file's bytes, capped (the worker at start; a hook for the last broker).
pub fn read_settings(dirs: &UnitDirs) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(dirs.settings_file())?
        .take(MAX_SETTINGS_BYTES)
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Builds the runtime the charm's hooks use, for this worker; its GitHub calls record their
/// failures in `slot_file` when given.
fn runtime(settings: &WorkerSettings, slot_file: Option<&SharedSlot>) -> Result<Runtime, String> {
    let mut rt = Runtime::for_unit_process(&ProcessSettings {
        unit_name: &settings.unit_name,
        model_uuid: &settings.model_uuid,
        config: &settings.config,
        proxy: ProxySettings {
            http: settings.http_proxy.clone(),
            https: settings.https_proxy.clone(),
            no_proxy: settings.no_proxy.clone(),
        },
        charm_dir: &settings.charm_dir,
        lxd_project: settings.lxd_project.as_deref(),
        debug_ssh: &settings.debug_ssh,
    })?;
    if let Some(slot) = slot_file {
        rt.github = observed(&rt, slot);
    }
    Ok(rt)
}

/// The runtime's GitHub, recording in `slot` how its calls fare.
pub fn observed(rt: &Runtime, slot: &SharedSlot) -> Arc<dyn crate::github::GitHub> {
    Arc::new(ObservedGitHub {
        inner: rt.github.clone(),
        slot: slot.clone(),
    })
}

/// This unit's labels for the label check: the runners' own, plus the host architecture.
pub fn unit_scope(rt: &Runtime, runner_labels: &[String]) -> UnitScope {
    let mut labels = runner_labels.to_vec();
    if let Some(arch) = Arch::host() {
        labels.push(arch.github_name().to_string());
    }
    UnitScope {
        api_base_url: rt.config.api_base_url.clone(),
        path: rt.config.path.clone(),
        labels,
    }
}

fn serve(
    dirs: &UnitDirs,
    slot: u32,
    slot_file: &SharedSlot,
    settings: &WorkerSettings,
    open: QueueOpener,
) -> Result<(), String> {
    let report = SlotReport {
        slot_file: slot_file.clone(),
        // The unit's metrics log, which its exporter reads.
        metrics: MetricsLog::new(&HostPaths::from_env().with_unit(&settings.unit_name)),
        flavor: settings
            .unit_name
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        clock: SystemClock,
    };
    let rt = runtime(settings, Some(slot_file))?;
    let ops = CharmRunnerOps::new(&rt);
    let runners = ReportingRunners {
        inner: LxdRunners { rt: &rt, ops: &ops },
        slot: slot_file.clone(),
    };
    let scope = unit_scope(&rt, ops.labels());
    let claims = ClaimDir::open(dirs.claims_dir()).map_err(|e| e.to_string())?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let mut timings = WorkerTimings::default();
    if rt.config.test_mode_insecure {
        // Containers come online in seconds: a job nobody takes is requeued sooner.
        timings.pickup_bound = TEST_MODE_PICKUP_BOUND;
        timings.lease_for = TEST_MODE_LEASE;
    }
    let mut backoff = timings.broker_backoff;
    let mut queue = loop {
        if STOP.load(Ordering::SeqCst) {
            return Ok(());
        }
        match open(settings, clock.clone()) {
            Ok(q) => break q,
            Err(e) => {
                tracing::warn!("{e}; retrying in {backoff:?}");
                report.state(&WorkerState {
                    broker_error: Some(settings.broker_host.clone()),
                    ..WorkerState::default()
                });
                let until = std::time::Instant::now() + backoff;
                while std::time::Instant::now() < until && !STOP.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                backoff = (backoff * 2).min(timings.max_broker_backoff);
            }
        }
    };
    let jobs = GitHubJobs::new(&*rt.github);
    let mut worker = Worker::new(
        &mut *queue,
        &jobs,
        &runners,
        &claims,
        &scope,
        &SystemClock,
        &report,
        &STOP,
        slot,
        timings,
    );
    worker.run();
    Ok(())
}

/// Metrics to the unit's metrics log; state into the slot file.
struct SlotReport {
    slot_file: SharedSlot,
    metrics: MetricsLog,
    flavor: String,
    clock: SystemClock,
}

impl WorkerReport for SlotReport {
    fn event(&self, event: WorkerEvent) {
        let flavor = self.flavor.clone();
        let event = match event {
            WorkerEvent::JobReceived => MetricEvent::ReactiveJobReceived { flavor },
            WorkerEvent::JobDropped { reason } => MetricEvent::ReactiveJobDropped {
                flavor,
                reason: reason.to_string(),
            },
            WorkerEvent::RunnerSpawned { seconds } => MetricEvent::ReactiveRunnerSpawned {
                flavor,
                duration: seconds,
            },
            WorkerEvent::PickedUp { queue_seconds } => {
                MetricEvent::ReactiveJobPickedUp(ReactiveJobPickedUp {
                    flavor,
                    queue_seconds,
                })
            }
            WorkerEvent::Requeued { process_count } => MetricEvent::ReactiveJobRequeued {
                flavor,
                process_count,
            },
        };
        if let Err(e) = self.metrics.issue(&event, &self.clock) {
            tracing::warn!("{e}");
        }
    }

    fn state(&self, state: &WorkerState) {
        self.slot_file.update(|s| {
            s.apply(state);
            s.stopping = STOP.load(Ordering::SeqCst);
            true
        });
    }
}

/// [`JobRunners`] over the charm's runner code: creation through [`CharmRunnerOps`] (the
/// unit's labels, profiles, JIT registration), removal through `runner::remove_runner`
/// without force (a busy runner is kept).
pub struct LxdRunners<'a> {
    pub rt: &'a Runtime,
    pub ops: &'a CharmRunnerOps<'a>,
}

impl JobRunners for LxdRunners<'_> {
    fn new_name(&self) -> Result<String, String> {
        self.rt
            .identity
            .new_runner_name()
            .map(|n| n.0)
            .map_err(|e| e.to_string())
    }

    fn create(&self, name: &str) -> Result<(), SpawnFailure> {
        match self.ops.create_named(RunnerName(name.to_string())) {
            Ok(_) => Ok(()),
            Err(e) => Err(SpawnFailure {
                retry_epoch: match e.kind {
                    FailureKind::RateLimited { reset_epoch } => Some(reset_epoch),
                    _ => None,
                },
                no_room: e.kind == FailureKind::NoRoom,
                message: e.message,
            }),
        }
    }

    fn remove_if_idle(&self, name: &str) -> Result<RunnerRemoval, String> {
        let owner = self.rt.identity.owner_value();
        let instance = self
            .rt
            .lxd
            .list_owned_instances(&owner)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|i| i.name == name);
        let github_id = instance
            .as_ref()
            .and_then(|i| i.config.get(RUNNER_ID_CONFIG_KEY))
            .and_then(|v| v.parse().ok());
        let target = crate::runner::remove::RemovalTarget {
            name,
            instance: instance.as_ref(),
            github_id,
        };
        match crate::runner::remove_runner(&*self.rt.lxd, &*self.rt.github, &owner, &target, false)
        {
            Ok(crate::runner::RemoveOutcome::KeptBusy) => Ok(RunnerRemoval::Busy),
            Ok(_) => Ok(RunnerRemoval::Removed),
            Err(e) => Err(e.to_string()),
        }
    }

    fn exists(&self, name: &str) -> Result<bool, String> {
        let owner = self.rt.identity.owner_value();
        let instances = self
            .rt
            .lxd
            .list_owned_instances(&owner)
            .map_err(|e| e.to_string())?;
        Ok(instances.iter().any(|i| i.name == name))
    }
}

/// The broker the settings name, through the transports (`reactive::open_queue`).
pub fn open_broker(
    settings: &WorkerSettings,
    clock: Arc<dyn Clock>,
) -> Result<Box<dyn JobQueue>, QueueError> {
    let uri = super::source::parse_mq_uri(&settings.mq_uri).map_err(|_| QueueError::Refused {
        host: settings.broker_host.clone(),
        detail: "the broker URI in the worker settings does not parse".into(),
    })?;
    super::open_queue(&uri, &settings.queue_name, clock)
}

#[cfg(test)]
mod runtime_tests {
    use super::*;
    use crate::network::debug_ssh::TmateServer;

    fn settings(debug_ssh: Vec<TmateServer>, aproxy: bool) -> WorkerSettings {
        let config = serde_json::json!({
            "path": "octo/hello",
            "token": "ghp_worker_runtime",
            "test-mode": "insecure",
            "github-url": "http://127.0.0.1:9",
            "experimental-use-aproxy": aproxy,
        });
        WorkerSettings {
            mq_uri: "redis://127.0.0.1:9/0".into(),
            broker_host: "127.0.0.1:9".into(),
            queue_name: "app".into(),
            unit_name: "app/0".into(),
            model_uuid: "uuid-1".into(),
            config: config.as_object().cloned().unwrap_or_default(),
            http_proxy: Some("http://proxy.internal:3128".into()),
            https_proxy: Some("http://proxy.internal:3128".into()),
            no_proxy: None,
            charm_dir: "/nonexistent".into(),
            lxd_project: None,
            binary: String::new(),
            debug_ssh,
            from_relation: false,
        }
    }

    /// Reactive runners see what pull runners see: the tmate servers the hook read from the
    /// debug-ssh relation, and no proxy variables under aproxy; and the worker uses the
    /// unit's own paths.
    #[test]
    fn a_workers_runtime_carries_the_units_debug_ssh_servers_paths_and_proxy_rule() {
        let server = TmateServer {
            host: "10.1.2.3".into(),
            port: 2222,
            rsa_fingerprint: "SHA256:rsa".into(),
            ed25519_fingerprint: "SHA256:ed".into(),
        };
        let Ok(rt) = runtime(&settings(vec![server.clone()], false), None) else {
            // Without `lxc` on PATH there is no runtime to look at; CI has it.
            assert!(which::which("lxc").is_err(), "lxc is there but no runtime");
            return;
        };
        assert_eq!(rt.environment.debug_ssh, vec![server]);
        assert!(rt.environment.http_proxy.is_some());
        assert_eq!(rt.paths.unit_folder(), Some("app-0"));
        let rt = runtime(&settings(Vec::new(), true), None).expect("runtime");
        assert!(rt.environment.debug_ssh.is_empty());
        assert_eq!(rt.environment.http_proxy, None);
        assert_eq!(rt.environment.https_proxy, None);
    }

    /// `virtual-machines` (and the other hook-only options) never reach the settings file:
    /// changing them leaves its bytes, so the workers' fingerprint, as they were.
    #[test]
    fn hook_only_options_stay_out_of_the_worker_settings() {
        let with = |vm: i64, labels: &str| {
            let mut config = settings(Vec::new(), false).config;
            config.insert("virtual-machines".into(), vm.into());
            config.insert("reconcile-interval".into(), (vm * 10).into());
            config.insert("labels".into(), labels.into());
            WorkerSettings {
                config: worker_config(config),
                ..settings(Vec::new(), false)
            }
            .to_bytes()
        };
        assert_eq!(with(3, "large"), with(5, "large"));
        assert_ne!(with(3, "large"), with(3, "small"));
        let text = String::from_utf8(with(3, "large")).unwrap();
        assert!(!text.contains("virtual-machines") && !text.contains("reconcile-interval"));
    }
}
