//! Creating one runner: launch -> wait until exec answers -> push and extract the runner ->
//! JIT registration -> push environment and start script -> start detached.
//! Any failure removes the instance and the registration this creation made (a registration
//! the caller made and handed in, [`JitSource::Given`], stays the caller's to remove).

use super::files::{self, RenderError, RunnerEnvironment};
use super::RUNNER_UID;
use crate::github::{DeleteOutcome, GitHub, GitHubError};
use crate::identity::{RunnerName, OWNER_CONFIG_KEY};
use crate::lxd::{ExecSpec, InstanceType, LaunchSpec, Lxd, LxdError, PushSource, PushSpec};
use crate::secret::Secret;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bounds on the waits of one creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreateTimeouts {
    /// How long the instance may take to answer exec (a VM boots its agent first).
    pub ready_deadline: Duration,
    /// First pause between readiness probes; doubles up to `max_backoff`.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Bound on each readiness probe (`/bin/true`): a probe that hangs (an exec racing the
    /// container's init) is retried instead of eating the whole `exec_timeout`.
    pub probe_timeout: Duration,
    /// Bound on each other exec (extraction, start).
    pub exec_timeout: Duration,
}

impl Default for CreateTimeouts {
    fn default() -> Self {
        CreateTimeouts {
            ready_deadline: Duration::from_secs(300),
            first_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(10),
            exec_timeout: Duration::from_secs(120),
        }
    }
}

/// The next pause of the readiness wait: double, capped, never past the deadline.
pub fn next_backoff(current: Duration, max: Duration, remaining: Duration) -> Duration {
    (current * 2).min(max).min(remaining)
}

/// Everything one creation needs.
#[derive(Clone)]
pub struct CreateRequest<'a> {
    pub name: &'a RunnerName,
    /// Value of the owner key (`<model-uuid>/<unit>`) set on the instance.
    pub owner_value: &'a str,
    pub image_alias: &'a str,
    pub instance_type: InstanceType,
    /// In order: `default`, the charm's profiles, extra (see `resources::launch_profiles`).
    pub profiles: &'a [String],
    pub labels: &'a [String],
    /// The verified runner tarball in the host cache; pushed as is.
    pub runner_tarball: &'a Path,
    pub environment: &'a RunnerEnvironment,
    pub timeouts: CreateTimeouts,
    /// Admission around the launch (`host::admission::MachineGate`).
    pub launch_gate: &'a dyn LaunchGate,
    /// Where the runner's JIT config comes from.
    pub registration: JitSource<'a>,
}

/// Where a creation's JIT config comes from: the one runner engine serves pull and reactive
/// runners (REST registrations) and scale-set runners (the scale set's `generatejitconfig`).
#[derive(Clone, Copy)]
pub enum JitSource<'a> {
    /// Registered by this creation through [`GitHub::generate_jit_config`] with the
    /// request's labels, and deleted by it if the creation fails.
    Generate,
    /// Registered by the caller before the creation: used as is, never deleted here (the
    /// caller removes it if the creation fails, through the API that made it).
    Given { runner_id: u64, jit: &'a Secret },
}

impl fmt::Debug for JitSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitSource::Generate => f.write_str("Generate"),
            // The JIT config is a credential: never printed.
            JitSource::Given { runner_id, .. } => f
                .debug_struct("Given")
                .field("runner_id", runner_id)
                .finish_non_exhaustive(),
        }
    }
}

/// What a creation's launch goes through: it launches only when the machine has room for
/// one more runner, and may refuse.
pub trait LaunchGate: Sync {
    /// Calls `launch` when there is room; its answer, or why it was not called.
    fn launch_admitted(
        &self,
        launch: &mut dyn FnMut() -> Result<(), LxdError>,
    ) -> Result<(), StepFailure>;
}

/// No admission: for callers that are alone on their machine by construction (tests and
/// benchmarks in an LXD project of their own).
pub struct Ungated;

impl LaunchGate for Ungated {
    fn launch_admitted(
        &self,
        launch: &mut dyn FnMut() -> Result<(), LxdError>,
    ) -> Result<(), StepFailure> {
        launch().map_err(StepFailure::from)
    }
}

/// A runner that is started and registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedRunner {
    pub name: RunnerName,
    /// The GitHub registration's id (for removal).
    pub github_id: u64,
    pub instance_type: InstanceType,
    /// Where the creation spent its time (the `runner_creation_phases` metric).
    pub phases: CreationPhases,
}

/// Wall time of each phase of one creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CreationPhases {
    pub launch: Duration,
    pub first_exec: Duration,
    pub files_pushed: Duration,
    pub listener_started: Duration,
}

/// The creation steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateStep {
    Launch,
    WaitReady,
    PushTarball,
    ExtractTarball,
    RegisterJit,
    PushStartScript,
    StartRunner,
}

impl fmt::Display for CreateStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CreateStep::Launch => "launch the instance",
            CreateStep::WaitReady => "wait until the instance answers exec",
            CreateStep::PushTarball => "push the runner tarball",
            CreateStep::ExtractTarball => "extract the runner tarball and write its environment",
            CreateStep::RegisterJit => "get a JIT config from GitHub",
            CreateStep::PushStartScript => "push the start script",
            CreateStep::StartRunner => "start the runner",
        })
    }
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepFailure {
    #[error(transparent)]
    Lxd(#[from] LxdError),
    #[error(transparent)]
    GitHub(#[from] GitHubError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("command exited with {exit_code}: {stderr}")]
    Command { exit_code: i32, stderr: String },
    #[error("no answer to exec after {waited_secs}s (last: {last})")]
    NotReady { waited_secs: u64, last: String },
    /// Admission refused the launch: the machine holds no more runners of this size now.
    #[error("{0}")]
    NoRoom(String),
    /// Admission could not tell (its lock or the machine's listing failed): nothing launched.
    #[error("{0}")]
    Admission(String),
}

/// What cleaning up after a failed creation could not undo (empty when all went).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CleanupReport {
    pub problems: Vec<String>,
}

impl fmt::Display for CleanupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.problems.is_empty() {
            Ok(())
        } else {
            write!(f, "; cleanup also failed: {}", self.problems.join("; "))
        }
    }
}

/// A creation that failed at `step`; the instance and registration were removed (or
/// `cleanup` says what could not be).
#[derive(Debug, thiserror::Error)]
#[error("creating runner {name} failed at step '{step}': {cause}{cleanup}")]
pub struct CreateError {
    pub name: String,
    pub step: CreateStep,
    #[source]
    pub cause: Box<StepFailure>,
    pub cleanup: CleanupReport,
}

/// Creates one runner; on failure nothing of it survives (see [`CreateError`]).
pub fn create_runner(
    lxd: &dyn Lxd,
    github: &dyn GitHub,
    req: &CreateRequest<'_>,
) -> Result<CreatedRunner, CreateError> {
    let mut registration: Option<u64> = None;
    let mut phases = CreationPhases::default();
    match run_steps(lxd, github, req, &mut registration, &mut phases) {
        Ok(github_id) => Ok(CreatedRunner {
            name: req.name.clone(),
            github_id,
            instance_type: req.instance_type,
            phases,
        }),
        Err((step, cause)) => {
            tracing::warn!(runner = %req.name, %step, error = %cause, "runner creation failed; cleaning up");
            let cleanup = clean_up(lxd, github, req, step, registration);
            Err(CreateError {
                name: req.name.to_string(),
                step,
                cause: Box::new(cause),
                cleanup,
            })
        }
    }
}

type StepResult<T> = Result<T, (CreateStep, StepFailure)>;

fn at<T, E: Into<StepFailure>>(step: CreateStep, r: Result<T, E>) -> StepResult<T> {
    r.map_err(|e| (step, e.into()))
}

fn run_steps(
    lxd: &dyn Lxd,
    github: &dyn GitHub,
    req: &CreateRequest<'_>,
    registration: &mut Option<u64>,
    phases: &mut CreationPhases,
) -> StepResult<u64> {
    let mut mark = Instant::now();
    let mut lap = || {
        let now = Instant::now();
        let took = now - mark;
        mark = now;
        took
    };
    let name = req.name.as_str();
    let launch = LaunchSpec {
        name: name.to_string(),
        image_alias: req.image_alias.to_string(),
        instance_type: req.instance_type,
        profiles: req.profiles.to_vec(),
        // The MAC tells the unit's runners apart on the shared bridge (aproxy's redirect).
        config: [
            (OWNER_CONFIG_KEY.to_string(), req.owner_value.to_string()),
            (
                crate::network::RUNNER_HWADDR_KEY.to_string(),
                crate::network::runner_hwaddr(req.owner_value, name),
            ),
        ]
        .into_iter()
        .collect(),
        ephemeral: true,
    };
    req.launch_gate
        .launch_admitted(&mut || lxd.launch(&launch))
        .map_err(|e| (CreateStep::Launch, e))?;
    phases.launch = lap();
    at(
        CreateStep::WaitReady,
        wait_until_exec_answers(lxd, name, &req.timeouts),
    )?;
    phases.first_exec = lap();

    at(
        CreateStep::PushTarball,
        lxd.push_file(
            name,
            &PushSpec {
                source: PushSource::File(req.runner_tarball.to_path_buf()),
                target: files::TARBALL_TARGET.to_string(),
                mode: 0o600,
                uid: RUNNER_UID,
                gid: RUNNER_UID,
            },
        ),
    )?;
    let bundle = at(
        CreateStep::ExtractTarball,
        files::render_config_bundle(req.environment, name),
    )?;
    exec_ok(
        lxd,
        name,
        0,
        &files::extract_command(),
        Some(bundle),
        req.timeouts.exec_timeout,
    )
    .map_err(|e| (CreateStep::ExtractTarball, e))?;

    let generated;
    let (runner_id, jit) = match req.registration {
        JitSource::Generate => {
            generated = at(
                CreateStep::RegisterJit,
                github.generate_jit_config(name, req.labels),
            )?;
            *registration = Some(generated.runner.id);
            (generated.runner.id, &generated.encoded_jit_config)
        }
        JitSource::Given { runner_id, jit } => (runner_id, jit),
    };

    let start_script = at(
        CreateStep::PushStartScript,
        files::render_start_script(jit, req.environment),
    )?;
    // Root-only: the job runs as uid 1000 and must not read the JIT config.
    let spec = PushSpec {
        source: PushSource::Bytes(start_script.expose().as_bytes().to_vec()),
        target: files::START_SCRIPT.to_string(),
        mode: 0o700,
        uid: 0,
        gid: 0,
    };
    at(CreateStep::PushStartScript, lxd.push_file(name, &spec))?;
    phases.files_pushed = lap();
    exec_ok(
        lxd,
        name,
        0,
        &files::start_command(),
        None,
        req.timeouts.exec_timeout,
    )
    .map_err(|e| (CreateStep::StartRunner, e))?;
    phases.listener_started = lap();
    Ok(runner_id)
}

fn exec_ok(
    lxd: &dyn Lxd,
    name: &str,
    uid: u32,
    script: &str,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(), StepFailure> {
    let spec = ExecSpec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        uid,
        gid: uid,
        stdin,
        timeout,
        ..ExecSpec::default()
    };
    let out = lxd.exec(name, &spec)?;
    if out.exit_code == 0 {
        Ok(())
    } else {
        Err(StepFailure::Command {
            exit_code: out.exit_code,
            stderr: out.stderr.trim().to_string(),
        })
    }
}

/// Probes with `/bin/true` until it exits 0, pausing with doubling backoff, bounded by
/// `ready_deadline`. A vanished instance ends the wait at once.
fn wait_until_exec_answers(
    lxd: &dyn Lxd,
    name: &str,
    t: &CreateTimeouts,
) -> Result<(), StepFailure> {
    let started = Instant::now();
    let deadline = started + t.ready_deadline;
    let mut pause = t.first_backoff;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let probe = ExecSpec {
            argv: vec!["/bin/true".into()],
            timeout: t.probe_timeout.min(remaining.max(Duration::from_secs(1))),
            ..ExecSpec::default()
        };
        let last = match lxd.exec(name, &probe) {
            Ok(out) if out.exit_code == 0 => return Ok(()),
            Ok(out) => format!("probe exited with {}: {}", out.exit_code, out.stderr.trim()),
            Err(e @ LxdError::InstanceNotFound(_)) => return Err(e.into()),
            Err(e) => e.to_string(),
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(StepFailure::NotReady {
                waited_secs: started.elapsed().as_secs(),
                last,
            });
        }
        tracing::debug!(runner = name, %last, "instance not answering exec yet");
        std::thread::sleep(pause.min(remaining));
        pause = next_backoff(pause, t.max_backoff, remaining);
    }
}

fn clean_up(
    lxd: &dyn Lxd,
    github: &dyn GitHub,
    req: &CreateRequest<'_>,
    failed_at: CreateStep,
    registration: Option<u64>,
) -> CleanupReport {
    let mut report = CleanupReport::default();
    let name = req.name.as_str();
    // A failed launch may have left a half-made instance, or failed because an instance of
    // that name already exists: delete only one that carries our owner key.
    let ours = if failed_at == CreateStep::Launch {
        match lxd.list_owned_instances(req.owner_value) {
            Ok(owned) => owned.iter().any(|i| i.name == name),
            Err(e) => {
                report.problems.push(format!(
                    "could not check whether instance {name} was created: {e}"
                ));
                false
            }
        }
    } else {
        true
    };
    if ours {
        if let Err(e) = lxd.delete(name, true) {
            report
                .problems
                .push(format!("instance {name} was not deleted: {e}"));
        }
    }
    if let Some(id) = registration {
        match github.delete_runner(id) {
            Ok(DeleteOutcome::Deleted | DeleteOutcome::AlreadyGone) => {}
            Ok(DeleteOutcome::Busy) => report
                .problems
                .push(format!("registration {id} is busy and was kept")),
            Err(e) => report
                .problems
                .push(format!("registration {id} was not deleted: {e}")),
        }
    }
    report
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::github::{
        Arch, GitHubRunner, JitConfig, JobRef, RunnerApplication, RunnerOnline, WorkflowJob,
    };
    use crate::lxd::{ExecOutput, Instance, ProfileSpec, ServerInfo};
    use crate::secret::Secret;
    use std::sync::Mutex;

    /// Records every call; fails the calls named in `fail` (by operation and target).
    #[derive(Default)]
    pub(crate) struct ScriptedLxd {
        pub calls: Mutex<Vec<String>>,
        pub fail: Vec<&'static str>,
        /// How many readiness probes fail before one succeeds.
        pub not_ready_probes: Mutex<u32>,
        pub exec_exit: Mutex<Vec<(String, i32)>>,
        /// Launch creates the instance, then fails (as when it cannot start).
        pub half_made_launch: bool,
        /// (name, owner key) of launched instances, for `list_owned_instances`.
        pub launched: Mutex<Vec<(String, String)>>,
        /// The timeout of every exec, with its argv.
        pub exec_timeouts: Mutex<Vec<(String, Duration)>>,
    }

    impl ScriptedLxd {
        fn record(&self, call: String) -> Result<(), LxdError> {
            let fails = self.fail.iter().any(|f| call.starts_with(f));
            self.calls.lock().unwrap().push(call.clone());
            if fails {
                // Like LxcCli: the operation names the target, never the pushed contents.
                let operation = call.split(" <").next().unwrap_or_default().to_string();
                Err(LxdError::Command {
                    operation,
                    message: "injected".into(),
                })
            } else {
                Ok(())
            }
        }
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl Lxd for ScriptedLxd {
        fn list_machine_instances(&self) -> Result<Vec<crate::lxd::MachineInstance>, LxdError> {
            self.record("list machine instances".into())?;
            Ok(Vec::new())
        }
        fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError> {
            self.record("list project instances".into())?;
            Ok(Vec::new())
        }
        fn list_owned_instances(&self, owner: &str) -> Result<Vec<Instance>, LxdError> {
            self.record(format!("list {owner}"))?;
            let launched = self.launched.lock().unwrap();
            Ok(launched
                .iter()
                .filter(|(_, o)| o == owner)
                .map(|(name, _)| Instance {
                    name: name.clone(),
                    state: crate::lxd::InstanceState::Stopped,
                    instance_type: InstanceType::Container,
                    created_at_epoch: 0,
                    config: Default::default(),
                    profiles: vec![],
                })
                .collect())
        }
        fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
            let owner = spec
                .config
                .get(OWNER_CONFIG_KEY)
                .cloned()
                .unwrap_or_default();
            let result = self.record(format!(
                "launch {} {:?} {:?} {:?}",
                spec.name, spec.profiles, spec.config, spec.ephemeral
            ));
            if result.is_ok() || self.half_made_launch {
                self.launched
                    .lock()
                    .unwrap()
                    .push((spec.name.clone(), owner));
            }
            result
        }
        fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
            let stdin = if spec.stdin.is_some() { "yes" } else { "no" };
            let line = format!(
                "exec {instance} uid={} {} stdin={stdin}",
                spec.uid,
                spec.argv.join(" ")
            );
            self.record(line.clone())?;
            self.exec_timeouts
                .lock()
                .unwrap()
                .push((spec.argv.join(" "), spec.timeout));
            if spec.argv == ["/bin/true"] {
                let mut left = self.not_ready_probes.lock().unwrap();
                if *left > 0 {
                    *left -= 1;
                    return Err(LxdError::Command {
                        operation: "exec".into(),
                        message: "not ready".into(),
                    });
                }
            }
            let code = self
                .exec_exit
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| line.contains(p.as_str()))
                .map(|(_, c)| *c);
            Ok(ExecOutput {
                exit_code: code.unwrap_or(0),
                stdout: String::new(),
                stderr: "oops".into(),
            })
        }
        fn push_file(&self, instance: &str, spec: &PushSpec) -> Result<(), LxdError> {
            let content = match &spec.source {
                PushSource::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                PushSource::File(p) => format!("file:{}", p.display()),
            };
            self.record(format!(
                "push {instance}{} {:o} {} <{content}>",
                spec.target, spec.mode, spec.uid
            ))
        }
        fn stop(&self, instance: &str, _f: bool, _t: Duration) -> Result<(), LxdError> {
            self.record(format!("stop {instance}"))
        }
        fn delete(&self, instance: &str, force: bool) -> Result<(), LxdError> {
            self.record(format!("delete {instance} force={force}"))
        }
        fn set_instance_config(&self, instance: &str, key: &str, v: &str) -> Result<(), LxdError> {
            self.record(format!("config set {instance} {key}={v}"))
        }
        fn image_exists(&self, alias: &str) -> Result<bool, LxdError> {
            self.record(format!("image_exists {alias}")).map(|_| true)
        }
        fn ensure_storage_pool(&self, n: &str, _d: &str, _s: &str) -> Result<(), LxdError> {
            self.record(format!("pool {n}"))
        }
        fn storage_pool_free_bytes(&self, _n: &str) -> Result<Option<u64>, LxdError> {
            Ok(None)
        }
        fn delete_storage_pool(&self, n: &str) -> Result<(), LxdError> {
            self.record(format!("delete pool {n}"))
        }
        fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
            self.record(format!("profile {}", spec.name))
        }
        fn list_profiles(&self) -> Result<Vec<crate::lxd::ProfileUse>, LxdError> {
            self.record("list profiles".into()).map(|_| vec![])
        }
        fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
            self.record(format!("delete profile {name}"))
        }
        fn server_info(&self) -> Result<ServerInfo, LxdError> {
            Ok(ServerInfo {
                server_version: "5.0.2".into(),
                instance_types: vec![InstanceType::Container],
            })
        }
    }

    /// Registers runners with increasing ids; `jit_error` makes generate-jitconfig fail.
    #[derive(Default)]
    pub(crate) struct ScriptedGitHub {
        pub calls: Mutex<Vec<String>>,
        pub jit_conflict: bool,
        pub delete_outcomes: Mutex<Vec<DeleteOutcome>>,
    }

    impl ScriptedGitHub {
        pub fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn path_err(method: &str) -> GitHubError {
        GitHubError::Protocol {
            method: method.into(),
            path: "/".into(),
            reason: "not scripted".into(),
        }
    }

    impl GitHub for ScriptedGitHub {
        fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
            Err(path_err("GET"))
        }
        fn get_runner(&self, _id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
            Err(path_err("GET"))
        }
        fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
            self.calls.lock().unwrap().push(format!("delete {id}"));
            Ok(self
                .delete_outcomes
                .lock()
                .unwrap()
                .pop()
                .unwrap_or(DeleteOutcome::Deleted))
        }
        fn registration_token(&self) -> Result<Secret, GitHubError> {
            Err(path_err("POST"))
        }
        fn remove_token(&self) -> Result<Secret, GitHubError> {
            Err(path_err("POST"))
        }
        fn generate_jit_config(
            &self,
            name: &str,
            labels: &[String],
        ) -> Result<JitConfig, GitHubError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("jit {name} {labels:?}"));
            if self.jit_conflict {
                return Err(GitHubError::Conflict {
                    method: "POST".into(),
                    path: "/jit".into(),
                    message: "exists".into(),
                });
            }
            Ok(JitConfig {
                runner: GitHubRunner {
                    id: 42,
                    name: name.into(),
                    status: RunnerOnline::Offline,
                    busy: false,
                    labels: labels.to_vec(),
                },
                encoded_jit_config: Secret::new("SECRET-JIT"),
            })
        }
        fn runner_application(&self, _arch: Arch) -> Result<RunnerApplication, GitHubError> {
            Err(path_err("GET"))
        }
        fn get_job(&self, _job: &JobRef) -> Result<WorkflowJob, GitHubError> {
            Err(path_err("GET"))
        }
        fn repository_visible(&self, _owner: &str, _repo: &str) -> Result<bool, GitHubError> {
            Err(path_err("GET"))
        }
        fn list_run_jobs(
            &self,
            _repo: &str,
            _run_id: u64,
        ) -> Result<Vec<WorkflowJob>, GitHubError> {
            Err(path_err("GET"))
        }
    }

    fn request<'a>(
        name: &'a RunnerName,
        profiles: &'a [String],
        labels: &'a [String],
        env: &'a RunnerEnvironment,
    ) -> CreateRequest<'a> {
        CreateRequest {
            name,
            owner_value: "model/app/0",
            image_alias: "jammy",
            instance_type: InstanceType::Container,
            profiles,
            labels,
            runner_tarball: Path::new("/cache/runner.tgz"),
            environment: env,
            timeouts: CreateTimeouts {
                ready_deadline: Duration::from_secs(5),
                first_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
                probe_timeout: Duration::from_secs(5),
                exec_timeout: Duration::from_secs(5),
            },
            launch_gate: &Ungated,
            registration: JitSource::Generate,
        }
    }

    fn fixtures() -> (RunnerName, Vec<String>, Vec<String>, RunnerEnvironment) {
        (
            RunnerName("app-0-0123456789ab".into()),
            vec!["default".into(), "runner".into()],
            vec!["app".into(), "jammy".into()],
            RunnerEnvironment {
                dockerhub_mirror: Some("https://m".into()),
                ..Default::default()
            },
        )
    }

    #[test]
    fn happy_path_runs_every_step_in_order() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            not_ready_probes: Mutex::new(2),
            ..Default::default()
        };
        let gh = ScriptedGitHub::default();
        let created = create_runner(&lxd, &gh, &request(&name, &profiles, &labels, &env)).unwrap();
        assert_eq!(created.github_id, 42);
        let calls = lxd.calls();
        let kinds: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap()).collect();
        assert_eq!(
            kinds,
            ["launch", "exec", "exec", "exec", "push", "exec", "push", "exec"],
            "{calls:#?}"
        );
        assert!(
            calls[0].contains("[\"default\", \"runner\"]")
                && calls[0].contains("user.github-runner.owner")
                && calls[0].ends_with("true")
        );
        assert!(
            calls[4]
                .contains("/home/ubuntu/github-runner.tar.gz 600 1000 <file:/cache/runner.tgz>"),
            "{}",
            calls[4]
        );
        // Extraction runs as root, unpacks the tarball as ubuntu, the env bundle from stdin.
        assert!(
            calls[5].contains("uid=0")
                && calls[5].contains("su ubuntu")
                && calls[5].contains("tar -xzf")
        );
        assert!(calls[5].ends_with("stdin=yes"), "{}", calls[5]);
        assert!(calls[6].starts_with("push app-0-0123456789ab/root/github-runner-start.sh 700 0"));
        assert!(
            calls[7].contains("uid=0")
                && calls[7].contains("setsid")
                && calls[7].ends_with("stdin=no")
        );
        // The JIT config travels only inside the pushed start script.
        for (i, c) in calls.iter().enumerate() {
            assert_eq!(c.contains("SECRET-JIT"), i == 6, "call {i}: {c}");
        }
        assert_eq!(
            gh.calls(),
            vec!["jit app-0-0123456789ab [\"app\", \"jammy\"]"]
        );
    }

    /// A scale set's JIT config: the same steps and files, no REST call, and on failure the
    /// instance goes but the registration is left to the caller that made it.
    #[test]
    fn a_given_registration_is_used_as_is_and_left_to_its_maker() {
        let (name, profiles, labels, env) = fixtures();
        let jit = Secret::new("SCALE-SET-JIT");
        let registration = JitSource::Given {
            runner_id: 7,
            jit: &jit,
        };
        let mut req = request(&name, &profiles, &labels, &env);
        req.registration = registration;
        let lxd = ScriptedLxd::default();
        let gh = ScriptedGitHub::default();
        let created = create_runner(&lxd, &gh, &req).unwrap();
        assert_eq!(created.github_id, 7);
        let calls = lxd.calls();
        let script = calls
            .iter()
            .position(|c| c.contains("SCALE-SET-JIT"))
            .expect("the given JIT config in the start script");
        assert!(
            calls[script].starts_with("push app-0-0123456789ab/root/github-runner-start.sh 700 0")
        );
        assert!(gh.calls().is_empty(), "{:?}", gh.calls());

        let lxd = ScriptedLxd {
            exec_exit: Mutex::new(vec![("setsid".into(), 1)]),
            ..Default::default()
        };
        let err = create_runner(&lxd, &gh, &req).unwrap_err();
        assert_eq!(err.step, CreateStep::StartRunner, "{err}");
        assert!(
            lxd.calls().iter().any(|c| c.starts_with("delete")),
            "{:?}",
            lxd.calls()
        );
        assert!(gh.calls().is_empty(), "no REST delete: {:?}", gh.calls());
    }

    fn assert_failed_at(
        step: CreateStep,
        fail: &'static str,
        exec_exit: Vec<(String, i32)>,
        registered: bool,
    ) {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            fail: vec![fail],
            exec_exit: Mutex::new(exec_exit),
            ..Default::default()
        };
        let gh = ScriptedGitHub::default();
        let err = create_runner(&lxd, &gh, &request(&name, &profiles, &labels, &env)).unwrap_err();
        assert_eq!(err.step, step, "{err}");
        assert!(err.to_string().contains(&step.to_string()), "{err}");
        assert!(err.cleanup.problems.is_empty(), "{err}");
        assert_eq!(
            lxd.calls().last().unwrap(),
            "delete app-0-0123456789ab force=true"
        );
        assert_eq!(
            gh.calls().contains(&"delete 42".to_string()),
            registered,
            "{:?}",
            gh.calls()
        );
        assert!(!err.to_string().contains("SECRET-JIT"));
    }

    #[test]
    fn a_launch_that_created_nothing_deletes_nothing() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            fail: vec!["launch"],
            ..Default::default()
        };
        let gh = ScriptedGitHub::default();
        let err = create_runner(&lxd, &gh, &request(&name, &profiles, &labels, &env)).unwrap_err();
        assert_eq!(err.step, CreateStep::Launch);
        // An instance of that name may exist and not be ours (why launch failed): keep it.
        assert_eq!(lxd.calls().last().unwrap(), "list model/app/0");
        assert!(gh.calls().is_empty());
    }

    #[test]
    fn each_failing_step_is_named_and_cleaned_up() {
        let (name, profiles, labels, env) = fixtures();
        let half_made = ScriptedLxd {
            fail: vec!["launch"],
            half_made_launch: true,
            ..Default::default()
        };
        let err = create_runner(
            &half_made,
            &ScriptedGitHub::default(),
            &request(&name, &profiles, &labels, &env),
        )
        .unwrap_err();
        assert_eq!(err.step, CreateStep::Launch);
        assert_eq!(
            half_made.calls().last().unwrap(),
            "delete app-0-0123456789ab force=true"
        );
        assert_failed_at(
            CreateStep::PushTarball,
            "push app-0-0123456789ab/home/ubuntu/github-runner.tar.gz",
            vec![],
            false,
        );
        assert_failed_at(
            CreateStep::ExtractTarball,
            "-",
            vec![("tar -xzf".into(), 2)],
            false,
        );
        assert_failed_at(
            CreateStep::PushStartScript,
            "push app-0-0123456789ab/root",
            vec![],
            true,
        );
        assert_failed_at(
            CreateStep::StartRunner,
            "-",
            vec![("setsid".into(), 1)],
            true,
        );
    }

    #[test]
    fn a_jit_conflict_leaves_no_instance() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd::default();
        let gh = ScriptedGitHub {
            jit_conflict: true,
            ..Default::default()
        };
        let err = create_runner(&lxd, &gh, &request(&name, &profiles, &labels, &env)).unwrap_err();
        assert_eq!(err.step, CreateStep::RegisterJit);
        assert!(matches!(
            *err.cause,
            StepFailure::GitHub(GitHubError::Conflict { .. })
        ));
        assert_eq!(
            lxd.calls().last().unwrap(),
            "delete app-0-0123456789ab force=true"
        );
        assert_eq!(gh.calls().len(), 1, "nothing registered, nothing to delete");
    }

    #[test]
    fn readiness_wait_is_bounded() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            not_ready_probes: Mutex::new(u32::MAX),
            ..Default::default()
        };
        let gh = ScriptedGitHub::default();
        let mut req = request(&name, &profiles, &labels, &env);
        req.timeouts.ready_deadline = Duration::from_millis(100);
        let err = create_runner(&lxd, &gh, &req).unwrap_err();
        assert_eq!(err.step, CreateStep::WaitReady);
        assert!(matches!(*err.cause, StepFailure::NotReady { .. }), "{err}");
        assert!(gh.calls().is_empty());
    }

    #[test]
    fn a_hanging_readiness_probe_is_cut_at_the_probe_timeout_not_the_exec_timeout() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            not_ready_probes: Mutex::new(2),
            ..Default::default()
        };
        let gh = ScriptedGitHub::default();
        let mut req = request(&name, &profiles, &labels, &env);
        req.timeouts.probe_timeout = Duration::from_secs(2);
        req.timeouts.exec_timeout = Duration::from_secs(120);
        create_runner(&lxd, &gh, &req).unwrap();
        let timeouts = lxd.exec_timeouts.lock().unwrap().clone();
        let probes: Vec<Duration> = timeouts
            .iter()
            .filter(|(argv, _)| argv == "/bin/true")
            .map(|(_, t)| *t)
            .collect();
        assert_eq!(probes.len(), 3, "{timeouts:?}");
        assert!(
            probes.iter().all(|t| *t <= Duration::from_secs(2)),
            "{probes:?}"
        );
        assert!(
            timeouts
                .iter()
                .any(|(argv, t)| argv != "/bin/true" && *t == Duration::from_secs(120)),
            "{timeouts:?}"
        );
    }

    #[test]
    fn cleanup_failures_are_reported_not_hidden() {
        let (name, profiles, labels, env) = fixtures();
        let lxd = ScriptedLxd {
            fail: vec!["push app-0-0123456789ab/root", "delete"],
            ..Default::default()
        };
        let gh = ScriptedGitHub {
            delete_outcomes: Mutex::new(vec![DeleteOutcome::Busy]),
            ..Default::default()
        };
        let err = create_runner(&lxd, &gh, &request(&name, &profiles, &labels, &env)).unwrap_err();
        assert_eq!(err.cleanup.problems.len(), 2, "{err}");
        assert!(err.to_string().contains("cleanup also failed"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_the_deadline() {
        let ms = Duration::from_millis;
        assert_eq!(next_backoff(ms(50), ms(5000), ms(10_000)), ms(100));
        assert_eq!(next_backoff(ms(4000), ms(5000), ms(10_000)), ms(5000));
        assert_eq!(next_backoff(ms(4000), ms(5000), ms(300)), ms(300));
    }
}
