//! In-memory LXD and GitHub that agree with each other, for handler tests of the charm's
//! wiring (the real ones are exercised against the real daemon and the fake GitHub server
//! in tests/). A launched instance runs a listener; its JIT registration comes online when
//! [`FakeWorld::bring_online`] says so.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use std::cell::Cell;

use crate::charm::context::Context;
use crate::charm::edge::Host;
use crate::charm::runtime::{Runtime, RuntimeError};
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::setup::{SetupEdges, SetupError, When};
use crate::charm::testing::hook_context;
use crate::clock::{Clock, ManualClock};
use crate::config::{validate, CharmConfig, ConfigContext};
use crate::github::download::tarball_path;
use crate::github::{
    Arch, DeleteOutcome, GitHub, GitHubError, GitHubRunner, JitConfig, JobRef, RunnerApplication,
    RunnerOnline, WorkflowJob,
};
use crate::identity::{UnitIdentity, OWNER_CONFIG_KEY};
use crate::juju::HookTools;
use crate::lxd::{
    ExecOutput, ExecSpec, Instance, InstanceState, InstanceType, LaunchSpec, Lxd, LxdError,
    ProfileSpec, PushSpec, ServerInfo,
};
use crate::paths::HostPaths;
use crate::runner::RunnerEnvironment;
use crate::secret::Secret;

pub const NOW: u64 = 1_700_000_000;
/// The runner tarball URL this GitHub lists (without a checksum).
pub const RUNNER_URL: &str = "http://127.0.0.1:1/runner.tar.gz";

#[derive(Default)]
pub struct World {
    pub instances: BTreeMap<String, Instance>,
    pub profiles: BTreeMap<String, ProfileSpec>,
    /// Registrations by id, with the scope (`path`) they belong to: any credential of that
    /// scope sees them, as on GitHub.
    pub runners: BTreeMap<u64, (GitHubRunner, String)>,
    pub next_id: u64,
    /// Tokens GitHub accepts; others get 401.
    pub valid_tokens: Vec<String>,
    pub image_present: bool,
    pub lxd_down: bool,
    pub github_5xx: bool,
    /// Every GitHub call as `METHOD what token`.
    pub github_calls: Vec<String>,
    pub execs: usize,
    /// What every instance's pre-job.json holds (none: the read fails).
    pub pre_job: Option<String>,
    /// What `storage_pool_free_bytes` answers (None: unknown).
    pub pool_free_bytes: Option<u64>,
    /// Storage pools made through `ensure_storage_pool`.
    pub pools: std::collections::BTreeSet<String>,
    /// Workflow jobs by (`owner/repo`, run id); a run not here answers 404.
    pub run_jobs: BTreeMap<(String, u64), Vec<WorkflowJob>>,
}

/// One shared world; the LXD and each GitHub client (one per token and scope) look at it.
#[derive(Clone)]
pub struct FakeWorld {
    pub world: Arc<Mutex<World>>,
    pub clock: Arc<ManualClock>,
}

impl FakeWorld {
    pub fn new() -> Self {
        let world = World {
            next_id: 1,
            valid_tokens: vec!["ghp_secret".into()],
            image_present: true,
            ..World::default()
        };
        FakeWorld {
            world: Arc::new(Mutex::new(world)),
            clock: Arc::new(ManualClock::at(NOW)),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    pub fn lxd(&self) -> Arc<dyn Lxd> {
        Arc::new(FakeLxd(self.clone()))
    }

    /// A client of `config`'s scope (its path) authenticating with its token.
    pub fn github(&self, config: &CharmConfig) -> Arc<dyn GitHub> {
        Arc::new(FakeGitHub {
            world: self.clone(),
            token: config.token().map_or("", |t| t.expose()).to_string(),
            scope: config.path.display(),
        })
    }

    /// Every registration whose instance runs comes online.
    pub fn bring_online(&self) {
        let mut w = self.lock();
        let names: Vec<String> = w.instances.keys().cloned().collect();
        for (runner, _) in w.runners.values_mut() {
            if names.contains(&runner.name) {
                runner.status = RunnerOnline::Online;
            }
        }
    }

    /// Runner `name` takes a job (GitHub lists it busy).
    pub fn take_job(&self, name: &str) {
        for (runner, _) in self.lock().runners.values_mut() {
            if runner.name == name {
                runner.busy = true;
            }
        }
    }

    /// Runner `name`'s job ends: the ephemeral runner deregisters and its instance powers
    /// off, which deletes it (LXD ephemeral instance).
    pub fn finish_job(&self, name: &str) {
        let mut w = self.lock();
        w.runners.retain(|_, (r, _)| r.name != name);
        w.instances.remove(name);
    }

    pub fn instance_names(&self) -> Vec<String> {
        self.lock().instances.keys().cloned().collect()
    }

    pub fn runner_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .runners
            .values()
            .map(|(r, _)| r.name.clone())
            .collect();
        names.sort();
        names
    }

    /// A runtime over this world, with `config`'s token as GitHub credentials and the
    /// verified tarball in place under `root`.
    pub fn runtime(&self, root: &std::path::Path, config: CharmConfig) -> Runtime {
        let paths = HostPaths::new(root);
        let tarball = tarball_path(&paths);
        std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
        std::fs::write(&tarball, b"tarball").unwrap();
        // In place an hour before the world's clock: runners made now run the current binary.
        let in_place = std::time::UNIX_EPOCH + Duration::from_secs(NOW - 3600);
        std::fs::File::options()
            .write(true)
            .open(&tarball)
            .and_then(|f| f.set_modified(in_place))
            .unwrap();
        let github = self.github(&config);
        let clock: Arc<dyn Clock> = self.clock.clone();
        let world = self.clone();
        let mut rt = Runtime::from_parts(
            UnitIdentity::parse("github-runner/0", "uuid").unwrap(),
            config,
            paths,
            self.lxd(),
            github,
            clock,
            RunnerEnvironment::default(),
            root.to_path_buf(),
        );
        rt.github_factory =
            Arc::new(move |config, _identity, _proxy, _paths, _clock| Ok(world.github(config)));
        rt
    }

    /// Runs `f` as unit github-runner/0 (hook tools `tools`, host root `root`) with a
    /// runtime over this world that wants `vms` runners.
    pub fn as_unit<R>(
        &self,
        tools: &dyn HookTools,
        root: &std::path::Path,
        vms: u32,
        f: impl FnOnce(&Context<'_>, &Runtime) -> R,
    ) -> R {
        let hook = hook_context();
        let paths = HostPaths::new(root);
        let ctx = Context {
            tools,
            hook: &hook,
            paths: &paths,
        };
        let rt = self.runtime(root, config(&[("virtual-machines", vms.into())]));
        f(&ctx, &rt)
    }
}

/// The pipeline's [`Host`] over a [`FakeWorld`]: fake setup edges, runtimes over the world
/// (rooted at `root`), a boot time.
pub struct WorldHost {
    pub world: FakeWorld,
    pub edges: Edges,
    pub root: tempfile::TempDir,
    /// Runtimes handed out.
    pub prepared: Cell<u32>,
    /// The machine's boot time as start sees it.
    pub boot_epoch: Cell<Option<u64>>,
    /// Host setups asked for.
    pub host_setups: Cell<u32>,
    /// Some: host setup answers this instead of running over the fake edges (the real one
    /// is tested in setup's own tests and tests/setup_host.rs).
    pub setup_answer: Option<fn() -> Result<(), SetupError>>,
}

impl WorldHost {
    /// A ready host, booted a day before the world's clock (runners made in tests are
    /// newer).
    pub fn new() -> WorldHost {
        WorldHost::over(FakeWorld::new(), Edges::new(Fake::ready()))
    }

    pub fn over(world: FakeWorld, edges: Edges) -> WorldHost {
        WorldHost {
            world,
            edges,
            root: tempfile::tempdir().unwrap(),
            prepared: Cell::new(0),
            boot_epoch: Cell::new(Some(NOW - 86_400)),
            host_setups: Cell::new(0),
            setup_answer: None,
        }
    }

    /// Host setup is counted and answered Ok without running.
    pub fn skipping_setup(self) -> WorldHost {
        WorldHost {
            setup_answer: Some(|| Ok(())),
            ..self
        }
    }

    pub fn paths(&self) -> HostPaths {
        HostPaths::new(self.root.path())
    }

    /// Runs `f` as unit github-runner/0 with `tools` and this host's root; the charm dir
    /// is `<root>/charm`.
    pub fn as_unit<R>(&self, tools: &dyn HookTools, f: impl FnOnce(&Context<'_>) -> R) -> R {
        let mut hook = hook_context();
        hook.charm_dir = self.root.path().join("charm");
        std::fs::create_dir_all(&hook.charm_dir).unwrap();
        self.as_unit_in(tools, hook, f)
    }

    /// [`WorldHost::as_unit`] with a given hook context.
    pub fn as_unit_in<R>(
        &self,
        tools: &dyn HookTools,
        hook: crate::juju::context::HookContext,
        f: impl FnOnce(&Context<'_>) -> R,
    ) -> R {
        let paths = self.paths();
        let ctx = Context {
            tools,
            hook: &hook,
            paths: &paths,
        };
        f(&ctx)
    }

    /// Runs `event` through the pipeline as the unit.
    pub fn run(
        &self,
        tools: &dyn HookTools,
        event: &crate::juju::event::Event,
    ) -> Result<(), crate::charm::CharmError> {
        self.as_unit(tools, |ctx| {
            crate::charm::run(ctx, self, &crate::charm::Intent::of(event))
        })
    }
}

impl Host for WorldHost {
    fn edges(&self) -> &dyn SetupEdges {
        &self.edges
    }
    fn edges_for<'a>(&'a self, _rt: &'a Runtime) -> Box<dyn SetupEdges + 'a> {
        Box::new(&self.edges)
    }
    fn runtime(&self, _ctx: &Context<'_>, config: CharmConfig) -> Result<Runtime, RuntimeError> {
        self.prepared.set(self.prepared.get() + 1);
        Ok(self.world.runtime(self.root.path(), config))
    }
    fn boot_time_epoch(&self) -> Option<u64> {
        self.boot_epoch.get()
    }
    fn ensure_host(&self, ctx: &Context<'_>, rt: &Runtime, when: When) -> Result<(), SetupError> {
        self.host_setups.set(self.host_setups.get() + 1);
        match self.setup_answer {
            Some(answer) => answer(),
            None => crate::charm::setup::ensure_host_when(ctx, &rt.config, &self.edges, when),
        }
    }
}

/// path=org, token=ghp_secret, test-mode=insecure and a github-url nobody answers: the
/// configuration this world's GitHub accepts.
pub fn insert_world_config(raw: &mut serde_json::Map<String, serde_json::Value>) {
    for (k, v) in [
        ("path", "org"),
        ("token", "ghp_secret"),
        ("test-mode", "insecure"),
        ("github-url", "http://127.0.0.1:1"),
    ] {
        raw.insert(k.into(), v.into());
    }
}

/// A valid config with `pairs` on top of [`insert_world_config`].
pub fn config(pairs: &[(&str, serde_json::Value)]) -> CharmConfig {
    let mut raw = serde_json::Map::new();
    insert_world_config(&mut raw);
    for (k, v) in pairs {
        raw.insert(k.to_string(), v.clone());
    }
    validate(
        &raw,
        &ConfigContext {
            app_name: "github-runner",
            juju_proxy_configured: false,
        },
    )
    .expect("valid test config")
}

struct FakeLxd(FakeWorld);

fn lxd_down() -> LxdError {
    LxdError::Command {
        operation: "list".into(),
        message: "cannot connect to the LXD socket".into(),
    }
}

impl Lxd for FakeLxd {
    fn list_owned_instances(&self, owner_value: &str) -> Result<Vec<Instance>, LxdError> {
        let w = self.0.lock();
        if w.lxd_down {
            return Err(lxd_down());
        }
        Ok(w.instances
            .values()
            .filter(|i| i.config.get(OWNER_CONFIG_KEY).map(String::as_str) == Some(owner_value))
            .cloned()
            .collect())
    }
    fn list_project_instances(&self) -> Result<Vec<Instance>, LxdError> {
        let w = self.0.lock();
        if w.lxd_down {
            return Err(lxd_down());
        }
        Ok(w.instances.values().cloned().collect())
    }
    fn list_machine_instances(&self) -> Result<Vec<crate::lxd::MachineInstance>, LxdError> {
        let w = self.0.lock();
        if w.lxd_down {
            return Err(lxd_down());
        }
        Ok(w.instances
            .values()
            .map(|i| crate::lxd::MachineInstance {
                project: "default".into(),
                name: i.name.clone(),
                limits: Default::default(),
            })
            .collect())
    }
    fn launch(&self, spec: &LaunchSpec) -> Result<(), LxdError> {
        let now = self.0.clock.now_epoch();
        let mut w = self.0.lock();
        if !w.image_present {
            return Err(LxdError::ImageNotFound(spec.image_alias.clone()));
        }
        w.instances.insert(
            spec.name.clone(),
            Instance {
                name: spec.name.clone(),
                state: InstanceState::Running,
                instance_type: spec.instance_type,
                created_at_epoch: now,
                config: spec.config.clone(),
                profiles: spec.profiles.clone(),
            },
        );
        Ok(())
    }
    fn exec(&self, instance: &str, spec: &ExecSpec) -> Result<ExecOutput, LxdError> {
        let mut w = self.0.lock();
        w.execs += 1;
        if !w.instances.contains_key(instance) {
            return Err(LxdError::InstanceNotFound(instance.into()));
        }
        let script = spec.argv.last().cloned().unwrap_or_default();
        if script.contains("pre-job.json") {
            return Ok(match &w.pre_job {
                Some(json) => ExecOutput {
                    exit_code: 0,
                    stdout: json.clone(),
                    stderr: String::new(),
                },
                None => ExecOutput {
                    exit_code: 1,
                    stdout: String::new(),
                    stderr: "pre-job.json is not a regular file".into(),
                },
            });
        }
        // The job-start probe: no job has started (no _work dir).
        let exit_code = if script.contains("_work") { 3 } else { 0 };
        Ok(ExecOutput {
            exit_code,
            stdout: String::new(),
            stderr: String::new(),
        })
    }
    fn push_file(&self, _instance: &str, _spec: &PushSpec) -> Result<(), LxdError> {
        Ok(())
    }
    fn stop(&self, _instance: &str, _force: bool, _timeout: Duration) -> Result<(), LxdError> {
        Ok(())
    }
    fn delete(&self, instance: &str, _force: bool) -> Result<(), LxdError> {
        self.0.lock().instances.remove(instance);
        Ok(())
    }
    fn set_instance_config(&self, instance: &str, key: &str, value: &str) -> Result<(), LxdError> {
        match self.0.lock().instances.get_mut(instance) {
            Some(i) => {
                i.config.insert(key.to_string(), value.to_string());
                Ok(())
            }
            None => Err(LxdError::InstanceNotFound(instance.into())),
        }
    }
    fn image_exists(&self, _alias: &str) -> Result<bool, LxdError> {
        Ok(self.0.lock().image_present)
    }
    fn ensure_storage_pool(&self, n: &str, _d: &str, _s: &str) -> Result<(), LxdError> {
        self.0.lock().pools.insert(n.to_string());
        Ok(())
    }
    fn storage_pool_free_bytes(&self, _n: &str) -> Result<Option<u64>, LxdError> {
        Ok(self.0.lock().pool_free_bytes)
    }
    /// Refused while a profile or instance of the world could use it (as LXD does).
    fn delete_storage_pool(&self, n: &str) -> Result<(), LxdError> {
        let mut w = self.0.lock();
        if !w.profiles.is_empty() || !w.instances.is_empty() {
            return Err(LxdError::Command {
                operation: format!("storage delete {n}"),
                message: "The storage pool is currently in use".into(),
            });
        }
        w.pools.remove(n);
        Ok(())
    }
    fn ensure_profile(&self, spec: &ProfileSpec) -> Result<(), LxdError> {
        self.0
            .lock()
            .profiles
            .insert(spec.name.clone(), spec.clone());
        Ok(())
    }
    /// `used_by` counts the instances launched with each profile.
    fn list_profiles(&self) -> Result<Vec<crate::lxd::ProfileUse>, LxdError> {
        let w = self.0.lock();
        Ok(w.profiles
            .keys()
            .map(|name| crate::lxd::ProfileUse {
                managed: true,
                name: name.clone(),
                used_by: w
                    .instances
                    .values()
                    .filter(|i| i.profiles.contains(name))
                    .count(),
            })
            .collect())
    }
    fn delete_profile(&self, name: &str) -> Result<(), LxdError> {
        let mut w = self.0.lock();
        if w.instances
            .values()
            .any(|i| i.profiles.iter().any(|p| p == name))
        {
            return Err(LxdError::Command {
                operation: format!("profile delete {name}"),
                message: "Profile is currently in use".into(),
            });
        }
        w.profiles.remove(name);
        Ok(())
    }
    fn server_info(&self) -> Result<ServerInfo, LxdError> {
        Ok(ServerInfo {
            server_version: "5.0.2".into(),
            instance_types: vec![InstanceType::Container],
        })
    }
}

struct FakeGitHub {
    world: FakeWorld,
    token: String,
    scope: String,
}

impl FakeGitHub {
    fn call(&self, what: &str) -> Result<MutexGuard<'_, World>, GitHubError> {
        let mut w = self.world.lock();
        w.github_calls.push(format!("{what} {}", self.token));
        let (method, path) = (what.to_string(), "/orgs/org/actions/runners".to_string());
        if w.github_5xx {
            return Err(GitHubError::Server {
                method,
                path,
                status: 502,
            });
        }
        if !w.valid_tokens.contains(&self.token) {
            return Err(GitHubError::Unauthorized { method, path });
        }
        Ok(w)
    }
}

impl GitHub for FakeGitHub {
    fn list_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        let w = self.call("list")?;
        Ok(w.runners
            .values()
            .filter(|(_, scope)| *scope == self.scope)
            .map(|(r, _)| r.clone())
            .collect())
    }
    /// Every registration of this client's scope: the caller picks the old names.
    fn list_old_runners(&self) -> Result<Vec<GitHubRunner>, GitHubError> {
        self.list_runners()
    }
    /// Only the registrations of this client's scope, as GitHub answers 404 for another
    /// repository's runner.
    fn get_runner(&self, id: u64) -> Result<Option<GitHubRunner>, GitHubError> {
        let w = self.call("get")?;
        Ok(w.runners
            .get(&id)
            .filter(|(_, scope)| *scope == self.scope)
            .map(|(r, _)| r.clone()))
    }
    fn delete_runner(&self, id: u64) -> Result<DeleteOutcome, GitHubError> {
        let mut w = self.call("delete")?;
        let scope = self.scope.clone();
        match w.runners.get(&id).filter(|(_, s)| *s == scope) {
            None => Ok(DeleteOutcome::AlreadyGone),
            Some((r, _)) if r.busy => Ok(DeleteOutcome::Busy),
            Some(_) => {
                w.runners.remove(&id);
                Ok(DeleteOutcome::Deleted)
            }
        }
    }
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        drop(self.call("registration-token")?);
        Ok(Secret::new("reg"))
    }
    fn remove_token(&self) -> Result<Secret, GitHubError> {
        drop(self.call("remove-token")?);
        Ok(Secret::new("rm"))
    }
    fn generate_jit_config(&self, name: &str, labels: &[String]) -> Result<JitConfig, GitHubError> {
        let mut w = self.call("jit")?;
        let id = w.next_id;
        w.next_id += 1;
        let runner = GitHubRunner {
            id,
            name: name.to_string(),
            status: RunnerOnline::Offline,
            busy: false,
            labels: labels.to_vec(),
        };
        w.runners.insert(id, (runner.clone(), self.scope.clone()));
        Ok(JitConfig {
            runner,
            encoded_jit_config: Secret::new("SECRET-JIT"),
        })
    }
    fn runner_application(&self, _arch: Arch) -> Result<RunnerApplication, GitHubError> {
        drop(self.call("downloads")?);
        Ok(RunnerApplication {
            os: "linux".into(),
            architecture: "x64".into(),
            download_url: RUNNER_URL.into(),
            filename: "runner.tar.gz".into(),
            sha256_checksum: None,
            temp_download_token: None,
        })
    }
    fn repository_visible(&self, owner: &str, repo: &str) -> Result<bool, GitHubError> {
        drop(self.call(&format!("repository {owner}/{repo}"))?);
        Ok(true)
    }
    fn get_job(&self, _job: &JobRef) -> Result<WorkflowJob, GitHubError> {
        Err(GitHubError::NotFound {
            method: "GET".into(),
            path: "/job".into(),
        })
    }
    fn list_run_jobs(&self, repo: &str, run_id: u64) -> Result<Vec<WorkflowJob>, GitHubError> {
        let w = self.call(&format!("run-jobs {repo} {run_id}"))?;
        w.run_jobs
            .get(&(repo.to_string(), run_id))
            .cloned()
            .ok_or_else(|| GitHubError::NotFound {
                method: "GET".into(),
                path: format!("/repos/{repo}/actions/runs/{run_id}/jobs"),
            })
    }
}
