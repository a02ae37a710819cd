//! Messages from the queue, decoded into types. A message's `body` is a JSON string holding
//! an array of job messages: each entry decodes on its own, so one odd entry (an unknown
//! type, a field of the wrong type) never costs the rest of the batch or its statistics.

use super::wire::{fold_keys, string_or_number, Statistics};
use serde::Deserialize;
use serde_json::Value;

/// The only message type known to carry job messages.
pub const JOB_MESSAGES_TYPE: &str = "RunnerScaleSetJobMessages";

/// One message of the queue: acknowledge it (by `id`) once its work is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSetMessage {
    pub id: i64,
    /// `RunnerScaleSetJobMessages`; any other type has no jobs but is still acknowledged.
    pub message_type: String,
    pub statistics: Statistics,
    pub jobs: Vec<JobMessage>,
}

/// What every job message carries. `job_id` is the identity: `runner_request_id` may be 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct JobInfo {
    #[serde(rename = "runnerrequestid", deserialize_with = "int_or_zero")]
    pub runner_request_id: i64,
    #[serde(rename = "jobid", deserialize_with = "string_or_number")]
    pub job_id: String,
    /// Without the owner.
    #[serde(rename = "repositoryname", deserialize_with = "string_or_number")]
    pub repository_name: String,
    #[serde(rename = "ownername", deserialize_with = "string_or_number")]
    pub owner_name: String,
    #[serde(rename = "jobworkflowref", deserialize_with = "string_or_number")]
    pub job_workflow_ref: String,
    #[serde(rename = "jobdisplayname", deserialize_with = "string_or_number")]
    pub job_display_name: String,
    #[serde(rename = "workflowrunid", deserialize_with = "int_or_zero")]
    pub workflow_run_id: i64,
    #[serde(rename = "eventname", deserialize_with = "string_or_number")]
    pub event_name: String,
    #[serde(rename = "requestlabels", deserialize_with = "labels")]
    pub request_labels: Vec<String>,
    /// RFC 3339; the zero time `0001-01-01T00:00:00Z` when not applicable.
    #[serde(rename = "queuetime", deserialize_with = "string_or_number")]
    pub queue_time: String,
    #[serde(rename = "scalesetassigntime", deserialize_with = "string_or_number")]
    pub scale_set_assign_time: String,
    #[serde(rename = "runnerassigntime", deserialize_with = "string_or_number")]
    pub runner_assign_time: String,
    #[serde(rename = "finishtime", deserialize_with = "string_or_number")]
    pub finish_time: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobMessage {
    /// GHES's flow: acquire `runner_request_id` before it is assigned.
    Available(JobInfo),
    Assigned(JobInfo),
    Started {
        job: JobInfo,
        runner_id: u64,
        runner_name: String,
    },
    /// `runner_name` is empty when the job never reached a runner (a re-assignment's
    /// `canceled`).
    Completed {
        job: JobInfo,
        result: String,
        runner_id: u64,
        runner_name: String,
    },
    /// A type this client does not know: skipped, but kept for the log.
    Unknown {
        message_type: String,
    },
    /// An entry that is not a job message at all (not an object, a field of a wrong type).
    Undecodable {
        reason: String,
    },
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct RunnerFields {
    #[serde(rename = "runnerid", deserialize_with = "int_or_zero")]
    runner_id: i64,
    #[serde(rename = "runnername", deserialize_with = "string_or_number")]
    runner_name: String,
    #[serde(deserialize_with = "string_or_number")]
    result: String,
}

fn int_or_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_i64().unwrap_or(0),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

fn labels<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    })
}

/// One job message from its (folded) JSON.
pub fn decode_job(value: Value) -> JobMessage {
    let value = fold_keys(value);
    let Some(kind) = value
        .get("messagetype")
        .and_then(Value::as_str)
        .map(String::from)
    else {
        return JobMessage::Undecodable {
            reason: "no messageType".into(),
        };
    };
    let job: JobInfo = match serde_json::from_value(value.clone()) {
        Ok(j) => j,
        Err(e) => {
            return JobMessage::Undecodable {
                reason: format!("{kind}: {e}"),
            }
        }
    };
    let runner: RunnerFields = serde_json::from_value(value).unwrap_or_default();
    let runner_id = u64::try_from(runner.runner_id).unwrap_or(0);
    match kind.as_str() {
        "JobAvailable" => JobMessage::Available(job),
        "JobAssigned" => JobMessage::Assigned(job),
        "JobStarted" => JobMessage::Started {
            job,
            runner_id,
            runner_name: runner.runner_name,
        },
        "JobCompleted" => JobMessage::Completed {
            job,
            result: runner.result,
            runner_id,
            runner_name: runner.runner_name,
        },
        _ => JobMessage::Unknown { message_type: kind },
    }
}

/// A queue message from the (folded) answer of a poll. Only a missing or non-numeric
/// `messageId` fails: without it the message cannot be acknowledged.
pub fn decode_message(value: Value) -> Result<ScaleSetMessage, String> {
    let id = match value.get("messageid") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or("no numeric messageId")?;
    let message_type = value
        .get("messagetype")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let statistics = value
        .get("statistics")
        .cloned()
        .and_then(|s| serde_json::from_value(s).ok())
        .unwrap_or_default();
    let jobs = if message_type == JOB_MESSAGES_TYPE {
        decode_body(value.get("body"))
    } else {
        Vec::new()
    };
    Ok(ScaleSetMessage {
        id,
        message_type,
        statistics,
        jobs,
    })
}

/// The body: a JSON string of an array (an empty string: no job messages). An array
/// itself is accepted too.
fn decode_body(body: Option<&Value>) -> Vec<JobMessage> {
    let parsed = match body {
        None | Some(Value::Null) => return Vec::new(),
        Some(Value::String(s)) if s.trim().is_empty() => return Vec::new(),
        Some(Value::String(s)) => {
            match serde_json::from_str::<Value>(super::wire::strip_bom_str(s)) {
                Ok(v) => v,
                Err(e) => {
                    return vec![JobMessage::Undecodable {
                        reason: format!("body is not JSON: {e}"),
                    }]
                }
            }
        }
        Some(other) => other.clone(),
    };
    match parsed {
        Value::Array(items) => items.into_iter().map(decode_job).collect(),
        _ => vec![JobMessage::Undecodable {
            reason: "body is not an array".into(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: Value) -> ScaleSetMessage {
        decode_message(fold_keys(json!({
            "messageId": 12, "messageType": JOB_MESSAGES_TYPE, "body": body,
            "statistics": {"totalAssignedJobs": 2}
        })))
        .unwrap()
    }

    #[test]
    fn every_known_job_message_decodes_in_any_key_case() {
        let body = json!([
            {"messageType": "JobAvailable", "runnerRequestId": 7, "jobId": "j1", "requestLabels": ["lxd"]},
            {"MESSAGETYPE": "JobAssigned", "RunnerRequestId": 0, "JobId": "j2", "RepositoryName": "r", "OwnerName": "o"},
            {"messageType": "JobStarted", "jobId": 33, "runnerId": 5, "runnerName": "lxd-0-abc"},
            {"messageType": "JobCompleted", "jobId": "j4", "result": "canceled", "runnerName": ""},
        ]);
        let m = message(Value::String(body.to_string()));
        assert_eq!(m.id, 12);
        assert_eq!(m.statistics.total_assigned_jobs, 2);
        let JobMessage::Available(a) = &m.jobs[0] else {
            panic!("{:?}", m.jobs[0])
        };
        assert_eq!(
            (
                a.runner_request_id,
                a.job_id.as_str(),
                a.request_labels.clone()
            ),
            (7, "j1", vec!["lxd".to_string()])
        );
        let JobMessage::Assigned(b) = &m.jobs[1] else {
            panic!("{:?}", m.jobs[1])
        };
        assert_eq!(
            (
                b.job_id.as_str(),
                b.repository_name.as_str(),
                b.owner_name.as_str()
            ),
            ("j2", "r", "o")
        );
        assert!(
            matches!(&m.jobs[2], JobMessage::Started { job, runner_id: 5, runner_name } if job.job_id == "33" && runner_name == "lxd-0-abc")
        );
        assert!(
            matches!(&m.jobs[3], JobMessage::Completed { result, runner_name, .. } if result == "canceled" && runner_name.is_empty())
        );
    }

    #[test]
    fn odd_entries_never_lose_the_batch() {
        let body = json!([
            {"messageType": "JobSomethingNew", "jobId": "x"},
            42,
            {"jobId": "no type"},
            {"messageType": "JobAssigned", "jobId": "j", "requestLabels": "not-a-list", "workflowRunId": "oops"},
        ]);
        let m = message(Value::String(body.to_string()));
        assert_eq!(m.jobs.len(), 4);
        assert_eq!(
            m.jobs[0],
            JobMessage::Unknown {
                message_type: "JobSomethingNew".into()
            }
        );
        assert!(matches!(m.jobs[1], JobMessage::Undecodable { .. }));
        assert!(matches!(m.jobs[2], JobMessage::Undecodable { .. }));
        assert!(
            matches!(&m.jobs[3], JobMessage::Assigned(j) if j.job_id == "j" && j.request_labels.is_empty())
        );
    }

    #[test]
    fn empty_bodies_and_other_types_carry_statistics_only() {
        assert!(message(json!("")).jobs.is_empty());
        assert!(message(Value::Null).jobs.is_empty());
        assert_eq!(message(json!("{not json")).jobs.len(), 1);
        assert_eq!(
            message(json!("{}")).jobs,
            vec![JobMessage::Undecodable {
                reason: "body is not an array".into()
            }]
        );
        assert_eq!(
            message(json!([{"messageType": "JobAssigned", "jobId": "a"}]))
                .jobs
                .len(),
            1
        );
        let other = decode_message(fold_keys(
            json!({"messageId": "9", "messageType": "Other", "body": "[1]"}),
        ))
        .unwrap();
        assert_eq!((other.id, other.jobs.len()), (9, 0));
        assert!(decode_message(fold_keys(json!({"messageType": "x"}))).is_err());
    }
}
