//! GitHub App authentication: the private key, the JWT it signs, and when an installation
//! token is due for renewal (pure, over epoch seconds).
//!
//! RS256 is signed with `ring` (already linked for TLS, constant-time RSA, well kept) and the
//! PEM is read with `rustls-pki-types` (PKCS#1 and PKCS#8): no new crate. `jsonwebtoken`
//! was the alternative; its current majors need a crypto backend chosen among `aws-lc-rs`
//! (a C/cmake build) and `rsa` (an open timing advisory on private-key operations), for a
//! token format that is three base64url parts.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;

use crate::secret::Secret;

/// `iat` this far in the past: GitHub's advice against clock drift.
pub const JWT_BACKDATE_SECS: u64 = 60;
/// `exp` this far after `iat`: GitHub's maximum (10 minutes).
pub const JWT_LIFETIME_SECS: u64 = 600;
/// An installation token is renewed this long before its `expires_at`, so none past it is
/// ever sent (a call and its retries fit in it). GitHub's tokens live an hour; one that
/// lives less (a test's) is renewed a tenth of its life before expiry when that is shorter.
pub const RENEW_BEFORE_EXPIRY_SECS: u64 = 300;

/// Why a private key is unusable; never quotes the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not a PEM private key (expected -----BEGIN RSA PRIVATE KEY----- or -----BEGIN PRIVATE KEY-----)")]
    NotPem,
    #[error("not an RSA key GitHub Apps use (PKCS#1 or PKCS#8, 2048 to 8192 bits): {0}")]
    NotRsa(String),
    #[error("signing failed")]
    Sign,
}

/// A parsed App key. No `Debug` of the key material.
pub struct AppKey {
    pair: RsaKeyPair,
}

impl std::fmt::Debug for AppKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AppKey([redacted])")
    }
}

impl AppKey {
    pub fn from_pem(pem: &Secret) -> Result<AppKey, KeyError> {
        let der =
            PrivateKeyDer::from_pem_slice(pem.expose().as_bytes()).map_err(|_| KeyError::NotPem)?;
        let pair = match &der {
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
            _ => return Err(KeyError::NotRsa("an EC key".into())),
        }
        .map_err(|e| KeyError::NotRsa(e.to_string()))?;
        Ok(AppKey { pair })
    }

    /// The public key as DER `RSAPublicKey` (what a verifier needs).
    pub fn public_key_der(&self) -> Vec<u8> {
        use ring::signature::KeyPair;
        self.pair.public_key().as_ref().to_vec()
    }

    /// A JWT for App `app_id` at `now` (epoch seconds): RS256, `iat` backdated by
    /// [`JWT_BACKDATE_SECS`], `exp` [`JWT_LIFETIME_SECS`] after `iat`.
    pub fn jwt(&self, app_id: u64, now: u64) -> Result<Secret, KeyError> {
        let iat = now.saturating_sub(JWT_BACKDATE_SECS);
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"iat": iat, "exp": iat + JWT_LIFETIME_SECS, "iss": app_id})
                .to_string(),
        );
        let signing_input = format!("{header}.{claims}");
        let mut signature = vec![0; self.pair.public().modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| KeyError::Sign)?;
        Ok(Secret::new(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

/// An installation token as GitHub issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallationToken {
    pub token: Secret,
    /// Epoch seconds.
    pub expires_at: u64,
    /// When it was obtained (epoch seconds; 0: unknown, as in files of earlier versions).
    pub obtained_at: u64,
}

impl InstallationToken {
    /// Still good to send at `now`: more than [`RENEW_BEFORE_EXPIRY_SECS`] (or a tenth of
    /// its lifetime, when shorter) before expiry.
    pub fn usable_at(&self, now: u64) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        let margin = RENEW_BEFORE_EXPIRY_SECS.min(lifetime / 10);
        now.saturating_add(margin) < self.expires_at
    }
}

/// GitHub's `expires_at` (`2016-07-11T22:14:10Z`) as epoch seconds.
pub fn parse_expires_at(text: &str) -> Option<u64> {
    let (date, time) = text.trim_end_matches('Z').split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time
        .splitn(3, ':')
        .map(|p| p.split('.').next()?.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn test_key_pem() -> Secret {
        Secret::new(include_str!("../../tests/fixtures/test-app-key-pkcs1.pem"))
    }

    #[test]
    fn pkcs1_and_pkcs8_forms_of_one_key_parse_to_the_same_key() {
        let pkcs1 = AppKey::from_pem(&test_key_pem()).unwrap();
        let pkcs8 = AppKey::from_pem(&Secret::new(include_str!(
            "../../tests/fixtures/test-app-key-pkcs8.pem"
        )))
        .unwrap();
        assert_eq!(pkcs1.public_key_der(), pkcs8.public_key_der());
    }

    #[test]
    fn a_bad_key_is_refused_without_quoting_it() {
        for text in [
            "not a key at all",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            let err = AppKey::from_pem(&Secret::new(text))
                .unwrap_err()
                .to_string();
            assert!(!err.contains("AAAA") && !err.contains("at all"), "{err}");
        }
    }

    #[test]
    fn the_jwt_is_rs256_backdated_and_lives_ten_minutes_and_verifies() {
        let key = AppKey::from_pem(&test_key_pem()).unwrap();
        let jwt = key.jwt(4242, 1_000_000).unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["alg"], "RS256");
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], 4242);
        assert_eq!(claims["iat"], 1_000_000 - 60);
        assert_eq!(claims["exp"], 1_000_000 - 60 + 600);
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public_key_der(),
        );
        let signed = format!("{}.{}", parts[0], parts[1]);
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(parts[2]).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn a_token_is_renewed_five_minutes_before_it_expires() {
        let t = InstallationToken {
            token: Secret::new("ghs_x"),
            expires_at: 10_000,
            obtained_at: 10_000 - 3600,
        };
        assert!(t.usable_at(10_000 - 301));
        assert!(!t.usable_at(10_000 - 300));
        assert!(!t.usable_at(20_000));
        // A token of unknown age: the 5 minutes.
        assert!(!InstallationToken {
            obtained_at: 0,
            ..t.clone()
        }
        .usable_at(10_000 - 300));
        // A 20-second token (a test's): renewed 2 s before, never sent past expiry.
        let short = InstallationToken {
            expires_at: 1_020,
            obtained_at: 1_000,
            ..t
        };
        assert!(short.usable_at(1_017));
        assert!(!short.usable_at(1_018));
        assert!(!short.usable_at(1_020));
    }

    #[test]
    fn expires_at_is_read_as_github_writes_it() {
        assert_eq!(parse_expires_at("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_expires_at("2016-07-11T22:14:10Z"),
            Some(1_468_275_250)
        );
        assert_eq!(
            parse_expires_at("2024-02-29T12:00:00.000Z"),
            Some(1_709_208_000)
        );
        assert_eq!(parse_expires_at("soon"), None);
        assert_eq!(parse_expires_at("2024-13-01T00:00:00Z"), None);
    }
}
