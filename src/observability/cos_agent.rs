//! The `cos-agent` relation (interface `cos_agent`), provider side, as the grafana agent
//! charm's `charms.grafana_agent.v0.cos_agent` library lays it out: the unit databag holds one
//! key, `config`, whose value is a JSON object with
//!
//! - `metrics_alert_rules`, `log_alert_rules`: `{"groups": [...]}` Prometheus/Loki rule
//!   groups, with the unit's Juju topology in group names, labels and expressions;
//! - `dashboards`: Grafana dashboards, each the base64 of its xz-compressed JSON;
//! - `metrics_scrape_jobs`: Prometheus `scrape_config`s, `job_name` `<app>_<index>_<name>`;
//! - `log_slots`: snap slots to read logs from (none: the agent reads `/var/log` files,
//!   where the charm's metrics log and image build log are).
//!
//! The rule files and the dashboard are in the repository's `cos/` folder, compiled in.

use std::collections::BTreeMap;
use std::io::Cursor;

use base64::Engine;
use serde_json::{json, Map, Value};

use super::service::exporter_port;
use crate::juju::context::HookContext;
use crate::juju::{HookToolError, HookTools};

/// The relation endpoint (metadata.yaml).
pub const ENDPOINT: &str = "cos-agent";
/// The unit databag key the library nests everything under.
pub const DATABAG_KEY: &str = "config";
/// Placeholder the rule files use for the unit's topology matchers (as the cos libraries).
pub const TOPOLOGY_PLACEHOLDER: &str = "%%juju_topology%%";
pub const CHARM_NAME: &str = "github-runner";

/// `(file name, content)` of the bundled dashboards.
pub const DASHBOARDS: [(&str, &str); 1] = [(
    "github_runner_fleet.json",
    include_str!("../../cos/grafana_dashboards/github_runner_fleet.json"),
)];
pub const PROMETHEUS_RULES: [(&str, &str); 1] = [(
    "github_runner.rules",
    include_str!("../../cos/prometheus_alert_rules/github_runner.rules"),
)];
pub const LOKI_RULES: [(&str, &str); 1] = [(
    "github_runner.rules",
    include_str!("../../cos/loki_alert_rules/github_runner.rules"),
)];

#[derive(Debug, thiserror::Error)]
pub enum CosAgentError {
    #[error("bundled file {file} is not valid: {reason}")]
    Bundled { file: String, reason: String },
    #[error(transparent)]
    HookTool(#[from] HookToolError),
}

/// Who the data is about: the labels COS attaches to this unit's telemetry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub model: String,
    pub model_uuid: String,
    pub application: String,
    pub unit: String,
}

impl Topology {
    pub fn of(hook: &HookContext) -> Self {
        Topology {
            model: hook.model_name.clone(),
            model_uuid: hook.identity.model_uuid.clone(),
            application: hook.identity.app.clone(),
            unit: hook.identity.unit_name(),
        }
    }

    /// `<model>_<uuid>_<application>`, the prefix of rule group names.
    pub fn identifier(&self) -> String {
        format!("{}_{}_{}", self.model, self.model_uuid, self.application)
    }

    /// The label matchers `%%juju_topology%%` stands for.
    pub fn matchers(&self) -> String {
        format!(
            "juju_model=\"{}\",juju_model_uuid=\"{}\",juju_application=\"{}\"",
            self.model, self.model_uuid, self.application
        )
    }

    fn labels(&self) -> Map<String, Value> {
        [
            ("juju_model", &self.model),
            ("juju_model_uuid", &self.model_uuid),
            ("juju_application", &self.application),
            ("juju_charm", &CHARM_NAME.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect()
    }
}

fn bundled(file: &str, reason: impl ToString) -> CosAgentError {
    CosAgentError::Bundled {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// Group names as Prometheus accepts them: `[a-zA-Z0-9_]`.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `{"groups": [...]}` from rule files, topology applied. Pure.
pub fn alert_rules(files: &[(&str, &str)], topology: &Topology) -> Result<Value, CosAgentError> {
    let mut groups = Vec::new();
    for (file, text) in files {
        let parsed: Value = serde_yaml::from_str(text).map_err(|e| bundled(file, e))?;
        let file_groups = parsed
            .get("groups")
            .and_then(Value::as_array)
            .ok_or_else(|| bundled(file, "no `groups` list"))?;
        for group in file_groups {
            let mut group = group.clone();
            let name = group
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| bundled(file, "a group without a name"))?;
            group["name"] = Value::String(sanitize(&format!(
                "{}_{}_alerts",
                topology.identifier(),
                name
            )));
            let rules = group
                .get_mut("rules")
                .and_then(Value::as_array_mut)
                .ok_or_else(|| bundled(file, "a group without rules"))?;
            for rule in rules {
                let expr = rule
                    .get("expr")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bundled(file, "a rule without expr"))?;
                rule["expr"] = Value::String(
                    expr.trim()
                        .replace(TOPOLOGY_PLACEHOLDER, &topology.matchers()),
                );
                let labels = rule
                    .as_object_mut()
                    .ok_or_else(|| bundled(file, "a rule that is not a mapping"))?
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(labels) = labels.as_object_mut() {
                    labels.extend(topology.labels());
                }
            }
            groups.push(group);
        }
    }
    Ok(json!({ "groups": groups }))
}

/// base64 of the xz stream of `json`, as the library's `GrafanaDashboard` serializes.
pub fn encode_dashboard(file: &str, json_text: &str) -> Result<String, CosAgentError> {
    // Validate first: a broken dashboard must fail here, not in Grafana.
    let _: Value = serde_json::from_str(json_text).map_err(|e| bundled(file, e))?;
    let mut compressed = Vec::new();
    lzma_rs::xz_compress(&mut Cursor::new(json_text.as_bytes()), &mut compressed)
        .map_err(|e| bundled(file, e))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(compressed))
}

/// The `metrics_scrape_jobs` entry for this unit's exporter.
pub fn scrape_jobs(topology: &Topology) -> Value {
    json!([{
        "job_name": format!("{}_0_github_runner_exporter", topology.application),
        "metrics_path": "/metrics",
        "static_configs": [{
            "targets": [format!("127.0.0.1:{}", exporter_port(&topology.unit))],
        }],
    }])
}

/// The whole databag (`{"config": "<json>"}`). Pure.
pub fn unit_databag(topology: &Topology) -> Result<BTreeMap<String, String>, CosAgentError> {
    let dashboards = DASHBOARDS
        .iter()
        .map(|(file, text)| encode_dashboard(file, text))
        .collect::<Result<Vec<_>, _>>()?;
    let config = json!({
        "metrics_alert_rules": alert_rules(&PROMETHEUS_RULES, topology)?,
        "log_alert_rules": alert_rules(&LOKI_RULES, topology)?,
        "dashboards": dashboards,
        "metrics_scrape_jobs": scrape_jobs(topology),
        "log_slots": [],
    });
    Ok([(DATABAG_KEY.to_string(), config.to_string())]
        .into_iter()
        .collect())
}

/// Write the databag on every `cos-agent` relation of the unit. Returns how many.
pub fn publish(tools: &dyn HookTools, hook: &HookContext) -> Result<usize, CosAgentError> {
    let ids = tools.relation_ids(ENDPOINT)?;
    if ids.is_empty() {
        return Ok(0);
    }
    let data = unit_databag(&Topology::of(hook))?;
    for id in &ids {
        tools.relation_set(id, false, &data)?;
    }
    tracing::debug!(relations = ids.len(), "cos-agent data published");
    Ok(ids.len())
}

#[cfg(test)]
#[path = "cos_agent_tests.rs"]
mod tests;
