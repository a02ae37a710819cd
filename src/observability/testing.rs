//! Test support (`testkit`): the exposition parsed by the real Prometheus Python parser
//! (`tests/support/openmetrics/parse.py` in the `.venv` that `make venv` builds).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// One sample as the parser read it.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Sample {
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// `$OPENMETRICS_PYTHON`, else the repository's `.venv/bin/python`.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("OPENMETRICS_PYTHON").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run `make venv` (it installs prometheus-client)",
        venv.display()
    );
    venv
}

/// Parse `text` strictly; panics with the parser's message when it is not valid OpenMetrics.
pub fn parse_openmetrics(text: &str) -> Vec<Sample> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/openmetrics/parse.py");
    let mut child = Command::new(python())
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the OpenMetrics parser");
    child
        .stdin
        .take()
        .expect("stdin is piped")
        .write_all(text.as_bytes())
        .expect("feed the parser");
    let out = child.wait_with_output().expect("parser output");
    assert!(
        out.status.success(),
        "the exposition is not valid OpenMetrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("parser line"))
        .collect()
}

/// The value of the sample `name` whose labels include `labels`.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
}

/// A `Systemd` that records each call (`enable --now <unit>`, ...) and answers `is_active`
/// with `active`.
#[derive(Debug, Default)]
pub struct RecordingSystemd {
    pub calls: std::sync::Mutex<Vec<String>>,
    pub active: bool,
}

impl RecordingSystemd {
    fn note(&self, call: impl Into<String>) {
        self.calls.lock().expect("not poisoned").push(call.into());
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("not poisoned").clone()
    }
}

impl crate::host::timer::Systemd for RecordingSystemd {
    fn daemon_reload(&self) -> Result<(), crate::host::timer::SystemdError> {
        self.note("daemon-reload");
        Ok(())
    }
    fn enable_now(&self, unit: &str) -> Result<(), crate::host::timer::SystemdError> {
        self.note(format!("enable --now {unit}"));
        Ok(())
    }
    fn restart(&self, unit: &str) -> Result<(), crate::host::timer::SystemdError> {
        self.note(format!("restart {unit}"));
        Ok(())
    }
    fn is_active(&self, unit: &str) -> Result<bool, crate::host::timer::SystemdError> {
        self.note(format!("is-active {unit}"));
        Ok(self.active)
    }
    fn disable_now(&self, unit: &str) -> Result<(), crate::host::timer::SystemdError> {
        self.note(format!("disable --now {unit}"));
        Ok(())
    }
}
