//! The JSON the Actions service speaks. Answers: a UTF-8 BOM stripped, keys folded to
//! lowercase (Go and .NET match keys case-insensitively, so the service's casing is not
//! proven), unknown keys ignored, missing ones defaulted. Requests: the casing the Go client
//! sends (`RunnerSetting` capitalised).

use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// The body without a leading UTF-8 byte order mark.
pub fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body)
}

/// The text without a leading BOM (a message body is a JSON string in JSON).
pub fn strip_bom_str(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Every object key, at every depth, in lowercase.
pub fn fold_keys(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.to_lowercase(), fold_keys(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(fold_keys).collect()),
        other => other,
    }
}

/// An answer body as folded JSON (an empty body is `Null`).
pub fn parse_body(body: &[u8]) -> Result<Value, String> {
    let body = strip_bom(body);
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Null);
    }
    serde_json::from_slice(body)
        .map(fold_keys)
        .map_err(|e| format!("not JSON: {e}"))
}

/// A string field that some answers carry as a number.
pub fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    })
}

/// `null` as the type's default.
fn nullable<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The service's counts for one scale set: what scaling is decided on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Statistics {
    #[serde(rename = "totalavailablejobs", deserialize_with = "nullable")]
    pub total_available_jobs: u64,
    #[serde(rename = "totalacquiredjobs", deserialize_with = "nullable")]
    pub total_acquired_jobs: u64,
    /// Jobs assigned to the scale set, waiting or running: the scaling input.
    #[serde(rename = "totalassignedjobs", deserialize_with = "nullable")]
    pub total_assigned_jobs: u64,
    #[serde(rename = "totalrunningjobs", deserialize_with = "nullable")]
    pub total_running_jobs: u64,
    #[serde(rename = "totalregisteredrunners", deserialize_with = "nullable")]
    pub total_registered_runners: u64,
    #[serde(rename = "totalbusyrunners", deserialize_with = "nullable")]
    pub total_busy_runners: u64,
    #[serde(rename = "totalidlerunners", deserialize_with = "nullable")]
    pub total_idle_runners: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    #[serde(default, deserialize_with = "nullable")]
    pub name: String,
    #[serde(rename = "type", default, deserialize_with = "nullable")]
    pub kind: String,
}

impl Label {
    /// The only label type any client sends.
    pub fn system(name: &str) -> Label {
        Label {
            name: name.to_string(),
            kind: "System".into(),
        }
    }
}

/// A scale set as the service returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ScaleSet {
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    #[serde(rename = "runnergroupid", deserialize_with = "nullable")]
    pub runner_group_id: u64,
    #[serde(rename = "runnergroupname", deserialize_with = "nullable")]
    pub runner_group_name: String,
    #[serde(deserialize_with = "nullable")]
    pub labels: Vec<Label>,
    #[serde(deserialize_with = "nullable")]
    pub statistics: Statistics,
}

/// A scale set to create: the name first among the labels, as ARC and GARM do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewScaleSet {
    pub name: String,
    pub runner_group_id: u64,
    /// Extra labels besides the name (de-duplicated, case-insensitively, on the way out).
    pub labels: Vec<String>,
}

impl NewScaleSet {
    pub(super) fn body(&self) -> Value {
        let mut labels = vec![Label::system(&self.name)];
        for l in &self.labels {
            if !labels.iter().any(|x| x.name.eq_ignore_ascii_case(l)) && !l.is_empty() {
                labels.push(Label::system(l));
            }
        }
        serde_json::json!({
            "name": self.name,
            "runnerGroupId": self.runner_group_id,
            "labels": labels,
            "RunnerSetting": {"ephemeral": true, "isElastic": false, "disableUpdate": true},
        })
    }
}

/// A partial update: only what is `Some` is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScaleSetUpdate {
    pub name: Option<String>,
    pub runner_group_id: Option<u64>,
}

impl ScaleSetUpdate {
    pub(super) fn body(&self) -> Value {
        let mut map = Map::new();
        if let Some(n) = &self.name {
            map.insert("name".into(), Value::from(n.clone()));
        }
        if let Some(g) = self.runner_group_id {
            map.insert("runnerGroupId".into(), Value::from(g));
        }
        Value::Object(map)
    }
}

/// `{"count", "value": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub(super) struct Listing<T> {
    #[serde(default, deserialize_with = "nullable")]
    pub(super) count: u64,
    #[serde(default = "Vec::new", deserialize_with = "nullable")]
    pub(super) value: Vec<T>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(super) struct RunnerGroupJson {
    pub(super) id: u64,
}

/// A runner registration as the service lists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ScaleSetRunner {
    pub id: u64,
    #[serde(deserialize_with = "nullable")]
    pub name: String,
    /// 0 for a runner of no scale set.
    #[serde(rename = "runnerscalesetid", deserialize_with = "nullable")]
    pub runner_scale_set_id: u64,
    /// `online` / `offline`, when the service says.
    #[serde(deserialize_with = "nullable")]
    pub status: String,
    #[serde(deserialize_with = "nullable")]
    pub busy: bool,
}

/// A JIT registration: the runner made, and the config it starts with (a secret).
#[derive(Debug, Clone)]
pub struct ScaleSetJitConfig {
    pub runner: ScaleSetRunner,
    pub encoded_jit_config: Secret,
}

#[derive(Deserialize)]
pub(super) struct JitJson {
    pub(super) runner: ScaleSetRunner,
    #[serde(rename = "encodedjitconfig", default, deserialize_with = "nullable")]
    pub(super) encoded_jit_config: String,
}

/// A message session: the only one on its scale set while it lives.
#[derive(Debug, Clone)]
pub struct Session {
    pub scale_set_id: u64,
    pub session_id: String,
    pub owner_name: String,
    pub scale_set: ScaleSet,
    pub message_queue_url: url::Url,
    pub message_queue_token: Secret,
    pub statistics: Statistics,
}

#[derive(Default, Deserialize)]
#[serde(default)]
pub(super) struct SessionJson {
    #[serde(rename = "sessionid", deserialize_with = "string_or_number")]
    pub(super) session_id: String,
    #[serde(rename = "ownername", deserialize_with = "nullable")]
    pub(super) owner_name: String,
    #[serde(rename = "runnerscaleset", deserialize_with = "nullable")]
    pub(super) runner_scale_set: ScaleSet,
    #[serde(rename = "messagequeueurl", deserialize_with = "nullable")]
    pub(super) message_queue_url: String,
    #[serde(rename = "messagequeueaccesstoken", deserialize_with = "nullable")]
    pub(super) message_queue_access_token: String,
    pub(super) statistics: Option<Statistics>,
}

/// `{"typeName", "message"}` of an error answer.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct ErrorJson {
    #[serde(rename = "typename", deserialize_with = "nullable")]
    pub(super) type_name: String,
    #[serde(deserialize_with = "nullable")]
    pub(super) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_bom_is_stripped_and_keys_match_in_any_case() {
        let body = b"\xEF\xBB\xBF{\"ID\": 7, \"Name\": \"x\", \"RUNNERGROUPID\": 1, \"Labels\": [{\"NAME\": \"x\", \"Type\": \"System\"}], \"Statistics\": {\"TotalAssignedJobs\": 3}}";
        let set: ScaleSet = serde_json::from_value(parse_body(body).unwrap()).unwrap();
        assert_eq!(set.id, 7);
        assert_eq!(set.runner_group_id, 1);
        assert_eq!(set.labels, vec![Label::system("x")]);
        assert_eq!(set.statistics.total_assigned_jobs, 3);
        assert_eq!(parse_body(b"\xEF\xBB\xBF  ").unwrap(), Value::Null);
        assert_eq!(strip_bom(b"\xEF\xBBx"), b"\xEF\xBBx");
    }

    #[test]
    fn nulls_and_missing_keys_default() {
        let set: ScaleSet = serde_json::from_value(fold_keys(
            json!({"id": 2, "name": null, "statistics": null, "labels": null}),
        ))
        .unwrap();
        assert_eq!(set.name, "");
        assert_eq!(set.statistics, Statistics::default());
        let stats: Statistics = serde_json::from_value(json!({"totalidlerunners": null})).unwrap();
        assert_eq!(stats, Statistics::default());
    }

    #[test]
    fn a_new_scale_set_puts_its_name_first_once() {
        let body = NewScaleSet {
            name: "lxd".into(),
            runner_group_id: 1,
            labels: vec!["LXD".into(), "jammy".into(), "jammy".into(), "".into()],
        }
        .body();
        assert_eq!(
            body["labels"],
            json!([{"name": "lxd", "type": "System"}, {"name": "jammy", "type": "System"}])
        );
        assert_eq!(body["RunnerSetting"]["disableUpdate"], json!(true));
        assert_eq!(
            ScaleSetUpdate {
                name: Some("n".into()),
                runner_group_id: None
            }
            .body(),
            json!({"name": "n"})
        );
    }
}
