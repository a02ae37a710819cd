//! The hook's environment as Juju sets it: captured once, parsed into plain data.
//!
//! Juju replaces the environment of every hook (no HOME, no USER), so everything the charm
//! knows about its context comes from the `JUJU_*` variables read here.

use crate::identity::{IdentityError, UnitIdentity};
use crate::secret::redact_url_credentials;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

/// The process environment, kept whole so hook tools get exactly what Juju gave the hook
/// (jujuc needs `JUJU_CONTEXT_ID` and the agent socket variables).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HookEnv {
    vars: Vec<(OsString, OsString)>,
}

/// Names only: values may hold credentials (a proxy URL with a password).
impl fmt::Debug for HookEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(self.vars.iter().map(|(k, _)| k))
            .finish()
    }
}

impl HookEnv {
    pub fn from_process() -> Self {
        HookEnv {
            vars: std::env::vars_os().collect(),
        }
    }

    pub fn from_pairs<K: Into<OsString>, V: Into<OsString>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        HookEnv {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Every variable, to hand to a child process after `env_clear`.
    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.vars
    }

    /// The UTF-8 variables as a map (a non-UTF-8 value is not something Juju sets).
    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.vars
            .iter()
            .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v.to_str()?.to_string())))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationContext {
    pub endpoint: String,
    /// `endpoint:id`.
    pub relation_id: String,
    pub remote_unit: Option<String>,
    pub remote_app: Option<String>,
    /// Only on `-relation-departed`.
    pub departing_unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageContext {
    /// `runner/0`.
    pub storage_id: String,
    pub location: Option<String>,
    pub kind: Option<String>,
}

/// The model's proxy settings (`juju-http-proxy` & co. in the model config).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ProxySettings {
    pub http: Option<String>,
    pub https: Option<String>,
    pub no_proxy: Option<String>,
}

impl ProxySettings {
    pub fn is_configured(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// The proxies of the charm's own HTTP calls (GitHub API, downloads), in hooks and in
    /// every long-running process of the charm alike (reactive workers get these values in
    /// their 0600 settings file): the one place a client's proxies come from.
    pub fn for_clients(&self) -> crate::github::proxy::ProxySettings {
        crate::github::proxy::ProxySettings::from_values(
            self.http.as_deref(),
            self.https.as_deref(),
            self.no_proxy.as_deref(),
        )
    }
}

impl fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.as_deref().map(redact_url_credentials);
        f.debug_struct("ProxySettings")
            .field("http", &show(&self.http))
            .field("https", &show(&self.https))
            .field("no_proxy", &self.no_proxy)
            .finish()
    }
}

/// What Juju told this hook about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookContext {
    pub identity: UnitIdentity,
    pub model_name: String,
    pub charm_dir: PathBuf,
    /// `JUJU_DISPATCH_PATH`, when set.
    pub dispatch_path: Option<String>,
    /// `JUJU_ACTION_NAME`: set only while running an action.
    pub action_name: Option<String>,
    pub relation: Option<RelationContext>,
    pub storage: Option<StorageContext>,
    pub proxy: ProxySettings,
    /// `JUJU_SECRET_ID`: the secret a `secret-changed` (or other secret hook) is about.
    pub secret_id: Option<String>,
    /// `JUJU_DEBUG` is set (a `juju debug-hooks` session): forward DEBUG logs to juju-log too.
    pub debug: bool,
    pub juju_version: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ContextError {
    #[error(
        "{0} is not set: this program runs only as a Juju hook (through the charm's dispatch)"
    )]
    Missing(&'static str),
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

impl HookContext {
    /// Parse the variables Juju sets; fails only when the unit cannot be identified.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, ContextError> {
        let get = |k: &str| vars.get(k).filter(|v| !v.is_empty()).cloned();
        let unit_name = get("JUJU_UNIT_NAME").ok_or(ContextError::Missing("JUJU_UNIT_NAME"))?;
        let model_uuid = get("JUJU_MODEL_UUID").ok_or(ContextError::Missing("JUJU_MODEL_UUID"))?;
        let identity = UnitIdentity::parse(&unit_name, &model_uuid)?;
        let charm_dir = get("JUJU_CHARM_DIR")
            .or_else(|| get("CHARM_DIR"))
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."));
        let relation = get("JUJU_RELATION").map(|endpoint| RelationContext {
            endpoint,
            relation_id: get("JUJU_RELATION_ID").unwrap_or_default(),
            remote_unit: get("JUJU_REMOTE_UNIT"),
            remote_app: get("JUJU_REMOTE_APP"),
            departing_unit: get("JUJU_DEPARTING_UNIT"),
        });
        let storage = get("JUJU_STORAGE_ID").map(|storage_id| StorageContext {
            storage_id,
            location: get("JUJU_STORAGE_LOCATION"),
            kind: get("JUJU_STORAGE_KIND"),
        });
        Ok(HookContext {
            identity,
            model_name: get("JUJU_MODEL_NAME").unwrap_or_default(),
            charm_dir,
            dispatch_path: get("JUJU_DISPATCH_PATH"),
            action_name: get("JUJU_ACTION_NAME"),
            relation,
            storage,
            proxy: ProxySettings {
                http: get("JUJU_CHARM_HTTP_PROXY"),
                https: get("JUJU_CHARM_HTTPS_PROXY"),
                no_proxy: get("JUJU_CHARM_NO_PROXY"),
            },
            secret_id: get("JUJU_SECRET_ID"),
            debug: get("JUJU_DEBUG").is_some(),
            juju_version: get("JUJU_VERSION"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::state::string_map as vars;

    const BASE: [(&str, &str); 3] = [
        ("JUJU_UNIT_NAME", "github-runner/2"),
        ("JUJU_MODEL_UUID", "uuid-9"),
        (
            "JUJU_CHARM_DIR",
            "/var/lib/juju/agents/unit-github-runner-2/charm",
        ),
    ];

    #[test]
    fn parses_a_plain_hook() {
        let ctx = HookContext::from_vars(&vars(&BASE)).unwrap();
        assert_eq!(ctx.identity.unit_name(), "github-runner/2");
        assert_eq!(ctx.identity.model_uuid, "uuid-9");
        assert_eq!(
            ctx.charm_dir,
            PathBuf::from("/var/lib/juju/agents/unit-github-runner-2/charm")
        );
        assert_eq!(ctx.relation, None);
        assert_eq!(ctx.storage, None);
        assert_eq!(ctx.action_name, None);
        assert!(!ctx.proxy.is_configured());
        assert!(!ctx.debug);
    }

    #[test]
    fn empty_variables_count_as_unset() {
        let mut v = vars(&BASE);
        v.insert("JUJU_CHARM_HTTP_PROXY".into(), String::new());
        v.insert("JUJU_ACTION_NAME".into(), String::new());
        v.insert("JUJU_DEBUG".into(), String::new());
        let ctx = HookContext::from_vars(&v).unwrap();
        assert!(!ctx.proxy.is_configured());
        assert_eq!(ctx.action_name, None);
        assert!(!ctx.debug);
    }

    #[test]
    fn parses_relation_storage_action_and_proxy() {
        let mut v = vars(&BASE);
        v.extend(vars(&[
            ("JUJU_RELATION", "mongodb"),
            ("JUJU_RELATION_ID", "mongodb:3"),
            ("JUJU_REMOTE_UNIT", "mongo/0"),
            ("JUJU_REMOTE_APP", "mongo"),
            ("JUJU_DEPARTING_UNIT", "mongo/0"),
            ("JUJU_STORAGE_ID", "runner/0"),
            ("JUJU_STORAGE_LOCATION", "/storage/juju"),
            ("JUJU_STORAGE_KIND", "filesystem"),
            ("JUJU_ACTION_NAME", "check-runners"),
            ("JUJU_CHARM_HTTPS_PROXY", "http://proxy:3128"),
            ("JUJU_DEBUG", "/tmp/debug"),
        ]));
        let ctx = HookContext::from_vars(&v).unwrap();
        let rel = ctx.relation.unwrap();
        assert_eq!(rel.endpoint, "mongodb");
        assert_eq!(rel.relation_id, "mongodb:3");
        assert_eq!(rel.remote_unit.as_deref(), Some("mongo/0"));
        assert_eq!(rel.remote_app.as_deref(), Some("mongo"));
        assert_eq!(rel.departing_unit.as_deref(), Some("mongo/0"));
        let st = ctx.storage.unwrap();
        assert_eq!(st.storage_id, "runner/0");
        assert_eq!(st.location.as_deref(), Some("/storage/juju"));
        assert_eq!(ctx.action_name.as_deref(), Some("check-runners"));
        assert!(ctx.proxy.is_configured());
        assert!(ctx.debug);
    }

    #[test]
    fn missing_or_bad_unit_is_an_error() {
        assert_eq!(
            HookContext::from_vars(&BTreeMap::new()),
            Err(ContextError::Missing("JUJU_UNIT_NAME"))
        );
        let v = vars(&[("JUJU_UNIT_NAME", "x/0")]);
        assert_eq!(
            HookContext::from_vars(&v),
            Err(ContextError::Missing("JUJU_MODEL_UUID"))
        );
        let v = vars(&[("JUJU_UNIT_NAME", "nonsense"), ("JUJU_MODEL_UUID", "u")]);
        assert!(matches!(
            HookContext::from_vars(&v),
            Err(ContextError::Identity(_))
        ));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let env = HookEnv::from_pairs([("JUJU_CHARM_HTTP_PROXY", "http://u:pw@proxy:3128")]);
        assert!(!format!("{env:?}").contains("pw"));
        let mut v = vars(&BASE);
        v.insert(
            "JUJU_CHARM_HTTPS_PROXY".into(),
            "http://u:pw@proxy:3128/x".into(),
        );
        let ctx = HookContext::from_vars(&v).unwrap();
        let shown = format!("{ctx:?}");
        assert!(!shown.contains("pw"), "{shown}");
        assert!(shown.contains("http://***@proxy:3128/x"), "{shown}");
    }

    #[test]
    fn charm_dir_falls_back_to_charm_dir_variable() {
        let v = vars(&[
            ("JUJU_UNIT_NAME", "x/0"),
            ("JUJU_MODEL_UUID", "u"),
            ("CHARM_DIR", "/c"),
        ]);
        assert_eq!(
            HookContext::from_vars(&v).unwrap().charm_dir,
            PathBuf::from("/c")
        );
    }
}
