//! Request handling: classify, record, apply faults, check the token, answer like GitHub.

use super::http::{query_pairs, Delivery, HttpRequest, HttpResponse};
use super::state::{
    base64_encode, now_epoch, rfc3339, AdvertisedChecksum, DownloadFault, Endpoint, FakeJob,
    FakeRunner, Fault, RecordedRequest, Shared, State,
};
use serde_json::{json, Value};
use std::time::Duration;

pub const API_PREFIX: &str = "/api/v3";
const DOCS: &str = "https://docs.github.com/rest";
/// The longest a listener long-poll may hold a connection.
const MAX_LONG_POLL: Duration = Duration::from_secs(60);
const DEFAULT_LONG_POLL: Duration = Duration::from_secs(30);

/// Where a request goes, from its method and path alone.
pub fn classify(method: &str, path: &str) -> Endpoint {
    if let Some(rest) = path.strip_prefix("/_fake/") {
        return match rest {
            "listener/online" => Endpoint::ListenerOnline,
            "listener/wait-job" => Endpoint::ListenerWaitJob,
            "listener/done" => Endpoint::ListenerDone,
            _ if rest.starts_with("downloads/") && method == "GET" => Endpoint::DownloadTarball,
            _ => Endpoint::Other,
        };
    }
    let Some(api) = path.strip_prefix(API_PREFIX) else {
        return Endpoint::Other;
    };
    let segs: Vec<&str> = api.trim_matches('/').split('/').collect();
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let ("POST", ["app", "installations", id, "access_tokens"]) = (method, segs.as_slice()) {
        if numeric(id) {
            return Endpoint::InstallationToken;
        }
    }
    let (is_org, rest) = match segs.as_slice() {
        ["repos", _, _, rest @ ..] => (false, rest),
        ["orgs", _, rest @ ..] => (true, rest),
        _ => return Endpoint::UnknownApi,
    };
    match (method, rest) {
        ("GET", []) if !is_org => Endpoint::GetRepository,
        ("GET", ["actions", "runners"]) => Endpoint::ListRunners,
        ("GET", ["actions", "runners", "downloads"]) => Endpoint::ListDownloads,
        ("POST", ["actions", "runners", "registration-token"]) => Endpoint::RegistrationToken,
        ("POST", ["actions", "runners", "remove-token"]) => Endpoint::RemoveToken,
        ("POST", ["actions", "runners", "generate-jitconfig"]) => Endpoint::GenerateJitConfig,
        ("GET", ["actions", "runners", id]) if numeric(id) => Endpoint::GetRunner,
        ("DELETE", ["actions", "runners", id]) if numeric(id) => Endpoint::DeleteRunner,
        ("GET", ["actions", "runners", id, "labels"]) if numeric(id) => Endpoint::ListRunnerLabels,
        ("GET", ["actions", "runner-groups"]) if is_org => Endpoint::ListRunnerGroups,
        ("GET", ["actions", "runner-groups", id]) if is_org && numeric(id) => {
            Endpoint::GetRunnerGroup
        }
        ("GET", ["actions", "jobs", id]) if !is_org && numeric(id) => Endpoint::GetJob,
        ("GET", ["actions", "runs", id, "jobs"]) if !is_org && numeric(id) => Endpoint::ListRunJobs,
        _ => Endpoint::UnknownApi,
    }
}

pub fn handle(shared: &Shared, req: HttpRequest) -> HttpResponse {
    let endpoint = classify(&req.method, &req.path);
    let fault = shared.update(|st| {
        st.requests.push(RecordedRequest {
            method: req.method.clone(),
            path: req.path.clone(),
            query: req.query.clone(),
            headers: req.headers.clone(),
            endpoint,
        });
        if !endpoint.is_api() {
            return None;
        }
        if now_epoch() >= st.rate_reset {
            // A new rate-limit window, as GitHub opens one every hour.
            st.rate_remaining = st.rate_limit;
            st.rate_reset = now_epoch() + 3600;
        }
        match st.take_fault(endpoint) {
            Some(fault) => Some(fault),
            // The primary budget is spent: GitHub answers 403 until the reset.
            None if st.rate_remaining == 0 => Some(Fault::PrimaryRateLimit {
                status: 403,
                reset_epoch: st.rate_reset,
            }),
            None => {
                st.rate_remaining -= 1;
                None
            }
        }
    });
    if !endpoint.is_api() {
        return match endpoint {
            Endpoint::DownloadTarball => download(shared, &req),
            Endpoint::ListenerOnline => listener_online(shared, &req),
            Endpoint::ListenerWaitJob => listener_wait_job(shared, &req),
            Endpoint::ListenerDone => listener_done(shared, &req),
            _ if req.path == "/_fake/health" => HttpResponse::text(200, "ok\n"),
            _ => HttpResponse::text(404, "not found\n"),
        };
    }
    hold_if_asked(shared, &req, endpoint);
    let response = match fault {
        Some(Fault::Slow(d)) => {
            let st = shared.lock();
            drop(shared.wait_for(st, d, |_| false));
            api(shared, &req, endpoint)
        }
        Some(f) => fault_response(shared, &f),
        None => api(shared, &req, endpoint),
    };
    with_rate_headers(shared, response)
}

/// The longest a page is held back (a test that forgets to release it must not hang).
const MAX_HOLD: Duration = Duration::from_secs(120);

/// Wait here while an armed [`super::state::PageHold`] matches this request.
fn hold_if_asked(shared: &Shared, req: &HttpRequest, endpoint: Endpoint) {
    let page = req
        .query_param("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1);
    let id = shared.update(|st| {
        let hold = st
            .holds
            .iter_mut()
            .find(|h| !h.fired && !h.released && h.endpoint == endpoint && h.page == page)?;
        hold.fired = true;
        hold.waiting = true;
        Some(hold.id)
    });
    let Some(id) = id else { return };
    let st = shared.lock();
    let (mut st, _) = shared.wait_for(st, MAX_HOLD, |st| {
        st.holds.iter().any(|h| h.id == id && h.released)
    });
    if let Some(h) = st.holds.iter_mut().find(|h| h.id == id) {
        h.waiting = false;
    }
    drop(st);
    shared.changed.notify_all();
}

/// Every answer of the API carries the full `x-ratelimit-*` set (unless a fault set it).
fn with_rate_headers(shared: &Shared, mut r: HttpResponse) -> HttpResponse {
    if r.headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-ratelimit-remaining"))
    {
        return r;
    }
    let st = shared.lock();
    r.headers = rate_headers(st.rate_limit, st.rate_remaining, st.rate_reset)
        .into_iter()
        .chain(r.headers)
        .collect();
    r
}

/// `x-ratelimit-limit`, `-remaining`, `-used`, `-reset`, `-resource`, as GitHub sends them.
fn rate_headers(limit: u64, remaining: u64, reset: u64) -> Vec<(String, String)> {
    vec![
        ("x-ratelimit-limit".into(), limit.to_string()),
        ("x-ratelimit-remaining".into(), remaining.to_string()),
        (
            "x-ratelimit-used".into(),
            limit.saturating_sub(remaining).to_string(),
        ),
        ("x-ratelimit-reset".into(), reset.to_string()),
        ("x-ratelimit-resource".into(), "core".into()),
    ]
}

fn error(status: u16, message: &str) -> HttpResponse {
    HttpResponse::json(
        status,
        &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

fn fault_response(shared: &Shared, fault: &Fault) -> HttpResponse {
    match fault {
        Fault::ServerError(status) => error(*status, "Server Error"),
        Fault::PrimaryRateLimit {
            status,
            reset_epoch,
        } => {
            let limit = shared.lock().rate_limit;
            let mut r = error(*status, "API rate limit exceeded for user ID 1.");
            r.headers.extend(rate_headers(limit, 0, *reset_epoch));
            r
        }
        Fault::SecondaryRateLimit {
            status,
            retry_after,
        } => {
            // The primary budget as it stands: it may be spent too.
            let (limit, remaining, reset) = {
                let st = shared.lock();
                (st.rate_limit, st.rate_remaining, st.rate_reset)
            };
            let mut r = error(
                *status,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            );
            r.headers.extend(rate_headers(limit, remaining, reset));
            if let Some(s) = retry_after {
                r = r.with_header("retry-after", s.to_string());
            }
            r
        }
        Fault::Forbidden {
            accepted_permissions,
        } => {
            let mut r = error(403, "Resource not accessible by personal access token");
            if let Some(p) = accepted_permissions {
                r = r.with_header("X-Accepted-GitHub-Permissions", p.clone());
            }
            r
        }
        Fault::Slow(_) => error(500, "unreachable: slow faults answer normally"),
    }
}

/// `owner/repo` or `org` and the path after it, for a classified API path.
fn scope_of(path: &str) -> Option<(String, bool, Vec<String>)> {
    let api = path.strip_prefix(API_PREFIX)?;
    let segs: Vec<String> = api
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    match segs.first().map(String::as_str) {
        Some("repos") if segs.len() >= 3 => Some((
            format!("{}/{}", segs[1], segs[2]),
            false,
            segs[3..].to_vec(),
        )),
        Some("orgs") if segs.len() >= 2 => Some((segs[1].clone(), true, segs[2..].to_vec())),
        _ => None,
    }
}

/// A personal access token the fake knows, or an installation token before its
/// `expires_at`.
fn authorized(st: &mut State, req: &HttpRequest) -> bool {
    let Some(auth) = req.header("authorization") else {
        return false;
    };
    let token = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("token "))
        .unwrap_or("");
    st.tokens.contains(token)
        || st.apps.standing(token, now_epoch()) == super::app::TokenStanding::Valid
}

fn api(shared: &Shared, req: &HttpRequest, endpoint: Endpoint) -> HttpResponse {
    let mut st = shared.lock();
    if req.header("user-agent").is_none_or(str::is_empty) {
        return error(
            403,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header.",
        );
    }
    if endpoint == Endpoint::InstallationToken {
        let installation = req
            .path
            .rsplit('/')
            .nth(1)
            .and_then(|id| id.parse().ok())
            .unwrap_or(0);
        let seq = st.next_seq();
        let auth = req.header("authorization").map(str::to_string);
        return match st
            .apps
            .mint(auth.as_deref(), installation, now_epoch(), seq)
        {
            Ok(body) => HttpResponse::json(201, &body),
            Err((status, message)) => error(status, &message),
        };
    }
    if !authorized(&mut st, req) {
        return error(401, "Bad credentials");
    }
    let Some((path, is_org, rest)) = scope_of(&req.path) else {
        return error(404, "Not Found");
    };
    if endpoint == Endpoint::UnknownApi || st.missing_paths.contains(&path) {
        return error(404, "Not Found");
    }
    let unreadable = matches!(
        endpoint,
        Endpoint::GetRepository | Endpoint::GetJob | Endpoint::ListRunJobs
    ) && st.private_repos.contains(&path);
    if unreadable {
        return error(404, "Not Found");
    }
    let id_at = |i: usize| rest.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    let response = match endpoint {
        Endpoint::ListRunners => {
            let name = req.query_param("name");
            let runners: Vec<&FakeRunner> = st
                .runners
                .values()
                .filter(|r| r.path == path && name.as_ref().is_none_or(|n| *n == r.name))
                .collect();
            // Only the page asked for is rendered: listing stays linear in the fleet size.
            let (page, link) = paginate(&st, req, &runners);
            let page: Vec<Value> = page.iter().map(|r| runner_json(&st, r)).collect();
            let mut r =
                HttpResponse::json(200, &json!({"total_count": runners.len(), "runners": page}));
            if let Some(link) = link {
                r = r.with_header("Link", link);
            }
            r
        }
        Endpoint::GetRunner => match st.runners.get(&id_at(2)) {
            Some(r) if r.path == path => HttpResponse::json(200, &runner_json(&st, r)),
            _ => error(404, "Not Found"),
        },
        Endpoint::ListRunnerLabels => match st.runners.get(&id_at(2)) {
            Some(r) if r.path == path => {
                let labels = labels_json(&st, r);
                HttpResponse::json(
                    200,
                    &json!({"total_count": r.labels.len(), "labels": labels}),
                )
            }
            _ => error(404, "Not Found"),
        },
        Endpoint::DeleteRunner => {
            let id = id_at(2);
            match st.runners.get(&id) {
                Some(r) if r.path == path && r.busy => HttpResponse::json(
                    422,
                    &json!({
                        "message": format!("Bad request - Runner \"{}\" is still running a job\"", r.name),
                        "documentation_url": DOCS,
                    }),
                ),
                Some(r) if r.path == path => {
                    st.runners.remove(&id);
                    HttpResponse::new(204)
                }
                _ => error(404, "Not Found"),
            }
        }
        Endpoint::RegistrationToken | Endpoint::RemoveToken => {
            let seq = st.next_seq();
            let prefix = if endpoint == Endpoint::RegistrationToken {
                "AREG"
            } else {
                "AREM"
            };
            HttpResponse::json(
                201,
                &json!({
                    "token": format!("{prefix}FAKE{seq:024}"),
                    "expires_at": rfc3339(now_epoch() + 3600),
                }),
            )
        }
        Endpoint::GenerateJitConfig => generate_jit(&mut st, req, &path, is_org),
        Endpoint::ListDownloads => HttpResponse::json(200, &downloads_json(&st)),
        Endpoint::ListRunnerGroups => {
            let groups: Vec<Value> = st
                .org_groups(&path)
                .iter()
                .map(|g| group_json(&st, &path, g))
                .collect();
            let (page, link) = paginate(&st, req, &groups);
            let mut r = HttpResponse::json(
                200,
                &json!({"total_count": groups.len(), "runner_groups": page}),
            );
            if let Some(link) = link {
                r = r.with_header("Link", link);
            }
            r
        }
        Endpoint::GetRunnerGroup => {
            let id = id_at(2);
            match st.org_groups(&path).iter().find(|g| g.id == id) {
                Some(g) => HttpResponse::json(200, &group_json(&st, &path, g)),
                None => error(404, "Not Found"),
            }
        }
        Endpoint::GetRepository => {
            let (owner, name) = path.split_once('/').unwrap_or((path.as_str(), ""));
            HttpResponse::json(
                200,
                &json!({
                    "name": name,
                    "full_name": path,
                    "private": st.private_repos.contains(&path),
                    "owner": {"login": owner},
                }),
            )
        }
        Endpoint::GetJob => match st.jobs.get(&id_at(2)) {
            Some(j) if j.repo == path => HttpResponse::json(200, &job_json(&st, j)),
            _ => error(404, "Not Found"),
        },
        Endpoint::ListRunJobs => {
            let run_id = id_at(2);
            let jobs: Vec<Value> = st
                .jobs
                .values()
                .filter(|j| j.repo == path && j.run_id == run_id)
                .map(|j| job_json(&st, j))
                .collect();
            let (page, link) = paginate(&st, req, &jobs);
            let mut r = HttpResponse::json(200, &json!({"total_count": jobs.len(), "jobs": page}));
            if let Some(link) = link {
                r = r.with_header("Link", link);
            }
            r
        }
        _ => error(404, "Not Found"),
    };
    drop(st);
    shared.changed.notify_all();
    response
}

fn generate_jit(st: &mut State, req: &HttpRequest, path: &str, is_org: bool) -> HttpResponse {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return error(400, "Problems parsing JSON");
    };
    let name = body.get("name").and_then(Value::as_str).unwrap_or("");
    let group_id = body.get("runner_group_id").and_then(Value::as_u64);
    let labels: Option<Vec<String>> = body.get("labels").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect()
    });
    let (Some(group_id), Some(labels)) = (group_id, labels) else {
        return validation_error(
            "Invalid request.\n\n\"runner_group_id\" and \"labels\" are required.",
        );
    };
    if name.is_empty() {
        return validation_error("Invalid request.\n\n\"name\" is required.");
    }
    if labels.is_empty() || labels.len() > 100 {
        return validation_error("Invalid request.\n\n\"labels\" must hold 1 to 100 items.");
    }
    let group_exists = if is_org {
        st.org_groups(path).iter().any(|g| g.id == group_id)
    } else {
        group_id == 1
    };
    if !group_exists {
        return error(404, "Not Found");
    }
    if st
        .runners
        .values()
        .any(|r| r.path == path && r.name == name)
    {
        return error(
            409,
            &format!("Already exists - A runner with the name {name} already exists."),
        );
    }
    let id = st.add_runner(path, name, &labels, group_id, true);
    let seq = st.next_seq();
    let key = format!("jit{id}k{seq:x}");
    if let Some(r) = st.runners.get_mut(&id) {
        r.jit_key = Some(key.clone());
    }
    let encoded = base64_encode(format!("{} {key}", st.base_url).as_bytes());
    let runner = match st.runners.get(&id) {
        Some(r) => runner_json(st, r),
        None => Value::Null,
    };
    HttpResponse::json(
        201,
        &json!({"runner": runner, "encoded_jit_config": encoded}),
    )
}

fn validation_error(message: &str) -> HttpResponse {
    HttpResponse::json(
        422,
        &json!({"message": message, "documentation_url": DOCS, "errors": []}),
    )
}

/// The page asked for and the `Link` header GitHub would send with it.
fn paginate<T: Clone>(st: &State, req: &HttpRequest, items: &[T]) -> (Vec<T>, Option<String>) {
    let per_page = req
        .query_param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page = req
        .query_param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let start = (page - 1).saturating_mul(per_page).min(items.len());
    let end = (start + per_page).min(items.len());
    let slice = items[start..end].to_vec();
    if last == 1 {
        return (slice, None);
    }
    let url_for = |p: usize| {
        let mut params: Vec<(String, String)> = query_pairs(&req.query)
            .into_iter()
            .filter(|(k, _)| k != "page" && k != "per_page")
            .collect();
        params.push(("per_page".into(), per_page.to_string()));
        params.push(("page".into(), p.to_string()));
        let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}{}?{}", st.base_url, req.path, query.join("&"))
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url_for(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url_for(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url_for(page - 1)));
        links.push(format!("<{}>; rel=\"first\"", url_for(1)));
    }
    (slice, Some(links.join(", ")))
}

fn labels_json(st: &State, r: &FakeRunner) -> Vec<Value> {
    r.labels
        .iter()
        .map(|l| {
            json!({"id": st.label_ids.get(l).copied().unwrap_or(0), "name": l, "type": "custom"})
        })
        .collect()
}

fn runner_json(st: &State, r: &FakeRunner) -> Value {
    json!({
        "id": r.id,
        "runner_group_id": r.runner_group_id,
        "name": r.name,
        "os": if r.version.is_some() { "linux" } else { "unknown" },
        "status": if r.online { "online" } else { "offline" },
        "busy": r.busy,
        "ephemeral": r.ephemeral,
        "version": r.version,
        "labels": labels_json(st, r),
    })
}

fn group_json(st: &State, org: &str, g: &super::state::FakeRunnerGroup) -> Value {
    let base = format!(
        "{}{API_PREFIX}/orgs/{org}/actions/runner-groups/{}",
        st.base_url, g.id
    );
    json!({
        "id": g.id,
        "name": g.name,
        "visibility": g.visibility,
        "default": g.default,
        "runners_url": format!("{base}/runners"),
        "inherited": false,
        "allows_public_repositories": true,
        "restricted_to_workflows": false,
        "selected_workflows": [],
        "workflow_restrictions_read_only": false,
    })
}

fn job_json(st: &State, j: &FakeJob) -> Value {
    let api = format!("{}{API_PREFIX}/repos/{}", st.base_url, j.repo);
    json!({
        "id": j.id,
        "run_id": j.run_id,
        "run_url": format!("{api}/actions/runs/{}", j.run_id),
        "run_attempt": 1,
        "node_id": base64_encode(format!("CheckRun{}", j.id).as_bytes()),
        "head_sha": format!("{:040x}", j.run_id),
        "url": format!("{api}/actions/jobs/{}", j.id),
        "html_url": format!("{}/{}/actions/runs/{}/job/{}", st.base_url, j.repo, j.run_id, j.id),
        "status": j.status,
        "conclusion": j.conclusion,
        "created_at": j.created_at,
        "started_at": j.started_at.clone().unwrap_or_else(|| j.created_at.clone()),
        "completed_at": j.completed_at,
        "name": j.name,
        "steps": [],
        "check_run_url": format!("{api}/check-runs/{}", j.id),
        "labels": j.labels,
        "runner_id": j.runner_id,
        "runner_name": j.runner_name,
        "runner_group_id": j.runner_group_id,
        "runner_group_name": j.runner_group_id.map(|id| if id == 1 { "Default".to_string() } else { format!("group-{id}") }),
        "workflow_name": j.workflow_name,
        "head_branch": j.head_branch,
    })
}

/// File name of the linux tarball for `arch` at `version`.
pub fn tarball_name(version: &str, arch: &str) -> String {
    format!("actions-runner-linux-{arch}-{version}.tar.gz")
}

fn downloads_json(st: &State) -> Value {
    let v = &st.tarball.version;
    let entry = |os: &str, arch: &str, filename: String, served: bool| {
        let mut e = json!({
            "os": os,
            "architecture": arch,
            "download_url": format!("{}/_fake/downloads/{filename}", st.base_url),
            "filename": filename,
        });
        let checksum = match (&st.tarball.advertised, served) {
            (AdvertisedChecksum::Actual, true) => Some(st.tarball.sha256.clone()),
            (AdvertisedChecksum::Value(c), true) => Some(c.clone()),
            (AdvertisedChecksum::Missing, true) => None,
            (_, false) => Some("0".repeat(64)),
        };
        if let Some(c) = checksum {
            e["sha256_checksum"] = json!(c);
        }
        if let Some(t) = &st.tarball.download_token {
            e["temp_download_token"] = json!(t);
        }
        e
    };
    json!([
        entry(
            "osx",
            "x64",
            format!("actions-runner-osx-x64-{v}.tar.gz"),
            false
        ),
        entry("linux", "x64", tarball_name(v, "x64"), true),
        entry("linux", "arm", tarball_name(v, "arm"), false),
        entry(
            "win",
            "x64",
            format!("actions-runner-win-x64-{v}.zip"),
            false
        ),
        entry("linux", "arm64", tarball_name(v, "arm64"), true),
    ])
}

fn download(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let file = req.path.trim_start_matches("/_fake/downloads/");
    let (served, fault) = shared.update(|st| {
        let v = st.tarball.version.clone();
        let served =
            [tarball_name(&v, "x64"), tarball_name(&v, "arm64")].contains(&file.to_string());
        let fault = if served {
            st.take_download_fault()
        } else {
            None
        };
        (served, fault)
    });
    if !served {
        return HttpResponse::text(404, "Not Found\n");
    }
    let wanted = shared.lock().tarball.download_token.clone();
    if let Some(token) = wanted {
        if req.header("authorization") != Some(format!("Bearer {token}").as_str()) {
            return HttpResponse::text(403, "Forbidden\n");
        }
    }
    if let Some(DownloadFault::Slow(d)) = &fault {
        let st = shared.lock();
        drop(shared.wait_for(st, *d, |_| false));
    }
    let bytes = shared.lock().tarball.bytes.clone();
    let mut r = HttpResponse::new(200).with_header("Content-Type", "application/octet-stream");
    r.body = bytes;
    match fault {
        Some(DownloadFault::Status(s)) => return HttpResponse::text(s, "Server Error\n"),
        Some(DownloadFault::TruncateAfter(n)) => r.delivery = Delivery::TruncateAfter(n),
        Some(DownloadFault::BrokenChunkedAfter(n)) => r.delivery = Delivery::BrokenChunkedAfter(n),
        Some(DownloadFault::Chunked) => r.delivery = Delivery::Chunked,
        Some(DownloadFault::Slow(_)) | None => {}
    }
    r
}

fn listener_key(req: &HttpRequest) -> String {
    req.query_param("key").unwrap_or_default()
}

fn gone() -> HttpResponse {
    HttpResponse::text(404, "gone\n")
}

fn listener_online(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let key = listener_key(req);
    let found = shared.update(|st| {
        let version = st.tarball.version.clone();
        match st.runner_by_key_mut(&key) {
            Some(r) => {
                r.online = true;
                r.version = Some(version);
                true
            }
            None => false,
        }
    });
    if found {
        HttpResponse::text(200, "ok\n")
    } else {
        gone()
    }
}

fn long_poll_timeout(req: &HttpRequest) -> Duration {
    req.query_param("timeout")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_LONG_POLL)
        .min(MAX_LONG_POLL)
}

fn listener_wait_job(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let key = listener_key(req);
    let st = shared.lock();
    let (mut st, picked) = shared.wait_for(st, long_poll_timeout(req), |st| {
        match st.runner_by_key_mut(&key) {
            None => true, // gone: answer now
            Some(r) => r.job_id.is_some(),
        }
    });
    let answer = if !picked {
        HttpResponse::text(200, "none\n")
    } else {
        let now = rfc3339(now_epoch());
        match st.runner_by_key_mut(&key) {
            None => gone(),
            Some(r) => {
                r.busy = true;
                let (rid, rname, gid) = (r.id, r.name.clone(), r.runner_group_id);
                let job_id = r.job_id.unwrap_or(0);
                let mut run = (0, String::new());
                if let Some(j) = st.jobs.get_mut(&job_id) {
                    if j.status == "queued" {
                        j.status = "in_progress".into();
                        j.started_at = Some(now);
                        j.runner_id = Some(rid);
                        j.runner_name = Some(rname);
                        j.runner_group_id = Some(gid);
                    }
                    run = (j.run_id, j.repo.clone());
                }
                HttpResponse::text(200, &format!("job {job_id} {} {}\n", run.0, run.1))
            }
        }
    };
    drop(st);
    shared.changed.notify_all();
    answer
}

fn listener_done(shared: &Shared, req: &HttpRequest) -> HttpResponse {
    let key = listener_key(req);
    let conclusion = req
        .query_param("conclusion")
        .unwrap_or_else(|| "success".into());
    let st = shared.lock();
    // A held job keeps the runner busy until the test releases it.
    let (mut st, released) = shared.wait_for(st, long_poll_timeout(req), |st| {
        let job = st
            .runners
            .values()
            .find(|r| r.jit_key.as_deref() == Some(key.as_str()))
            .and_then(|r| r.job_id);
        match job {
            None => true,
            Some(id) => st.jobs.get(&id).is_none_or(|j| !j.held),
        }
    });
    let answer = if !released {
        HttpResponse::text(200, "wait\n")
    } else {
        match st.runner_by_key_mut(&key) {
            None => gone(),
            Some(r) => {
                let (id, job_id, ephemeral) = (r.id, r.job_id, r.ephemeral);
                if let Some(j) = job_id.and_then(|j| st.jobs.get_mut(&j)) {
                    j.status = "completed".into();
                    j.conclusion = Some(conclusion);
                    j.completed_at = Some(rfc3339(now_epoch()));
                }
                if ephemeral {
                    // GitHub removes an ephemeral runner's registration after its job.
                    st.runners.remove(&id);
                } else if let Some(r) = st.runners.get_mut(&id) {
                    r.busy = false;
                    r.job_id = None;
                }
                HttpResponse::text(200, "ok\n")
            }
        }
    };
    drop(st);
    shared.changed.notify_all();
    answer
}
