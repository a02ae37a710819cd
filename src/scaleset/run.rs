//! The listener process: `github-runner-worker --scale-set --dir D --logs L --slot 0`.
//!
//! Started detached by a reconcile and counted by its slot lock, as reactive workers are; it
//! starts as they do (`reactive::run::start_process`: inherited descriptors closed, SIGTERM
//! a stop request, the slot lock, the settings file read capped), builds the runtime the
//! unit's hooks use (`Runtime::for_unit_process`), and runs [`Listener`] over the Actions
//! service ([`ScaleSetClient`], credential from the unit's credential file, the model's
//! proxies) and the unit's LXD ([`LxdListenerRunners`]) until SIGTERM, which deletes its
//! session. What it does is published in its slot file (`SlotStatus::listener`).

use super::api::ListenerRunners;
use super::ledger::{FileLedger, ScaleSetLedger};
use super::listener::{Listener, ListenerEdges, ListenerReport};
use super::listener_state::{FileCursor, ListenerConfig, ListenerPhase, TimeToRunner};
use super::lxd_runners::LxdListenerRunners;
use super::process::{cursor_file, ledger_file, ListenerSettings, ListenerSnapshot};
use super::{ConfigUrl, RegistrationTokens, ScaleSetClient, ScaleSetSettings, Statistics};
use crate::charm::fleet::CharmRunnerOps;
use crate::charm::runtime::{ProcessSettings, Runtime};
use crate::config::CharmConfig;
use crate::github::{GitHub, GitHubError};
use crate::host::metrics::{MetricEvent, MetricsLog, ScaleSetJobStarted};
use crate::identity::UnitIdentity;
use crate::juju::context::ProxySettings;
use crate::reactive::observed::SharedSlot;
use crate::reactive::run::{observed, start_process, stop_flag};
use crate::secret::Secret;
use serde_json::{Map, Value};
use std::sync::Arc;

/// What stands for the credential options while the settings are validated: the listener's
/// settings carry none (`ListenerSettings`), its credential is the unit's credential file.
/// Shaped as a Juju secret URI, which validation takes as is and nobody resolves here.
const CREDENTIAL_IN_FILE: &str = "secret:credential-in-the-units-credential-file";
const CREDENTIAL_OPTIONS: &[&str] = &[
    "token",
    crate::config::credential::APP_ID,
    crate::config::credential::APP_INSTALLATION_ID,
    crate::config::credential::APP_PRIVATE_KEY,
];

/// The listener's main. `args` are argv after the program name (the flag included).
pub fn main(args: &[String]) -> i32 {
    let started = match start_process(args, "listener") {
        Ok(s) => s,
        Err(code) => return code,
    };
    let settings: ListenerSettings = match started.decode() {
        Ok(s) => s,
        Err(code) => return code,
    };
    tracing::info!(pid = std::process::id(), unit = %settings.unit_name, "listener started");
    let outcome = serve(&started.dirs, &started.slot_file, &settings);
    started.finish(outcome)
}

fn serve(
    dirs: &crate::reactive::workers::UnitDirs,
    slot_file: &SharedSlot,
    settings: &ListenerSettings,
) -> Result<(), String> {
    let config = with_credential_placeholder(&settings.config);
    let mut rt = Runtime::for_unit_process(&ProcessSettings {
        unit_name: &settings.unit_name,
        model_uuid: &settings.model_uuid,
        config: &config,
        proxy: ProxySettings {
            http: settings.http_proxy.clone(),
            https: settings.https_proxy.clone(),
            no_proxy: settings.no_proxy.clone(),
        },
        charm_dir: &settings.charm_dir,
        lxd_project: settings.lxd_project.as_deref(),
        debug_ssh: &settings.debug_ssh,
    })?;
    rt.github = observed(&rt, slot_file);
    let listener_config = listener_config(&rt.identity, &rt.config)?;
    let report = SlotReport {
        slot_file: slot_file.clone(),
        scale_set: listener_config.scale_set_name.clone(),
        metrics: MetricsLog::new(&rt.paths),
        flavor: rt.identity.app.clone(),
        clock: rt.clock.clone(),
    };
    report.publish(|_| {});
    let client = client(&rt)?;
    let ops = CharmRunnerOps::new(&rt);
    let runners = LxdListenerRunners { rt: &rt, ops: &ops };
    let cursor = FileCursor {
        path: cursor_file(dirs),
    };
    let ledger = FileLedger {
        path: ledger_file(dirs),
    };
    let jitter = crate::github::retry::jitter;
    let edges = ListenerEdges {
        api: &client,
        runners: &runners as &dyn ListenerRunners,
        cursor: &cursor,
        ledger: &ledger,
        report: &report,
        clock: &*rt.clock,
        jitter: &jitter,
    };
    Listener::new(listener_config, edges)
        .run(stop_flag())
        .map_err(|e| e.to_string())
}

/// The settings' configuration with a stand-in for the credential options when none is
/// there (see [`CREDENTIAL_IN_FILE`]).
pub fn with_credential_placeholder(config: &Map<String, Value>) -> Map<String, Value> {
    let mut config = config.clone();
    let given = CREDENTIAL_OPTIONS.iter().any(|k| {
        config
            .get(*k)
            .is_some_and(|v| !v.is_null() && v != "" && v != 0)
    });
    if !given {
        config.insert("token".into(), CREDENTIAL_IN_FILE.into());
    }
    config
}

/// What the unit's listener serves: scale set `<scale-set-name>-<unit number>` in runner
/// group `group`, labelled `<scale-set-name>` and `labels` (the scale set's own name is added
/// when it is created), at most `virtual-machines` runners and `min-idle-runners` idle ones,
/// its session owned by the unit (model and unit name: stable across restarts, unlike any
/// other deployment's).
pub fn listener_config(
    identity: &UnitIdentity,
    config: &CharmConfig,
) -> Result<ListenerConfig, String> {
    let (Some(name), Some(scale_set_name)) = (
        config.scale_set_name.as_deref(),
        config.unit_scale_set(identity.unit_number),
    ) else {
        return Err(crate::messages::scale_set_name_missing(&identity.app));
    };
    let mut labels = vec![name.to_string()];
    for label in &config.labels {
        if !labels.iter().any(|l| l.eq_ignore_ascii_case(label)) {
            labels.push(label.clone());
        }
    }
    let max_runners = config.virtual_machines;
    Ok(ListenerConfig {
        scale_set_name,
        runner_group: config.group.clone(),
        labels,
        owner: identity.owner_value(),
        max_runners,
        // Validation refuses more; a capped value keeps the listener's arithmetic safe.
        min_idle: config.min_idle_runners.min(max_runners),
        work_folder: String::new(),
        bootstrap_timeout: crate::charm::runtime::grace_for(config.test_mode_insecure),
    })
}

/// The REST side of the scale set's registration chain: the runtime's GitHub client.
struct RestTokens(Arc<dyn GitHub>);

impl RegistrationTokens for RestTokens {
    fn registration_token(&self) -> Result<Secret, GitHubError> {
        self.0.registration_token()
    }
}

/// remove: every scale set the unit's listener held is deleted (see
/// [`super::ledger::delete_every_held`]); what is left, as sentences for the log.
pub fn delete_held_scale_sets(rt: &Runtime) -> Vec<String> {
    let ledger = FileLedger {
        path: ledger_file(&super::process::unit_dirs(&rt.paths, &rt.identity)),
    };
    if ledger.load().is_empty() {
        return Vec::new();
    }
    match client(rt) {
        Ok(client) => super::ledger::delete_every_held(&client, &ledger),
        Err(e) => vec![format!(
            "the scale sets this unit made cannot be deleted ({e}); delete them in the \
             runner settings"
        )],
    }
}

/// The Actions service client for the unit's `github-url` and `path`, through the model's
/// proxies, its registration tokens from the unit's credential.
fn client(rt: &Runtime) -> Result<ScaleSetClient, String> {
    let url =
        ConfigUrl::for_path(&rt.config.github_url, &rt.config.path).map_err(|e| e.to_string())?;
    let mut settings = ScaleSetSettings::new(url);
    settings.proxy = rt.proxy.clone();
    Ok(ScaleSetClient::with_clock(
        settings,
        Arc::new(RestTokens(rt.github.clone())),
        rt.clock.clone(),
    ))
}

/// The listener's phases and statistics, into its slot file; its time to runner, into the
/// unit's metrics log (the exporter's histogram).
struct SlotReport {
    slot_file: SharedSlot,
    scale_set: String,
    metrics: MetricsLog,
    flavor: String,
    clock: Arc<dyn crate::clock::Clock>,
}

impl SlotReport {
    fn publish(&self, change: impl FnOnce(&mut ListenerSnapshot)) {
        self.slot_file.update(|s| {
            let snapshot = s.listener.get_or_insert_with(|| ListenerSnapshot {
                scale_set: self.scale_set.clone(),
                ..ListenerSnapshot::default()
            });
            let before = snapshot.clone();
            change(snapshot);
            let stopping = stop_flag().load(std::sync::atomic::Ordering::SeqCst);
            let changed = *snapshot != before || s.stopping != stopping;
            s.stopping = stopping;
            changed || s.updated_ms == 0
        });
    }
}

impl ListenerReport for SlotReport {
    fn phase(&self, phase: &ListenerPhase) {
        tracing::info!(scale_set = %self.scale_set, "{}", phase.status_text(&self.scale_set));
        self.publish(|s| s.phase = Some(phase.clone()));
    }

    fn statistics(&self, statistics: &Statistics) {
        self.publish(|s| s.statistics = Some(*statistics));
    }

    fn time_to_runner(&self, time: &TimeToRunner) {
        let event = MetricEvent::ScaleSetJobStarted(ScaleSetJobStarted {
            flavor: self.flavor.clone(),
            runner_online: time.runner_online.as_secs_f64(),
            job_started: time.job_started.as_secs_f64(),
        });
        if let Err(e) = self.metrics.issue(&event, &*self.clock) {
            tracing::warn!("{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{validate, ConfigContext};
    use serde_json::json;

    fn raw(extra: Value) -> Map<String, Value> {
        let mut config = json!({
            "path": "octo",
            "group": "linux",
            "labels": "large, LINUX-ARM, Lxd",
            "virtual-machines": 3,
        })
        .as_object()
        .cloned()
        .unwrap();
        config.extend(extra.as_object().cloned().unwrap());
        config
    }

    fn config_of(raw: &Map<String, Value>) -> Result<ListenerConfig, String> {
        let identity = UnitIdentity::parse("github-runner/4", "uuid-9").unwrap();
        let ctx = ConfigContext {
            app_name: "github-runner",
            juju_proxy_configured: false,
        };
        let config =
            validate(&with_credential_placeholder(raw), &ctx).map_err(|e| e.to_string())?;
        listener_config(&identity, &config)
    }

    #[test]
    fn the_units_scale_set_is_named_labelled_grouped_and_owned_by_the_unit() {
        let config = config_of(&raw(
            json!({"scale-set-name": "lxd", "min-idle-runners": 1}),
        ))
        .expect("valid");
        assert_eq!(
            config,
            ListenerConfig {
                scale_set_name: "lxd-4".into(),
                runner_group: "linux".into(),
                // The name's label once, whatever the case `labels` repeats it in.
                labels: vec!["lxd".into(), "large".into(), "LINUX-ARM".into()],
                owner: "uuid-9/github-runner/4".into(),
                max_runners: 3,
                min_idle: 1,
                work_folder: String::new(),
                bootstrap_timeout: std::time::Duration::from_secs(600),
            }
        );
    }

    #[test]
    fn idle_runners_default_to_none_and_never_exceed_the_maximum() {
        let none = config_of(&raw(json!({"scale-set-name": "lxd"}))).unwrap();
        assert_eq!(none.min_idle, 0);
        let many = config_of(&raw(
            json!({"scale-set-name": "lxd", "min-idle-runners": 9}),
        ));
        assert!(
            many.unwrap_err().contains("min-idle-runners"),
            "refused by validation"
        );
    }

    #[test]
    fn without_a_scale_set_name_the_listener_does_not_start() {
        let err = config_of(&raw(json!({"scale-set-name": " "}))).unwrap_err();
        assert!(err.contains("scale-set-name"), "{err}");
        assert!(config_of(&raw(json!({}))).is_err());
    }

    #[test]
    fn a_credential_option_given_is_validated_as_it_is() {
        let with_token = raw(json!({"token": "ghp_given"}));
        assert_eq!(
            with_credential_placeholder(&with_token)["token"],
            "ghp_given"
        );
        let app = raw(json!({"github-app-id": 7}));
        assert!(!with_credential_placeholder(&app).contains_key("token"));
        let none = with_credential_placeholder(&raw(json!({"token": ""})));
        assert_eq!(none["token"], CREDENTIAL_IN_FILE);
    }
}
