//! The deployable archive: metadata, packing, `charmcraft analyse`, charmcraft's project
//! model, and the glibc the binary needs.
//!
//! Packs `$GITHUB_RUNNER_CHARM_BINARY` when set (`make test` points it at the release build
//! that `make charm` ships; the worker binary is the one beside it), else the binaries cargo
//! built for this test. charmcraft comes
//! from `$CHARMCRAFT`, else `.venv/bin/charmcraft` (`make deps` installs it).

use github_runner::juju::event::{Endpoint, RUNNER_STORAGE};
use std::path::{Path, PathBuf};
use std::process::Command;

const REPO_ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CHARM_NAME: &str = "github-runner_ubuntu-22.04-amd64.charm";
/// Ubuntu 22.04's glibc: the oldest base the charm runs on.
const MAX_GLIBC: (u32, u32) = (2, 35);

fn charm_binary() -> PathBuf {
    match std::env::var_os("GITHUB_RUNNER_CHARM_BINARY") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_github-runner-charm")),
    }
}

/// The worker binary of the same build as [`charm_binary`].
fn worker_binary() -> PathBuf {
    match std::env::var_os("GITHUB_RUNNER_CHARM_BINARY") {
        Some(p) if !p.is_empty() => PathBuf::from(p).with_file_name("github-runner-worker"),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_github-runner-worker")),
    }
}

fn venv_bin(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let path = Path::new(REPO_ROOT).join(".venv/bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run `make deps` (or set {env_override})",
        path.display()
    );
    path
}

/// charmcraft with a private runtime dir: without one, platformdirs prints a warning.
fn charmcraft_command(program: &Path, home: &Path) -> Command {
    let runtime = home.join("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("LANG", "C.UTF-8")
        .current_dir(home);
    cmd
}

fn pack(dir: &Path) -> PathBuf {
    let output = dir.join(CHARM_NAME);
    let status = Command::new("python3")
        .arg(Path::new(REPO_ROOT).join("scripts/pack_charm.py"))
        .arg("--binary")
        .arg(charm_binary())
        .arg("--worker-binary")
        .arg(worker_binary())
        .arg("--output")
        .arg(&output)
        .status()
        .expect("run python3");
    assert!(status.success(), "pack_charm.py failed");
    output
}

/// (name, unix mode) of every entry.
fn zip_entries(charm: &Path) -> Vec<(String, u32)> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, zipfile\n\
             z = zipfile.ZipFile(sys.argv[1])\n\
             print(json.dumps([[i.filename, i.external_attr >> 16] for i in z.infolist()]))",
        ])
        .arg(charm)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("entries as JSON")
}

#[test]
fn archive_has_the_files_juju_needs_with_their_modes() {
    let dir = tempfile::tempdir().unwrap();
    let charm = pack(dir.path());
    let entries = zip_entries(&charm);
    let mode = |name: &str| {
        entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m & 0o7777)
            .unwrap_or_else(|| panic!("{name} missing from {entries:?}"))
    };
    for name in [
        "metadata.yaml",
        "config.yaml",
        "actions.yaml",
        "manifest.yaml",
    ] {
        assert_eq!(mode(name), 0o644, "{name}");
    }
    for name in [
        "dispatch",
        "bin/github-runner-charm",
        "bin/github-runner-worker",
        "hooks/install",
        "hooks/start",
        "hooks/upgrade-charm",
    ] {
        assert_eq!(mode(name), 0o755, "{name}");
    }
    assert!(
        !entries.iter().any(|(n, _)| n.contains("fake-jujuc")),
        "test tools never ship: {entries:?}"
    );
}

#[test]
fn charmcraft_analyse_passes_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let charm = pack(dir.path());
    let charmcraft = venv_bin("charmcraft", "CHARMCRAFT");
    let out = charmcraft_command(&charmcraft, dir.path())
        .args(["analyse", "--format=json"])
        .arg(&charm)
        .output()
        .expect("run charmcraft");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "charmcraft analyse failed: {stderr}");
    assert!(
        !stderr.to_lowercase().contains("warning"),
        "charmcraft printed a warning: {stderr}"
    );
    let results: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let mut entrypoint_ok = false;
    for r in &results {
        let (name, result) = (r["name"].as_str().unwrap(), r["result"].as_str().unwrap());
        if r["check_type"] == "lint" {
            assert!(
                result == "ok" || result == "nonapplicable",
                "linter {name}: {result}: {}",
                r["text"]
            );
        }
        entrypoint_ok |= name == "entrypoint" && result == "ok";
    }
    assert!(
        entrypoint_ok,
        "the entrypoint linter must find ./bin/github-runner-charm: {results:?}"
    );
}

#[test]
fn charmcraft_yaml_loads_with_charmcraft_project_model() {
    let dir = tempfile::tempdir().unwrap();
    let python = venv_bin("python", "CHARMCRAFT_PYTHON");
    let script = "import json, pathlib, sys\n\
        from charmcraft.models.project import CharmcraftProject\n\
        p = CharmcraftProject.from_yaml_file(pathlib.Path(sys.argv[1]))\n\
        print(json.dumps({'name': p.name, 'platforms': sorted(p.platforms), \
        'plugins': {k: v.get('plugin') for k, v in p.parts.items()}, \
        'actions': sorted(p.actions or {}), 'options': sorted((p.config or {})['options'])}))";
    let out = charmcraft_command(&python, dir.path())
        .args(["-c", script])
        .arg(Path::new(REPO_ROOT).join("charmcraft.yaml"))
        .output()
        .expect("run python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "charmcraft could not load the project: {stderr}"
    );
    let project: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(project["name"], "github-runner");
    assert_eq!(
        project["platforms"],
        serde_json::json!([
            "ubuntu-22.04-amd64",
            "ubuntu-22.04-arm64",
            "ubuntu-24.04-amd64",
            "ubuntu-24.04-arm64"
        ])
    );
    assert_eq!(project["plugins"]["binary"], "rust");
    assert_eq!(project["actions"].as_array().unwrap().len(), 4);
    assert!(project["options"]
        .as_array()
        .unwrap()
        .contains(&"github-url".into()));
}

#[test]
fn metadata_declares_endpoints_and_storage() {
    let text = std::fs::read_to_string(Path::new(REPO_ROOT).join("metadata.yaml")).unwrap();
    let meta: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(meta["name"], "github-runner");
    assert!(meta.get("series").is_none(), "no series key");
    for key in ["summary", "description", "docs", "issues", "source"] {
        assert!(meta[key].as_str().is_some_and(|v| !v.is_empty()), "{key}");
    }
    assert_eq!(meta["requires"]["mongodb"]["interface"], "mongodb_client");
    assert_eq!(meta["requires"]["mongodb"]["limit"], 1);
    assert_eq!(meta["requires"]["debug-ssh"]["interface"], "debug-ssh");
    assert_eq!(meta["provides"]["cos-agent"]["interface"], "cos_agent");
    let storage = &meta["storage"][RUNNER_STORAGE];
    assert_eq!(storage["type"], "filesystem");
    assert_eq!(storage["location"], "/storage/juju");
    // Every endpoint has its relation events parsed; nothing else is declared.
    let mut declared: Vec<String> = ["requires", "provides", "peers"]
        .iter()
        .filter_map(|k| meta[*k].as_mapping())
        .flat_map(|m| m.keys().map(|k| k.as_str().unwrap().to_string()))
        .collect();
    declared.sort();
    let mut known: Vec<String> = Endpoint::ALL.iter().map(|e| e.name().to_string()).collect();
    known.sort();
    assert_eq!(declared, known);
}

/// GLIBC_x.y versions the ELF binary needs, from its `.gnu.version_r` section.
fn glibc_versions_required(elf: &[u8]) -> Vec<(u32, u32)> {
    const SHT_GNU_VERNEED: u32 = 0x6fff_fffe;
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "expected a 64-bit ELF");
    assert_eq!(elf[5], 1, "expected a little-endian ELF");
    let (shoff, shentsize, shnum) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    let section = |i: usize| shoff + i * shentsize;
    let verneed = (0..shnum)
        .map(section)
        .find(|&s| u32_at(s + 4) == SHT_GNU_VERNEED)
        .expect("no .gnu.version_r: is the binary dynamically linked?");
    let strtab = u64_at(section(u32_at(verneed + 0x28) as usize) + 0x18);
    let name_at = |offset: usize| {
        let start = strtab + offset;
        let end = start + elf[start..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8_lossy(&elf[start..end]).into_owned()
    };
    let mut versions = Vec::new();
    let (mut entry, count) = (u64_at(verneed + 0x18), u32_at(verneed + 0x2c));
    for _ in 0..count {
        let mut aux = entry + u32_at(entry + 8) as usize;
        for _ in 0..u16_at(entry + 2) {
            if let Some(v) = name_at(u32_at(aux + 8) as usize).strip_prefix("GLIBC_") {
                let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
                versions.push((parts.next().unwrap_or(0), parts.next().unwrap_or(0)));
            }
            aux += u32_at(aux + 12) as usize;
        }
        entry += u32_at(entry + 12) as usize;
    }
    versions.sort();
    versions.dedup();
    versions
}

#[test]
fn binaries_run_on_ubuntu_22_04_glibc() {
    for binary in [charm_binary(), worker_binary()] {
        let elf = std::fs::read(&binary).unwrap();
        let versions = glibc_versions_required(&elf);
        assert!(
            !versions.is_empty(),
            "found no GLIBC versions: the parser is broken"
        );
        let newest = *versions.last().unwrap();
        assert!(
            newest <= MAX_GLIBC,
            "{} needs GLIBC_{}.{}, newer than Ubuntu 22.04's {}.{}: build it on an older base",
            binary.display(),
            newest.0,
            newest.1,
            MAX_GLIBC.0,
            MAX_GLIBC.1
        );
    }
}

/// Hooks run the charm binary: the message-queue drivers and the MongoDB driver's async
/// runtime must be only in the worker binary (a hook's start-up and memory stay small).
#[test]
fn only_the_worker_binary_carries_the_queue_drivers() {
    let contains =
        |hay: &[u8], needle: &str| hay.windows(needle.len()).any(|w| w == needle.as_bytes());
    let hook = std::fs::read(charm_binary()).unwrap();
    let worker = std::fs::read(worker_binary()).unwrap();
    // The Redis transport's key prefix, the MongoDB driver's auth mechanism, the async
    // runtime's own panic text.
    for marker in [
        "github-runner.lease.",
        "SCRAM-SHA-256",
        "must be called from the context of a Tokio",
    ] {
        assert!(
            contains(&worker, marker),
            "the worker binary lacks {marker:?}"
        );
        assert!(
            !contains(&hook, marker),
            "the hook binary carries {marker:?}"
        );
    }
}

/// The ELF reader above agrees with binutils.
#[test]
fn glibc_versions_match_objdump() {
    let binary = charm_binary();
    let out = Command::new("objdump")
        .arg("-p")
        .arg(&binary)
        .output()
        .expect("objdump (binutils) is needed: run `make deps`");
    assert!(out.status.success());
    let mut from_objdump: Vec<(u32, u32)> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let (major, minor) = v.split_once('.')?;
            Some((major.parse().ok()?, minor.split('.').next()?.parse().ok()?))
        })
        .collect();
    from_objdump.sort();
    from_objdump.dedup();
    let elf = std::fs::read(&binary).unwrap();
    assert_eq!(glibc_versions_required(&elf), from_objdump);
}
