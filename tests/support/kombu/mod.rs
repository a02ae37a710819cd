//! Runs the real kombu (from the repo's .venv, `make venv`) as producer or consumer.

use std::path::PathBuf;
use std::process::Command;

pub fn python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run `make venv` (kombu, pymongo, mockupdb, redis)",
        venv.display()
    );
    venv
}

fn client(uri: &str, args: &[&str]) -> String {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/kombu/kombu_client.py"
    );
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .env("MQ_URI", uri)
        .output()
        .expect("run kombu_client.py");
    assert!(
        out.status.success(),
        "kombu_client {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `SimpleQueue(queue).put(body)` for each body, as the webhook router does.
pub fn put(uri: &str, queue: &str, bodies: &[&str]) {
    let mut args = vec!["put", queue];
    args.extend(bodies);
    client(uri, &args);
}

/// One message read (and acked) by kombu's own consumer, or None within `timeout_s`.
pub fn get(uri: &str, queue: &str, timeout_s: f64) -> Option<serde_json::Value> {
    let out = client(uri, &["get", queue, &timeout_s.to_string()]);
    match serde_json::from_str(out.trim()).expect("kombu_client output is JSON") {
        serde_json::Value::Null => None,
        v => Some(v),
    }
}
