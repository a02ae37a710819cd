//! Stage 1, observe: what the intent needs to know, each read at most once per hook.
//!
//! Read here: the configuration (`config-get`, validated), unit state (`state-get`), host
//! facts (an `lxd-profile.yaml` in the charm dir, `lxc` on the host, the previous
//! credentials file). Only what the intent needs: update-status reads config and state and
//! nothing else (no GitHub, no LXD); an invalid configuration stops every read after it.
//!
//! The fleet itself (GitHub's runners, LXD's instances) is observed by the manager inside
//! the unit lock in `act`: a listing taken before the lock could be stale by the time the
//! lock is held.
//!
//! [`OnceReads`] makes the "at most once" hold for the effects too: every later read of
//! config or unit state in the hook is answered from what was read (and written) already.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use serde_json::Value;

use super::context::Context;
use super::credentials::{self, PreviousCredentials};
use super::edge::Host;
use super::error::CharmError;
use super::intent::Intent;
use super::setup::HOST_READY_KEY;
use crate::config::credential::{APP_ID, APP_INSTALLATION_ID, APP_PRIVATE_KEY};
use crate::config::{validate, CharmConfig, ConfigContext, ConfigError};
use crate::credential::resolve::resolve;
use crate::juju::event::Action;
use crate::juju::state::UnitState;
use crate::juju::{HookToolError, HookTools, LogLevel, SecretRead, Status, StorageInfo};
use crate::runner::guards;

/// What the hook knows before deciding.
#[derive(Debug, Default)]
pub struct Observed {
    /// None: the intent needs no configuration.
    pub config: Option<Result<CharmConfig, ConfigError>>,
    /// Unit state at the start of the hook; read once the configuration is valid.
    pub state: Option<UnitState>,
    /// The charm dir carries an `lxd-profile.yaml` (refused outside test mode).
    pub has_lxd_profile: bool,
    /// `lxc` is on the host (asked only by intents that install LXD first).
    pub lxc_present: bool,
    /// Tear-down: the configuration runners are taken down with.
    pub teardown: Option<TeardownFacts>,
    /// flush-runners' `force` parameter: busy runners go at once, with their jobs.
    pub force_flush: bool,
}

/// What a tear-down knows.
#[derive(Debug)]
pub struct TeardownFacts {
    /// The current configuration when valid, else the current one with the credentials the
    /// charm last acted on; None when neither validates.
    pub config: Option<CharmConfig>,
    /// Without a configuration: whether the host was ever set up (then runners may be left
    /// behind, and the log says so).
    pub host_was_set_up: bool,
}

/// Stage 1: read what `intent` needs.
pub fn observe(
    ctx: &Context<'_>,
    host: &dyn Host,
    intent: &Intent,
) -> Result<Observed, CharmError> {
    let mut seen = Observed::default();
    match intent {
        Intent::Nothing(_) | Intent::UnknownAction(_) | Intent::RequestQueue => {}
        Intent::TearDown(_) => seen.teardown = Some(teardown_facts(ctx)?),
        Intent::ReportOnly
        | Intent::Converge(_)
        | Intent::CheckRunners
        | Intent::UpdateDependencies => {
            let mut config = read_config(ctx)?;
            if let (Ok(valid), false) = (&config, matches!(intent, Intent::ReportOnly)) {
                // update-status reports without GitHub: its config needs no credential.
                config = resolve_credential(ctx, valid.clone(), ctx.hook.secret_id.as_deref())?;
            }
            if config.is_ok() {
                seen.state = Some(UnitState::load(ctx.tools)?);
                if !matches!(intent, Intent::ReportOnly) {
                    seen.has_lxd_profile = guards::charm_dir_has_lxd_profile(&ctx.hook.charm_dir);
                }
                if let Intent::Converge(c) = intent {
                    if c.install_lxd_first {
                        seen.lxc_present = host.edges().commands().find("lxc").is_some();
                    }
                    if c.action == Some(Action::FlushRunners) {
                        seen.force_flush = force_param(ctx)?;
                    }
                }
            }
            seen.config = Some(config);
        }
    }
    Ok(seen)
}

/// flush-runners' `force` (Juju checks it is a boolean against actions.yaml; absent is
/// false).
fn force_param(ctx: &Context<'_>) -> Result<bool, HookToolError> {
    Ok(ctx
        .tools
        .action_get()?
        .get("force")
        .and_then(Value::as_bool)
        .unwrap_or(false))
}

/// `config-get`, validated.
pub(crate) fn read_config(
    ctx: &Context<'_>,
) -> Result<Result<CharmConfig, ConfigError>, HookToolError> {
    let raw = ctx.tools.config_get()?;
    Ok(validate(&raw, &config_context(ctx)).and_then(|config| {
        crate::config::validate::for_unit(config, ctx.hook.identity.unit_number)
    }))
}

/// `config` with its credential read from the Juju secret the options name; a secret Juju
/// refuses, or a bad key, is a configuration problem like any other.
pub(crate) fn resolve_credential(
    ctx: &Context<'_>,
    mut config: CharmConfig,
    changed_secret: Option<&str>,
) -> Result<Result<CharmConfig, ConfigError>, HookToolError> {
    if config.credential.is_some() {
        return Ok(Ok(config));
    }
    Ok(resolve(
        ctx.tools,
        &config.credential_source,
        changed_secret,
        &ctx.hook.identity.app,
    )?
    .map(|credential| {
        config.credential = Some(credential);
        config
    }))
}

fn config_context<'a>(ctx: &Context<'a>) -> ConfigContext<'a> {
    ConfigContext {
        app_name: &ctx.hook.identity.app,
        juju_proxy_configured: ctx.hook.proxy.is_configured(),
    }
}

fn teardown_facts(ctx: &Context<'_>) -> Result<TeardownFacts, CharmError> {
    let raw = ctx.tools.config_get()?;
    let previous = credentials::load(ctx.paths).unwrap_or_else(|e| {
        tracing::warn!("{e}");
        None
    });
    let config = match cleanup_config(&raw, previous.as_ref(), &config_context(ctx)) {
        Some(config) => match resolve_credential(ctx, config, None)? {
            Ok(resolved) => Some(resolved),
            // The secret is gone (revoked before the removal): the credential acted on.
            Err(_) => previous.as_ref().and_then(|p| {
                validate(&raw, &config_context(ctx))
                    .ok()
                    .map(|current| p.apply_to(&current))
            }),
        },
        None => None,
    };
    let host_was_set_up = match config {
        Some(_) => true,
        None => ctx.tools.state_get()?.contains_key(HOST_READY_KEY),
    };
    Ok(TeardownFacts {
        config,
        host_was_set_up,
    })
}

/// The configuration to take runners down with: the current one when valid, else the
/// current one with the credentials the charm last acted on (an operator who cleared the
/// token and then removed the unit still gets its runners removed). None when neither
/// validates. Pure.
pub(crate) fn cleanup_config(
    raw: &serde_json::Map<String, Value>,
    previous: Option<&PreviousCredentials>,
    config_ctx: &ConfigContext<'_>,
) -> Option<CharmConfig> {
    if let Ok(config) = validate(raw, config_ctx) {
        return Some(config);
    }
    let previous = previous?;
    let mut with_previous = raw.clone();
    // The credential options validated with a stand-in; the credential is the previous one.
    for key in [APP_ID, APP_INSTALLATION_ID, APP_PRIVATE_KEY] {
        with_previous.remove(key);
    }
    for (key, value) in [
        ("token", "previous-credential".to_string()),
        ("path", previous.path.display()),
        ("group", previous.group.clone()),
        ("labels", previous.labels.join(",")),
        ("github-url", previous.github_url.clone()),
    ] {
        with_previous.insert(key.to_string(), value.into());
    }
    validate(&with_previous, config_ctx)
        .ok()
        .map(|config| previous.apply_to(&config))
}

/// The hook tools with `config-get` and `state-get` answered at most once per hook: later
/// reads get the first answer, with the hook's own `state-set`/`state-delete` applied.
pub struct OnceReads<'a> {
    inner: &'a dyn HookTools,
    config: Mutex<Option<serde_json::Map<String, Value>>>,
    state: Mutex<Option<BTreeMap<String, String>>>,
}

impl<'a> OnceReads<'a> {
    pub fn new(inner: &'a dyn HookTools) -> Self {
        OnceReads {
            inner,
            config: Mutex::new(None),
            state: Mutex::new(None),
        }
    }
}

impl HookTools for OnceReads<'_> {
    fn config_get(&self) -> Result<serde_json::Map<String, Value>, HookToolError> {
        let mut cached = self.config.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(config) = cached.as_ref() {
            return Ok(config.clone());
        }
        let config = self.inner.config_get()?;
        *cached = Some(config.clone());
        Ok(config)
    }
    fn state_get(&self) -> Result<BTreeMap<String, String>, HookToolError> {
        let mut cached = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = cached.as_ref() {
            return Ok(state.clone());
        }
        let state = self.inner.state_get()?;
        *cached = Some(state.clone());
        Ok(state)
    }
    fn state_set(&self, values: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        self.inner.state_set(values)?;
        let mut cached = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = cached.as_mut() {
            state.extend(values.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }
    fn state_delete(&self, key: &str) -> Result<(), HookToolError> {
        self.inner.state_delete(key)?;
        let mut cached = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(state) = cached.as_mut() {
            state.remove(key);
        }
        Ok(())
    }
    fn status_set(&self, status: &Status) -> Result<(), HookToolError> {
        self.inner.status_set(status)
    }
    fn application_version_set(&self, version: &str) -> Result<(), HookToolError> {
        self.inner.application_version_set(version)
    }
    fn juju_log(&self, level: LogLevel, message: &str) -> Result<(), HookToolError> {
        self.inner.juju_log(level, message)
    }
    fn action_get(&self) -> Result<serde_json::Map<String, Value>, HookToolError> {
        self.inner.action_get()
    }
    fn action_set(&self, results: &BTreeMap<String, String>) -> Result<(), HookToolError> {
        self.inner.action_set(results)
    }
    fn action_fail(&self, message: &str) -> Result<(), HookToolError> {
        self.inner.action_fail(message)
    }
    fn action_log(&self, message: &str) -> Result<(), HookToolError> {
        self.inner.action_log(message)
    }
    fn relation_ids(&self, endpoint: &str) -> Result<Vec<String>, HookToolError> {
        self.inner.relation_ids(endpoint)
    }
    fn relation_list(&self, relation_id: &str) -> Result<Vec<String>, HookToolError> {
        self.inner.relation_list(relation_id)
    }
    fn relation_get(
        &self,
        relation_id: &str,
        unit_or_app: &str,
        app: bool,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        self.inner.relation_get(relation_id, unit_or_app, app)
    }
    fn relation_set(
        &self,
        relation_id: &str,
        app: bool,
        data: &BTreeMap<String, String>,
    ) -> Result<(), HookToolError> {
        self.inner.relation_set(relation_id, app, data)
    }
    fn is_leader(&self) -> Result<bool, HookToolError> {
        self.inner.is_leader()
    }
    fn storage_list(&self, name: Option<&str>) -> Result<Vec<String>, HookToolError> {
        self.inner.storage_list(name)
    }
    fn storage_get(&self, storage_id: &str) -> Result<StorageInfo, HookToolError> {
        self.inner.storage_get(storage_id)
    }
    fn juju_reboot(&self, now: bool) -> Result<(), HookToolError> {
        self.inner.juju_reboot(now)
    }
    fn secret_get(
        &self,
        secret_id: &str,
        read: SecretRead,
    ) -> Result<BTreeMap<String, String>, HookToolError> {
        self.inner.secret_get(secret_id, read)
    }
}

#[cfg(test)]
#[path = "observe_tests.rs"]
mod tests;
