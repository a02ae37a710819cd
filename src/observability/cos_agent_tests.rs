use super::*;
use crate::host::metrics::{
    render_line, CodeInformation, MetricEvent, ReactiveJobPickedUp, Reconciliation,
    RunnerCreationPhases, RunnerInstalled, RunnerStart, RunnerStop, StopStatus,
};
use crate::observability::exposition::render;
use crate::observability::log_stats::LogMetrics;
use crate::observability::testing::{parse_openmetrics, Sample};
use crate::paths::HostPaths;
use std::collections::BTreeSet;

const SCHEMA: &str = include_str!("cos_agent_schema.json");
/// Labels the grafana agent adds to every scraped series and log line.
const AGENT_LABELS: [&str; 6] = [
    "juju_model",
    "juju_model_uuid",
    "juju_application",
    "juju_unit",
    "juju_charm",
    "filename",
];

fn topology() -> Topology {
    Topology {
        model: "ci".into(),
        model_uuid: "0f3e".into(),
        application: "github-runner".into(),
        unit: "github-runner/2".into(),
    }
}

fn type_ok(value: &Value, kind: &str) -> bool {
    kind.split('|').any(|k| match k {
        "object" => value.is_object(),
        "bool" => value.is_boolean(),
        "null" => value.is_null(),
        "array<string>" => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_string)),
        "array<object>" => value
            .as_array()
            .is_some_and(|a| a.iter().all(Value::is_object)),
        other => panic!("schema type {other}"),
    })
}

fn decode_with_python_lzma(encoded: &str) -> Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import base64, lzma, sys; sys.stdout.write(lzma.decompress(base64.b64decode(sys.argv[1])).decode())",
            encoded,
        ])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dashboard JSON")
}

#[test]
fn the_databag_follows_the_library_schema() {
    let schema: Value = serde_json::from_str(SCHEMA).unwrap();
    let bag = unit_databag(&topology()).unwrap();
    assert_eq!(
        bag.keys().collect::<Vec<_>>(),
        vec![schema["databag_key"].as_str().unwrap()]
    );
    let config: Value = serde_json::from_str(&bag[DATABAG_KEY]).unwrap();
    let config = config.as_object().unwrap();
    for (key, kind) in schema["required"].as_object().unwrap() {
        let value = config.get(key).unwrap_or_else(|| panic!("{key} missing"));
        assert!(type_ok(value, kind.as_str().unwrap()), "{key}: {value}");
    }
    for (key, kind) in schema["optional"].as_object().unwrap() {
        if let Some(value) = config.get(key) {
            assert!(type_ok(value, kind.as_str().unwrap()), "{key}: {value}");
        }
    }
    let known: BTreeSet<&String> = schema["required"]
        .as_object()
        .unwrap()
        .keys()
        .chain(schema["optional"].as_object().unwrap().keys())
        .collect();
    assert!(config.keys().all(|k| known.contains(k)), "{config:?}");

    for rules in [&config["metrics_alert_rules"], &config["log_alert_rules"]] {
        let groups = rules["groups"].as_array().unwrap();
        assert!(!groups.is_empty());
        for group in groups {
            for key in schema["rule_group_required"].as_array().unwrap() {
                assert!(group.get(key.as_str().unwrap()).is_some(), "{group}");
            }
            let name = group["name"].as_str().unwrap();
            assert!(name.starts_with("ci_0f3e_github_runner_"), "{name}");
            assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            for rule in group["rules"].as_array().unwrap() {
                for key in schema["alert_rule_required"].as_array().unwrap() {
                    assert!(rule.get(key.as_str().unwrap()).is_some(), "{rule}");
                }
                let expr = rule["expr"].as_str().unwrap();
                assert!(!expr.contains("%%"), "{expr}");
                assert!(
                    expr.contains(r#"juju_application="github-runner""#),
                    "{expr}"
                );
                for label in schema["topology_labels"].as_array().unwrap() {
                    assert!(
                        rule["labels"].get(label.as_str().unwrap()).is_some(),
                        "{rule}"
                    );
                }
            }
        }
    }
    let jobs = config["metrics_scrape_jobs"].as_array().unwrap();
    for job in jobs {
        for key in schema["scrape_job_required"].as_array().unwrap() {
            assert!(job.get(key.as_str().unwrap()).is_some(), "{job}");
        }
    }
    assert_eq!(
        jobs[0]["job_name"],
        "github-runner_0_github_runner_exporter"
    );
    assert_eq!(jobs[0]["static_configs"][0]["targets"][0], "127.0.0.1:9472");
    let dashboards = config["dashboards"].as_array().unwrap();
    assert_eq!(dashboards.len(), DASHBOARDS.len());
    let decoded = decode_with_python_lzma(dashboards[0].as_str().unwrap());
    assert_eq!(decoded["uid"], "github-runner-fleet");
}

#[test]
fn publish_writes_every_cos_agent_relation_and_nothing_without_one() {
    use crate::juju::memory::{MemoryHookTools, MemoryRelation, MemoryState};
    let tools = MemoryHookTools::new(MemoryState::default());
    let hook = crate::charm::testing::hook_context();
    assert_eq!(publish(&tools, &hook).unwrap(), 0);
    for id in ["cos-agent:3", "cos-agent:4", "mongodb:5"] {
        tools
            .lock()
            .relations
            .insert(id.to_string(), MemoryRelation::default());
    }
    assert_eq!(publish(&tools, &hook).unwrap(), 2);
    let state = tools.lock();
    for id in ["cos-agent:3", "cos-agent:4"] {
        let bag = &state.relations[id].data["<local-unit>"];
        assert!(bag[DATABAG_KEY].contains("metrics_scrape_jobs"), "{id}");
    }
    assert!(state.relations["mongodb:5"].data.is_empty());
}

/// `(label, op, value)` of every matcher inside `{...}`, and every label of `by/on/ignoring (...)`.
fn label_uses(expr: &str) -> (Vec<(String, String, String)>, Vec<String>) {
    let mut matchers = Vec::new();
    let mut grouping = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .expect("closed selector");
        for part in rest[open + 1..close].split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let op = ["=~", "!~", "!=", "="]
                .into_iter()
                .find(|op| part.contains(op))
                .unwrap_or_else(|| panic!("matcher {part:?} in {expr}"));
            let (label, value) = part.split_once(op).unwrap();
            matchers.push((
                label.trim().to_string(),
                op.to_string(),
                value.trim().trim_matches('"').to_string(),
            ));
        }
        rest = &rest[close + 1..];
    }
    for keyword in ["by", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(pos) = rest.find(&format!("{keyword} (")) {
            let after = &rest[pos + keyword.len() + 2..];
            let close = after.find(')').unwrap();
            grouping.extend(after[..close].split(',').map(|l| l.trim().to_string()));
            rest = &after[close..];
        }
    }
    (matchers, grouping)
}

/// What a PromQL expression reads, from the AST of the `promql-parser` crate.
#[derive(Debug, Default)]
struct PromUses {
    metrics: Vec<String>,
    /// `(label, positive match, value)`.
    matchers: Vec<(String, bool, String)>,
    /// Labels of `by`/`without`/`on`/`ignoring`.
    grouping: Vec<String>,
}

fn walk(expr: &promql_parser::parser::Expr, uses: &mut PromUses) {
    use promql_parser::label::MatchOp;
    use promql_parser::parser::{Expr, VectorSelector};
    let selector = |v: &VectorSelector, uses: &mut PromUses| {
        uses.metrics
            .push(v.name.clone().expect("every selector names its metric"));
        for m in &v.matchers.matchers {
            let positive = matches!(m.op, MatchOp::Equal | MatchOp::Re(_));
            uses.matchers
                .push((m.name.clone(), positive, m.value.clone()));
        }
    };
    match expr {
        Expr::Aggregate(a) => {
            walk(&a.expr, uses);
            if let Some(p) = &a.param {
                walk(p, uses);
            }
            if let Some(m) = &a.modifier {
                uses.grouping.extend(m.labels().labels.iter().cloned());
            }
        }
        Expr::Unary(u) => walk(&u.expr, uses),
        Expr::Binary(b) => {
            walk(&b.lhs, uses);
            walk(&b.rhs, uses);
            if let Some(m) = b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                uses.grouping.extend(m.labels().labels.iter().cloned());
            }
        }
        Expr::Paren(p) => walk(&p.expr, uses),
        Expr::Subquery(s) => walk(&s.expr, uses),
        Expr::VectorSelector(v) => selector(v, uses),
        Expr::MatrixSelector(m) => selector(&m.vs, uses),
        Expr::Call(c) => c.args.args.iter().for_each(|a| walk(a, uses)),
        _ => {}
    }
}

/// Parse `expr` (Grafana's `$__rate_interval` read as 5m) and list what it reads.
fn prom_uses(expr: &str) -> PromUses {
    let promql = expr.replace("$__rate_interval", "5m");
    let ast = promql_parser::parser::parse(&promql)
        .unwrap_or_else(|e| panic!("not valid PromQL: {e}\n{expr}"));
    let mut uses = PromUses::default();
    walk(&ast, &mut uses);
    uses
}

fn exposition_samples() -> Vec<Sample> {
    let log = LogMetrics::default();
    log.reconcile_duration.observe(1.0);
    let state = crate::observability::exposition::tests::sample_state();
    let scale_set = crate::observability::exposition::tests::sample_scale_set_view();
    parse_openmetrics(&render(Some(&state), &log, Some(&scale_set)))
}

/// The `expr` of every rule of `files`, topology applied.
fn rule_exprs(files: &[(&str, &str)]) -> Vec<String> {
    let rules = alert_rules(files, &topology()).unwrap();
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .map(|r| r["expr"].as_str().unwrap().to_string())
        .collect()
}

/// The query of every dashboard panel target on a `datasource` (prometheus, loki).
fn dashboard_exprs(datasource: &str) -> Vec<String> {
    let mut exprs = Vec::new();
    for (_, text) in DASHBOARDS {
        let dash: Value = serde_json::from_str(text).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            if panel["datasource"]["type"] == datasource {
                for t in panel["targets"].as_array().unwrap() {
                    exprs.push(t["expr"].as_str().unwrap().to_string());
                }
            }
        }
    }
    exprs
}

fn prometheus_exprs() -> Vec<String> {
    let mut exprs = rule_exprs(&PROMETHEUS_RULES);
    exprs.extend(dashboard_exprs("prometheus"));
    for (_, text) in DASHBOARDS {
        let dash: Value = serde_json::from_str(text).unwrap();
        for var in dash["templating"]["list"].as_array().unwrap() {
            if let Some(q) = var["query"]
                .as_str()
                .filter(|q| q.starts_with("label_values"))
            {
                exprs.push(q.to_string());
            }
        }
    }
    exprs
}

#[test]
fn every_promql_expression_uses_only_metrics_and_labels_the_exporter_emits() {
    let samples = exposition_samples();
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    let mut values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in &samples {
        for (k, v) in &s.labels {
            values.entry(k.as_str()).or_default().insert(v.as_str());
        }
    }
    let exprs = prometheus_exprs();
    assert!(exprs.len() >= 20, "{exprs:?}");
    for expr in &exprs {
        let uses = if expr.starts_with("label_values(") {
            // Grafana's variable query, not PromQL: its metric and label by hand.
            let inner = expr["label_values(".len()..expr.len() - 1].to_string();
            let (metric, label) = inner.split_once(',').unwrap();
            PromUses {
                metrics: vec![metric.trim().to_string()],
                grouping: vec![label.trim().to_string()],
                ..PromUses::default()
            }
        } else {
            prom_uses(expr)
        };
        assert!(!uses.metrics.is_empty(), "{expr}");
        for m in uses.metrics {
            assert!(names.contains(m.as_str()), "{m} is not emitted (in {expr})");
        }
        for (label, positive, value) in uses.matchers {
            if AGENT_LABELS.contains(&label.as_str()) {
                continue;
            }
            let known = values
                .get(label.as_str())
                .unwrap_or_else(|| panic!("label {label} is not emitted (in {expr})"));
            if positive {
                for alt in value.split('|') {
                    assert!(
                        known.contains(alt),
                        "{label}={alt} is never emitted (in {expr})"
                    );
                }
            }
        }
        for label in uses.grouping {
            assert!(
                AGENT_LABELS.contains(&label.as_str()) || values.contains_key(label.as_str()),
                "grouping label {label} is not emitted (in {expr})"
            );
        }
    }
    // The alerts the issue asks for are all there.
    let rules = alert_rules(&PROMETHEUS_RULES, &topology())
        .unwrap()
        .to_string();
    for alert in [
        "GithubRunnerNoRunnerOnline",
        "GithubRunnerCreationFailing",
        "GithubRunnerRateLimitNearlyExhausted",
        "GithubRunnerReconcileStalled",
        "GithubRunnerReactiveQueueGrowing",
        "GithubRunnerScaleSetJobsWithoutRunners",
        "GithubRunnerScaleSetListenerDown",
    ] {
        assert!(rules.contains(alert), "{alert}");
    }
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let no_runner = &rules["groups"][0]["rules"][0];
    assert_eq!(no_runner["for"], "15m");
}

/// Every JSON key of every metrics event the charm writes, and the event names.
fn event_fields() -> (BTreeSet<String>, BTreeSet<String>) {
    let events = [
        MetricEvent::RunnerInstalled(RunnerInstalled {
            flavor: "f".into(),
            duration: 1.0,
        }),
        MetricEvent::RunnerStart(RunnerStart {
            flavor: "f".into(),
            workflow: "w".into(),
            repo: "r".into(),
            github_event: "push".into(),
            idle: 1.0,
            queue_duration: Some(1.0),
        }),
        MetricEvent::RunnerStop(RunnerStop {
            flavor: "f".into(),
            workflow: "w".into(),
            repo: "r".into(),
            github_event: "push".into(),
            status: StopStatus::Normal,
            status_info: Some(CodeInformation { code: 1 }),
            job_duration: 1.0,
            job_conclusion: Some("success".into()),
        }),
        MetricEvent::Reconciliation(Reconciliation {
            flavor: "f".into(),
            crashed_runners: 0,
            idle_runners: 0,
            duration: 1.0,
        }),
        MetricEvent::RunnerCreationPhases(RunnerCreationPhases {
            flavor: "f".into(),
            launch: 1.0,
            first_exec: 1.0,
            files_pushed: 1.0,
            listener_started: 1.0,
        }),
        MetricEvent::ReactiveJobPickedUp(ReactiveJobPickedUp {
            flavor: "f".into(),
            queue_seconds: Some(1.0),
        }),
    ];
    let mut fields = BTreeSet::new();
    let mut names = BTreeSet::new();
    for e in &events {
        let v: Value = serde_json::from_str(&render_line(e, 1).unwrap()).unwrap();
        names.insert(v["event"].as_str().unwrap().to_string());
        fields.extend(v.as_object().unwrap().keys().cloned());
    }
    (fields, names)
}

#[test]
fn every_logql_expression_reads_the_charms_log_file_and_its_real_fields() {
    let (fields, events) = event_fields();
    let unit_logs = [
        HostPaths::for_unit("/", "github-runner/0").metrics_log(),
        HostPaths::for_unit("/", "runners-large/12").metrics_log(),
        // The Python charm's, until its units are upgraded.
        HostPaths::new("/").metrics_log(),
    ];
    let not_metrics = [
        HostPaths::new("/").image_build_log(),
        std::path::PathBuf::from("/var/log/github-runner-metrics.log.1"),
        std::path::PathBuf::from("/var/log/syslog"),
    ];
    let mut exprs = rule_exprs(&LOKI_RULES);
    exprs.extend(dashboard_exprs("loki"));
    assert!(exprs.len() >= 3);
    let stop_statuses = ["normal", "abnormal", "repo-policy-check-failure"];
    for expr in &exprs {
        let (matchers, grouping) = label_uses(expr);
        let (_, op, pattern) = matchers
            .iter()
            .find(|(l, _, _)| l == "filename")
            .unwrap_or_else(|| panic!("no filename matcher in {expr}"));
        assert_eq!(op, "=~", "{expr}");
        // Loki's regex matchers are anchored at both ends.
        let filename = regex::Regex::new(&format!("^(?:{pattern})$")).unwrap();
        for log in &unit_logs {
            assert!(
                filename.is_match(&log.display().to_string()),
                "{log:?} {expr}"
            );
        }
        for other in &not_metrics {
            assert!(
                !filename.is_match(&other.display().to_string()),
                "{other:?} {expr}"
            );
        }
        assert!(
            matchers
                .iter()
                .all(|(l, _, _)| AGENT_LABELS.contains(&l.as_str())),
            "{expr}"
        );
        assert!(
            grouping.iter().all(|l| AGENT_LABELS.contains(&l.as_str())),
            "{expr}"
        );
        let pipeline = expr.split_once("| json").map(|(_, p)| p).expect("| json");
        for stage in pipeline.split('|').map(str::trim).filter(|s| !s.is_empty()) {
            let stage = stage.split(" [").next().unwrap().trim_end_matches(')');
            if let Some(field) = stage.strip_prefix("unwrap ") {
                assert!(fields.contains(field.trim()), "{field} (in {expr})");
                continue;
            }
            let op = ["!=", "="]
                .into_iter()
                .find(|op| stage.contains(op))
                .expect("filter");
            let (field, value) = stage.split_once(op).unwrap();
            let (field, value) = (field.trim(), value.trim().trim_matches('"'));
            assert!(
                fields.contains(field),
                "{field} is no event field (in {expr})"
            );
            match field {
                "event" => assert!(events.contains(value), "{value} (in {expr})"),
                "status" => assert!(stop_statuses.contains(&value), "{value} (in {expr})"),
                _ => {}
            }
        }
    }
}

#[test]
fn the_shipped_logs_are_where_the_grafana_agent_reads_files() {
    let paths = HostPaths::new("/");
    for log in [paths.metrics_log(), paths.image_build_log()] {
        assert!(log.starts_with("/var/log"), "{}", log.display());
    }
}
