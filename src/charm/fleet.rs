//! [`CharmRunnerOps`]: the manager's [`RunnerOps`] over the real runner functions
//! (`runner::create_runner`, `runner::remove_runner`, `runner::check_health`) for this unit.
//!
//! Instances carry [`RUNNER_ID_CONFIG_KEY`] (the GitHub runner id) from their launch, so the
//! planner can tell "finished its job and left GitHub" from "never registered". To have the
//! id at launch, the JIT registration is made first and handed to `create_runner` through
//! two thin adapters ([`PreRegistered`], [`LaunchWithRunnerId`]); `create_runner` itself is
//! unchanged. A registration whose launch fails is deleted here; one left by a crash has no
//! instance and the next reconcile deletes it as an orphan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::runner_metrics::{JobReader, PreJob};
use super::runtime::Runtime;
use crate::github::download::tarball_path;
use crate::github::status::{disposition, Disposition};
use crate::github::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubRunner, JitConfig, JobRef, RunnerApplication,
    WorkflowJob,
};
use crate::host::metrics::{MetricEvent, MetricsLog, RunnerInstalled};
use crate::identity::RunnerName;
use crate::lxd::{
    ExecOutput, ExecSpec, Instance, InstanceState, InstanceType, LaunchSpec, Lxd, LxdError,
    ProfileSpec, ProfileUse, PushSpec, ServerInfo,
};
use crate::manager::ops::{FailureKind, Observation, OpError, RemoveOutcome, RunnerOps};
use crate::manager::planner::{BinaryState, Health, RemovalTarget, RUNNER_ID_CONFIG_KEY};
use crate::runner::create::StepFailure;
use crate::runner::resources::{self, Resources};
use crate::runner::{self, files, CreateRequest, CreateStep, CreateTimeouts};
use crate::secret::Secret;

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

    /// Creates a runner named `name` (reactive workers record the name before creating).
    pub fn create_named(&self, name: RunnerName) -> Result<RunnerName, OpError> {
        let started = Instant::now();
        let profiles = self.profiles()?;
        let jit = self
            .rt
            .github
            .generate_jit_config(name.as_str(), &self.labels)?;
        let runner_id = jit.runner.id;
        let lxd = LaunchWithRunnerId {
            inner: &*self.rt.lxd,
            runner_id,
        };
        let github = PreRegistered {
            inner: &*self.rt.github,
            jit,
        };
        let request = CreateRequest {
            name: &name,
            owner_value: &self.owner,
            image_alias: self.image_alias,
            instance_type: self.instance_type,
            profiles: &profiles,
            labels: &self.labels,
            runner_tarball: &self.tarball,
            environment: &self.rt.environment,
            timeouts: self.timeouts,
        };
        match runner::create_runner(&lxd, &github, &request) {
            Ok(created) => {
                self.issue_installed(started.elapsed(), &created.phases);
                Ok(created.name)
            }
            Err(err) => {
                let registered_in_pipeline = !matches!(
                    err.step,
                    CreateStep::Launch
                        | CreateStep::WaitReady
                        | CreateStep::PushTarball
                        | CreateStep::ExtractTarball
                );
                let mut op_error = self.create_error(err);
                if !registered_in_pipeline {
                    // create_runner cleans up only what it registered itself.
                    if let Some(problem) = delete_registration(&*self.rt.github, runner_id) {
                        op_error
                            .message
                            .push_str(&format!("; cleanup also failed: {problem}"));
                    }
                }
                Err(op_error)
            }
        }
    }

    fn create_error(&self, err: runner::CreateError) -> OpError {
        let kind = match &*err.cause {
            StepFailure::GitHub(e) => github_failure_kind(e),
            StepFailure::Lxd(LxdError::LxcMissing) => FailureKind::NeedsOperator,
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

/// The runner binary state of `rt`'s host: see [`binary_state`].
pub fn host_binary_state(rt: &Runtime) -> BinaryState {
    binary_state(&tarball_path(&rt.paths))
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
    fn host_capacity(&self) -> crate::manager::admission::HostCapacity {
        crate::host::capacity::gather(&self.rt.paths, &*self.rt.lxd, &self.rt.storage_pool)
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

/// Launches with the runner id in the instance config; everything else passes through.
struct LaunchWithRunnerId<'l> {
    inner: &'l dyn Lxd,
    runner_id: u64,
}

impl Lxd for LaunchWithRunnerId<'_> {
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError> {
        self.inner.list_owned_instances(owner_value)
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
        let mut spec = spec.clone();
        spec.config
            .insert(RUNNER_ID_CONFIG_KEY.to_string(), self.runner_id.to_string());
        self.inner.launch(&spec)
    }
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        self.inner.exec(instance, spec)
    }
    fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
        self.inner.push_file(instance, spec)
    }
    fn stop(&self, instance: &str, force: bool, timeout: Duration) -> Result<(), LxdError> {
        self.inner.stop(instance, force, timeout)
    }
    fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError> {
        self.inner.delete(instance, force)
    }
    fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
        self.inner.image_exists(alias)
    }
    fn ensure_storage_pool(&self, name: &str, driver: &str, source: &str) -> Result<(), LxdError> {
        self.inner.ensure_storage_pool(name, driver, source)
    }
    fn delete_storage_pool(&self, name: &str) -> Result<(), LxdError> {
        self.inner.delete_storage_pool(name)
    }
    fn storage_pool_free_bytes(&self, name: &str) -> Result<Option<u64>, LxdError> {
        self.inner.storage_pool_free_bytes(name)
    }
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        self.inner.ensure_profile(spec)
    }
    fn list_profiles(&self) -> Result<Vec<ProfileUse>, LxdError> {
        self.inner.list_profiles()
    }
    fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
        self.inner.delete_profile(name)
    }
    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        self.inner.server_info()
    }
    fn project(&self) -> Option<&str> {
        self.inner.project()
    }
}

/// Answers `generate_jit_config` with the registration made before launch; everything else
/// passes through.
struct PreRegistered<'g> {
    inner: &'g dyn GitHub,
    jit: JitConfig,
}

impl GitHub for PreRegistered<'_> {
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        self.inner.list_runners()
    }
    fn get_runner(&self, id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
        self.inner.get_runner(id)
    }
    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
        self.inner.delete_runner(id)
    }
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        self.inner.registration_token()
    }
    fn remove_token(&self) -> Result<Secret, GitHubError> {
        self.inner.remove_token()
    }
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError> {
        if name == self.jit.runner.name {
            Ok(self.jit.clone())
        } else {
            self.inner.generate_jit_config(name, labels)
        }
    }
    fn runner_application(&self, arch: Arch) -> Result<RunnerApplication, GitHubError> {
        self.inner.runner_application(arch)
    }
    fn get_job(&self, job: &JobRef) -> Result<WorkflowJob, GitHubError> {
        self.inner.get_job(job)
    }
    fn list_run_jobs(&self, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError> {
        self.inner.list_run_jobs(repo, run_id)
    }
    fn repository_visible(&self, owner: &str, repo: &str) -> Result<bool, GitHubError> {
        self.inner.repository_visible(owner, repo)
    }
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
