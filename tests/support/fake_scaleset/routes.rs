//! Requests in, answers out: classify, record, apply a fault, check the credential the
//! endpoint needs, act on the model, answer in the configured key casing (and BOM).

use super::http::{HttpRequest, HttpResponse};
use super::queue::{acquire, create_session, queue, session_json};
use super::state::{
    Endpoint, FakeRunner, FakeScaleSetRecord, Fault, KeyCase, RecordedRequest, Shared, State,
};
use base64::Engine;
use serde_json::{json, Map, Value};

/// `{svc}` path: what the registration exchange hands out.
pub const SERVICE_PREFIX: &str = "/tenant/123/";
/// Message queues live apart from `{svc}`, as the broker's do.
pub const QUEUE_PREFIX: &str = "/_broker/scalesets/";
pub const API_VERSION: &str = "6.0-preview";
pub const CONFLICT: &str = "GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException, GitHub.Actions.Runtime.WebApi";
pub const NOT_FOUND: &str =
    "GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, GitHub.Actions.Runtime.WebApi";

pub fn classify(method: &str, path: &str) -> Endpoint {
    if let Some(endpoint) = super::runner_side::classify(method, path) {
        return endpoint;
    }
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(rest) = path.strip_prefix(QUEUE_PREFIX) {
        let segs: Vec<&str> = rest.split('/').collect();
        return match (method, segs.as_slice()) {
            ("GET", [id, "message"]) if numeric(id) => Endpoint::GetMessage,
            ("DELETE", [id, "message", m]) if numeric(id) && numeric(m) => Endpoint::DeleteMessage,
            _ => Endpoint::Other,
        };
    }
    if let Some(rest) = path.strip_prefix(SERVICE_PREFIX) {
        let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        return match (method, segs.as_slice()) {
            ("GET", ["_apis", "runtime", "runnergroups"]) => Endpoint::GetRunnerGroup,
            ("GET", ["_apis", "runtime", "runnerscalesets"]) => Endpoint::GetScaleSetByName,
            ("POST", ["_apis", "runtime", "runnerscalesets"]) => Endpoint::CreateScaleSet,
            ("GET", ["_apis", "runtime", "runnerscalesets", id]) if numeric(id) => {
                Endpoint::GetScaleSet
            }
            ("PATCH", ["_apis", "runtime", "runnerscalesets", id]) if numeric(id) => {
                Endpoint::UpdateScaleSet
            }
            ("DELETE", ["_apis", "runtime", "runnerscalesets", id]) if numeric(id) => {
                Endpoint::DeleteScaleSet
            }
            ("POST", ["_apis", "runtime", "runnerscalesets", _, "sessions"]) => {
                Endpoint::CreateSession
            }
            ("PATCH", ["_apis", "runtime", "runnerscalesets", _, "sessions", _]) => {
                Endpoint::RefreshSession
            }
            ("DELETE", ["_apis", "runtime", "runnerscalesets", _, "sessions", _]) => {
                Endpoint::DeleteSession
            }
            ("POST", ["_apis", "runtime", "runnerscalesets", _, "acquirejobs"]) => {
                Endpoint::AcquireJobs
            }
            ("POST", ["_apis", "runtime", "runnerscalesets", _, "generatejitconfig"]) => {
                Endpoint::GenerateJitConfig
            }
            ("GET", ["_apis", "distributedtask", "pools", "0", "agents"]) => Endpoint::ListRunners,
            ("GET", ["_apis", "distributedtask", "pools", "0", "agents", id]) if numeric(id) => {
                Endpoint::GetRunner
            }
            ("DELETE", ["_apis", "distributedtask", "pools", "0", "agents", id]) if numeric(id) => {
                Endpoint::DeleteRunner
            }
            _ => Endpoint::Other,
        };
    }
    // REST: the GHES layout (`/api/v3`) and the hosted one (no prefix) alike.
    let rest = path.strip_prefix("/api/v3").unwrap_or(path);
    let segs: Vec<&str> = rest.trim_matches('/').split('/').collect();
    match (method, segs.as_slice()) {
        ("POST", ["actions", "runner-registration"]) => Endpoint::RunnerRegistration,
        ("POST", ["repos", _, _, "actions", "runners", "registration-token"])
        | ("POST", ["orgs", _, "actions", "runners", "registration-token"])
        | ("POST", ["enterprises", _, "actions", "runners", "registration-token"]) => {
            Endpoint::RegistrationToken
        }
        _ => Endpoint::Other,
    }
}

pub fn error(status: u16, type_name: &str, message: &str) -> Reply {
    Reply::Json(status, json!({"typeName": type_name, "message": message}))
}

/// An answer before casing and BOM are applied.
pub enum Reply {
    Json(u16, Value),
    Empty(u16),
    Raw(HttpResponse),
}

pub fn handle(shared: &Shared, req: HttpRequest) -> HttpResponse {
    let endpoint = classify(&req.method, &req.path);
    let fault = shared.update(|st| {
        st.requests.push(RecordedRequest {
            endpoint,
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            body: String::from_utf8_lossy(&req.body).into_owned(),
        });
        st.take_fault(endpoint)
    });
    let reply = match fault {
        Some(Fault::Status {
            status,
            type_name,
            message,
        }) => error(status, &type_name, &message),
        Some(Fault::Text { status, text }) => Reply::Raw(HttpResponse::text(status, &text)),
        Some(Fault::TooManyRequests { retry_after_secs }) => Reply::Raw(
            HttpResponse::text(429, "too many requests")
                .with_header("Retry-After", retry_after_secs.to_string()),
        ),
        Some(Fault::EmptyOk) => Reply::Raw(HttpResponse::new(200)),
        Some(Fault::EmptyQueueUrl) => answer(shared, &req, endpoint, true),
        None => answer(shared, &req, endpoint, false),
    };
    let (bom, case) = {
        let st = shared.lock();
        (st.bom, st.key_case)
    };
    match reply {
        Reply::Raw(r) => r,
        Reply::Empty(status) => HttpResponse::new(status),
        // GitHub's REST API proper (the charm's REST client) answers plainly; the
        // quirks are the Actions service's and its registration exchange's.
        Reply::Json(status, value) if endpoint == Endpoint::RegistrationToken => {
            HttpResponse::json(status, &value)
        }
        Reply::Json(status, value) => {
            let mut r = HttpResponse::json(status, &recase(value, case));
            if bom {
                r.body.splice(0..0, b"\xEF\xBB\xBF".iter().copied());
            }
            r
        }
    }
}

/// Keys in `case`, at every depth, inside a message's JSON-string body too.
fn recase(value: Value, case: KeyCase) -> Value {
    let key = |k: &str| match case {
        KeyCase::AsIs => k.to_string(),
        KeyCase::Upper => k.to_uppercase(),
        KeyCase::Pascal => {
            let mut c = k.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        }
    };
    match value {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| {
                    let v = match (k.as_str(), v) {
                        ("body", Value::String(s)) if s.starts_with('[') => {
                            let inner = serde_json::from_str(&s)
                                .map(|v| recase(v, case))
                                .unwrap_or(Value::String(s.clone()));
                            Value::String(inner.to_string())
                        }
                        (_, v) => recase(v, case),
                    };
                    (key(&k), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| recase(v, case)).collect()),
        v => v,
    }
}

/// The request's JSON body with keys lowercased (the service reads any casing).
pub fn body(req: &HttpRequest) -> Value {
    fn fold(v: Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k.to_lowercase(), fold(v)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.into_iter().map(fold).collect()),
            v => v,
        }
    }
    fold(serde_json::from_slice(&req.body).unwrap_or(Value::Null))
}

pub fn bearer(req: &HttpRequest) -> Option<String> {
    req.header("authorization")?
        .strip_prefix("Bearer ")
        .map(String::from)
}

pub fn segment(req: &HttpRequest, prefix: &str, index: usize) -> String {
    req.path
        .strip_prefix(prefix)
        .unwrap_or("")
        .split('/')
        .nth(index)
        .unwrap_or("")
        .to_string()
}

fn answer(shared: &Shared, req: &HttpRequest, endpoint: Endpoint, empty_queue_url: bool) -> Reply {
    match endpoint {
        Endpoint::Other => Reply::Raw(HttpResponse::text(404, "no such endpoint in the fake\n")),
        Endpoint::RegistrationToken => shared.update(|st| {
            if bearer(req).as_deref() != Some(st.pat.as_str()) {
                return Reply::Json(401, json!({"message": "Bad credentials"}));
            }
            let token = format!("AREGTOKEN{:08}", st.next());
            st.registration_tokens.push(token.clone());
            Reply::Json(
                201,
                json!({"token": token, "expires_at": "2099-01-01T00:00:00Z"}),
            )
        }),
        Endpoint::RunnerRegistration => shared.update(|st| {
            let auth = req.header("authorization").unwrap_or("");
            let known = auth
                .strip_prefix("RemoteAuth ")
                .is_some_and(|t| st.registration_tokens.iter().any(|x| x == t));
            if !known {
                return Reply::Json(401, json!({"message": "registration token not accepted"}));
            }
            let b = body(req);
            if b["runner_event"] != "register" || !b["url"].is_string() {
                return Reply::Json(
                    400,
                    json!({"message": "url and runner_event=register required"}),
                );
            }
            let lifetime = st.admin_token_lifetime;
            let (token, exp) = st.mint_jwt("admin", lifetime);
            st.admin_tokens.insert(token.clone(), exp);
            Reply::Json(
                201,
                json!({"url": format!("{}{SERVICE_PREFIX}", st.base_url), "token": token}),
            )
        }),
        Endpoint::GetMessage | Endpoint::DeleteMessage => queue(shared, req, endpoint),
        Endpoint::RunnerOnline | Endpoint::RunnerWaitJob | Endpoint::RunnerDone => {
            Reply::Raw(super::runner_side::answer(shared, req, endpoint))
        }
        _ => shared.update(|st| {
            let token_exp = bearer(req).and_then(|t| st.admin_tokens.get(&t).copied());
            if endpoint == Endpoint::AcquireJobs {
                return acquire(st, req);
            }
            match token_exp {
                Some(exp) if exp > st.now() => {}
                Some(_) => return error(401, "TokenExpired", "the admin token expired"),
                None => return error(401, "Unauthorized", "no valid admin token"),
            }
            if req.query_param("api-version").as_deref() != Some(API_VERSION) {
                return error(
                    400,
                    "VssInvalidApiVersion",
                    "api-version=6.0-preview required",
                );
            }
            service(st, req, endpoint, empty_queue_url)
        }),
    }
}

fn service(st: &mut State, req: &HttpRequest, endpoint: Endpoint, empty_queue_url: bool) -> Reply {
    let seg = |i| segment(req, SERVICE_PREFIX, i);
    let id: u64 = seg(3).parse().unwrap_or(0);
    let listing =
        |items: Vec<Value>| Reply::Json(200, json!({"count": items.len(), "value": items}));
    match endpoint {
        Endpoint::GetRunnerGroup => {
            let name = req.query_param("groupName").unwrap_or_default();
            let found = st
                .groups
                .iter()
                .filter(|(_, n)| n.eq_ignore_ascii_case(&name));
            listing(found.map(|(id, n)| json!({"id": id, "name": n, "size": 0, "isDefaultGroup": *id == 1})).collect())
        }
        Endpoint::GetScaleSetByName => {
            let group: Option<u64> = req
                .query_param("runnerGroupId")
                .and_then(|g| g.parse().ok());
            let name = req.query_param("name");
            let found = st.scale_sets.values().filter(|s| {
                group.is_none_or(|g| g == s.group_id)
                    && name
                        .as_ref()
                        .is_none_or(|n| n.eq_ignore_ascii_case(&s.name))
            });
            listing(found.map(|s| st.scale_set_json(s)).collect())
        }
        Endpoint::GetScaleSet => match st.scale_sets.get(&id) {
            Some(s) => Reply::Json(200, st.scale_set_json(s)),
            None => error(404, NOT_FOUND, "scale set not found"),
        },
        Endpoint::CreateScaleSet => {
            let b = body(req);
            let name = b["name"].as_str().unwrap_or_default().to_string();
            let group_id = b["runnergroupid"].as_u64().unwrap_or(1);
            if name.is_empty() {
                return error(400, "ArgumentException", "name required");
            }
            if st
                .scale_sets
                .values()
                .any(|s| s.group_id == group_id && s.name.eq_ignore_ascii_case(&name))
            {
                return error(
                    400,
                    "RunnerScaleSetExistsException",
                    "a scale set with this name exists in the group",
                );
            }
            let mut labels: Vec<String> = b["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l["name"].as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            if labels.is_empty() {
                labels.push(name.clone());
            }
            let id = st.next();
            let record = FakeScaleSetRecord {
                id,
                name,
                group_id,
                labels,
                messages: Vec::new(),
                pending: Vec::new(),
                max_capacity: None,
            };
            let answer = st.scale_set_json(&record);
            st.scale_sets.insert(id, record);
            Reply::Json(200, answer)
        }
        Endpoint::UpdateScaleSet => {
            let b = body(req);
            let Some(s) = st.scale_sets.get_mut(&id) else {
                return error(404, NOT_FOUND, "scale set not found");
            };
            if let Some(n) = b["name"].as_str() {
                s.name = n.to_string();
            }
            if let Some(g) = b["runnergroupid"].as_u64() {
                s.group_id = g;
            }
            let s = s.clone();
            Reply::Json(200, st.scale_set_json(&s))
        }
        Endpoint::DeleteScaleSet => {
            if !st.scale_sets.contains_key(&id) {
                return error(404, NOT_FOUND, "scale set not found");
            }
            if st.runners.values().any(|r| r.scale_set_id == id && r.busy) {
                return error(
                    400,
                    "JobStillRunningException",
                    "a runner of the scale set is running a job",
                );
            }
            st.scale_sets.remove(&id);
            st.sessions.retain(|_, s| s.scale_set_id != id);
            st.runners.retain(|_, r| r.scale_set_id != id);
            for job in st.jobs.values_mut() {
                if matches!(job.state, super::state::JobState::Assigned(s) | super::state::JobState::Available(s) if s == id)
                {
                    job.state = super::state::JobState::Queued;
                }
            }
            st.assign();
            Reply::Empty(204)
        }
        Endpoint::CreateSession => create_session(st, req, id, empty_queue_url),
        Endpoint::RefreshSession => {
            let sid = seg(5);
            let lifetime = st.queue_token_lifetime;
            let (token, exp) = st.mint_jwt("queue", lifetime);
            let now = st.now();
            let Some(s) = st.sessions.get_mut(&sid) else {
                return error(
                    404,
                    "RunnerAdminException",
                    "runner referenced a session ID that doesn't exist",
                );
            };
            s.queue_token = token.clone();
            s.last_seen = now;
            let s = s.clone();
            st.queue_tokens.insert(token, (sid, exp));
            Reply::Json(200, session_json(st, &s, false))
        }
        Endpoint::DeleteSession => {
            let sid = seg(5);
            if st.sessions.remove(&sid).is_none() {
                return error(
                    400,
                    "RunnerScaleSetSessionExpiredException",
                    &format!("The session identifier {sid} is not valid"),
                );
            }
            st.queue_tokens.retain(|_, (s, _)| *s != sid);
            Reply::Empty(204)
        }
        Endpoint::GenerateJitConfig => {
            let b = body(req);
            let (Some(name), Some(_)) = (b["name"].as_str(), b["workfolder"].as_str()) else {
                return error(400, "ArgumentException", "name and workFolder required");
            };
            if !st.scale_sets.contains_key(&id) {
                return error(404, NOT_FOUND, "scale set not found");
            }
            if st
                .runners
                .values()
                .any(|r| r.name.eq_ignore_ascii_case(name))
            {
                return error(
                    409,
                    "GitHub.DistributedTask.WebApi.AgentExistsException",
                    "runner name already exists",
                );
            }
            let runner_id = st.next();
            let key = if st.fake_runners {
                format!("ssr{runner_id}k{}", st.next())
            } else {
                String::new()
            };
            let encoded = if key.is_empty() {
                let config = json!({".runner": format!("runner {runner_id}"), ".credentials": format!("secret-{runner_id}")});
                base64::engine::general_purpose::STANDARD.encode(config.to_string())
            } else {
                base64::engine::general_purpose::STANDARD.encode(format!("{} {key}", st.base_url))
            };
            st.runners.insert(
                runner_id,
                FakeRunner {
                    id: runner_id,
                    name: name.to_string(),
                    scale_set_id: id,
                    online: false,
                    busy: false,
                    key,
                },
            );
            Reply::Json(
                200,
                json!({"runner": {"id": runner_id, "name": name, "runnerScaleSetId": id}, "encodedJITConfig": encoded}),
            )
        }
        Endpoint::GetRunner | Endpoint::DeleteRunner => {
            let runner_id: u64 = seg(5).parse().unwrap_or(0);
            let runner = st.runners.get(&runner_id).cloned();
            match (endpoint, runner) {
                (Endpoint::GetRunner, Some(r)) => Reply::Json(200, runner_json(&r)),
                (Endpoint::GetRunner, None) => error(
                    404,
                    "GitHub.DistributedTask.WebApi.AgentNotFoundException",
                    "runner not found",
                ),
                (_, Some(r)) if r.busy => error(
                    400,
                    "GitHub.DistributedTask.WebApi.JobStillRunningException",
                    "the runner is running a job",
                ),
                (_, _) => {
                    st.runners.remove(&runner_id);
                    Reply::Empty(204)
                }
            }
        }
        Endpoint::ListRunners => {
            let name = req.query_param("agentName");
            let found = st.runners.values().filter(|r| {
                name.as_ref()
                    .is_none_or(|n| n.eq_ignore_ascii_case(&r.name))
            });
            listing(found.map(runner_json).collect())
        }
        _ => Reply::Raw(HttpResponse::text(404, "no such endpoint in the fake\n")),
    }
}

fn runner_json(r: &FakeRunner) -> Value {
    json!({"id": r.id, "name": r.name, "runnerScaleSetId": r.scale_set_id,
           "status": if r.online { "online" } else { "offline" }, "busy": r.busy})
}
