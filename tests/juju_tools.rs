//! ProcessHookTools against the fake hook tools: every method with jujuc's exact syntax.
//! The fake rejects unknown flags and extra arguments with exit 2, as jujuc does, so a
//! syntax slip in ProcessHookTools fails here.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;

use github_runner::juju::context::HookEnv;
use github_runner::juju::fake::{FakeStorage, TOOL_NAMES};
use github_runner::juju::process::ProcessHookTools;
use github_runner::juju::{HookToolError, HookTools, LogLevel, SecretRead, Status, StorageInfo};
use juju_harness::{run_with_deadline, Harness};
use serde_json::json;
use std::collections::BTreeMap;
use std::process::Command;

fn tools_with(h: &Harness, extra: &[(&str, &str)]) -> ProcessHookTools {
    h.write_world();
    let mut env = h.hook_env("config-changed");
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    ProcessHookTools::new(HookEnv::from_pairs(env))
}

fn tools(h: &Harness) -> ProcessHookTools {
    tools_with(h, &[])
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[track_caller]
fn assert_failed(
    result: Result<impl std::fmt::Debug, HookToolError>,
    want_code: i32,
    want_stderr: &str,
) {
    match result {
        Err(HookToolError::Failed { code, stderr, .. }) => {
            assert_eq!(code, want_code, "{stderr}");
            assert!(
                stderr.contains(want_stderr),
                "{stderr:?} lacks {want_stderr:?}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn config_get_merges_config_yaml_defaults() {
    let mut h = Harness::new();
    h.set_config("path", "org").set_config("vm-cpu", 4);
    let config = tools(&h).config_get().unwrap();
    assert_eq!(config["path"], json!("org"));
    assert_eq!(config["vm-cpu"], json!(4));
    assert_eq!(config["vm-memory"], json!("7GiB"));
    assert_eq!(config["virtual-machines"], json!(1));
    assert_eq!(config["experimental-use-aproxy"], json!(false));
    assert_eq!(config["github-url"], json!("https://github.com"));
}

#[test]
fn status_and_logs_keep_free_text_intact() {
    let h = Harness::new();
    let t = tools(&h);
    t.status_set(&Status::Maintenance("-x --not-a-flag".into()))
        .unwrap();
    t.status_set(&Status::Active(String::new())).unwrap();
    t.status_set(&Status::Blocked("a b".into())).unwrap();
    t.status_set(&Status::Waiting("w".into())).unwrap();
    let statuses: Vec<(String, String)> = h
        .statuses()
        .into_iter()
        .map(|s| (s.status, s.message))
        .collect();
    assert_eq!(
        statuses,
        [
            ("maintenance".into(), "-x --not-a-flag".into()),
            ("active".into(), String::new()),
            ("blocked".into(), "a b".into()),
            ("waiting".into(), "w".into())
        ]
    );
    for (level, name) in [
        (LogLevel::Trace, "TRACE"),
        (LogLevel::Debug, "DEBUG"),
        (LogLevel::Info, "INFO"),
        (LogLevel::Warning, "WARNING"),
        (LogLevel::Error, "ERROR"),
    ] {
        t.juju_log(level, "--help me").unwrap();
        let last = h.logs().pop().unwrap();
        assert_eq!(
            (last.level.as_str(), last.message.as_str()),
            (name, "--help me")
        );
    }
    t.application_version_set("-1.2").unwrap();
    assert_eq!(h.app_versions(), ["-1.2"]);
}

#[test]
fn action_tools_fail_outside_an_action() {
    let h = Harness::new();
    let t = tools(&h);
    assert_failed(t.action_get(), 1, "not running an action");
    assert_failed(
        t.action_set(&map(&[("a", "1")])),
        1,
        "not running an action",
    );
    assert_failed(t.action_fail("x"), 1, "not running an action");
    assert_failed(t.action_log("x"), 1, "not running an action");
}

#[test]
fn action_tools_inside_an_action() {
    let mut h = Harness::new();
    h.world.action_params.insert("mode".into(), json!("fast"));
    let t = tools_with(
        &h,
        &[
            ("JUJU_ACTION_NAME", "check-runners"),
            ("JUJU_ACTION_UUID", "1"),
        ],
    );
    assert_eq!(t.action_get().unwrap()["mode"], json!("fast"));
    t.action_set(&map(&[
        ("online", "2"),
        ("delta.virtual-machines", "-1"),
        ("runners", "a, b"),
    ]))
    .unwrap();
    t.action_log("-working").unwrap();
    t.action_fail("-failed").unwrap();
    let record = h.action_record();
    assert_eq!(
        serde_json::Value::Object(record.results),
        json!({"online": "2", "runners": "a, b", "delta": {"virtual-machines": "-1"}})
    );
    assert_eq!(record.failure.as_deref(), Some("-failed"));
    assert_eq!(h.action_logs(), ["-working"]);
    // Checked before spawning: the fake never sees a bad key.
    let before = h.calls().len();
    assert!(matches!(
        t.action_set(&map(&[("stdout", "x")])),
        Err(HookToolError::InvalidActionKey { .. })
    ));
    assert_eq!(h.calls().len(), before);
}

#[test]
fn relations() {
    let mut h = Harness::new();
    h.world.leader = true;
    let id = h.add_relation("mongodb", "mongo", 2);
    h.world.relations[0]
        .remote_units
        .get_mut("mongo/0")
        .unwrap()
        .insert("uris".into(), "mongodb://x".into());
    h.world.relations[0]
        .remote_app_data
        .insert("database".into(), "db".into());
    let t = tools(&h);
    assert_eq!(t.relation_ids("mongodb").unwrap(), vec![id.clone()]);
    assert!(t.relation_ids("debug-ssh").unwrap().is_empty());
    assert_eq!(t.relation_list(&id).unwrap(), ["mongo/0", "mongo/1"]);
    assert_eq!(
        t.relation_get(&id, "mongo/0", false).unwrap(),
        map(&[("uris", "mongodb://x")])
    );
    assert_eq!(
        t.relation_get(&id, "mongo", true).unwrap(),
        map(&[("database", "db")])
    );
    // As jujuc: with --app, a unit names its application.
    assert_eq!(
        t.relation_get(&id, "mongo/1", true).unwrap(),
        map(&[("database", "db")])
    );
    assert!(t.relation_get(&id, "mongo/1", false).unwrap().is_empty());
    t.relation_set(&id, false, &map(&[("a", "1"), ("b", "2")]))
        .unwrap();
    t.relation_set(&id, false, &map(&[("a", "")])).unwrap();
    t.relation_set(&id, true, &map(&[("app-key", "v")]))
        .unwrap();
    let world = h.read_world();
    assert_eq!(world.relations[0].local_unit_data, map(&[("b", "2")]));
    assert_eq!(world.relations[0].local_app_data, map(&[("app-key", "v")]));
    assert_eq!(
        t.relation_get(&id, "github-runner/0", false).unwrap(),
        map(&[("b", "2")])
    );
    assert_failed(t.relation_list("mongodb:99"), 2, "relation not found");
    assert_failed(
        t.relation_get("mongodb:99", "mongo/0", false),
        2,
        "relation not found",
    );
    // Relation data goes through stdin, not argv.
    let set_calls: Vec<_> = h
        .calls()
        .into_iter()
        .filter(|c| c.tool == "relation-set")
        .collect();
    assert!(
        set_calls
            .iter()
            .all(|c| !c.args.iter().any(|a| a.contains("app-key"))),
        "{set_calls:?}"
    );
}

#[test]
fn app_relation_data_needs_leadership() {
    let mut h = Harness::new();
    let id = h.add_relation("cos-agent", "grafana-agent", 1);
    let t = tools(&h);
    assert!(!t.is_leader().unwrap());
    assert_failed(
        t.relation_set(&id, true, &map(&[("k", "v")])),
        1,
        "not the leader",
    );
    h.world.leader = true;
    assert!(tools(&h).is_leader().unwrap());
}

#[test]
fn storage() {
    let mut h = Harness::new();
    h.world.storage.insert(
        "runner/0".into(),
        FakeStorage {
            kind: "filesystem".into(),
            location: "/storage/juju".into(),
        },
    );
    let t = tools(&h);
    assert_eq!(t.storage_list(None).unwrap(), ["runner/0"]);
    assert_eq!(t.storage_list(Some("runner")).unwrap(), ["runner/0"]);
    assert!(t.storage_list(Some("other")).unwrap().is_empty());
    assert_eq!(
        t.storage_get("runner/0").unwrap(),
        StorageInfo {
            kind: "filesystem".into(),
            location: "/storage/juju".into()
        }
    );
    assert_failed(t.storage_get("runner/9"), 2, "not found");
}

#[test]
fn unit_state() {
    let h = Harness::new();
    let t = tools(&h);
    // The fake prints null for empty state, as Juju may.
    assert!(t.state_get().unwrap().is_empty());
    t.state_set(&map(&[("a", "1"), ("b", "two words"), ("c", "-x")]))
        .unwrap();
    t.state_delete("a").unwrap();
    assert_eq!(
        t.state_get().unwrap(),
        map(&[("b", "two words"), ("c", "-x")])
    );
    let argv: Vec<String> = h.calls().into_iter().flat_map(|c| c.args).collect();
    assert!(
        !argv.iter().any(|a| a.contains("two words")),
        "state values go through stdin: {argv:?}"
    );
}

#[test]
fn reboot_and_secrets() {
    let mut h = Harness::new();
    h.world
        .secrets
        .insert("secret:abc".into(), map(&[("token", "s3cret")]));
    let t = tools(&h);
    t.juju_reboot(true).unwrap();
    t.juju_reboot(false).unwrap();
    assert_eq!(
        t.secret_get("secret:abc", SecretRead::Tracked).unwrap(),
        map(&[("token", "s3cret")])
    );
    assert_failed(
        t.secret_get("secret:nope", SecretRead::Tracked),
        1,
        "secret \"secret:nope\" not found",
    );
    let in_action = tools_with(&h, &[("JUJU_ACTION_NAME", "flush-runners")]);
    assert_failed(
        in_action.juju_reboot(true),
        1,
        "not supported when running an action",
    );
}

/// A consumer's `secret-get` as Juju answers it: the tracked revision until `--refresh`,
/// `--peek` the latest without moving.
#[test]
fn secret_get_follows_the_tracked_revision_until_refresh() {
    let mut h = Harness::new();
    h.world
        .secrets
        .insert("secret:abc".into(), map(&[("password", "one")]));
    let t = tools(&h);
    assert_eq!(
        t.secret_get("secret:abc", SecretRead::Tracked).unwrap(),
        map(&[("password", "one")])
    );
    // The owner adds a revision.
    let mut world = h.read_world();
    world
        .secrets
        .insert("secret:abc".into(), map(&[("password", "two")]));
    h.world = world;
    h.write_world();
    let read = |how| t.secret_get("secret:abc", how).unwrap()["password"].clone();
    assert_eq!(read(SecretRead::Tracked), "one");
    assert_eq!(read(SecretRead::Peek), "two");
    assert_eq!(read(SecretRead::Tracked), "one", "peek does not move");
    assert_eq!(read(SecretRead::Refresh), "two");
    assert_eq!(read(SecretRead::Tracked), "two", "refresh moves");
    let calls = h_calls(&h);
    assert!(
        calls.iter().any(|c| c.contains(&"--refresh".to_string())),
        "{calls:?}"
    );
}

/// A user secret before `juju grant-secret`: "permission denied" (exit 1), whatever the
/// revision asked for; once granted, read as any other, by either URI form.
#[test]
fn secret_get_refuses_a_secret_not_granted_until_it_is() {
    let mut h = Harness::new();
    h.world
        .secrets
        .insert("secret:d3usertoken".into(), map(&[("token", "ghp_user")]));
    h.world
        .secrets_not_granted
        .insert("secret:d3usertoken".into());
    let t = tools(&h);
    for how in [SecretRead::Tracked, SecretRead::Refresh, SecretRead::Peek] {
        assert_failed(
            t.secret_get("secret:d3usertoken", how),
            1,
            "permission denied",
        );
    }
    let mut world = h.read_world();
    world.secrets_not_granted.clear();
    h.world = world;
    h.write_world();
    assert_eq!(
        t.secret_get("secret://model-uuid/d3usertoken", SecretRead::Tracked)
            .unwrap(),
        map(&[("token", "ghp_user")])
    );
}

fn h_calls(h: &Harness) -> Vec<Vec<String>> {
    h.calls()
        .into_iter()
        .filter(|c| c.tool == "secret-get")
        .map(|c| c.args)
        .collect()
}

#[test]
fn every_tool_fails_outside_a_hook() {
    let h = Harness::new();
    h.write_world();
    let mut env = h.hook_env("install");
    env.remove("JUJU_CONTEXT_ID");
    let t = ProcessHookTools::new(HookEnv::from_pairs(env));
    assert_failed(t.is_leader(), 1, "JUJU_CONTEXT_ID not set");
    assert_failed(t.config_get(), 1, "JUJU_CONTEXT_ID not set");
    assert_failed(
        t.status_set(&Status::Active(String::new())),
        1,
        "JUJU_CONTEXT_ID not set",
    );
}

#[test]
fn injected_failures_carry_code_and_stderr() {
    let mut h = Harness::new();
    h.fail_tool(
        "state-get",
        1,
        "ERROR cannot get state: connection is shut down",
    );
    let err = tools(&h).state_get().unwrap_err();
    assert_eq!(
        err.to_string(),
        "state-get exited with 1: ERROR cannot get state: connection is shut down"
    );
}

/// The fake itself: jujuc's argument errors (exit 2) and messages.
#[test]
fn fake_rejects_what_jujuc_rejects() {
    let h = Harness::new();
    h.write_world();
    let env = h.hook_env("install");
    let run = |tool: &str, args: &[&str]| {
        run_with_deadline(
            Command::new(h.tools_dir.join(tool))
                .args(args)
                .env_clear()
                .envs(&env),
        )
    };
    let cases: [(&str, &[&str], i32, &str); 9] = [
        (
            "status-set",
            &["happy"],
            2,
            "invalid status \"happy\", expected one of [maintenance blocked waiting active]",
        ),
        (
            "status-set",
            &[],
            2,
            "invalid args, require <status> [message] [data]",
        ),
        (
            "status-set",
            &["active", "a", "b", "c"],
            2,
            "unrecognized args: [\"b\" \"c\"]",
        ),
        (
            "status-set",
            &["--application", "active"],
            1,
            "this unit is not the leader",
        ),
        (
            "is-leader",
            &["--format=json", "extra"],
            2,
            "unrecognized args: [\"extra\"]",
        ),
        (
            "config-get",
            &["--bogus"],
            2,
            "option provided but not defined: --bogus",
        ),
        ("config-get", &["--format=xml"], 2, "unknown format \"xml\""),
        ("relation-list", &["-r"], 2, "option needs an argument: -r"),
        ("juju-log", &[], 2, "no message specified"),
    ];
    for (tool, args, code, stderr) in cases {
        let r = run(tool, args);
        assert_eq!(r.code, code, "{tool} {args:?}: {r:#?}");
        assert!(r.stderr.starts_with("ERROR "), "{r:#?}");
        assert!(r.stderr.contains(stderr), "{tool} {args:?}: {r:#?}");
    }
    // Formats: json for the charm, smart (the default) prints plain text.
    assert_eq!(run("is-leader", &["--format=json"]).stdout, "false\n");
    assert_eq!(run("is-leader", &[]).stdout, "false\n");
    assert_eq!(
        run("config-get", &["--format", "json", "base-image"]).stdout,
        "\"jammy\"\n"
    );
    assert_eq!(run("config-get", &["base-image"]).stdout, "jammy\n");
    assert_eq!(
        run("config-get", &["--format=json", "nope"]).stdout,
        "null\n"
    );
    // An unknown level falls back to INFO.
    assert_eq!(run("juju-log", &["-l", "LOUD", "--", "hi"]).code, 0);
    assert_eq!(
        h.logs().last().map(|l| l.level.clone()),
        Some("INFO".into())
    );
}

/// Every name the harness links to the fake is one the fake answers (a name it does not
/// know answers "does not implement"): each rejects a flag jujuc has for none of them with
/// jujuc's argument error, so each went through its own parser.
#[test]
fn every_linked_tool_is_handled_by_the_fake() {
    let h = Harness::new();
    h.write_world();
    let hook = h.hook_env("install");
    let mut action = hook.clone();
    action.insert("JUJU_ACTION_NAME".into(), "check-runners".into());
    let run = |tool: &str| {
        let env = if tool.starts_with("action-") {
            &action
        } else {
            &hook
        };
        run_with_deadline(
            Command::new(h.tools_dir.join(tool))
                .arg("--no-such-flag")
                .env_clear()
                .envs(env),
        )
    };
    for tool in TOOL_NAMES {
        let r = run(tool);
        assert!(!r.stderr.contains("does not implement"), "{tool}: {r:#?}");
        assert_eq!(r.code, 2, "{tool}: {r:#?}");
        assert!(
            r.stderr.contains("flag provided but not defined")
                || r.stderr.contains("option provided but not defined"),
            "{tool}: {r:#?}"
        );
    }
    // And a name outside the list is refused, so the check above can fail.
    std::os::unix::fs::symlink(
        juju_harness::FAKE_JUJUC_BIN,
        h.tools_dir.join("network-get"),
    )
    .unwrap();
    let r = run("network-get");
    assert!(r.stderr.contains("does not implement"), "{r:#?}");
}
