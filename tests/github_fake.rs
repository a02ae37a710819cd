//! The fake GitHub itself: its answers match the official schemas, pagination and errors
//! behave like GitHub's, faults fire as configured, and the busybox runner script drives the
//! listener protocol end to end.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{
    AdvertisedChecksum, DownloadFault, Endpoint, FakeGitHub, Fault, FAKE_RUNNER_SCRIPT,
};
use serde_json::{json, Value};
use std::time::Duration;

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/github-api/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn call(method: &str, url: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let mut req = ureq::request(method, url)
        .set("Accept", "application/vnd.github+json")
        .set("X-GitHub-Api-Version", "2022-11-28")
        .set("User-Agent", "fake-test")
        .timeout(Duration::from_secs(10));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let result = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    let resp = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|n| {
            let v = resp.header(&n).unwrap_or_default().to_string();
            (n, v)
        })
        .collect();
    Answer {
        status,
        headers,
        body: resp.into_string().unwrap_or_default(),
    }
}

// ---- a small OpenAPI-subset validator (type, required, properties, items, $ref, nullable,
// enum, oneOf, minItems/maxItems) ----

fn validate(value: &Value, schema: &Value, schemas: &Value, at: &str, errors: &mut Vec<String>) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/schemas/");
        let target = &schemas[name];
        assert!(!target.is_null(), "unknown $ref {r}");
        return validate(value, target, schemas, at, errors);
    }
    if value.is_null() {
        if schema.get("nullable") != Some(&json!(true)) && schema.get("type").is_some() {
            errors.push(format!("{at}: null but not nullable"));
        }
        return;
    }
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        let ok = one_of.iter().any(|s| {
            let mut e = Vec::new();
            validate(value, s, schemas, at, &mut e);
            e.is_empty()
        });
        if !ok {
            errors.push(format!("{at}: matches no oneOf"));
        }
        return;
    }
    if let Some(t) = schema.get("type").and_then(Value::as_str) {
        let ok = match t {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "boolean" => value.is_boolean(),
            other => panic!("schema type {other} not handled"),
        };
        if !ok {
            errors.push(format!("{at}: expected {t}, got {value}"));
            return;
        }
    }
    if let Some(en) = schema.get("enum").and_then(Value::as_array) {
        if !en.contains(value) {
            errors.push(format!("{at}: {value} not in {en:?}"));
        }
    }
    if let Some(obj) = value.as_object() {
        for req in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let key = req.as_str().unwrap();
            if !obj.contains_key(key) {
                errors.push(format!("{at}: missing required {key}"));
            }
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (k, v) in obj {
                if let Some(s) = props.get(k) {
                    validate(v, s, schemas, &format!("{at}.{k}"), errors);
                }
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                errors.push(format!("{at}: fewer than {min} items"));
            }
        }
        if let Some(s) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item, s, schemas, &format!("{at}[{i}]"), errors);
            }
        }
    }
}

/// The response schema endpoints.json gives for `operation_id` and `status`.
fn response_schema(endpoints: &Value, operation_id: &str, status: u16) -> Value {
    let op = endpoints["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["operationId"] == operation_id)
        .unwrap_or_else(|| panic!("no operation {operation_id}"));
    let resp = &op["responses"][status.to_string()];
    assert!(
        !resp.is_null(),
        "{operation_id} documents no {status} response"
    );
    resp["schema"].clone()
}

fn assert_valid(answer: &Answer, operation_id: &str, expected_status: u16) {
    assert_eq!(
        answer.status, expected_status,
        "{operation_id}: {}",
        answer.body
    );
    let endpoints = fixture("endpoints.json");
    let schemas = fixture("schemas.json")["schemas"].clone();
    let schema = response_schema(&endpoints, operation_id, expected_status);
    if schema.is_null() {
        assert!(
            answer.body.is_empty(),
            "{operation_id}: body on {expected_status}"
        );
        return;
    }
    let mut errors = Vec::new();
    validate(&answer.json(), &schema, &schemas, operation_id, &mut errors);
    assert!(errors.is_empty(), "{errors:#?}\n{}", answer.body);
}

#[test]
fn the_validator_rejects_what_the_schemas_forbid() {
    let schemas = fixture("schemas.json")["schemas"].clone();
    let runner = json!({"$ref": "#/schemas/runner"});
    let examples = fixture("examples.json");
    let mut errors = Vec::new();
    validate(&examples["runner"], &runner, &schemas, "ok", &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for bad in [
        json!({"id": 1, "name": "x", "os": "linux", "status": "online", "busy": true}),
        json!({"id": "1", "name": "x", "os": "linux", "status": "online", "busy": true, "labels": []}),
        json!({"id": 1, "name": null, "os": "linux", "status": "online", "busy": true, "labels": []}),
    ] {
        let mut errors = Vec::new();
        validate(&bad, &runner, &schemas, "bad", &mut errors);
        assert!(!errors.is_empty(), "accepted {bad}");
    }
}

#[test]
fn every_answer_matches_the_official_schemas_for_repo_and_org_paths() {
    let gh = FakeGitHub::start();
    let t = gh.token();
    let t = Some(t.as_str());
    let group = gh.add_runner_group("octo-org", "big-ones");
    for (scope, kind, org) in [
        ("/repos/octo/hello", "repo", false),
        ("/orgs/octo-org", "org", true),
    ] {
        let base = format!("{}{scope}/actions", gh.api_base());
        let path = scope
            .trim_start_matches("/repos/")
            .trim_start_matches("/orgs/");
        gh.add_runner(path, "existing", &["self-hosted", "x64"]);
        let group_id = if org { group } else { 1 };
        let jit = call(
            "POST",
            &format!("{base}/runners/generate-jitconfig"),
            t,
            Some(json!({"name": "new-one", "runner_group_id": group_id, "labels": ["a", "b"]})),
        );
        assert_valid(
            &jit,
            &format!("actions/generate-runner-jitconfig-for-{kind}"),
            201,
        );
        assert_eq!(jit.json()["runner"]["labels"].as_array().unwrap().len(), 2);
        let dup = call(
            "POST",
            &format!("{base}/runners/generate-jitconfig"),
            t,
            Some(json!({"name": "new-one", "runner_group_id": group_id, "labels": ["a"]})),
        );
        assert_valid(
            &dup,
            &format!("actions/generate-runner-jitconfig-for-{kind}"),
            409,
        );
        let invalid = call(
            "POST",
            &format!("{base}/runners/generate-jitconfig"),
            t,
            Some(json!({"name": "other", "runner_group_id": group_id, "labels": []})),
        );
        assert_valid(
            &invalid,
            &format!("actions/generate-runner-jitconfig-for-{kind}"),
            422,
        );
        let no_group = call(
            "POST",
            &format!("{base}/runners/generate-jitconfig"),
            t,
            Some(json!({"name": "other", "runner_group_id": 999, "labels": ["a"]})),
        );
        assert_valid(
            &no_group,
            &format!("actions/generate-runner-jitconfig-for-{kind}"),
            404,
        );

        let list = call("GET", &format!("{base}/runners?per_page=100"), t, None);
        assert_valid(
            &list,
            &format!("actions/list-self-hosted-runners-for-{kind}"),
            200,
        );
        assert_eq!(list.json()["total_count"], 2);
        let id = list.json()["runners"][0]["id"].as_u64().unwrap();
        let one = call("GET", &format!("{base}/runners/{id}"), t, None);
        assert_valid(
            &one,
            &format!("actions/get-self-hosted-runner-for-{kind}"),
            200,
        );
        let labels = call("GET", &format!("{base}/runners/{id}/labels"), t, None);
        assert_valid(
            &labels,
            &format!("actions/list-labels-for-self-hosted-runner-for-{kind}"),
            200,
        );
        let missing_labels = call("GET", &format!("{base}/runners/99999/labels"), t, None);
        assert_valid(
            &missing_labels,
            &format!("actions/list-labels-for-self-hosted-runner-for-{kind}"),
            404,
        );
        for (endpoint, op) in [
            ("registration-token", "create-registration-token-for"),
            ("remove-token", "create-remove-token-for"),
        ] {
            let tok = call("POST", &format!("{base}/runners/{endpoint}"), t, None);
            assert_valid(&tok, &format!("actions/{op}-{kind}"), 201);
        }
        let downloads = call("GET", &format!("{base}/runners/downloads"), t, None);
        assert_valid(
            &downloads,
            &format!("actions/list-runner-applications-for-{kind}"),
            200,
        );

        assert!(gh.set_runner_busy("existing", true));
        let busy = call("DELETE", &format!("{base}/runners/{id}"), t, None);
        assert_valid(
            &busy,
            &format!("actions/delete-self-hosted-runner-from-{kind}"),
            422,
        );
        assert!(gh.set_runner_busy("existing", false));
        let deleted = call("DELETE", &format!("{base}/runners/{id}"), t, None);
        assert_valid(
            &deleted,
            &format!("actions/delete-self-hosted-runner-from-{kind}"),
            204,
        );
        assert_eq!(
            call("DELETE", &format!("{base}/runners/{id}"), t, None).status,
            404
        );
        assert_eq!(
            call("GET", &format!("{base}/runners/{id}"), t, None).status,
            404
        );
    }

    let groups = call(
        "GET",
        &format!("{}/orgs/octo-org/actions/runner-groups", gh.api_base()),
        t,
        None,
    );
    assert_valid(
        &groups,
        "actions/list-self-hosted-runner-groups-for-org",
        200,
    );
    let names: Vec<String> = groups.json()["runner_groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["Default", "big-ones"]);
    let group_one = call(
        "GET",
        &format!(
            "{}/orgs/octo-org/actions/runner-groups/{group}",
            gh.api_base()
        ),
        t,
        None,
    );
    assert_valid(
        &group_one,
        "actions/get-self-hosted-runner-group-for-org",
        200,
    );

    let job_id = gh.add_job("octo/hello", &["self-hosted", "x64"]);
    let job = call(
        "GET",
        &format!("{}/repos/octo/hello/actions/jobs/{job_id}", gh.api_base()),
        t,
        None,
    );
    assert_valid(&job, "actions/get-job-for-workflow-run", 200);
    let run_id = gh.job(job_id).unwrap().run_id;
    let run_jobs = call(
        "GET",
        &format!(
            "{}/repos/octo/hello/actions/runs/{run_id}/jobs",
            gh.api_base()
        ),
        t,
        None,
    );
    assert_valid(&run_jobs, "actions/list-jobs-for-workflow-run", 200);
    assert_eq!(run_jobs.json()["jobs"][0]["id"], job_id);
    assert_eq!(
        call(
            "GET",
            &format!("{}/repos/other/repo/actions/jobs/{job_id}", gh.api_base()),
            t,
            None
        )
        .status,
        404,
        "a job is only visible in its own repo"
    );
}

#[test]
fn pagination_follows_github_link_conventions() {
    let gh = FakeGitHub::start();
    for i in 0..250 {
        gh.add_runner("o/r", &format!("runner-{i:03}"), &["x"]);
    }
    let t = gh.token();
    let first = call(
        "GET",
        &format!("{}/repos/o/r/actions/runners?per_page=100", gh.api_base()),
        Some(&t),
        None,
    );
    assert_eq!(first.json()["total_count"], 250);
    assert_eq!(first.json()["runners"].as_array().unwrap().len(), 100);
    let link = first.header("link").unwrap().to_string();
    let next = format!(
        "{}/api/v3/repos/o/r/actions/runners?per_page=100&page=2",
        gh.url()
    );
    let last = format!(
        "{}/api/v3/repos/o/r/actions/runners?per_page=100&page=3",
        gh.url()
    );
    assert_eq!(
        link,
        format!("<{next}>; rel=\"next\", <{last}>; rel=\"last\"")
    );
    let third = call("GET", &last, Some(&t), None);
    assert_eq!(third.json()["runners"].as_array().unwrap().len(), 50);
    let link3 = third.header("link").unwrap();
    assert!(!link3.contains("rel=\"next\""), "{link3}");
    assert!(
        link3.contains("rel=\"prev\"") && link3.contains("rel=\"first\""),
        "{link3}"
    );
    // Default page size is 30; a single page has no Link.
    let default = call(
        "GET",
        &format!("{}/repos/o/r/actions/runners", gh.api_base()),
        Some(&t),
        None,
    );
    assert_eq!(default.json()["runners"].as_array().unwrap().len(), 30);
    let small = FakeGitHub::start();
    let single = call(
        "GET",
        &format!("{}/repos/o/r/actions/runners", small.api_base()),
        Some(&small.token()),
        None,
    );
    assert_eq!(single.status, 200);
    assert!(single.header("link").is_none());
}

#[test]
fn tokens_user_agent_and_missing_paths_are_checked() {
    let gh = FakeGitHub::start();
    let url = format!("{}/repos/o/r/actions/runners", gh.api_base());
    assert_eq!(call("GET", &url, None, None).status, 401);
    let wrong = call("GET", &url, Some("ghp_wrong"), None);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.json()["message"], "Bad credentials");
    assert_eq!(call("GET", &url, Some(&gh.token()), None).status, 200);

    gh.add_token("ghp_second");
    assert_eq!(call("GET", &url, Some("ghp_second"), None).status, 200);
    gh.revoke_token(&gh.token());
    assert_eq!(call("GET", &url, Some(&gh.token()), None).status, 401);
    assert_eq!(call("GET", &url, Some("ghp_second"), None).status, 200);

    gh.set_path_missing("o/r");
    assert_eq!(call("GET", &url, Some("ghp_second"), None).status, 404);
    assert_eq!(
        call(
            "GET",
            &format!("{}/repos/o/other/actions/runners", gh.api_base()),
            Some("ghp_second"),
            None
        )
        .status,
        200
    );
    // The API lives under /api/v3 only, as on GitHub Enterprise Server.
    assert_eq!(
        call(
            "GET",
            &format!("{}/repos/o/other/actions/runners", gh.url()),
            Some("ghp_second"),
            None
        )
        .status,
        404
    );

    let no_agent = ureq::get(&url)
        .set("Authorization", "Bearer ghp_second")
        .set("User-Agent", "")
        .call();
    assert!(matches!(no_agent, Err(ureq::Error::Status(403, _))));

    let log = gh.requests();
    assert_eq!(log[0].endpoint, Endpoint::ListRunners);
    assert_eq!(log[0].path, "/api/v3/repos/o/r/actions/runners");
    assert_eq!(
        log[2].header("authorization"),
        Some(format!("Bearer {}", gh.token()).as_str())
    );
    assert_eq!(log[2].header("x-github-api-version"), Some("2022-11-28"));
}

#[test]
fn a_spent_primary_budget_answers_403_until_a_new_window() {
    let gh = FakeGitHub::start();
    let t = gh.token();
    let list = format!("{}/repos/o/r/actions/runners", gh.api_base());
    let reset = fake_github::now_epoch() + 600;
    gh.set_rate_budget(1, reset);
    let last = call("GET", &list, Some(&t), None);
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(last.header("x-ratelimit-used"), Some("5000"));
    for _ in 0..2 {
        let refused = call("GET", &list, Some(&t), None);
        assert_eq!(refused.status, 403);
        assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(
            refused.header("x-ratelimit-reset"),
            Some(reset.to_string().as_str())
        );
        assert!(refused.json()["message"]
            .as_str()
            .unwrap()
            .contains("rate limit exceeded"));
    }
    // A reset in the past opens a new window of 5000.
    gh.set_rate_budget(0, fake_github::now_epoch() - 1);
    let fresh = call("GET", &list, Some(&t), None);
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("x-ratelimit-remaining"), Some("4999"));
}

#[test]
fn faults_fire_as_many_times_as_asked_and_on_the_endpoint_asked() {
    let gh = FakeGitHub::start();
    let t = gh.token();
    let list = format!("{}/repos/o/r/actions/runners", gh.api_base());
    let token_url = format!(
        "{}/repos/o/r/actions/runners/registration-token",
        gh.api_base()
    );

    gh.fail_next(2, 502);
    assert_eq!(call("GET", &list, Some(&t), None).status, 502);
    assert_eq!(call("GET", &list, Some(&t), None).status, 502);
    assert_eq!(call("GET", &list, Some(&t), None).status, 200);

    gh.inject_on(Endpoint::RegistrationToken, Fault::ServerError(503), 1);
    assert_eq!(call("GET", &list, Some(&t), None).status, 200);
    assert_eq!(call("POST", &token_url, Some(&t), None).status, 503);
    assert_eq!(call("POST", &token_url, Some(&t), None).status, 201);

    gh.exhaust_primary(1_900_000_000);
    for _ in 0..3 {
        let a = call("GET", &list, Some(&t), None);
        assert_eq!(a.status, 403);
        assert_eq!(a.header("x-ratelimit-remaining"), Some("0"));
        assert_eq!(a.header("x-ratelimit-reset"), Some("1900000000"));
    }
    gh.clear_faults();
    let ok = call("GET", &list, Some(&t), None);
    assert_eq!(ok.status, 200);
    assert_ne!(ok.header("x-ratelimit-remaining"), Some("0"));

    gh.secondary_limit_next(1, Some(7));
    let a = call("GET", &list, Some(&t), None);
    assert_eq!(a.status, 429);
    assert_eq!(a.header("retry-after"), Some("7"));
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-used",
        "x-ratelimit-reset",
        "x-ratelimit-resource",
    ] {
        assert!(a.header(name).is_some(), "secondary limit without {name}");
    }
    assert!(a.json()["message"]
        .as_str()
        .unwrap()
        .contains("secondary rate limit"));

    gh.inject(
        Fault::Forbidden {
            accepted_permissions: Some("administration=write".into()),
        },
        1,
    );
    let a = call("GET", &list, Some(&t), None);
    assert_eq!(a.status, 403);
    assert_eq!(
        a.header("x-accepted-github-permissions"),
        Some("administration=write")
    );

    gh.slow_next(1, Duration::from_millis(1500));
    let timed_out = ureq::get(&list)
        .set("Authorization", &format!("Bearer {t}"))
        .set("User-Agent", "fake-test")
        .timeout(Duration::from_millis(200))
        .call();
    assert!(matches!(timed_out, Err(ureq::Error::Transport(_))));
    assert_eq!(gh.count(Endpoint::ListRunners), 11);
}

#[test]
fn tarball_downloads_serve_bytes_checksums_and_faults() {
    let gh = FakeGitHub::start();
    let t = gh.token();
    let sha = gh.set_runner_tarball(b"0123456789abcdef".to_vec());
    let list = call(
        "GET",
        &format!("{}/repos/o/r/actions/runners/downloads", gh.api_base()),
        Some(&t),
        None,
    )
    .json();
    let linux_x64 = list
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["os"] == "linux" && a["architecture"] == "x64")
        .unwrap()
        .clone();
    assert_eq!(linux_x64["sha256_checksum"], sha);
    assert_eq!(linux_x64["download_url"], gh.download_url("x64"));
    let url = gh.download_url("x64");
    assert_eq!(call("GET", &url, None, None).body, "0123456789abcdef");

    gh.set_advertised_checksum(AdvertisedChecksum::Missing);
    let list = call(
        "GET",
        &format!("{}/orgs/o/actions/runners/downloads", gh.api_base()),
        Some(&t),
        None,
    )
    .json();
    assert!(list[1].get("sha256_checksum").is_none());

    gh.inject_download(DownloadFault::Status(500), 1);
    assert_eq!(call("GET", &url, None, None).status, 500);
    gh.inject_download(DownloadFault::TruncateAfter(4), 1);
    let cut = ureq::get(&url).call().unwrap().into_string();
    assert!(cut.is_err(), "a truncated body must fail to read");
    gh.inject_download(DownloadFault::BrokenChunkedAfter(4), 1);
    let broken = ureq::get(&url).call().unwrap().into_string();
    assert!(broken.is_err(), "a broken chunked body must fail to read");
    gh.inject_download(DownloadFault::Chunked, 1);
    let chunked = ureq::get(&url).call().unwrap();
    assert!(chunked.header("content-length").is_none());
    assert_eq!(chunked.into_string().unwrap(), "0123456789abcdef");

    gh.set_runner_version("2.400.0");
    assert!(gh
        .download_url("arm64")
        .ends_with("actions-runner-linux-arm64-2.400.0.tar.gz"));
    assert_eq!(
        call("GET", &url, None, None).status,
        404,
        "old version is gone"
    );
    assert_eq!(gh.count(Endpoint::DownloadTarball), 6);
}

/// GET `url` as text; the status code when it is not 2xx (0 for a transport error).
fn get_text(url: &str) -> Result<String, u16> {
    match ureq::get(url).call() {
        Ok(r) => Ok(r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, _)) => Err(code),
        Err(_) => Err(0),
    }
}

fn listener(gh: &FakeGitHub, op: &str, key: &str, extra: &str) -> (u16, String) {
    let a = call(
        "GET",
        &format!("{}/_fake/listener/{op}?key={key}{extra}", gh.url()),
        None,
        None,
    );
    (a.status, a.body)
}

fn jit_key(gh: &FakeGitHub, org: bool, name: &str) -> (String, String) {
    let scope = if org { "orgs/o" } else { "repos/o/r" };
    let jit = call(
        "POST",
        &format!(
            "{}/{scope}/actions/runners/generate-jitconfig",
            gh.api_base()
        ),
        Some(&gh.token()),
        Some(json!({"name": name, "runner_group_id": 1, "labels": ["l"]})),
    )
    .json();
    let encoded = jit["encoded_jit_config"].as_str().unwrap().to_string();
    let out = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(encoded.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    let decoded = String::from_utf8(out.stdout).unwrap();
    let (base, key) = decoded.split_once(' ').unwrap();
    assert_eq!(base, gh.url());
    (encoded, key.to_string())
}

#[test]
fn listener_protocol_drives_a_registration_through_a_job() {
    let gh = FakeGitHub::start();
    let (_, key) = jit_key(&gh, false, "r1");
    assert!(!gh.runner("r1").unwrap().online);
    assert_eq!(listener(&gh, "online", &key, ""), (200, "ok\n".into()));
    assert!(gh.runner("r1").unwrap().online);
    assert_eq!(
        listener(&gh, "wait-job", &key, "&timeout=0"),
        (200, "none\n".into())
    );

    let job = gh.assign_held_job("r1").unwrap();
    assert_eq!(gh.job(job).unwrap().status, "queued");
    let queued = gh.job(job).unwrap();
    assert_eq!(
        listener(&gh, "wait-job", &key, "&timeout=5"),
        (
            200,
            format!("job {job} {} {}\n", queued.run_id, queued.repo)
        )
    );
    let r = gh.runner("r1").unwrap();
    assert!(r.busy);
    let j = gh.job(job).unwrap();
    assert_eq!(
        (j.status.as_str(), j.runner_name.as_deref()),
        ("in_progress", Some("r1"))
    );
    assert_eq!(
        listener(&gh, "done", &key, "&timeout=0"),
        (200, "wait\n".into())
    );
    assert!(gh.release_job(job));
    assert_eq!(
        listener(&gh, "done", &key, "&conclusion=failure"),
        (200, "ok\n".into())
    );
    assert!(
        gh.runner("r1").is_none(),
        "ephemeral registration removed after its job"
    );
    let j = gh.job(job).unwrap();
    assert_eq!(
        (j.status.as_str(), j.conclusion.as_deref()),
        ("completed", Some("failure"))
    );
    assert_eq!(listener(&gh, "wait-job", &key, "&timeout=0").0, 404);
    assert_eq!(listener(&gh, "online", "nope", "").0, 404);
}

#[test]
fn a_long_poll_wakes_when_a_job_is_assigned_or_the_registration_is_deleted() {
    let gh = FakeGitHub::start();
    let (_, key) = jit_key(&gh, true, "r2");
    let url = format!("{}/_fake/listener/wait-job?key={key}&timeout=30", gh.url());
    let poll = std::thread::spawn(move || get_text(&url));
    // Assign once the poll is in (the request log shows it): the answer comes at once.
    assert!(gh.wait_until(Duration::from_secs(5), |s| s
        .count(Endpoint::ListenerWaitJob)
        == 1));
    let job = gh.assign_job("r2").unwrap();
    let answer = poll.join().unwrap().unwrap();

    let run_id = gh.job(job).unwrap().run_id;
    assert_eq!(answer, format!("job {job} {run_id} o/fake-repo\n"));

    let (_, key3) = jit_key(&gh, true, "r3");
    let url = format!("{}/_fake/listener/wait-job?key={key3}&timeout=30", gh.url());
    let poll = std::thread::spawn(move || get_text(&url));
    assert!(gh.wait_until(Duration::from_secs(5), |s| s
        .count(Endpoint::ListenerWaitJob)
        == 2));
    let id = gh.runner("r3").unwrap().id;
    let del = call(
        "DELETE",
        &format!("{}/orgs/o/actions/runners/{id}", gh.api_base()),
        Some(&gh.token()),
        None,
    );
    assert_eq!(del.status, 204);
    assert_eq!(poll.join().unwrap(), Err(404));
}

/// The runner script runs under busybox alone: `sh`, `base64`, `wget` are busybox applets.
#[test]
fn the_fake_runner_script_runs_a_job_with_busybox_only() {
    let Ok(busybox) = which::which("busybox") else {
        eprintln!("skipped: busybox is not installed");
        return;
    };
    let gh = FakeGitHub::start();
    let (encoded, _) = jit_key(&gh, false, "bb-runner");
    let dir = tempfile::tempdir().unwrap();
    for applet in ["sh", "base64", "wget", "sleep"] {
        std::os::unix::fs::symlink(&busybox, dir.path().join(applet)).unwrap();
    }
    let script = dir.path().join("run.sh");
    std::fs::write(&script, FAKE_RUNNER_SCRIPT).unwrap();
    let child = std::process::Command::new(&busybox)
        .arg("sh")
        .arg(&script)
        .env_clear()
        .env("PATH", dir.path())
        .env("ACTIONS_RUNNER_INPUT_JITCONFIG", &encoded)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = child;
    if !gh.wait_until(Duration::from_secs(20), |s| {
        s.runner("bb-runner").is_some_and(|r| r.online)
    }) {
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!(
            "the script never went online: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let job = gh.assign_job("bb-runner").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("job {job} done")), "{stdout}");
    assert_eq!(gh.job(job).unwrap().status, "completed");
    assert!(gh.runner("bb-runner").is_none());
}

#[test]
fn the_default_tarball_holds_an_executable_run_sh() {
    let gh = FakeGitHub::start();
    let bytes = gh.runner_tarball();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some("./run.sh") {
            assert_eq!(entry.header().mode().unwrap() & 0o111, 0o111);
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            assert_eq!(s, FAKE_RUNNER_SCRIPT);
            found = true;
        }
    }
    assert!(found);
}

#[test]
fn dropping_the_fake_stops_the_server_and_wakes_long_polls() {
    let gh = FakeGitHub::start();
    let (_, key) = jit_key(&gh, false, "r");
    let url = format!("{}/_fake/listener/wait-job?key={key}&timeout=60", gh.url());
    let health = format!("{}/_fake/health", gh.url());
    assert_eq!(call("GET", &health, None, None).body, "ok\n");
    let poll = std::thread::spawn(move || {
        let started = std::time::Instant::now();
        let r = get_text(&url);
        (r, started.elapsed())
    });
    assert!(gh.wait_until(Duration::from_secs(5), |s| s
        .count(Endpoint::ListenerWaitJob)
        == 1));
    drop(gh);
    let (answer, took) = poll.join().unwrap();
    assert_eq!(answer.unwrap(), "none\n");
    assert!(
        took < Duration::from_secs(30),
        "the poll was not woken: {took:?}"
    );
    assert!(ureq::get(&health)
        .timeout(Duration::from_secs(2))
        .call()
        .is_err());
}
