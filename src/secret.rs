//! A string that must never reach logs, `Debug` output, errors or process arguments.

use sha2::{Digest, Sha256};
use std::fmt;

/// A secret value (GitHub token, registration/JIT token, MQ URI with a password).
///
/// `Debug` and `Display` print `[redacted]` so a secret cannot leak through `{:?}` in a log
/// line or an error message; the value is only reachable through [`Secret::expose`], which
/// makes every use greppable.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The plain value: call only where the value must leave the process (an HTTP header,
    /// a 0600 file, a child's stdin).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Hex SHA-256 of the value: lets unit state detect a token change without storing it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A URL fit for logs and messages: `http://user:pass@proxy:3128` -> `http://***@proxy:3128`.
pub fn redact_url_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, url),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let redacted = format!("***{}", &rest[at..]);
            match scheme {
                Some(s) => format!("{s}://{redacted}"),
                None => redacted,
            }
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("ghp_supersecret");
        assert!(!format!("{s:?}").contains("supersecret"));
        assert!(!format!("{s}").contains("supersecret"));
        assert!(!format!("{:?}", Some(&s)).contains("supersecret"));
        assert_eq!(s.expose(), "ghp_supersecret");
    }

    #[test]
    fn fingerprint_is_sha256_hex_and_differs_per_value() {
        let a = Secret::new("a");
        assert_eq!(
            a.fingerprint(),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"
        );
        assert_ne!(a.fingerprint(), Secret::new("b").fingerprint());
    }

    #[test]
    fn url_credentials_are_redacted() {
        assert_eq!(
            redact_url_credentials("http://u:pw@proxy:3128/x"),
            "http://***@proxy:3128/x"
        );
        assert_eq!(redact_url_credentials("a:b@proxy"), "***@proxy");
        assert_eq!(redact_url_credentials("proxy:3128"), "proxy:3128");
        assert_eq!(redact_url_credentials("http://h/p@x"), "http://h/p@x");
        assert_eq!(redact_url_credentials(""), "");
    }
}
