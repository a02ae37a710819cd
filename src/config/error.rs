//! The one message an operator sees for a bad configuration, listing every problem.

use std::fmt;

/// Longest value quoted back in a message; longer ones are cut with `...`.
const MAX_SHOWN_CHARS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A required option is empty.
    Missing { option: &'static str, fix: String },
    /// A value is unusable. `shown` is the value as JSON, or None for secrets.
    Invalid {
        option: &'static str,
        shown: Option<String>,
        expected: String,
    },
}

impl Problem {
    pub fn option(&self) -> &'static str {
        match self {
            Problem::Missing { option, .. } | Problem::Invalid { option, .. } => option,
        }
    }

    pub(crate) fn invalid(
        option: &'static str,
        value: &serde_json::Value,
        expected: impl Into<String>,
    ) -> Self {
        Problem::Invalid {
            option,
            shown: Some(shown(value)),
            expected: expected.into(),
        }
    }
}

/// The value as JSON (so `"7"` and `7` differ), cut to a readable length.
fn shown(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= MAX_SHOWN_CHARS {
        return text;
    }
    let cut: String = text.chars().take(MAX_SHOWN_CHARS).collect();
    format!("{cut}...")
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing { option, fix } => write!(f, "{option}: missing, set it with {fix}"),
            Problem::Invalid {
                option,
                shown: Some(shown),
                expected,
            } => write!(f, "{option} {shown}: {expected}"),
            Problem::Invalid {
                option,
                shown: None,
                expected,
            } => write!(f, "{option}: {expected}"),
        }
    }
}

/// Every problem found, invalid values first (in config.yaml order), then missing options.
/// Its `Display` is the Blocked status message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("invalid config: ")?;
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn joins_problems_in_one_line() {
        let err = ConfigError {
            problems: vec![
                Problem::invalid(
                    "vm-memory",
                    &json!("7XB"),
                    "expected a whole number with KiB, MiB, GiB, TiB, PiB or EiB",
                ),
                Problem::Missing {
                    option: "path",
                    fix: "juju config github-runner path=<org> or <owner>/<repo>".into(),
                },
            ],
        };
        assert_eq!(
            err.to_string(),
            "invalid config: vm-memory \"7XB\": expected a whole number with KiB, MiB, GiB, \
             TiB, PiB or EiB; path: missing, set it with juju config github-runner \
             path=<org> or <owner>/<repo>"
        );
    }

    #[test]
    fn secrets_are_not_shown_and_long_values_are_cut() {
        let p = Problem::Invalid {
            option: "token",
            shown: None,
            expected: "expected a string".into(),
        };
        assert_eq!(p.to_string(), "token: expected a string");
        let long = "x".repeat(200);
        let p = Problem::invalid("labels", &json!(long), "expected labels");
        let text = p.to_string();
        assert!(text.len() < 100, "{text}");
        assert!(text.contains("...: expected labels"), "{text}");
    }
}
