//! The scale-set listener process as the charm starts it (`github-runner-worker
//! --scale-set`, the real binary), over the fixture's LXD project and the fake scale set
//! serving fake runners: shared by `scaleset_lxd.rs` and the `scaleset` benchmark.

use crate::fake_scaleset::FakeScaleSetService;
use crate::lxd_fixture::{runner_storage_dir, wait_for, LxdFixture, RUNNER_POOL};
use github_runner::clock::SystemClock;
use github_runner::credential::store::CredentialStore;
use github_runner::credential::Credential;
use github_runner::github::download::tarball_path;
use github_runner::lxd::{Instance, Lxd};
use github_runner::paths::HostPaths;
use github_runner::reactive::workers::{write_settings, SlotStatus, UnitDirs};
use github_runner::scaleset::process::{ListenerSettings, LISTENER_FLAG, LISTENER_SLOT};
use github_runner::secret::Secret;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub const UNIT: &str = "github-runner/0";
pub const MODEL: &str = "model-uuid";
pub const OWNER: &str = "model-uuid/github-runner/0";
/// Container start, runner online, job, removal: seconds each on this machine.
pub const WAIT: Duration = Duration::from_secs(120);

/// The listener process; killed (and its output shown) if the test ends before it did.
pub struct Listener {
    pub child: Option<Child>,
    pub dirs: UnitDirs,
}

impl Listener {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dirs.log_file(LISTENER_SLOT)).unwrap_or_default()
    }

    pub fn slot(&self) -> SlotStatus {
        let text = std::fs::read_to_string(self.dirs.slot_file(LISTENER_SLOT)).unwrap_or_default();
        serde_json::from_str(text.trim()).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!("listener log:\n{}", self.log());
        }
    }
}

/// The unit's host root as its hook leaves it for the listener: the runner tarball in the
/// cache, the credential file, the 0600 settings; then the listener started as the charm
/// starts it (argv without secrets, an explicit environment).
pub fn start_listener(
    fx: &LxdFixture,
    fake: &FakeScaleSetService,
    root: &std::path::Path,
    virtual_machines: u32,
) -> Listener {
    let paths = HostPaths::for_unit(root, UNIT);
    let tarball = tarball_path(&paths);
    std::fs::create_dir_all(tarball.parent().unwrap()).unwrap();
    std::fs::copy(fx.fake_runner_tarball(), &tarball).unwrap();
    CredentialStore::for_unit(&paths)
        .put(&Credential::Token(Secret::new(fake.pat())), &SystemClock)
        .unwrap();
    let config = serde_json::json!({
        "path": "octo/hello",
        "github-url": fake.url(),
        "test-mode": "insecure",
        "scale-set-name": "lxd",
        "labels": "large",
        "virtual-machines": virtual_machines,
        "vm-cpu": 1,
        "vm-memory": "512MiB",
        "vm-disk": "1GiB",
    });
    let settings = ListenerSettings {
        unit_name: UNIT.into(),
        model_uuid: MODEL.into(),
        config: config.as_object().unwrap().clone(),
        http_proxy: None,
        https_proxy: None,
        no_proxy: None,
        charm_dir: "/nonexistent".into(),
        lxd_project: Some(fx.project.clone()),
        binary: String::new(),
        debug_ssh: Vec::new(),
    };
    let dirs = UnitDirs::new(root.join("scale-set/state"), root.join("scale-set/logs"));
    write_settings(&dirs, &settings.to_bytes()).unwrap();
    let log = std::fs::File::create(dirs.log_file(LISTENER_SLOT)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_github-runner-worker"))
        .arg(LISTENER_FLAG)
        .arg("--dir")
        .arg(&dirs.state)
        .arg("--logs")
        .arg(&dirs.logs)
        .args(["--slot", &LISTENER_SLOT.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GITHUB_RUNNER_HOST_ROOT", root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the listener");
    Listener {
        child: Some(child),
        dirs,
    }
}

pub fn owned(fx: &LxdFixture) -> Vec<Instance> {
    fx.lxd().list_owned_instances(OWNER).unwrap_or_default()
}

/// The runner pool and the fake scale set serving fake runners to the fixture's project.
pub fn fake_for(fx: &LxdFixture) -> FakeScaleSetService {
    // The charm's runner pool (resource profiles put root disks on it), shared on the daemon.
    let source = runner_storage_dir(&fx.conf);
    fx.lxd()
        .ensure_storage_pool(RUNNER_POOL, "dir", &source.to_string_lossy())
        .expect("the runner pool");
    let fake = FakeScaleSetService::start(Arc::new(SystemClock));
    fake.serve_fake_runners();
    fx.route_default_profile_to_host_port(fake.url().rsplit(':').next().unwrap().parse().unwrap());
    fake
}

/// SIGTERM, then the exit status once the process is gone.
pub fn terminate(listener: &mut Listener) -> std::process::ExitStatus {
    // SAFETY: signalling our own child by its pid.
    assert_eq!(unsafe { libc::kill(listener.pid(), libc::SIGTERM) }, 0);
    let mut status = None;
    assert!(
        wait_for(Duration::from_secs(60), || {
            status = listener.child.as_mut().unwrap().try_wait().unwrap();
            status.is_some()
        }),
        "the listener exits on SIGTERM: {}",
        listener.log()
    );
    listener.child = None;
    status.unwrap()
}
