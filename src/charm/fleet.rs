//! [`CharmRunnerOps`]: the manager's [`RunnerOps`] over the real runner functions
//! (`runner::create_runner`, `runner::remove_runner`, `runner::check_health`) for this unit.
//!
//! Instances carry [`RUNNER_ID_CONFIG_KEY`] (the GitHub runner id) from their launch, so the
//! planner can tell "finished its job and left GitHub" from "never registered", and
//! [`SCOPE_CONFIG_KEY`] (the scope they were registered for), so that after a scope change
//! the old busy ones are kept until their job ends. To have the
//! id at launch, the JIT registration is made first and handed to `create_runner` through
//! two thin adapters ([`PreRegistered`], [`LaunchWithRunnerId`]); `create_runner` itself is
//! unchanged. A registration whose launch fails is deleted here; one left by a crash has no
//! instance and the next reconcile deletes it as an orphan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

#[path = "fleet_adapters.rs"]
mod adapters;

use super::runner_metrics::{JobReader, PreJob};
use super::runtime::Runtime;
use crate::github::download::tarball_path;
use crate::github::status::{disposition, Disposition};
use crate::github::{DeleteOutcome, GitHub, GitHubError, GitHubRunner};
use crate::host::admission::{MachineGate, CREATION_LOCK_WAIT};
use crate::host::metrics::{MetricEvent, MetricsLog, RunnerInstalled};
use crate::identity::RunnerName;
use crate::lxd::{ExecOutput, ExecSpec, Instance, InstanceState, InstanceType, Lxd, LxdError};
use crate::manager::ops::{FailureKind, Observation, OpError, RemoveOutcome, RunnerOps};
use crate::manager::planner::{BinaryState, Health, RemovalTarget};
use crate::manager::replacement::REPLACE_CONFIG_KEY;
use crate::runner::create::StepFailure;
use crate::runner::resources::{self, Resources};
use crate::runner::{self, files, CreateRequest, CreateTimeouts, JitSource};
use crate::secret::Secret;
use adapters::LaunchWithRunnerId;

/// Bound on one listener check.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// Bound on the one exec that reads when a job started.
/// The pre-job read prints at most `MAX_PRE_JOB_BYTES + 1` bytes and one line of error.
const PRE_JOB_OUTPUT_CAP: usize = 4096;
pub const JOB_STARTED_TIMEOUT: Duration = Duration::from_secs(20);

/// Exit code of [`job_started_script`] when the work directory does not exist.
const NO_WORK_DIR: i32 = 3;

/// The runner effects of this unit, for one hook.
pub struct CharmRunnerOps<'a> {
    rt: &'a Runtime,
    owner: String,
    /// Fingerprint of the scope the runtime's credentials serve.
    scope: String,
    labels: Vec<String>,
    instance_type: InstanceType,
    image_alias: &'static str,
    resources: Resources,
    tarball: PathBuf,
    timeouts: CreateTimeouts,
    /// Profiles are ensured once per hook, by the first creation that needs them.
    profiles: OnceLock<Result<Vec<String>, OpError>>,
    /// Instances as last observed, for the owner re-check on removal and the health state.
    seen: Mutex<BTreeMap<String, Instance>>,
    image_missing: AtomicBool,
}

impl<'a> CharmRunnerOps<'a> {
    pub fn new(rt: &'a Runtime) -> Self {
        let config = &rt.config;
        CharmRunnerOps {
            rt,
            owner: rt.identity.owner_value(),
            scope: scope_fingerprint(config),
            labels: resources::runner_labels(
                &rt.identity.app,
                config.base_image.alias(),
                &config.labels,
            ),
            instance_type: resources::instance_type(config.test_mode_insecure),
            image_alias: config.base_image.alias(),
            resources: Resources::from_config(config),
            tarball: tarball_path(&rt.paths),
            timeouts: CreateTimeouts::default(),
            profiles: OnceLock::new(),
            seen: Mutex::new(BTreeMap::new()),
            image_missing: AtomicBool::new(false),
        }
    }

    /// Override the creation bounds (tests with slow or scripted instances).
    pub fn with_timeouts(mut self, timeouts: CreateTimeouts) -> Self {
        self.timeouts = timeouts;
        self
    }

    /// A creation found no image under the base-image alias: the unit waits for the image.
    pub fn image_missing(&self) -> bool {
        self.image_missing.load(Ordering::SeqCst)
    }

    /// The labels runners register with.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    fn profiles(&self) -> Result<Vec<String>, OpError> {
        self.profiles
            .get_or_init(|| {
                resources::ensure_profiles(
                    &*self.rt.lxd,
                    &self.resources,
                    self.instance_type,
                    &self.rt.storage_pool,
                    &[],
                )
                .map_err(|e| {
                    let mut err = OpError::from(e);
                    err.message = format!("could not ensure the runner profiles: {}", err.message);
                    err
                })
            })
            .clone()
    }

    /// Drop resource profiles of earlier vm-* settings that no instance uses any more.
    pub fn prune_stale_profiles(&self) -> Vec<String> {
        resources::prune_profiles(&*self.rt.lxd, &self.resources.profile_name())
    }

    fn seen_instance(&self, name: &str) -> Option<Instance> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The `runner_installed` metric (creation to started listener command).
    /// And the `runner_creation_phases` metric of the same creation.
    fn issue_installed(&self, took: Duration, phases: &runner::CreationPhases) {
        let flavor = &self.rt.identity.app;
        let event = MetricEvent::RunnerInstalled(RunnerInstalled {
            flavor: flavor.clone(),
            duration: took.as_secs_f64(),
        });
        let log = MetricsLog::new(&self.rt.paths);
        let phases = crate::observability::creation_phases_event(flavor, phases);
        for event in [event, phases] {
            if let Err(e) = log.issue(&event, &*self.rt.clock) {
                tracing::warn!("{e}");
            }
        }
    }

    /// Creates a runner named `name` (reactive workers record the name before creating),
    /// registered through the REST API before launch so the instance carries its id.
    pub fn create_named(&self, name: RunnerName) -> Result<RunnerName, OpError> {
        let started = Instant::now();
        let profiles = self.profiles()?;
        let gate = self.gate();
        // A full machine is told before GitHub is asked for a registration.
        room(&gate)?;
        let jit = self
            .rt
            .github
            .generate_jit_config(name.as_str(), &self.labels)?;
        let runner_id = jit.runner.id;
        let registration = Registration {
            runner_id,
            scale_set_id: None,
            jit: &jit.encoded_jit_config,
        };
        let created = self.launch_registered(&name, &registration, &profiles, &gate, started);
        created.map_err(|mut op_error| {
            if let Some(problem) = delete_registration(&*self.rt.github, runner_id) {
                op_error
                    .message
                    .push_str(&format!("; cleanup also failed: {problem}"));
            }
            op_error
        })
    }

    /// Creates runner `name` from a JIT config its caller registered (a scale set's
    /// `generatejitconfig`, registration `runner_id`), with everything a pull runner gets:
    /// profiles, admission, owner key, MAC, environment, the runner id on the instance. A
    /// failed creation leaves no instance; the registration is the caller's to remove.
    pub fn create_named_with_jit(
        &self,
        name: RunnerName,
        scale_set_id: u64,
        runner_id: u64,
        jit: &Secret,
    ) -> Result<RunnerName, OpError> {
        let started = Instant::now();
        let profiles = self.profiles()?;
        let gate = self.gate();
        room(&gate)?;
        let registration = Registration {
            runner_id,
            scale_set_id: Some(scale_set_id),
            jit,
        };
        self.launch_registered(&name, &registration, &profiles, &gate, started)
    }

    fn gate(&self) -> MachineGate<'_> {
        MachineGate {
            lxd: &*self.rt.lxd,
            paths: &self.rt.paths,
            pool: &self.rt.storage_pool,
            size: self.resources.admission_size(),
            clock: &*self.rt.clock,
            wait: CREATION_LOCK_WAIT,
        }
    }

    /// The creation proper, from a registration made before it (the instance carries its
    /// id from launch); on failure no instance is left.
    fn launch_registered(
        &self,
        name: &RunnerName,
        registration: &Registration<'_>,
        profiles: &[String],
        gate: &MachineGate<'_>,
        started: Instant,
    ) -> Result<RunnerName, OpError> {
        let Registration {
            runner_id,
            scale_set_id,
            jit,
        } = *registration;
        let lxd = LaunchWithRunnerId {
            inner: &*self.rt.lxd,
            runner_id,
            scale_set_id,
            scope: &self.scope,
        };
        let request = CreateRequest {
            name,
            owner_value: &self.owner,
            image_alias: self.image_alias,
            instance_type: self.instance_type,
            profiles,
            labels: &self.labels,
            runner_tarball: &self.tarball,
            environment: &self.rt.environment,
            timeouts: self.timeouts,
            launch_gate: gate,
            registration: JitSource::Given { runner_id, jit },
        };
        match runner::create_runner(&lxd, &*self.rt.github, &request) {
            Ok(created) => {
                self.issue_installed(started.elapsed(), &created.phases);
                Ok(created.name)
            }
            Err(err) => Err(self.create_error(err)),
        }
    }

    fn create_error(&self, err: runner::CreateError) -> OpError {
        let kind = match &*err.cause {
            StepFailure::GitHub(e) => github_failure_kind(e),
            StepFailure::Lxd(LxdError::LxcMissing) => FailureKind::NeedsOperator,
            StepFailure::NoRoom(_) => FailureKind::NoRoom,
            StepFailure::Lxd(LxdError::ImageNotFound(_)) => {
                self.image_missing.store(true, Ordering::SeqCst);
                FailureKind::Transient
            }
            _ => FailureKind::Transient,
        };
        OpError {
            kind,
            message: err.to_string(),
        }
    }
}

/// The runner binary as the cache holds it: ready when the verified tarball is there,
/// current since its modification time (the download renames it into place, so instances
/// created before that run an older binary).
pub fn binary_state(tarball: &Path) -> BinaryState {
    let mtime = std::fs::metadata(tarball).and_then(|m| m.modified()).ok();
    BinaryState {
        ready: mtime.is_some(),
        updated_at_epoch: mtime
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
    }
}

/// The fingerprint of the scope `config` registers runners in.
pub fn scope_fingerprint(config: &crate::config::CharmConfig) -> String {
    crate::juju::state::ActedScope::of(config).fingerprint()
}

/// The runner binary state of `rt`'s host: see [`binary_state`].
pub fn host_binary_state(rt: &Runtime) -> BinaryState {
    binary_state(&tarball_path(&rt.paths))
}

/// A registration made before launch: what the instance is started with and carries.
#[derive(Clone, Copy)]
struct Registration<'a> {
    runner_id: u64,
    /// The scale set it belongs to (scale-set runners only).
    scale_set_id: Option<u64>,
    jit: &'a Secret,
}

/// Admission's answer before anything is registered: a full machine is `NoRoom`.
fn room(gate: &MachineGate<'_>) -> Result<(), OpError> {
    match gate.room() {
        Err(StepFailure::NoRoom(message)) => Err(OpError {
            kind: FailureKind::NoRoom,
            message,
        }),
        _ => Ok(()),
    }
}

/// How a GitHub failure counts for status (the same split as `github::status`).
fn github_failure_kind(e: &GitHubError) -> FailureKind {
    match disposition(e) {
        Disposition::Blocked(_) => FailureKind::NeedsOperator,
        Disposition::RateLimited { reset_epoch } => FailureKind::RateLimited { reset_epoch },
        Disposition::Transient(_) => FailureKind::Transient,
    }
}

impl RunnerOps for CharmRunnerOps<'_> {
    fn machine(&self) -> Option<crate::manager::admission::Machine> {
        crate::host::admission::observe_machine(
            &self.rt.paths,
            &*self.rt.lxd,
            &self.rt.storage_pool,
        )
        .inspect_err(|e| tracing::warn!("could not list the machine's instances: {e}"))
        .ok()
    }

    fn observe(&self) -> Result<Observation, OpError> {
        let instances = self.rt.lxd.list_owned_instances(&self.owner)?;
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = instances
            .iter()
            .map(|i| (i.name.clone(), i.clone()))
            .collect();
        let github = self.rt.github.list_runners().map_err(OpError::from);
        Ok(Observation { instances, github })
    }

    fn create(&self) -> Result<RunnerName, OpError> {
        let name = self
            .rt
            .identity
            .new_runner_name()
            .map_err(|e| OpError::transient(e.to_string()))?;
        self.create_named(name)
    }

    fn remove(&self, target: &RemovalTarget, force: bool) -> Result<RemoveOutcome, OpError> {
        let instance = if target.has_instance {
            match self.seen_instance(target.name.as_str()) {
                Some(i) => Some(i),
                None => self
                    .rt
                    .lxd
                    .list_owned_instances(&self.owner)?
                    .into_iter()
                    .find(|i| i.name == target.name.as_str()),
            }
        } else {
            None
        };
        let runner_target = runner::remove::RemovalTarget {
            name: target.name.as_str(),
            instance: instance.as_ref(),
            github_id: target.github_id,
        };
        match runner::remove_runner(
            &*self.rt.lxd,
            &*self.rt.github,
            &self.owner,
            &runner_target,
            force,
        ) {
            Ok(runner::RemoveOutcome::Removed) => Ok(RemoveOutcome::Removed),
            Ok(runner::RemoveOutcome::KeptBusy) => Ok(RemoveOutcome::KeptBusy),
            Ok(runner::RemoveOutcome::RemovedRegistrationPending) => {
                Ok(RemoveOutcome::RegistrationLeft {
                    reason: "GitHub still counts it busy".to_string(),
                })
            }
            Err(runner::RemoveError::GitHub {
                instance_removed: true,
                source,
                ..
            }) if force => Ok(RemoveOutcome::RegistrationLeft {
                reason: source.to_string(),
            }),
            Err(runner::RemoveError::GitHub { source, .. }) => Err(source.into()),
            Err(runner::RemoveError::Lxd { source, .. }) => Err(source.into()),
            Err(e @ runner::RemoveError::NotOwned { .. }) => {
                Err(OpError::needs_operator(e.to_string()))
            }
        }
    }

    fn registration(&self, id: u64) -> Result<Option<GitHubRunner>, OpError> {
        Ok(self.rt.github.get_runner(id)?)
    }

    fn health(&self, instance: &str) -> Health {
        let instance = self.seen_instance(instance).unwrap_or_else(|| Instance {
            name: instance.to_string(),
            state: InstanceState::Running,
            instance_type: self.instance_type,
            created_at_epoch: 0,
            config: BTreeMap::new(),
            profiles: vec![],
        });
        planner_health(&runner::check_health(
            &*self.rt.lxd,
            &instance,
            HEALTH_TIMEOUT,
        ))
    }

    fn job_started_at(&self, name: &RunnerName) -> Result<Option<u64>, OpError> {
        let spec = ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), job_started_script()],
            timeout: JOB_STARTED_TIMEOUT,
            ..ExecSpec::default()
        };
        match self.rt.lxd.exec(name.as_str(), &spec) {
            Ok(out) => parse_job_started(&out).map_err(OpError::transient),
            // The instance is gone (its job ended and it was deleted): no job runs in it.
            Err(LxdError::InstanceNotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn mark_for_replacement(&self, name: &RunnerName, scope: &str) -> Result<(), OpError> {
        Ok(self
            .rt
            .lxd
            .set_instance_config(name.as_str(), REPLACE_CONFIG_KEY, scope)?)
    }
}

/// The runner_start data of a busy runner: one exec (a capped read of the file its pre-job hook
/// wrote), as uid 1000 so nothing runs as root for it. A stopped job's conclusion: one
/// listing of its run's jobs.
impl JobReader for CharmRunnerOps<'_> {
    fn read_pre_job(&self, name: &RunnerName) -> Option<PreJob> {
        match fetch_pre_job(&*self.rt.lxd, name.as_str()) {
            Ok(pre) => Some(pre),
            Err(e) => {
                tracing::warn!(runner = %name, "no runner_start metric: {e}");
                None
            }
        }
    }

    fn created_at(&self, name: &RunnerName) -> Option<u64> {
        self.seen_instance(name.as_str())
            .map(|i| i.created_at_epoch)
    }

    fn job_conclusion(&self, repo: &str, run_id: u64, name: &RunnerName) -> Option<String> {
        if !self.rt.config.path.contains_repository(repo) {
            tracing::warn!(
                runner = %name,
                "no job_conclusion in runner_stop: the runner reported repository {repo:?}, \
                 outside path {}",
                self.rt.config.path.display()
            );
            return None;
        }
        match self.rt.github.list_run_jobs(repo, run_id) {
            Ok(jobs) => jobs
                .into_iter()
                .find(|j| j.runner_name.as_deref() == Some(name.as_str()))
                .and_then(|j| j.conclusion),
            Err(e) => {
                tracing::warn!(runner = %name, "no job_conclusion in runner_stop: {e}");
                None
            }
        }
    }
}

/// The runner's pre-job.json, read with one bounded exec as uid 1000: at most
/// `MAX_PRE_JOB_BYTES + 1` bytes of a regular file, never through a symlink; the error says
/// what the runner served instead.
pub fn fetch_pre_job(lxd: &dyn Lxd, instance: &str) -> Result<PreJob, String> {
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), files::read_pre_job_script()],
        uid: runner::RUNNER_UID,
        gid: runner::RUNNER_UID,
        timeout: JOB_STARTED_TIMEOUT,
        output_cap: PRE_JOB_OUTPUT_CAP,
        ..ExecSpec::default()
    };
    let out = lxd.exec(instance, &spec).map_err(|e| e.to_string())?;
    parse_pre_job(&out)
}

/// What reading `pre-job.json` printed. Over 1024 bytes is refused, as in the Python charm
/// (the job could write anything there).
pub fn parse_pre_job(out: &ExecOutput) -> Result<PreJob, String> {
    const MAX_PRE_JOB_BYTES: usize = files::MAX_PRE_JOB_BYTES;
    if out.exit_code != 0 {
        return Err(format!(
            "reading pre-job.json exited with {}: {}",
            out.exit_code,
            out.stderr.trim()
        ));
    }
    if out.stdout.len() > MAX_PRE_JOB_BYTES {
        return Err(format!(
            "pre-job.json holds {} bytes, over {MAX_PRE_JOB_BYTES}",
            out.stdout.len()
        ));
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("pre-job.json is not valid: {e}"))
}

/// The manager's view of a listener check: only a definite "not running" is grounds for
/// removal; a runner still starting is left alone like an unknown one.
pub fn planner_health(health: &runner::Health) -> Health {
    match health {
        runner::Health::Healthy => Health::Running,
        runner::Health::Unhealthy(_) => Health::NotRunning,
        runner::Health::Starting | runner::Health::Unknown(_) => Health::Unknown,
    }
}

/// One POSIX sh exec: prints the birth time (or, where the filesystem or `stat` cannot tell
/// it, the modification time) of the runner's `_work` directory, which appears when the
/// first job starts; exits [`NO_WORK_DIR`] when there is none.
pub fn job_started_script() -> String {
    format!(
        "d={dir}/_work; [ -d \"$d\" ] || exit {NO_WORK_DIR}; \
         b=$(stat -c %W \"$d\" 2>/dev/null); \
         case \"$b\" in ''|*[!0-9]*|0) stat -c %Y \"$d\";; *) echo \"$b\";; esac",
        dir = files::RUNNER_DIR
    )
}

/// What [`job_started_script`] printed.
pub fn parse_job_started(out: &ExecOutput) -> Result<Option<u64>, String> {
    match out.exit_code {
        0 => out
            .stdout
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("unexpected job start time {:?}", out.stdout.trim())),
        NO_WORK_DIR => Ok(None),
        code => Err(format!(
            "reading the job start time exited with {code}: {}",
            out.stderr.trim()
        )),
    }
}

/// Deletes a registration this module made; the problem when it may still be there.
fn delete_registration(github: &dyn GitHub, id: u64) -> Option<String> {
    match github.delete_runner(id) {
        Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => None,
        Ok(DeleteOutcome::Busy) => Some(format!("registration {id} is busy and was kept")),
        Err(e) => Some(format!("registration {id} was not deleted: {e}")),
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
