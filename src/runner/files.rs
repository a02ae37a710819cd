//! Files pushed into a runner instance, rendered as pure functions: the environment files,
//! docker's daemon.json and the start script (the only place the JIT config goes).

use crate::network::debug_ssh;
use crate::secret::Secret;

/// Where the runner application lives, owned by uid 1000.
pub const RUNNER_DIR: &str = "/home/ubuntu/github-runner";
/// Where the tarball is pushed before extraction (removed after).
pub const TARBALL_TARGET: &str = "/home/ubuntu/github-runner.tar.gz";
/// The start script: root-only (0700), deletes itself once it has read the JIT config.
pub const START_SCRIPT: &str = "/root/github-runner-start.sh";
/// Where the start script's output goes inside the instance.
pub const START_LOG: &str = "/var/log/github-runner-start.log";
/// System-wide environment (read by PAM, so by `su` and by job steps' login shells).
pub const SYSTEM_ENV_FILE: &str = "/etc/environment";
/// The runner's own environment file, loaded by the runner at start.
pub const RUNNER_ENV_FILE: &str = "/home/ubuntu/github-runner/.env";
pub const DOCKER_DAEMON_JSON: &str = "/etc/docker/daemon.json";
/// dockerd's proxy settings (a systemd drop-in): `docker pull` goes through the proxy.
pub const DOCKER_PROXY_DROP_IN: &str = "/etc/systemd/system/docker.service.d/http-proxy.conf";
/// The runner user's docker client config: containers the job starts get the proxies.
pub const DOCKER_CLIENT_CONFIG: &str = "/home/ubuntu/.docker/config.json";
/// The runner's job-started hook (`ACTIONS_RUNNER_HOOK_JOB_STARTED`): root-owned, so a job
/// cannot change it; records the job for the `runner_start` metric.
pub const PRE_JOB_SCRIPT: &str = "/usr/local/bin/github-runner-pre-job";
/// Where the runner (uid 1000) writes its job metrics; read by the charm with one exec.
pub const METRICS_DIR: &str = "/home/ubuntu/github-runner-metrics";
/// What [`render_pre_job_script`] writes in [`METRICS_DIR`].
pub const PRE_JOB_FILE: &str = "pre-job.json";

/// Ubuntu's default PATH: /etc/environment replaces PATH for PAM sessions, so keep it whole.
const RUNNER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/games:/usr/local/games:/snap/bin";

/// What the runner's environment carries from the charm: Juju's proxies and the mirror.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunnerEnvironment {
    pub http_proxy: Option<String>,
    pub https_proxy: Option<String>,
    pub no_proxy: Option<String>,
    pub dockerhub_mirror: Option<String>,
    /// The debug-ssh relation's tmate servers; each runner gets one ([`debug_ssh::pick`]).
    pub debug_ssh: Vec<debug_ssh::TmateServer>,
}

impl RunnerEnvironment {
    /// From the hook's `JUJU_CHARM_{HTTP,HTTPS,NO}_PROXY` (via `var`) and `dockerhub-mirror`.
    pub fn from_juju(
        var: impl Fn(&str) -> Option<String>,
        dockerhub_mirror: Option<String>,
    ) -> Self {
        let get = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        RunnerEnvironment {
            http_proxy: get("JUJU_CHARM_HTTP_PROXY"),
            https_proxy: get("JUJU_CHARM_HTTPS_PROXY"),
            no_proxy: get("JUJU_CHARM_NO_PROXY"),
            dockerhub_mirror: dockerhub_mirror.filter(|m| !m.trim().is_empty()),
            debug_ssh: Vec::new(),
        }
    }

    /// With aproxy the host redirects runner web traffic transparently: runners get no proxy
    /// settings at all.
    pub fn without_proxies(mut self) -> Self {
        self.http_proxy = None;
        self.https_proxy = None;
        self.no_proxy = None;
        self
    }

    fn proxied(&self) -> bool {
        self.http_proxy.is_some() || self.https_proxy.is_some()
    }

    /// NO_PROXY: Juju's list plus the instance's own name.
    fn no_proxy_for(&self, instance_name: &str) -> String {
        let mut hosts: Vec<&str> = self
            .no_proxy
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        if !hosts.contains(&instance_name) {
            hosts.push(instance_name);
        }
        hosts.join(",")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("{key} holds a line break or NUL, which would inject into the runner's environment file; fix the Juju model proxy settings or dockerhub-mirror")]
    UnsafeValue { key: String },
    #[error("the JIT config from GitHub holds a line break or NUL; refusing to write it into the start script")]
    UnsafeJitConfig,
    #[error("could not assemble the runner's configuration files: {0}")]
    Bundle(String),
}

fn check_value(key: &str, value: &str) -> Result<(), RenderError> {
    if value.contains(['\n', '\r', '\0']) {
        Err(RenderError::UnsafeValue {
            key: key.to_string(),
        })
    } else {
        Ok(())
    }
}

/// `KEY=value` lines for /etc/environment and the runner's `.env`: PATH, LANG=C.UTF-8, the
/// proxies in both cases (NO_PROXY gains the instance's own name), the dockerhub mirror.
pub fn render_env_file(
    env: &RunnerEnvironment,
    instance_name: &str,
) -> Result<String, RenderError> {
    let mut vars: Vec<(&str, String)> = vec![
        ("PATH", RUNNER_PATH.to_string()),
        ("LANG", "C.UTF-8".to_string()),
        (
            "ACTIONS_RUNNER_HOOK_JOB_STARTED",
            PRE_JOB_SCRIPT.to_string(),
        ),
    ];
    if let Some(p) = &env.http_proxy {
        vars.push(("HTTP_PROXY", p.clone()));
        vars.push(("http_proxy", p.clone()));
    }
    if let Some(p) = &env.https_proxy {
        vars.push(("HTTPS_PROXY", p.clone()));
        vars.push(("https_proxy", p.clone()));
    }
    if env.proxied() {
        let no_proxy = env.no_proxy_for(instance_name);
        vars.push(("NO_PROXY", no_proxy.clone()));
        vars.push(("no_proxy", no_proxy));
    }
    if let Some(m) = &env.dockerhub_mirror {
        vars.push(("DOCKERHUB_MIRROR", m.clone()));
        vars.push(("CONTAINER_REGISTRY_URL", m.clone()));
    }
    if let Some(server) = debug_ssh::pick(&env.debug_ssh, instance_name) {
        vars.extend(server.env_vars());
    }
    let mut out = String::new();
    for (k, v) in vars {
        check_value(k, &v)?;
        out.push_str(k);
        out.push('=');
        out.push_str(&v);
        out.push('\n');
    }
    Ok(out)
}

/// docker's daemon.json pointing at the mirror, when there is one.
pub fn render_docker_daemon_json(env: &RunnerEnvironment) -> Option<String> {
    env.dockerhub_mirror
        .as_ref()
        .map(|m| format!("{}\n", serde_json::json!({ "registry-mirrors": [m] })))
}

/// dockerd's proxy drop-in, when Juju has proxies. Values are systemd-quoted (`%` doubled,
/// `"` and `\\` escaped); a line break was already refused by [`render_env_file`].
pub fn render_docker_proxy_drop_in(env: &RunnerEnvironment, instance_name: &str) -> Option<String> {
    if !env.proxied() {
        return None;
    }
    let quote = |k: &str, v: &str| {
        let v = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('%', "%%");
        format!(" \"{k}={v}\"")
    };
    let mut line = String::from("Environment=");
    if let Some(p) = &env.http_proxy {
        line.push_str(&quote("HTTP_PROXY", p));
    }
    if let Some(p) = &env.https_proxy {
        line.push_str(&quote("HTTPS_PROXY", p));
    }
    line.push_str(&quote("NO_PROXY", &env.no_proxy_for(instance_name)));
    Some(format!(
        "# Written by the github-runner charm: dockerd pulls through the model's proxy.\n[Service]\n{}\n",
        line.replacen("Environment= ", "Environment=", 1)
    ))
}

/// The runner user's docker client config: containers a job runs get the proxies too.
pub fn render_docker_client_config(env: &RunnerEnvironment, instance_name: &str) -> Option<String> {
    if !env.proxied() {
        return None;
    }
    let mut proxies = serde_json::Map::new();
    if let Some(p) = &env.http_proxy {
        proxies.insert("httpProxy".into(), p.clone().into());
    }
    if let Some(p) = &env.https_proxy {
        proxies.insert("httpsProxy".into(), p.clone().into());
    }
    proxies.insert("noProxy".into(), env.no_proxy_for(instance_name).into());
    Some(format!(
        "{}\n",
        serde_json::json!({ "proxies": { "default": proxies } })
    ))
}

/// `'...'` for sh, safe for any text without NUL.
fn sh_single_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The start script, run detached as root: reads and deletes itself, runs
/// `run.sh --jitconfig` as ubuntu (uid 1000) for one job, then powers the instance off
/// (ephemeral, so LXD deletes it). The JIT config reaches `su` on stdin, not in its argv.
pub fn render_start_script(
    jit_config: &Secret,
    env: &RunnerEnvironment,
) -> Result<Secret, RenderError> {
    let jit = jit_config.expose();
    if jit.contains(['\n', '\r', '\0']) {
        return Err(RenderError::UnsafeJitConfig);
    }
    let reload_docker = if env.proxied() {
        "# Restart dockerd with the proxy drop-in (and daemon.json).\n\
         if command -v systemctl >/dev/null 2>&1; then systemctl daemon-reload >/dev/null 2>&1; systemctl restart docker >/dev/null 2>&1 || true; fi\n"
    } else if env.dockerhub_mirror.is_some() {
        "# Pick up registry-mirrors from daemon.json (docker reloads it on SIGHUP).\n\
         if command -v systemctl >/dev/null 2>&1; then systemctl reload docker >/dev/null 2>&1 || true; fi\n"
    } else {
        ""
    };
    let run_as_ubuntu = format!(
        "cd {RUNNER_DIR} && IFS= read -r jit && exec ./run.sh --jitconfig \"$jit\" </dev/null"
    );
    Ok(Secret::new(format!(
        "#!/bin/sh\n\
         # Written by the github-runner charm: one job, then power off.\n\
         jit_config={jit}\n\
         # The one-time JIT config now lives only in this shell: remove the file holding it.\n\
         rm -f -- \"$0\"\n\
         {reload_docker}\
         printf '%s\\n' \"$jit_config\" | su ubuntu -s /bin/sh -c {cmd}\n\
         status=$?\n\
         jit_config=\n\
         echo \"github-runner: run.sh exited with status $status; powering off\"\n\
         poweroff\n",
        jit = sh_single_quote(jit),
        cmd = sh_single_quote(&run_as_ubuntu),
    )))
}

/// The job-started hook: writes `<metrics_dir>/pre-job.json` =
/// `{"workflow", "repository", "event", "timestamp"}` from the job's `GITHUB_*` variables.
/// POSIX sh (busybox too); values are JSON-escaped (backslash, quote; control characters
/// dropped); written to a temporary file then renamed, so a reader never sees half of it.
/// It always exits 0: a metric must never fail the job.
pub fn render_pre_job_script(metrics_dir: &str) -> String {
    const TEMPLATE: &str = r#"#!/bin/sh
# Written by the github-runner charm: records the job for the runner_start metric.
# Never fails the job.
dir=@DIR@
esc() { printf '%s' "$1" | tr -d '\000-\037' | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
{
  mkdir -p "$dir" &&
  printf '{"workflow": "%s", "repository": "%s", "event": "%s", "run_id": "%s", "timestamp": %s}\n' \
    "$(esc "$GITHUB_WORKFLOW")" "$(esc "$GITHUB_REPOSITORY")" "$(esc "$GITHUB_EVENT_NAME")" \
    "$(esc "$GITHUB_RUN_ID")" "$(date +%s)" >"$dir/@FILE@.tmp" &&
  mv -f "$dir/@FILE@.tmp" "$dir/@FILE@"
} >/dev/null 2>&1
exit 0
"#;
    TEMPLATE
        .replace("@DIR@", &sh_single_quote(metrics_dir))
        .replace("@FILE@", PRE_JOB_FILE)
}

/// Most bytes a pre-job.json may hold: the hook writes five short fields.
pub const MAX_PRE_JOB_BYTES: usize = 1024;

/// Exit code of [`read_pre_job_script`] when the file or its folder is not a plain file or
/// folder (a symlink, a device, a FIFO): the job put something else there.
pub const PRE_JOB_NOT_REGULAR: i32 = 3;

/// Seconds the read of [`PRE_JOB_FILE`] may take: a plain file of 1 KiB reads at once; a
/// FIFO swapped in after the check would block the open until a writer came.
pub const PRE_JOB_READ_SECONDS: u32 = 2;

/// Shell printing at most `MAX_PRE_JOB_BYTES + 1` bytes of [`PRE_JOB_FILE`] (one byte more
/// than allowed, so an oversized file is seen as such): the job owns the runner and can put
/// a symlink to /dev/zero, a FIFO or a huge file there. Symlinks (of the file or its folder)
/// and non-regular files are refused. What the job swaps in between the test and the read is
/// still cut by `head -c` and the exec's output cap, and a read that blocks (a FIFO) is
/// killed after [`PRE_JOB_READ_SECONDS`] rather than holding the exec to its timeout.
pub fn read_pre_job_script() -> String {
    read_pre_job_script_in(METRICS_DIR)
}

/// [`read_pre_job_script`] for the folder `dir` (tests run it on the host).
pub fn read_pre_job_script_in(dir: &str) -> String {
    format!(
        "d={dir}; f=\"$d\"/{file}; \
         if [ -L \"$d\" ] || [ -L \"$f\" ] || [ ! -f \"$f\" ]; then \
         echo 'pre-job.json is not a regular file' >&2; exit {PRE_JOB_NOT_REGULAR}; fi; \
         timeout -s KILL {seconds} head -c {limit} -- \"$f\"; rc=$?; \
         if [ \"$rc\" -eq 137 ] || [ \"$rc\" -eq 124 ]; then \
         echo 'pre-job.json is not a regular file (reading it blocked)' >&2; \
         exit {PRE_JOB_NOT_REGULAR}; fi; exit \"$rc\"",
        dir = sh_single_quote(dir),
        file = PRE_JOB_FILE,
        seconds = PRE_JOB_READ_SECONDS,
        limit = MAX_PRE_JOB_BYTES + 1,
    )
}

/// Shell run as root: unpacks the pushed tarball into [`RUNNER_DIR`] as uid 1000 (a
/// tarball from the internet is never unpacked as root), then unpacks the configuration
/// bundle ([`render_config_bundle`]) read from stdin over `/`, owners and modes as in it.
pub fn extract_command() -> String {
    let as_runner = format!(
        "set -e; mkdir -p {RUNNER_DIR}; tar -xzf {TARBALL_TARGET} -C {RUNNER_DIR}; rm -f {TARBALL_TARGET}; \
         test -x {RUNNER_DIR}/run.sh || {{ echo 'run.sh missing from the runner tarball' >&2; exit 3; }}"
    );
    format!(
        "set -e; su ubuntu -s /bin/sh -c {}; tar -xf - -C /",
        sh_single_quote(&as_runner)
    )
}

/// The environment files (and docker's daemon.json with a mirror) as an uncompressed tar
/// of paths relative to `/`, with numeric owners and modes: one exec writes them all.
pub fn render_config_bundle(
    env: &RunnerEnvironment,
    instance_name: &str,
) -> Result<Vec<u8>, RenderError> {
    let env_file = render_env_file(env, instance_name)?;
    let mut files: Vec<(&str, String, u32, u64)> = vec![
        (SYSTEM_ENV_FILE, env_file.clone(), 0o644, 0),
        (
            RUNNER_ENV_FILE,
            env_file,
            0o644,
            u64::from(super::RUNNER_UID),
        ),
    ];
    files.push((PRE_JOB_SCRIPT, render_pre_job_script(METRICS_DIR), 0o755, 0));
    if let Some(json) = render_docker_daemon_json(env) {
        files.push((DOCKER_DAEMON_JSON, json, 0o644, 0));
    }
    if let Some(drop_in) = render_docker_proxy_drop_in(env, instance_name) {
        files.push((DOCKER_PROXY_DROP_IN, drop_in, 0o644, 0));
    }
    if let Some(json) = render_docker_client_config(env, instance_name) {
        let runner = u64::from(super::RUNNER_UID);
        files.push((DOCKER_CLIENT_CONFIG, json, 0o600, runner));
    }
    let mut builder = tar::Builder::new(Vec::new());
    if files.iter().any(|f| f.0 == DOCKER_CLIENT_CONFIG) {
        // Else tar makes ~/.docker root's, and the job's `docker login` cannot write there.
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_size(0);
        header.set_mode(0o700);
        header.set_uid(u64::from(super::RUNNER_UID));
        header.set_gid(u64::from(super::RUNNER_UID));
        header.set_mtime(0);
        builder
            .append_data(&mut header, "home/ubuntu/.docker/", std::io::empty())
            .map_err(|e| RenderError::Bundle(e.to_string()))?;
    }
    for (path, content, mode, owner) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(mode);
        header.set_uid(owner);
        header.set_gid(owner);
        header.set_mtime(0);
        builder
            .append_data(
                &mut header,
                path.trim_start_matches('/'),
                content.as_bytes(),
            )
            .map_err(|e| RenderError::Bundle(e.to_string()))?;
    }
    builder
        .into_inner()
        .map_err(|e| RenderError::Bundle(e.to_string()))
}

/// Shell run as root that starts the start script detached and returns at once.
pub fn start_command() -> String {
    format!("mkdir -p /var/log && setsid {START_SCRIPT} </dev/null >>{START_LOG} 2>&1 &")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the pre-job read script on the host with `bin` first on PATH, bounded: a read
    /// that never returns fails the test instead of hanging it.
    fn run_read_script(dir: &std::path::Path, bin: &std::path::Path) -> std::process::Output {
        let mut child = std::process::Command::new("/bin/sh")
            .args(["-c", &read_pre_job_script_in(dir.to_str().unwrap())])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let done = crate::host::child::collect_with_deadline(
            &mut child,
            std::time::Duration::from_secs(20),
        )
        .unwrap()
        .expect("the pre-job read blocked past its bound");
        std::process::Output {
            status: done.status,
            stdout: done.stdout,
            stderr: done.stderr,
        }
    }

    fn executable(path: &std::path::Path, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn a_fifo_swapped_in_after_the_check_is_refused_within_the_read_bound() {
        let root = tempfile::tempdir().unwrap();
        let (dir, bin) = (root.path().join("metrics"), root.path().join("bin"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        let file = dir.join(PRE_JOB_FILE);
        std::fs::write(&file, "{}").unwrap();
        let plain = run_read_script(&dir, &bin);
        assert!(plain.status.success(), "{plain:?}");
        assert_eq!(plain.stdout, b"{}");

        // `head` that swaps a FIFO in for the file first: the job winning the race between
        // the script's check and its read, every time.
        executable(
            &bin.join("head"),
            "#!/bin/sh\nfor f; do :; done\nrm -f \"$f\" && mkfifo \"$f\" && exec /usr/bin/head \"$@\"\n",
        );
        let raced = run_read_script(&dir, &bin);
        assert_eq!(raced.status.code(), Some(PRE_JOB_NOT_REGULAR), "{raced:?}");
        assert!(
            String::from_utf8_lossy(&raced.stderr).contains("reading it blocked"),
            "{raced:?}"
        );
        // A FIFO already there is refused by the check, before any read.
        let before = run_read_script(&dir, &bin);
        assert_eq!(before.status.code(), Some(PRE_JOB_NOT_REGULAR));
        assert!(!String::from_utf8_lossy(&before.stderr).contains("blocked"));

        // The test image's busybox `timeout` (it runs its own `head` applet, so no PATH
        // shim reaches it) ends a blocked open with the status the script looks for.
        let out = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "busybox timeout -s KILL 1 head -c 1 -- \"$0\"; echo \"$?\"",
            ])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "137\n");
    }
    use std::path::Path;

    fn proxied() -> RunnerEnvironment {
        RunnerEnvironment {
            http_proxy: Some("http://proxy:3128".into()),
            https_proxy: Some("http://proxy:3129".into()),
            no_proxy: Some("localhost, 10.0.0.0/8".into()),
            dockerhub_mirror: Some("https://mirror.example:5000".into()),
            debug_ssh: Vec::new(),
        }
    }

    #[test]
    fn env_file_without_proxy_or_mirror_is_path_and_lang() {
        let text = render_env_file(&RunnerEnvironment::default(), "r-0-0123456789ab").unwrap();
        assert_eq!(
            text,
            format!(
                "PATH={RUNNER_PATH}\nLANG=C.UTF-8\n\
                 ACTIONS_RUNNER_HOOK_JOB_STARTED=/usr/local/bin/github-runner-pre-job\n"
            )
        );
    }

    #[test]
    fn env_file_carries_proxies_in_both_cases_and_the_instance_in_no_proxy() {
        let text = render_env_file(&proxied(), "r-0-0123456789ab").unwrap();
        for line in [
            "LANG=C.UTF-8",
            "HTTP_PROXY=http://proxy:3128",
            "http_proxy=http://proxy:3128",
            "HTTPS_PROXY=http://proxy:3129",
            "https_proxy=http://proxy:3129",
            "NO_PROXY=localhost,10.0.0.0/8,r-0-0123456789ab",
            "no_proxy=localhost,10.0.0.0/8,r-0-0123456789ab",
            "DOCKERHUB_MIRROR=https://mirror.example:5000",
            "CONTAINER_REGISTRY_URL=https://mirror.example:5000",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn no_proxy_is_the_instance_alone_when_juju_sets_none() {
        let env = RunnerEnvironment {
            https_proxy: Some("http://p:1".into()),
            ..Default::default()
        };
        let text = render_env_file(&env, "r-0-0123456789ab").unwrap();
        assert!(text.contains("\nNO_PROXY=r-0-0123456789ab\n"), "{text}");
        assert!(!text.contains("HTTP_PROXY"), "{text}");
    }

    #[test]
    fn a_value_with_a_newline_is_refused() {
        let env = RunnerEnvironment {
            http_proxy: Some("http://p:1\nLD_PRELOAD=/x".into()),
            ..Default::default()
        };
        assert_eq!(
            render_env_file(&env, "r").unwrap_err(),
            RenderError::UnsafeValue {
                key: "HTTP_PROXY".into()
            }
        );
    }

    #[test]
    fn from_juju_reads_the_charm_proxy_variables() {
        let vars = |k: &str| match k {
            "JUJU_CHARM_HTTP_PROXY" => Some("http://p:1".to_string()),
            "JUJU_CHARM_NO_PROXY" => Some("  ".to_string()),
            _ => None,
        };
        let env = RunnerEnvironment::from_juju(vars, Some(String::new()));
        assert_eq!(
            env,
            RunnerEnvironment {
                http_proxy: Some("http://p:1".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn docker_daemon_json_only_with_a_mirror() {
        assert_eq!(
            render_docker_daemon_json(&RunnerEnvironment::default()),
            None
        );
        let json = render_docker_daemon_json(&proxied()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"registry-mirrors": ["https://mirror.example:5000"]})
        );
    }

    #[test]
    fn start_script_runs_one_job_as_ubuntu_then_powers_off() {
        let script = render_start_script(
            &Secret::new("eyJqaXQiOiJ4In0="),
            &RunnerEnvironment::default(),
        )
        .unwrap();
        let text = script.expose();
        assert!(text.starts_with("#!/bin/sh\n"));
        assert!(text.contains("jit_config='eyJqaXQiOiJ4In0='\n"));
        assert!(text.contains("rm -f -- \"$0\""));
        assert!(text.contains("| su ubuntu -s /bin/sh -c 'cd /home/ubuntu/github-runner && IFS= read -r jit && exec ./run.sh --jitconfig \"$jit\" </dev/null'"));
        assert!(text.trim_end().ends_with("poweroff"));
        assert!(!text.contains("systemctl reload docker"));
        // The secret never shows through Debug.
        assert!(!format!("{script:?}").contains("eyJqaXQ"));
        let mirror_only = RunnerEnvironment {
            dockerhub_mirror: Some("https://m".into()),
            ..Default::default()
        };
        let with_mirror = render_start_script(&Secret::new("x"), &mirror_only).unwrap();
        assert!(with_mirror.expose().contains("systemctl reload docker"));
    }

    #[test]
    fn start_script_quotes_hostile_jit_configs() {
        let text =
            render_start_script(&Secret::new("a'$(reboot)'b"), &RunnerEnvironment::default())
                .unwrap();
        assert!(
            text.expose().contains(r"jit_config='a'\''$(reboot)'\''b'"),
            "{}",
            text.expose()
        );
        assert_eq!(
            render_start_script(&Secret::new("a\nb"), &RunnerEnvironment::default()).unwrap_err(),
            RenderError::UnsafeJitConfig
        );
    }

    #[test]
    fn start_script_is_valid_sh() {
        let script = render_start_script(&Secret::new("a'b"), &proxied()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("start.sh");
        std::fs::write(&path, script.expose()).unwrap();
        let status = std::process::Command::new("sh")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
    }

    #[test]
    fn helper_commands_name_the_fixed_paths() {
        assert!(extract_command()
            .contains("tar -xzf /home/ubuntu/github-runner.tar.gz -C /home/ubuntu/github-runner"));
        assert!(start_command().contains("setsid /root/github-runner-start.sh </dev/null >>/var/log/github-runner-start.log 2>&1 &"));
    }

    fn run_pre_job(script_dir: &Path, metrics_dir: &Path, vars: &[(&str, &str)]) -> i32 {
        let path = script_dir.join("pre-job");
        std::fs::write(&path, render_pre_job_script(metrics_dir.to_str().unwrap())).unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.arg(&path).env_clear().env("PATH", "/usr/bin:/bin");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        cmd.status().unwrap().code().unwrap()
    }

    #[test]
    fn pre_job_script_records_the_job_as_json_even_with_hostile_names() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("it's metrics");
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let workflow = "CI \"nightly\" \\ $(reboot) `id`\ttab";
        let code = run_pre_job(
            dir.path(),
            &metrics,
            &[
                ("GITHUB_WORKFLOW", workflow),
                ("GITHUB_REPOSITORY", "canonical/github-runner"),
                ("GITHUB_EVENT_NAME", "pull_request"),
                ("GITHUB_RUN_ID", "8122341"),
            ],
        );
        assert_eq!(code, 0);
        let text = std::fs::read_to_string(metrics.join(PRE_JOB_FILE)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["workflow"], "CI \"nightly\" \\ $(reboot) `id`tab");
        assert_eq!(v["repository"], "canonical/github-runner");
        assert_eq!(v["event"], "pull_request");
        assert_eq!(v["run_id"], "8122341");
        let at = v["timestamp"].as_u64().unwrap();
        assert!(at >= before && at <= before + 60, "{at} vs {before}");
        // Only the file itself is left: the temporary one was renamed.
        assert_eq!(std::fs::read_dir(&metrics).unwrap().count(), 1);
    }

    #[test]
    fn pre_job_script_never_fails_the_job() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the directory should be: mkdir fails.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, "").unwrap();
        assert_eq!(run_pre_job(dir.path(), &blocker.join("sub"), &[]), 0);
        // Unset variables give empty strings, still valid JSON.
        let metrics = dir.path().join("m");
        assert_eq!(run_pre_job(dir.path(), &metrics, &[]), 0);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(metrics.join(PRE_JOB_FILE)).unwrap())
                .unwrap();
        assert_eq!(v["workflow"], "");
    }

    #[test]
    fn bundle_carries_the_pre_job_hook_root_owned_and_executable() {
        let bundle = render_config_bundle(&RunnerEnvironment::default(), "r").unwrap();
        let mut archive = tar::Archive::new(bundle.as_slice());
        let mut found = false;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str() == Some("usr/local/bin/github-runner-pre-job") {
                assert_eq!(entry.header().mode().unwrap(), 0o755);
                assert_eq!(entry.header().uid().unwrap(), 0);
                let mut text = String::new();
                std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
                assert_eq!(text, render_pre_job_script(METRICS_DIR));
                found = true;
            }
        }
        assert!(found);
    }

    /// (path, mode, uid) of every entry in a bundle.
    fn bundle_entries(env: &RunnerEnvironment) -> Vec<(String, u32, u64)> {
        let bundle = render_config_bundle(env, "r-1").unwrap();
        let mut archive = tar::Archive::new(bundle.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let path = e.path().unwrap().to_string_lossy().into_owned();
                (path, e.header().mode().unwrap(), e.header().uid().unwrap())
            })
            .collect()
    }

    #[test]
    fn dockerd_and_the_docker_client_get_the_proxies_too() {
        let mut env = proxied();
        env.https_proxy = Some("http://u:p%41\"x@proxy:3129".into());
        let drop_in = render_docker_proxy_drop_in(&env, "r-1").unwrap();
        assert!(drop_in.contains("[Service]\nEnvironment=\"HTTP_PROXY=http://proxy:3128\""));
        assert!(
            drop_in.contains(r#""HTTPS_PROXY=http://u:p%%41\"x@proxy:3129""#),
            "{drop_in}"
        );
        assert!(drop_in.contains(r#""NO_PROXY=localhost,10.0.0.0/8,r-1""#));
        let client: serde_json::Value =
            serde_json::from_str(&render_docker_client_config(&env, "r-1").unwrap()).unwrap();
        assert_eq!(
            client["proxies"]["default"]["httpProxy"],
            "http://proxy:3128"
        );
        assert_eq!(
            client["proxies"]["default"]["noProxy"],
            "localhost,10.0.0.0/8,r-1"
        );
        let entries = bundle_entries(&env);
        assert!(entries.contains(&(DOCKER_PROXY_DROP_IN[1..].to_string(), 0o644, 0)));
        assert!(entries.contains(&(DOCKER_CLIENT_CONFIG[1..].to_string(), 0o600, 1000)));
        assert!(entries.contains(&("home/ubuntu/.docker/".to_string(), 0o700, 1000)));
        let script = render_start_script(&Secret::new("j".to_string()), &env).unwrap();
        assert!(script.expose().contains("systemctl restart docker"));
    }

    #[test]
    fn without_proxies_nothing_docker_or_env_mentions_one() {
        let env = proxied().without_proxies();
        assert_eq!(render_docker_proxy_drop_in(&env, "r-1"), None);
        assert_eq!(render_docker_client_config(&env, "r-1"), None);
        let text = render_env_file(&env, "r-1").unwrap();
        assert!(!text.to_lowercase().contains("proxy"), "{text}");
        assert!(bundle_entries(&env)
            .iter()
            .all(|e| !e.0.contains("docker.service.d")));
    }

    #[test]
    fn a_runner_gets_one_tmate_server_in_its_environment() {
        let server = |host: &str| debug_ssh::TmateServer {
            host: host.into(),
            port: 10022,
            rsa_fingerprint: "SHA256:rsa".into(),
            ed25519_fingerprint: "SHA256:ed".into(),
        };
        let env = RunnerEnvironment {
            debug_ssh: vec![server("10.0.0.1"), server("10.0.0.2")],
            ..Default::default()
        };
        let text = render_env_file(&env, "r-1").unwrap();
        assert_eq!(text.matches("TMATE_SERVER_HOST=").count(), 1, "{text}");
        assert!(text.contains("\nTMATE_SERVER_PORT=10022\n"));
        assert!(text.contains("\nTMATE_SERVER_RSA_FINGERPRINT=SHA256:rsa\n"));
        assert!(text.contains("\nTMATE_SERVER_ED25519_FINGERPRINT=SHA256:ed\n"));
        let none = render_env_file(&RunnerEnvironment::default(), "r-1").unwrap();
        assert!(!none.contains("TMATE"));
    }
}
