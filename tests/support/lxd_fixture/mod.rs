//! A per-test LXD project on the real daemon, with a busybox image under the alias `jammy`.
//!
//! Each [`LxdFixture`] creates project `ghrt-<pid>-<n>` (described with its owner's pid and
//! process start time), imports the test image into it and deletes the project with
//! everything in it on drop, also while a panicking test unwinds. Projects whose owner died
//! (a run killed halfway) are reaped the first time a fixture is made in a later run.
//! See tests/README.md.

#![allow(dead_code)] // each test binary uses a different part of the fixture

use crate::executable::write_executable;
use github_runner::lxd::{LxcCli, Lxd, ProfileSpec};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const PROJECT_PREFIX: &str = "ghrt-";
pub const POOL_PREFIX: &str = "ghrt-";
pub const IMAGE_ALIAS: &str = "jammy";
const SETUP_SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/support/lxd_fixture/setup-lxd.sh"
);
const FAKE_RUNNER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/fake-runner");

static NEXT_ID: AtomicU32 = AtomicU32::new(0);

/// Per-process files shared by every fixture: the client config, the image and runner tarballs.
struct Shared {
    dir: tempfile::TempDir,
    image: PathBuf,
    runner_tarball: PathBuf,
}

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("ghrt-fixture-")
            .tempdir()
            .expect("temp dir");
        ensure_daemon(&dir.path().join("lxc-conf"));
        reap_stale(&dir.path().join("lxc-conf"));
        let image = dir.path().join("busybox-image.tar.gz");
        build_busybox_image(&image).expect("build the busybox test image");
        let runner_tarball = dir.path().join("fake-runner.tar.gz");
        build_fake_runner_tarball(&runner_tarball).expect("build the fake runner tarball");
        Shared {
            dir,
            image,
            runner_tarball,
        }
    })
}

/// `lxc` with an explicit environment (LXD_CONF of our own), for fixture chores.
pub fn lxc_raw(conf: &Path, project: Option<&str>, args: &[&str]) -> Output {
    lxc_within(conf, project, args, LXC_DEADLINE)
}

/// Longest any fixture `lxc` call may take: LXD 5.0's client can hang waiting for an
/// operation's end (see [`import_image`]). Far above what a call takes under a loaded CI.
const LXC_DEADLINE: Duration = Duration::from_secs(300);

/// `lxc` killed past `deadline`: its answer then says so as a failure (exit by SIGKILL,
/// the reason on stderr), so a hung client fails its test, or is passed over by a cleanup,
/// instead of holding a test process (and the image store lock) forever.
fn lxc_within(conf: &Path, project: Option<&str>, args: &[&str], deadline: Duration) -> Output {
    use std::os::unix::process::ExitStatusExt;
    let mut child = lxc_command(conf, project, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run lxc");
    match github_runner::host::child::collect_with_deadline(&mut child, deadline) {
        Ok(Some(done)) => Output {
            status: done.status,
            stdout: done.stdout,
            stderr: done.stderr,
        },
        Ok(None) => {
            let why = format!("lxc {args:?} hung past {deadline:?}; killed");
            eprintln!("lxd fixture: {why}");
            Output {
                status: std::process::ExitStatus::from_raw(9),
                stdout: Vec::new(),
                stderr: why.into_bytes(),
            }
        }
        Err(e) => panic!("lxc {args:?}: {e}"),
    }
}

/// `lxc` with the fixtures' explicit environment, not yet run.
fn lxc_command(conf: &Path, project: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new("lxc");
    cmd.env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin",
        )
        .env("LXD_CONF", conf)
        .env("HOME", conf);
    if let Some(p) = project {
        cmd.arg("--project").arg(p);
    }
    cmd.args(args);
    cmd
}

/// Longest an `lxc image import` of the 1 MiB test image may take before its client counts
/// as hung (it takes about a second; several seconds under a loaded CI).
const IMAGE_IMPORT_DEADLINE: Duration = Duration::from_secs(60);

/// `lxc image import --alias` into `project`, under [`IMAGE_IMPORT_DEADLINE`]. LXD 5.0's
/// client can hang after the upload, waiting for the import operation's end, when many test
/// processes import at once: the image is then in the project without its alias, and the
/// hung client holds the machine-wide image lock, stalling every test process. A hung client
/// is killed, and the import finished by hand: the alias put on the image already there, or
/// the import run again.
fn import_image(conf: &Path, project: &str, image: &Path) {
    let import = ["image", "import", path_str(image), "--alias", IMAGE_ALIAS];
    for attempt in 1..=3 {
        let mut child = lxc_command(conf, Some(project), &import)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run lxc image import");
        match github_runner::host::child::collect_with_deadline(&mut child, IMAGE_IMPORT_DEADLINE) {
            Ok(Some(done)) if done.status.success() => return,
            Ok(Some(done)) => panic!(
                "lxc image import into {project}: {}",
                String::from_utf8_lossy(&done.stderr)
            ),
            Ok(None) => eprintln!(
                "lxd fixture: lxc image import into {project} hung past \
                 {IMAGE_IMPORT_DEADLINE:?} (attempt {attempt}); killed it"
            ),
            Err(e) => panic!("lxc image import into {project}: {e}"),
        }
        let images = query_json(conf, &format!("/1.0/images?recursion=1&project={project}"));
        let images = images.as_array().cloned().unwrap_or_default();
        let has_alias = |i: &serde_json::Value| {
            i["aliases"]
                .as_array()
                .is_some_and(|a| a.iter().any(|a| a["name"] == IMAGE_ALIAS))
        };
        if images.iter().any(has_alias) {
            return;
        }
        if let Some(fingerprint) = images.iter().find_map(|i| i["fingerprint"].as_str()) {
            let out = lxc_raw(
                conf,
                Some(project),
                &["image", "alias", "create", IMAGE_ALIAS, fingerprint],
            );
            if out.status.success() {
                return;
            }
        }
    }
    panic!("lxc image import into {project} did not finish in 3 attempts");
}

fn ensure_daemon(conf: &Path) {
    std::fs::create_dir_all(conf).expect("lxc conf dir");
    let busybox_static = Command::new("dpkg")
        .args(["-s", "busybox-static"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if busybox_static && lxc_raw(conf, None, &["query", "/1.0"]).status.success() {
        return;
    }
    let status = Command::new("sh")
        .arg(SETUP_SCRIPT)
        .env("LXD_CONF", conf)
        .status()
        .expect("run setup-lxd.sh");
    assert!(
        status.success(),
        "tests/support/lxd_fixture/setup-lxd.sh failed: no LXD to test against"
    );
}

/// This process's start time (field 22 of /proc/<pid>/stat): with the pid, it names a
/// process uniquely even after pid reuse.
fn process_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after its closing paren are plain.
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(19).map(str::to_string)
}

fn owner_description() -> String {
    let pid = std::process::id();
    format!(
        "github-runner test fixture pid={pid} start={}",
        process_start_time(pid).unwrap_or_default()
    )
}

/// True when the description names a process that no longer runs.
fn owner_is_dead(description: &str) -> bool {
    let field = |key: &str| {
        description
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .map(str::to_string)
    };
    match (
        field("pid=").and_then(|p| p.parse::<u32>().ok()),
        field("start="),
    ) {
        (Some(pid), Some(start)) => process_start_time(pid).as_deref() != Some(start.as_str()),
        // Not one of ours in a form we understand: leave it.
        _ => false,
    }
}

fn query_json(conf: &Path, path: &str) -> serde_json::Value {
    let out = lxc_raw(conf, None, &["query", path]);
    if !out.status.success() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

/// The `LXD_CONF` dir fixtures of this process use.
pub fn shared_conf_dir() -> PathBuf {
    shared().dir.path().join("lxc-conf")
}

/// Deletes projects (and test pools) left behind by test processes that died.
pub fn reap_stale(conf: &Path) {
    let projects = query_json(conf, "/1.0/projects?recursion=1");
    for p in projects.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let description = p["description"].as_str().unwrap_or_default();
        if name.starts_with(PROJECT_PREFIX) && owner_is_dead(description) {
            eprintln!("lxd fixture: reaping stale project {name} ({description})");
            purge_project(conf, name);
        }
    }
    let pools = query_json(conf, "/1.0/storage-pools?recursion=1");
    for p in pools.as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default();
        let description = p["description"].as_str().unwrap_or_default();
        if name.starts_with(POOL_PREFIX) && owner_is_dead(description) {
            eprintln!("lxd fixture: reaping stale storage pool {name}");
            let _ = lxc_raw(conf, None, &["storage", "delete", name]);
        }
    }
}

/// Serialises image imports and deletions across every test process on this machine.
///
/// Every fixture project imports the same image, so LXD keeps one file for all of them. LXD
/// 5.0's `image import` moves the file into the image store before it writes the project's
/// database row; an `image delete` in another project that runs in between sees no other
/// user and removes the file, leaving the importing project a row without a file ("Failed
/// creating instance from image: open /var/lib/lxd/images/<fingerprint>: no such file").
/// Holding this lock (an flock, released by the kernel even when a test process dies) around
/// both closes that window.
struct ImageStoreLock(std::fs::File);

impl ImageStoreLock {
    /// Host-wide path: test processes of any checkout share the one daemon.
    const PATH: &'static str = "/tmp/ghrt-lxd-image-store.lock";

    fn acquire() -> ImageStoreLock {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(Self::PATH)
            .expect("open the LXD image store lock");
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
            .expect("lock the LXD image store");
        ImageStoreLock(file)
    }
}

/// Deletes every instance, image and profile of `project`, then the project.
pub fn purge_project(conf: &Path, project: &str) {
    let q = |path: &str| query_json(conf, &format!("{path}?project={project}"));
    for url in q("/1.0/instances").as_array().into_iter().flatten() {
        if let Some(name) = url.as_str().and_then(|u| u.rsplit('/').next()) {
            let name = name.split('?').next().unwrap_or(name);
            let _ = lxc_raw(conf, Some(project), &["delete", "--force", name]);
        }
    }
    {
        let _images = ImageStoreLock::acquire();
        for url in q("/1.0/images").as_array().into_iter().flatten() {
            if let Some(fp) = url.as_str().and_then(|u| u.rsplit('/').next()) {
                let fp = fp.split('?').next().unwrap_or(fp);
                // Under the machine-wide lock: a hung client here would stall every test
                // process, so it gets the import's short deadline.
                let _ = lxc_within(
                    conf,
                    Some(project),
                    &["image", "delete", fp],
                    IMAGE_IMPORT_DEADLINE,
                );
            }
        }
    }
    for url in q("/1.0/profiles").as_array().into_iter().flatten() {
        if let Some(name) = url.as_str().and_then(|u| u.rsplit('/').next()) {
            let name = name.split('?').next().unwrap_or(name);
            if name != "default" {
                let _ = lxc_raw(conf, Some(project), &["profile", "delete", name]);
            }
        }
    }
    let out = lxc_raw(conf, None, &["project", "delete", project]);
    if !out.status.success() {
        eprintln!(
            "lxd fixture: could not delete project {project}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
}

/// The charm's storage pool for runner disks (`runner`, as in production).
pub const RUNNER_POOL: &str = github_runner::runner::resources::RUNNER_POOL;
/// Where the `runner` pool lives when no test made it yet: fixed, so every run agrees.
const RUNNER_STORAGE_DIR: &str = "/var/tmp/github-runner-e2e-runner-storage";

/// The Juju storage location every test gives the charm. LXD pools are global and the charm
/// refuses a `runner` pool whose source differs from its Juju storage, so all tests on the
/// daemon must agree: the source of an existing `runner` pool, else [`RUNNER_STORAGE_DIR`].
/// The pool and its directory are shared and stay after the tests.
pub fn runner_storage_dir(conf: &Path) -> PathBuf {
    let out = lxc_raw(
        conf,
        None,
        &["query", &format!("/1.0/storage-pools/{RUNNER_POOL}")],
    );
    let existing: Option<PathBuf> = out
        .status
        .success()
        .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).ok())
        .flatten()
        .and_then(|pool| pool["config"]["source"].as_str().map(PathBuf::from));
    let dir = existing.unwrap_or_else(|| PathBuf::from(RUNNER_STORAGE_DIR));
    std::fs::create_dir_all(&dir).expect("create the runner storage dir");
    dir
}

/// One test's LXD project. Deleted with everything in it on drop.
pub struct LxdFixture {
    pub project: String,
    pub conf: PathBuf,
    /// Storage pool the project's default profile puts root disks on.
    pub pool: String,
    lxd: LxcCli,
    extra_pools: Vec<String>,
}

impl LxdFixture {
    pub fn new() -> LxdFixture {
        let shared = shared();
        let conf = shared.dir.path().join("lxc-conf");
        let project = format!(
            "{PROJECT_PREFIX}{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        let description = owner_description();
        // Created with its owner in the description in one call, so a killed run is reapable.
        let body = serde_json::json!({
            "name": project,
            "description": description,
            "config": {"features.images": "true", "features.profiles": "true"},
        });
        let out = lxc_raw(
            &conf,
            None,
            &[
                "query",
                "-X",
                "POST",
                "--data",
                &body.to_string(),
                "/1.0/projects",
            ],
        );
        assert!(
            out.status.success(),
            "create project {project}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Own the project right away so a panic below still deletes it.
        let pool = std::env::var("GHR_TEST_LXD_POOL").unwrap_or_else(|_| "default".to_string());
        let lxd = LxcCli::new(conf.clone())
            .expect("lxc on PATH")
            .in_project(project.clone());
        let fixture = LxdFixture {
            project,
            conf,
            pool,
            lxd,
            extra_pools: Vec::new(),
        };
        fixture.lxc_ok(&[
            "profile",
            "device",
            "add",
            "default",
            "root",
            "disk",
            "path=/",
            &format!("pool={}", fixture.pool),
        ]);
        {
            let _images = ImageStoreLock::acquire();
            import_image(&fixture.conf, &fixture.project, &shared.image);
        }
        fixture
    }

    /// The implementation under test, bound to this project.
    pub fn lxd(&self) -> &LxcCli {
        &self.lxd
    }

    /// `lxc --project <ours> args...`; panics with LXD's message on failure.
    pub fn lxc_ok(&self, args: &[&str]) -> String {
        let project = if args.first() == Some(&"project") || args.first() == Some(&"query") {
            None
        } else {
            Some(self.project.as_str())
        };
        let out = lxc_raw(&self.conf, project, args);
        assert!(
            out.status.success(),
            "lxc {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `lxc --project <ours> args...`, whatever it answers.
    pub fn lxc(&self, args: &[&str]) -> Output {
        lxc_raw(&self.conf, Some(&self.project), args)
    }

    /// Names of every instance in the project (owned or not).
    pub fn instance_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .lxd
            .list_all_instances()
            .expect("list")
            .into_iter()
            .map(|i| i.name)
            .collect();
        names.sort();
        names
    }

    /// Adds the loopback proxy device to the project's `default` profile, so every instance
    /// (launched with `default` first, as the charm does) reaches the host's 127.0.0.1:port
    /// at its own 127.0.0.1:port, and nothing else.
    pub fn route_default_profile_to_host_port(&self, port: u16) {
        let port = port.to_string();
        self.lxc_ok(&[
            "profile",
            "device",
            "add",
            "default",
            "github-loopback",
            "proxy",
            &format!("listen=tcp:127.0.0.1:{port}"),
            &format!("connect=tcp:127.0.0.1:{port}"),
            "bind=instance",
        ]);
    }

    /// A profile giving instances `tcp:127.0.0.1:port` that reaches the host's 127.0.0.1:port.
    pub fn loopback_proxy_profile(&self, port: u16) -> String {
        let name = format!("test-loopback-{port}");
        let device: BTreeMap<String, String> = [
            ("type", "proxy".to_string()),
            ("listen", format!("tcp:127.0.0.1:{port}")),
            ("connect", format!("tcp:127.0.0.1:{port}")),
            ("bind", "instance".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let spec = ProfileSpec {
            name: name.clone(),
            config: BTreeMap::new(),
            devices: [("github-loopback".to_string(), device)]
                .into_iter()
                .collect(),
        };
        self.lxd.ensure_profile(&spec).expect("test proxy profile");
        name
    }

    /// A storage pool name this fixture deletes on drop (create it through the code under test).
    pub fn scratch_pool_name(&mut self) -> String {
        let name = format!(
            "{POOL_PREFIX}{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::SeqCst)
        );
        self.extra_pools.push(name.clone());
        name
    }

    /// Marks a pool created by the code under test with this process as owner, so a killed
    /// run's pool is reaped.
    pub fn claim_pool(&self, name: &str) {
        let body = serde_json::json!({"description": owner_description()});
        self.lxc_ok(&[
            "query",
            "-X",
            "PATCH",
            "--data",
            &body.to_string(),
            &format!("/1.0/storage-pools/{name}"),
        ]);
    }

    /// The fake runner application tarball (tests/fixtures/fake-runner, packed once).
    pub fn fake_runner_tarball(&self) -> &'static Path {
        &shared().runner_tarball
    }
}

impl Drop for LxdFixture {
    fn drop(&mut self) {
        purge_project(&self.conf, &self.project);
        for pool in &self.extra_pools {
            let _ = lxc_raw(&self.conf, None, &["storage", "delete", pool]);
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("fixture paths are UTF-8")
}

fn tar_dir(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    uid: u64,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(uid);
    h.set_size(0);
    h.set_mtime(0);
    builder.append_data(&mut h, path, std::io::empty())
}

fn tar_file(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    data: &[u8],
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    builder.append_data(&mut h, path, data)
}

fn tar_symlink(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    target: &str,
) -> std::io::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_mtime(0);
    builder.append_link(&mut h, path, target)
}

/// The test image's init: brings `lo` up, then waits; SIGPWR (`lxc stop`) and SIGUSR2
/// (busybox `poweroff`) end it, which stops the container at once.
const INIT_SCRIPT: &str = r#"#!/bin/sh
trap 'exit 0' PWR USR2 TERM
ip link set lo up
while :; do
    sleep 3600 &
    wait $!
done
"#;

/// A LXD image of busybox-static: applets in /bin, root and ubuntu (uid 1000) users.
fn build_busybox_image(dest: &Path) -> std::io::Result<()> {
    let busybox_path = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("busybox-static is installed (tests/support/lxd_fixture/setup-lxd.sh installs it)");
    let busybox = std::fs::read(&busybox_path)?;
    let applets = Command::new(&busybox_path).arg("--list").output()?;
    let applets = String::from_utf8_lossy(&applets.stdout).into_owned();
    let architecture = std::env::consts::ARCH;
    let metadata = format!(
        "architecture: {architecture}\ncreation_date: 1\nproperties:\n  os: busybox\n  release: jammy\n  description: github-runner test image (busybox-static)\n"
    );
    let file = std::fs::File::create(dest)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    tar_file(&mut b, "metadata.yaml", 0o644, metadata.as_bytes())?;
    for (dir, mode, uid) in [
        ("rootfs", 0o755, 0),
        ("rootfs/bin", 0o755, 0),
        ("rootfs/sbin", 0o755, 0),
        ("rootfs/etc", 0o755, 0),
        ("rootfs/dev", 0o755, 0),
        ("rootfs/proc", 0o555, 0),
        ("rootfs/sys", 0o555, 0),
        ("rootfs/run", 0o755, 0),
        ("rootfs/tmp", 0o1777, 0),
        ("rootfs/root", 0o700, 0),
        ("rootfs/var", 0o755, 0),
        ("rootfs/var/log", 0o755, 0),
        ("rootfs/home", 0o755, 0),
        ("rootfs/home/ubuntu", 0o755, 1000),
    ] {
        tar_dir(&mut b, dir, mode, uid)?;
    }
    tar_file(&mut b, "rootfs/bin/busybox", 0o755, &busybox)?;
    for applet in applets
        .split_whitespace()
        .filter(|a| *a != "busybox" && !a.contains('/'))
    {
        tar_symlink(&mut b, &format!("rootfs/bin/{applet}"), "busybox")?;
    }
    tar_file(&mut b, "rootfs/sbin/init", 0o755, INIT_SCRIPT.as_bytes())?;
    tar_file(
        &mut b,
        "rootfs/etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nubuntu:x:1000:1000:Ubuntu:/home/ubuntu:/bin/sh\n",
    )?;
    tar_file(
        &mut b,
        "rootfs/etc/group",
        0o644,
        b"root:x:0:\nubuntu:x:1000:\n",
    )?;
    tar_file(
        &mut b,
        "rootfs/etc/shadow",
        0o600,
        b"root:*:19000:0:99999:7:::\nubuntu:*:19000:0:99999:7:::\n",
    )?;
    tar_file(&mut b, "rootfs/etc/hostname", 0o644, b"runner\n")?;
    b.into_inner()?.finish()?.sync_all()
}

/// tests/fixtures/fake-runner as the runner application tarball (files at the top level).
fn build_fake_runner_tarball(dest: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let file = std::fs::File::create(dest)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    let mut stack = vec![PathBuf::from(FAKE_RUNNER_DIR)];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            let rel = path
                .strip_prefix(FAKE_RUNNER_DIR)
                .expect("walk stays below the root");
            let rel = format!("./{}", rel.display());
            if path.is_dir() {
                tar_dir(&mut b, &rel, 0o755, 0)?;
                stack.push(path);
            } else {
                let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
                tar_file(&mut b, &rel, mode, &std::fs::read(&path)?)?;
            }
        }
    }
    b.into_inner()?.finish()?.sync_all()
}

/// Waits until `cond` holds, checking with a growing interval (20 ms doubling to 500 ms), at
/// most `timeout`. True when it held.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

/// Writes `<dir>/lxc`, a wrapper that appends each call's arguments as one line to
/// `<dir>/lxc.calls`, then runs the real `lxc`. Returns (wrapper, log).
pub fn write_counting_lxc(dir: &Path) -> (PathBuf, PathBuf) {
    let real = which::which("lxc").expect("lxc on PATH");
    let wrapper = dir.join("lxc");
    let log = dir.join("lxc.calls");
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
        log.display(),
        real.display()
    );
    write_executable(&wrapper, &script);
    (wrapper, log)
}

/// The `lxc` subcommand of a logged argument line (after `--project X` and flags).
pub fn lxc_subcommand(line: &str) -> Option<&str> {
    let mut words = line.split_whitespace();
    loop {
        match words.next()? {
            "--project" => {
                words.next();
            }
            w if w.starts_with('-') => {}
            w => return Some(w),
        }
    }
}
