//! Runner creation, health and removal against the real LXD daemon and the fake GitHub.
//!
//! Each test has its own LXD project (tests/support/lxd_fixture) and its own fake GitHub;
//! the fake runner inside reaches the fake over an LXD proxy device on loopback only.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use fake_github::FakeGitHub;
use github_runner::github::{GitHub, GitHubClient, GitHubPath, GitHubRunner, RunnerOnline};
use github_runner::identity::{RunnerName, UnitIdentity, OWNER_CONFIG_KEY};
use github_runner::lxd::{ExecSpec, Instance, InstanceType, LaunchSpec, Lxd};
use github_runner::runner::create::StepFailure;
use github_runner::runner::health::UnhealthyReason;
use github_runner::runner::remove::RemovalTarget;
use github_runner::runner::resources::{self, Resources};
use github_runner::runner::storage::{self, StorageError};
use github_runner::runner::{
    check_health, create_runner, remove_runner, CreateRequest, CreateStep, CreateTimeouts,
    CreatedRunner, Health, RemoveOutcome, RunnerEnvironment,
};
use lxd_fixture::{wait_for, LxdFixture, IMAGE_ALIAS};
use std::path::{Path, PathBuf};
use std::time::Duration;

const REPO: &str = "octo/hello";
const GIB: u64 = 1 << 30;
const ONLINE_WITHIN: Duration = Duration::from_secs(60);

/// One unit's view: its LXD project, a fake GitHub, and what creation needs.
struct Harness {
    fx: LxdFixture,
    gh: FakeGitHub,
    client: GitHubClient,
    unit: UnitIdentity,
    profiles: Vec<String>,
    labels: Vec<String>,
    environment: RunnerEnvironment,
    tarball: PathBuf,
}

impl Harness {
    fn new() -> Harness {
        Harness::with_resources(Resources {
            cpu: 1,
            memory_bytes: GIB,
            disk_bytes: GIB,
        })
    }

    fn with_resources(resources: Resources) -> Harness {
        let fx = LxdFixture::new();
        let gh = FakeGitHub::start();
        let unit = UnitIdentity::parse("app/0", "model-uuid").unwrap();
        let client = real_client(&gh, &unit);
        let proxy = fx.loopback_proxy_profile(gh.port());
        let mut h = Harness {
            tarball: fx.fake_runner_tarball().to_path_buf(),
            fx,
            gh,
            client,
            unit,
            profiles: vec![proxy],
            labels: resources::runner_labels("app", IMAGE_ALIAS, &["test".to_string()]),
            environment: RunnerEnvironment {
                http_proxy: Some("http://proxy.invalid:3128".into()),
                no_proxy: Some("localhost".into()),
                dockerhub_mirror: Some("https://mirror.invalid".into()),
                ..Default::default()
            },
        };
        h.use_resources(resources);
        h
    }

    /// Ensures the charm's profiles for `r` and launches new runners with them.
    fn use_resources(&mut self, r: Resources) {
        let proxy = self.profiles.last().cloned().unwrap_or_default();
        self.profiles = resources::ensure_profiles(
            self.fx.lxd(),
            &r,
            InstanceType::Container,
            &self.fx.pool,
            &[proxy],
        )
        .unwrap();
    }

    fn request<'a>(&'a self, name: &'a RunnerName) -> CreateRequest<'a> {
        CreateRequest {
            name,
            owner_value: self.owner(),
            image_alias: IMAGE_ALIAS,
            instance_type: InstanceType::Container,
            profiles: &self.profiles,
            labels: &self.labels,
            runner_tarball: &self.tarball,
            environment: &self.environment,
            timeouts: CreateTimeouts {
                ready_deadline: Duration::from_secs(60),
                ..CreateTimeouts::default()
            },
            launch_gate: &github_runner::runner::create::Ungated,
            registration: github_runner::runner::create::JitSource::Generate,
        }
    }

    fn owner(&self) -> &'static str {
        // UnitIdentity::owner_value for app/0 in model-uuid; static so requests can borrow it.
        "model-uuid/app/0"
    }

    fn create(&self) -> CreatedRunner {
        let name = self.unit.new_runner_name().unwrap();
        create_runner(self.fx.lxd(), &self.client, &self.request(&name)).unwrap()
    }

    fn wait_online(&self, name: &str) {
        assert!(
            self.gh
                .wait_until(ONLINE_WITHIN, |s| s.runner(name).is_some_and(|r| r.online)),
            "runner {name} did not come online in the fake GitHub; instances: {:?}; log: {}",
            self.fx.instance_names(),
            self.start_log(name)
        );
    }

    fn start_log(&self, name: &str) -> String {
        let out = self.fx.lxc(&[
            "exec",
            name,
            "--",
            "cat",
            "/var/log/github-runner-start.log",
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// This unit's registrations, as the charm's client lists them.
    fn listed(&self) -> Vec<GitHubRunner> {
        self.client.list_runners().unwrap()
    }

    fn owned(&self) -> Vec<Instance> {
        self.fx.lxd().list_owned_instances(self.owner()).unwrap()
    }

    fn instance(&self, name: &str) -> Instance {
        self.owned()
            .into_iter()
            .find(|i| i.name == name)
            .expect("instance is listed")
    }

    fn exec(&self, name: &str, script: &str) -> String {
        let spec = ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout: Duration::from_secs(30),
            ..ExecSpec::default()
        };
        let out = self.fx.lxd().exec(name, &spec).unwrap();
        out.stdout
    }
}

/// The charm's GitHub client, pointed at the fake (no proxy from the test's environment).
fn real_client(gh: &FakeGitHub, unit: &UnitIdentity) -> GitHubClient {
    let (owner, repo) = REPO.split_once('/').unwrap();
    let path = GitHubPath::Repo {
        owner: owner.into(),
        repo: repo.into(),
    };
    GitHubClient::new(gh.client_settings(path, unit.clone())).unwrap()
}

#[test]
fn a_runner_comes_online_takes_one_job_and_its_instance_disappears() {
    let h = Harness::new();
    let created = h.create();
    let name = created.name.as_str();
    h.wait_online(name);
    // What the charm's client reads back: the registration, online, with our labels.
    let registered = h.client.get_runner(created.github_id).unwrap().unwrap();
    assert_eq!(registered.name, name);
    assert_eq!(registered.status, RunnerOnline::Online);
    assert!(!registered.busy);
    assert_eq!(registered.labels, vec!["app", "jammy", "test"]);
    assert_eq!(h.listed(), vec![registered]);

    let inst = h.instance(name);
    assert_eq!(
        inst.profiles[..2],
        ["default".to_string(), "ghr-runner".to_string()]
    );
    assert_eq!(
        inst.config.get(OWNER_CONFIG_KEY).map(String::as_str),
        Some(h.owner())
    );
    assert_eq!(
        check_health(h.fx.lxd(), &inst, Duration::from_secs(30)),
        Health::Healthy
    );

    // Inside: the runner runs as uid 1000 from its own dir; the start script holding the
    // JIT config deleted itself; the environment carries proxies, mirror and locale.
    let inside = h.exec(
        name,
        "for p in /proc/[0-9]*; do [ \"$(cat $p/comm)\" = Runner.Listener ] && stat -c %u $p; done | sort -u; \
         stat -c '%u %a' /home/ubuntu/github-runner/run.sh /home/ubuntu/github-runner \
             /home/ubuntu/github-runner/.env /etc/environment; \
         test -e /root/github-runner-start.sh && echo start-script-present; \
         cat /etc/environment /home/ubuntu/github-runner/.env /etc/docker/daemon.json",
    );
    let mut lines = inside.lines();
    assert_eq!(lines.next(), Some("1000"), "{inside}");
    assert_eq!(lines.next(), Some("1000 755"), "run.sh: {inside}");
    assert_eq!(lines.next(), Some("1000 755"), "runner dir: {inside}");
    assert_eq!(lines.next(), Some("1000 644"), ".env: {inside}");
    assert_eq!(lines.next(), Some("0 644"), "/etc/environment: {inside}");
    assert!(!inside.contains("start-script-present"), "{inside}");
    for want in [
        "LANG=C.UTF-8",
        "http_proxy=http://proxy.invalid:3128",
        &format!("NO_PROXY=localhost,{name}"),
        "DOCKERHUB_MIRROR=https://mirror.invalid",
    ] {
        assert_eq!(
            inside.matches(want).count(),
            2,
            "{want} in both env files:\n{inside}"
        );
    }
    assert!(
        inside.contains(r#"{"registry-mirrors":["https://mirror.invalid"]}"#),
        "{inside}"
    );

    // One job, then the instance powers off and, being ephemeral, is deleted.
    let job = h.gh.assign_job(name).unwrap();
    assert!(h.gh.wait_until(ONLINE_WITHIN, |s| s
        .jobs
        .iter()
        .any(|j| j.id == job && j.status == "completed")));
    assert!(
        wait_for(Duration::from_secs(60), || h.owned().is_empty()),
        "instance still there: {:?}",
        h.owned()
    );
    assert!(h.client.get_runner(created.github_id).unwrap().is_none());
    assert!(h.listed().is_empty(), "{:?}", h.listed());
}

#[test]
fn five_runners_created_in_parallel_all_come_online() {
    let h = Harness::new();
    let created: Vec<CreatedRunner> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5).map(|_| s.spawn(|| h.create())).collect();
        handles.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for c in &created {
        h.wait_online(c.name.as_str());
    }
    let mut names: Vec<String> = created.iter().map(|c| c.name.to_string()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 5);
    assert_eq!(h.owned().len(), 5);
    let mut listed: Vec<String> = h.listed().into_iter().map(|r| r.name).collect();
    listed.sort();
    assert_eq!(listed, names);
}

/// Creation fails at `step`: no instance and no registration survive.
fn assert_nothing_left(h: &Harness, err: &github_runner::runner::CreateError, step: CreateStep) {
    assert_eq!(err.step, step, "{err}");
    assert!(err.cleanup.problems.is_empty(), "{err}");
    assert!(
        h.fx.instance_names().is_empty(),
        "{:?}",
        h.fx.instance_names()
    );
    assert!(h.listed().is_empty(), "{:?}", h.listed());
}

#[test]
fn a_missing_image_alias_fails_at_launch() {
    let h = Harness::new();
    let name = h.unit.new_runner_name().unwrap();
    let mut req = h.request(&name);
    req.image_alias = "noble";
    let err = create_runner(h.fx.lxd(), &h.client, &req).unwrap_err();
    assert!(err.to_string().contains("noble"), "{err}");
    assert_nothing_left(&h, &err, CreateStep::Launch);
}

#[test]
fn a_failing_exec_fails_at_extraction() {
    let h = Harness::new();
    let not_a_tarball = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_a_tarball.path(), b"this is not gzip").unwrap();
    let name = h.unit.new_runner_name().unwrap();
    let mut req = h.request(&name);
    req.runner_tarball = not_a_tarball.path();
    let err = create_runner(h.fx.lxd(), &h.client, &req).unwrap_err();
    assert!(matches!(*err.cause, StepFailure::Command { .. }), "{err}");
    assert_nothing_left(&h, &err, CreateStep::ExtractTarball);
}

#[test]
fn a_failing_push_fails_at_the_tarball() {
    let h = Harness::new();
    let name = h.unit.new_runner_name().unwrap();
    let mut req = h.request(&name);
    req.runner_tarball = Path::new("/nonexistent/runner.tar.gz");
    let err = create_runner(h.fx.lxd(), &h.client, &req).unwrap_err();
    assert_nothing_left(&h, &err, CreateStep::PushTarball);
}

#[test]
fn a_jit_conflict_fails_at_registration_and_leaves_the_other_registration_alone() {
    let h = Harness::new();
    let name = h.unit.new_runner_name().unwrap();
    let theirs = h.gh.add_runner(REPO, name.as_str(), &["x"]);
    let err = create_runner(h.fx.lxd(), &h.client, &h.request(&name)).unwrap_err();
    assert_eq!(err.step, CreateStep::RegisterJit, "{err}");
    assert!(err.to_string().contains("409"), "{err}");
    assert!(h.fx.instance_names().is_empty());
    let left: Vec<u64> = h.listed().iter().map(|r| r.id).collect();
    assert_eq!(
        left,
        vec![theirs],
        "the pre-existing registration is not ours to delete"
    );
}

#[test]
fn removing_an_idle_runner_deletes_registration_and_instance_idempotently() {
    let h = Harness::new();
    let created = h.create();
    let name = created.name.as_str();
    h.wait_online(name);
    let inst = h.instance(name);
    let target = RemovalTarget {
        name,
        instance: Some(&inst),
        github_id: Some(created.github_id),
    };
    assert_eq!(
        remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, false).unwrap(),
        RemoveOutcome::Removed
    );
    assert!(h.owned().is_empty());
    assert!(h.client.get_runner(created.github_id).unwrap().is_none());
    // Again: nothing left to remove, still fine.
    assert_eq!(
        remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, false).unwrap(),
        RemoveOutcome::Removed
    );
}

#[test]
fn a_busy_runner_is_kept_unless_removal_is_forced() {
    let h = Harness::new();
    let created = h.create();
    let name = created.name.as_str();
    h.wait_online(name);
    let job = h.gh.assign_held_job(name).unwrap();
    assert!(h
        .gh
        .wait_until(ONLINE_WITHIN, |s| s.runner(name).is_some_and(|r| r.busy)));
    let inst = h.instance(name);
    let target = RemovalTarget {
        name,
        instance: Some(&inst),
        github_id: Some(created.github_id),
    };
    assert_eq!(
        remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, false).unwrap(),
        RemoveOutcome::KeptBusy
    );
    assert_eq!(h.owned().len(), 1);
    assert_eq!(
        check_health(h.fx.lxd(), &inst, Duration::from_secs(30)),
        Health::Healthy
    );

    let outcome = remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, true).unwrap();
    assert!(
        matches!(
            outcome,
            RemoveOutcome::Removed | RemoveOutcome::RemovedRegistrationPending
        ),
        "{outcome:?}"
    );
    assert!(h.owned().is_empty());
    // The registration as the client reads it matches the outcome: gone, or still busy
    // (its job died with the instance; GitHub lets it go later).
    match (outcome, h.client.get_runner(created.github_id).unwrap()) {
        (RemoveOutcome::Removed, None) => {}
        (RemoveOutcome::RemovedRegistrationPending, Some(r)) => assert!(r.busy, "{r:?}"),
        other => panic!("outcome and registration disagree: {other:?}"),
    }
    h.gh.release_job(job);
}

/// Juju accepts application names LXD cannot fit in an instance name (63 characters): the
/// runner of a 60-character application still launches, registers and is found again.
#[test]
fn a_runner_of_a_60_character_application_launches_and_is_found_again() {
    let h = Harness::new();
    let app: String = "a-very-long-application-name-for-the-runners-of-one-big-team".into();
    assert_eq!(app.len(), 60);
    let unit = UnitIdentity::parse(&format!("{app}/0"), "model-uuid").unwrap();
    let owner = unit.owner_value();
    let name = unit.new_runner_name().unwrap();
    let mut request = h.request(&name);
    request.owner_value = &owner;
    let client = real_client(&h.gh, &unit);
    let created = create_runner(h.fx.lxd(), &client, &request).unwrap();
    h.wait_online(name.as_str());
    let owned: Vec<String> =
        h.fx.lxd()
            .list_owned_instances(&owner)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
    assert_eq!(owned, vec![name.to_string()]);
    let listed: Vec<u64> = client
        .list_runners()
        .unwrap()
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![created.github_id]);
}

#[test]
fn a_lookalike_instance_of_another_app_is_never_touched() {
    let h = Harness::new();
    let ours = h.create();
    // App "app-0" unit 1 names its runners "app-0-1-<hex>"; and an instance named like ours
    // but without our owner key (made by hand, or by another model).
    let other_unit = UnitIdentity::parse("app-0/1", "model-uuid").unwrap();
    let lookalike = other_unit.new_runner_name().unwrap();
    let spec = |name: &str, owner: Option<String>| LaunchSpec {
        name: name.to_string(),
        image_alias: IMAGE_ALIAS.into(),
        instance_type: InstanceType::Container,
        profiles: vec!["default".into()],
        config: owner
            .into_iter()
            .map(|o| (OWNER_CONFIG_KEY.to_string(), o))
            .collect(),
        ephemeral: false,
    };
    h.fx.lxd()
        .launch(&spec(lookalike.as_str(), Some(other_unit.owner_value())))
        .unwrap();
    let unmarked = h.unit.new_runner_name().unwrap();
    h.fx.lxd().launch(&spec(unmarked.as_str(), None)).unwrap();
    assert!(
        h.unit.owns_name(unmarked.as_str()),
        "same name shape as ours"
    );

    // Flush everything this unit owns.
    let owned = h.owned();
    assert_eq!(
        owned.iter().map(|i| i.name.clone()).collect::<Vec<_>>(),
        vec![ours.name.to_string()]
    );
    for inst in &owned {
        let target = RemovalTarget {
            name: &inst.name,
            instance: Some(inst),
            github_id: None,
        };
        remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, true).unwrap();
    }
    // Handing removal an instance that is not ours is refused.
    let all = h.fx.lxd().list_all_instances().unwrap();
    let theirs = all.iter().find(|i| i.name == lookalike.as_str()).unwrap();
    let target = RemovalTarget {
        name: &theirs.name,
        instance: Some(theirs),
        github_id: None,
    };
    assert!(remove_runner(h.fx.lxd(), &h.client, h.owner(), &target, true).is_err());

    let mut expected = vec![lookalike.to_string(), unmarked.to_string()];
    expected.sort();
    assert_eq!(h.fx.instance_names(), expected);
}

#[test]
fn new_vm_settings_reach_new_runners_while_running_ones_keep_theirs() {
    let mut h = Harness::with_resources(Resources {
        cpu: 1,
        memory_bytes: GIB,
        disk_bytes: GIB,
    });
    let old = h.create();
    let bigger = Resources {
        cpu: 2,
        memory_bytes: 2 * GIB,
        disk_bytes: 2 * GIB,
    };
    h.use_resources(bigger);
    let new = h.create();
    let profile_of = |name: &str| h.instance(name).profiles[2].clone();
    assert_eq!(profile_of(old.name.as_str()), "cpu-1-mem-1GiB-disk-1GiB");
    assert_eq!(profile_of(new.name.as_str()), "cpu-2-mem-2GiB-disk-2GiB");
    let limits = |name: &str| {
        let out =
            h.fx.lxc_ok(&["config", "get", name, "limits.cpu", "--expanded"]);
        out.trim().to_string()
    };
    assert_eq!(limits(old.name.as_str()), "1");
    assert_eq!(limits(new.name.as_str()), "2");
    h.wait_online(old.name.as_str());
    h.wait_online(new.name.as_str());
}

#[test]
fn storage_pool_is_made_when_one_runner_fits_and_refused_with_both_numbers_otherwise() {
    const MIB: u64 = 1 << 20;
    let mut fx = LxdFixture::new();
    let dir = tempfile::tempdir().unwrap();
    let free = storage::filesystem_free_bytes(dir.path()).unwrap();
    let total = storage::filesystem_total_bytes(dir.path()).unwrap();
    let paths = github_runner::paths::HostPaths::new(dir.path());
    let location = dir.path().join("storage/juju");
    let plan_for = |vm_disk: u64, runners: u32| {
        storage::plan_storage(
            github_runner::config::RunnerStorage::JujuStorage,
            Some(&location),
            &paths,
            vm_disk,
            runners,
        )
        .unwrap()
    };

    // One runner's (sparse) disk must fit in twice the free space.
    let too_big = 2 * free + GIB;
    let mut plan = plan_for(too_big, 1);
    plan.pool = fx.scratch_pool_name();
    match storage::apply_storage(&plan, fx.lxd()) {
        Err(StorageError::NoRoomForOneRunner { disk_mib, free_mib }) => {
            assert_eq!(disk_mib, too_big.div_ceil(MIB));
            // Other tests write to the same filesystem meanwhile.
            assert!(free_mib.abs_diff(free / MIB) < 1024, "{free_mib} vs {free}");
        }
        other => panic!("expected NoRoomForOneRunner, got {other:?}"),
    }
    assert!(
        !fx.lxc(&["storage", "show", &plan.pool]).status.success(),
        "no pool on failure"
    );

    // More runners than the whole filesystem holds: the pool is made all the same, since
    // how many fit is admission's to decide round by round from what is free then.
    let pool = plan.pool.clone();
    let mut plan = plan_for(GIB, (total / GIB + 1) as u32);
    plan.pool = pool;
    storage::apply_storage(&plan, fx.lxd()).unwrap();
    fx.claim_pool(&plan.pool);
    let shown = fx.lxc_ok(&["storage", "get", &plan.pool, "source"]);
    assert_eq!(shown.trim(), location.to_str().unwrap());
}

#[test]
fn health_reports_a_stopped_listener_as_unhealthy() {
    let h = Harness::new();
    let created = h.create();
    let name = created.name.as_str();
    h.wait_online(name);
    // Kill the start script first (so it does not power off), then the listener.
    h.exec(
        name,
        "for p in /proc/[0-9]*; do c=$(cat $p/comm); \
                   [ \"$c\" = github-runner-s ] && kill -9 ${p#/proc/}; done; \
                   for p in /proc/[0-9]*; do c=$(cat $p/comm); \
                   [ \"$c\" = Runner.Listener ] && kill -9 ${p#/proc/}; done; true",
    );
    let inst = h.instance(name);
    assert!(
        wait_for(Duration::from_secs(30), || check_health(
            h.fx.lxd(),
            &inst,
            Duration::from_secs(30)
        ) == Health::Unhealthy(
            UnhealthyReason::ListenerNotRunning
        )),
        "health: {:?}",
        check_health(h.fx.lxd(), &inst, Duration::from_secs(30))
    );
}

#[test]
fn a_name_clash_with_a_foreign_instance_fails_at_launch_and_keeps_it() {
    let h = Harness::new();
    let name = h.unit.new_runner_name().unwrap();
    h.fx.lxc_ok(&["launch", IMAGE_ALIAS, name.as_str(), "--quiet"]);
    let err = create_runner(h.fx.lxd(), &h.client, &h.request(&name)).unwrap_err();
    assert_eq!(err.step, CreateStep::Launch, "{err}");
    assert_eq!(
        h.fx.instance_names(),
        vec![name.to_string()],
        "not ours: kept"
    );
    assert!(h.listed().is_empty(), "{:?}", h.listed());
}

/// Unmounts a test tmpfs when dropped (declared before the fixture, so it runs after the
/// fixture has deleted the pool on it).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.0)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .status();
    }
}

#[test]
fn memory_storage_mounts_a_sized_tmpfs_and_puts_the_pool_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let paths = github_runner::paths::HostPaths::new(dir.path());
    let _unmount = Unmount(paths.ram_storage_dir());
    let mut fx = LxdFixture::new();
    let mib = 1u64 << 20;
    let mut plan = storage::plan_storage(
        github_runner::config::RunnerStorage::Memory,
        None,
        &paths,
        32 * mib,
        2,
    )
    .unwrap();
    plan.pool = fx.scratch_pool_name();
    storage::apply_storage(&plan, fx.lxd()).unwrap();
    fx.claim_pool(&plan.pool);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(storage::is_mount_point(
        &mountinfo,
        &paths.ram_storage_dir()
    ));
    assert_eq!(
        storage::filesystem_total_bytes(&paths.ram_storage_dir()).unwrap(),
        64 * mib
    );
    assert_eq!(
        fx.lxc_ok(&["storage", "get", &plan.pool, "source"]).trim(),
        paths.ram_storage_dir().to_str().unwrap()
    );

    // More runners later: the same mount is resized, the pool kept.
    let mut bigger = storage::plan_storage(
        github_runner::config::RunnerStorage::Memory,
        None,
        &paths,
        32 * mib,
        3,
    )
    .unwrap();
    bigger.pool = plan.pool.clone();
    storage::apply_storage(&bigger, fx.lxd()).unwrap();
    assert_eq!(
        storage::filesystem_total_bytes(&paths.ram_storage_dir()).unwrap(),
        96 * mib
    );
}
