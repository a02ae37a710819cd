//! The runner application tarball: asked of GitHub each time, downloaded only when GitHub
//! lists another URL or checksum (or the cached file is gone), remembered in unit state.
//! A failed download leaves the previous verified tarball in place.

use super::SetupError;
use crate::charm::context::Context;
use crate::charm::runtime::Runtime;
use crate::github::download::{
    download_needed, download_runner_tarball, tarball_path, DownloadSettings, StoredTarball,
};
use crate::github::{Arch, GitHub};
use crate::juju::state::state_changes;
use crate::juju::{HookTools, Status};
use crate::paths::HostPaths;
use std::path::PathBuf;

/// What [`update_runner_binary`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinaryUpdate {
    /// A new tarball replaced the old one (or the first one arrived): idle runners should
    /// be flushed so new runners use it.
    pub changed: bool,
    /// The verified tarball runners are created from.
    pub path: PathBuf,
    /// The download URL of the tarball in place (as GitHub lists it).
    pub url: String,
}

/// [`update_runner_binary_with`] with the runtime's GitHub client and the default download
/// settings through the model's proxies.
pub fn update_runner_binary(ctx: &Context<'_>, rt: &Runtime) -> Result<BinaryUpdate, SetupError> {
    update_runner_binary_with(
        ctx.tools,
        &rt.paths,
        rt.github.as_ref(),
        &DownloadSettings {
            proxy: rt.proxy.clone(),
            ..DownloadSettings::default()
        },
    )
}

/// One `runner_application` call; a download only when needed. On failure the status to
/// show is [`SetupError::status`]: Maintenance "Failed to update runner binary: <err>".
pub fn update_runner_binary_with(
    tools: &dyn HookTools,
    paths: &HostPaths,
    github: &dyn GitHub,
    settings: &DownloadSettings,
) -> Result<BinaryUpdate, SetupError> {
    let arch = Arch::host().ok_or_else(|| {
        SetupError::RunnerBinary(format!(
            "GitHub ships no runner for this machine's architecture ({})",
            std::env::consts::ARCH
        ))
    })?;
    let latest = github
        .runner_application(arch)
        .map_err(SetupError::RunnerBinaryLookup)?;
    let state = tools.state_get()?;
    let stored = StoredTarball::from_state(&state);
    let path = tarball_path(paths);
    crate::observability::note_runner_binary(&latest.download_url);
    if !download_needed(&stored, path.is_file(), &latest) {
        return Ok(BinaryUpdate {
            changed: false,
            path,
            url: latest.download_url,
        });
    }
    tools.status_set(&Status::Maintenance(
        crate::messages::DOWNLOADING_BINARY.into(),
    ))?;
    let downloaded = download_runner_tarball(&latest, &paths.runner_binary_dir(), settings)
        .map_err(|e| SetupError::RunnerBinary(e.to_string()))?;
    let changes = state_changes(&stored.to_state(), &downloaded.stored().to_state());
    if !changes.set.is_empty() {
        tools.state_set(&changes.set)?;
    }
    tracing::info!(
        file = %latest.filename,
        size = downloaded.size,
        "runner binary updated"
    );
    Ok(BinaryUpdate {
        changed: true,
        path: downloaded.path,
        url: downloaded.url,
    })
}
