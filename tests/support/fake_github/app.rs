//! GitHub App authentication as GitHub checks it: `POST /app/installations/{id}/access_tokens`
//! with a JWT as bearer, answered 201 with an installation token that authorises the API
//! until its `expires_at`.
//!
//! The JWT is checked as GitHub does: three base64url parts, header `alg` RS256, `iss` an App
//! this fake knows (a number or its decimal string), an RS256 signature that verifies
//! against that App's public key, `iat` not in the future, `exp` in the future and at most
//! 600 s after `iat`. Every refusal is a 401 with a message naming the rule; an installation
//! of another App is a 404.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{KeyPair, RsaKeyPair, UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// GitHub's installation tokens live an hour.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;
/// GitHub's longest JWT: `exp` at most 10 minutes after `iat`.
pub const MAX_JWT_LIFETIME_SECS: u64 = 600;

#[derive(Debug, Clone)]
pub struct FakeApp {
    /// DER `RSAPublicKey` JWTs of this App must verify against.
    pub public_key: Vec<u8>,
    pub installations: BTreeMap<u64, Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub app_id: u64,
    pub installation_id: u64,
    pub issued_at: u64,
    pub expires_at: u64,
}

/// Every App, installation and installation token of the fake.
#[derive(Debug, Clone)]
pub struct Apps {
    pub apps: BTreeMap<u64, FakeApp>,
    pub tokens: BTreeMap<String, IssuedToken>,
    /// What the next installation tokens live (tests shorten it to see expiry).
    pub lifetime_secs: u64,
    /// API requests that carried an installation token past its `expires_at` (answered 401).
    pub expired_uses: u64,
    /// Why each refused JWT was refused, in order.
    pub refusals: Vec<String>,
}

impl Default for Apps {
    fn default() -> Self {
        Apps {
            apps: BTreeMap::new(),
            tokens: BTreeMap::new(),
            lifetime_secs: DEFAULT_TOKEN_LIFETIME_SECS,
            expired_uses: 0,
            refusals: Vec::new(),
        }
    }
}

/// How an installation token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStanding {
    Valid,
    Expired,
    Unknown,
}

impl Apps {
    /// The App `app_id`, signing with the key in `private_key_pem` (PKCS#1 or PKCS#8).
    pub fn add_app(&mut self, app_id: u64, private_key_pem: &str) {
        let public_key = key_pair(private_key_pem).public_key().as_ref().to_vec();
        self.apps.insert(
            app_id,
            FakeApp {
                public_key,
                installations: BTreeMap::new(),
            },
        );
    }

    pub fn standing(&mut self, token: &str, now: u64) -> TokenStanding {
        match self.tokens.get(token) {
            None => TokenStanding::Unknown,
            Some(t) if now >= t.expires_at => {
                self.expired_uses += 1;
                TokenStanding::Expired
            }
            Some(_) => TokenStanding::Valid,
        }
    }

    /// `POST /app/installations/{installation_id}/access_tokens` with `authorization`:
    /// the 201 body, or the status and message GitHub would answer with.
    pub fn mint(
        &mut self,
        authorization: Option<&str>,
        installation_id: u64,
        now: u64,
        seq: u64,
    ) -> Result<Value, (u16, String)> {
        let jwt = authorization
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or("");
        let app_id = match self.verify_jwt(jwt, now) {
            Ok(id) => id,
            Err(why) => {
                self.refusals.push(why.clone());
                return Err((401, why));
            }
        };
        let Some(permissions) = self.apps[&app_id]
            .installations
            .get(&installation_id)
            .cloned()
        else {
            return Err((404, "Not Found".into()));
        };
        let token = format!("ghs_FAKEinstallation{seq:06}x{installation_id}");
        let expires_at = now + self.lifetime_secs;
        self.tokens.insert(
            token.clone(),
            IssuedToken {
                app_id,
                installation_id,
                issued_at: now,
                expires_at,
            },
        );
        Ok(json!({
            "token": token,
            "expires_at": super::state::rfc3339(expires_at),
            "permissions": permissions,
            "repository_selection": "all",
        }))
    }

    /// The App id of a JWT that passes every rule; else why not.
    pub fn verify_jwt(&self, jwt: &str, now: u64) -> Result<u64, String> {
        let undecodable = || "A JSON web token could not be decoded".to_string();
        let parts: Vec<&str> = jwt.split('.').collect();
        let [header, claims, signature] = parts[..] else {
            return Err(undecodable());
        };
        let decode = |part: &str| -> Result<Value, String> {
            let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| undecodable())?;
            serde_json::from_slice(&bytes).map_err(|_| undecodable())
        };
        let (header_json, claims_json) = (decode(header)?, decode(claims)?);
        if header_json["alg"] != "RS256" {
            return Err(format!("'alg' must be RS256, not {}", header_json["alg"]));
        }
        let app_id = match &claims_json["iss"] {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| "'Issuer' claim ('iss') must be an Integer".to_string())?;
        let app = self
            .apps
            .get(&app_id)
            .ok_or_else(|| format!("Integration not found: 'iss' {app_id} is no App"))?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| undecodable())?;
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &app.public_key)
            .verify(format!("{header}.{claims}").as_bytes(), &signature)
            .map_err(|_| "A JSON web token could not be decoded: bad signature".to_string())?;
        let (Some(iat), Some(exp)) = (claims_json["iat"].as_u64(), claims_json["exp"].as_u64())
        else {
            return Err("'iat' and 'exp' must be Integers".into());
        };
        if iat > now {
            return Err(
                "'Issued at' claim ('iat') must be an Integer representing a time in the past"
                    .into(),
            );
        }
        if exp <= now {
            return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".into());
        }
        if exp > iat + MAX_JWT_LIFETIME_SECS {
            return Err("'Expiration time' claim ('exp') is too far in the future".into());
        }
        Ok(app_id)
    }
}

fn key_pair(pem: &str) -> RsaKeyPair {
    match PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("a PEM private key") {
        PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        _ => panic!("test App keys are RSA"),
    }
    .expect("an RSA key")
}

/// A JWT with any header and claims, signed RS256 with `private_key_pem`: tests forge the
/// ones GitHub must refuse.
pub fn sign_jwt(private_key_pem: &str, header: &Value, claims: &Value) -> String {
    let pair = key_pair(private_key_pem);
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signature = vec![0; pair.public().modulus_len()];
    pair.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The App side of the running fake.
impl super::FakeGitHub {
    /// Register App `app_id` whose JWTs verify against the public half of
    /// `private_key_pem`, installed as `installation_id` with `permissions` (what the
    /// tokens' 201 body lists).
    pub fn add_app(
        &self,
        app_id: u64,
        installation_id: u64,
        private_key_pem: &str,
        permissions: Value,
    ) {
        self.shared.update(|st| {
            st.apps.add_app(app_id, private_key_pem);
            if let Some(app) = st.apps.apps.get_mut(&app_id) {
                app.installations.insert(installation_id, permissions);
            }
        });
    }

    /// Installation tokens minted from now on live `secs` (GitHub: 3600).
    pub fn set_installation_token_lifetime(&self, secs: u64) {
        self.shared.update(|st| st.apps.lifetime_secs = secs);
    }

    /// Every installation token issued so far expires now (GitHub revoked them early).
    pub fn expire_installation_tokens(&self) {
        let now = super::state::now_epoch();
        self.shared.update(|st| {
            for t in st.apps.tokens.values_mut() {
                t.expires_at = t.expires_at.min(now);
            }
        });
    }

    /// Installation tokens issued, by token.
    pub fn installation_tokens(&self) -> BTreeMap<String, IssuedToken> {
        self.shared.lock().apps.tokens.clone()
    }

    /// API requests that carried an installation token past its `expires_at`.
    pub fn expired_token_uses(&self) -> u64 {
        self.shared.lock().apps.expired_uses
    }

    /// Why each refused JWT was refused.
    pub fn jwt_refusals(&self) -> Vec<String> {
        self.shared.lock().apps.refusals.clone()
    }
}
