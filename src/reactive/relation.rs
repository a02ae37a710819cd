//! The `mongodb` relation through the hook tools: the provider's connection data in, the
//! requirer's request out. Decisions are in [`super::source`].

use super::source::{
    effective_source, relation_source, requirer_app_data, MqUri, QueueSource, RelationSource,
};
use crate::juju::{HookToolError, HookTools, SecretRead};
use std::collections::BTreeMap;

pub const ENDPOINT: &str = "mongodb";

/// The provider's secrets (data_interfaces): credentials and URIs, and the TLS fields.
const SECRET_FIELDS: [&str; 2] = ["secret-user", "secret-tls"];

/// What this hook knows about the relation before reading it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookFacts<'a> {
    /// The relation being torn down in this hook (`mongodb-relation-broken`): it counts
    /// as gone.
    pub broken: Option<&'a str>,
    /// The secret a `secret-changed` hook is about: read with `--refresh`, so this unit
    /// follows the provider's new revision (every other read gets the tracked one).
    pub changed_secret: Option<&'a str>,
}

/// Reads the `mongodb` relation (limit 1). Calls: `relation-ids`, then `relation-list` and
/// `relation-get --app` when related, and `secret-get` for each secret the provider names.
/// A failing hook tool is an error (the hook fails and Juju retries it); a secret not
/// readable yet (not granted) is Waiting.
pub fn read_relation_source(
    tools: &dyn HookTools,
    facts: HookFacts<'_>,
) -> Result<RelationSource, HookToolError> {
    let broken = facts.broken;
    let ids = tools.relation_ids(ENDPOINT)?;
    let Some(id) = ids.iter().find(|id| Some(id.as_str()) != broken) else {
        return Ok(RelationSource::Absent);
    };
    // `relation-get --app` takes a unit of the remote application to name it.
    let units = tools.relation_list(id)?;
    let Some(unit) = units.first() else {
        return Ok(RelationSource::Waiting(
            "mongodb relation: no provider unit yet".into(),
        ));
    };
    let app_data = tools.relation_get(id, unit, true)?;
    let mut content: Option<BTreeMap<String, String>> = None;
    for field in SECRET_FIELDS {
        let Some(secret_id) = app_data.get(field).filter(|s| !s.is_empty()) else {
            continue;
        };
        let read = SecretRead::in_hook(facts.changed_secret, secret_id);
        match tools.secret_get(secret_id, read) {
            Ok(values) => content.get_or_insert_with(BTreeMap::new).extend(values),
            // Not granted yet (the provider grants it after creating the user): wait.
            Err(err) if field == "secret-user" => {
                tracing::info!("mongodb relation: credentials secret not readable yet: {err}");
                return Ok(relation_source(&app_data, None));
            }
            Err(err) => {
                return Ok(RelationSource::Waiting(format!(
                    "mongodb relation: cannot read the TLS secret yet ({err})"
                )))
            }
        }
    }
    Ok(relation_source(&app_data, content.as_ref()))
}

/// The effective queue source for this hook: `mq-uri` when set (no hook tool is called: it
/// wins anyway), else the `mongodb` relation as [`read_relation_source`] reads it.
pub fn read_queue_source(
    tools: &dyn HookTools,
    config_uri: Option<&MqUri>,
    facts: HookFacts<'_>,
) -> Result<QueueSource, HookToolError> {
    let relation = match config_uri {
        Some(_) => RelationSource::Absent,
        None => read_relation_source(tools, facts)?,
    };
    Ok(effective_source(config_uri, &relation))
}

/// As leader, asks the provider for the router's database and for its credentials in a Juju
/// secret (data_interfaces' requirer fields). Idempotent.
pub fn publish_request(tools: &dyn HookTools, relation_id: &str) -> Result<(), HookToolError> {
    if !tools.is_leader()? {
        return Ok(());
    }
    tools.relation_set(relation_id, true, &requirer_app_data())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::memory::{MemoryHookTools, MemoryRelation};
    use std::collections::BTreeMap;

    fn related(app_data: &[(&str, &str)]) -> MemoryHookTools {
        let tools = MemoryHookTools::default();
        let data = app_data
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tools.lock().relations.insert(
            "mongodb:7".into(),
            MemoryRelation {
                units: vec!["mongodb/0".into()],
                data: BTreeMap::from([("mongodb".into(), data)]),
            },
        );
        tools
    }

    #[test]
    fn no_relation_is_absent() {
        let tools = MemoryHookTools::default();
        assert_eq!(
            read_relation_source(&tools, HookFacts::default()).unwrap(),
            RelationSource::Absent
        );
    }

    #[test]
    fn the_broken_relation_counts_as_gone() {
        let tools = related(&[("uris", "mongodb://m/db")]);
        assert_eq!(
            read_relation_source(
                &tools,
                HookFacts {
                    broken: Some("mongodb:7"),
                    ..HookFacts::default()
                }
            )
            .unwrap(),
            RelationSource::Absent
        );
    }

    #[test]
    fn uris_from_the_secret_named_by_secret_user() {
        let tools = related(&[("secret-user", "secret:u1")]);
        assert!(matches!(
            read_relation_source(&tools, HookFacts::default()).unwrap(),
            RelationSource::Waiting(_)
        ));
        tools.lock().secrets.insert(
            "secret:u1".into(),
            BTreeMap::from([("uris".into(), "mongodb://u:pw@m9/db".into())]),
        );
        match read_relation_source(&tools, HookFacts::default()).unwrap() {
            RelationSource::Ready(u) => assert_eq!(u.host(), "m9"),
            other => panic!("{other:?}"),
        }
    }

    /// Issue 20 items 4 and 7: `secret-changed` for the relation's secret refreshes it
    /// (and only that one); a failing `relation-get` fails the hook instead of reading as
    /// "no relation".
    #[test]
    fn the_changed_secret_is_refreshed_and_a_failing_tool_is_an_error() {
        let tools = related(&[("secret-user", "secret:u1")]);
        tools.lock().secrets.insert(
            "secret:u1".into(),
            BTreeMap::from([("uris".into(), "mongodb://u:pw@m9/db".into())]),
        );
        let changed = HookFacts {
            changed_secret: Some("secret://model-uuid/u1"),
            ..HookFacts::default()
        };
        assert!(matches!(
            read_relation_source(&tools, changed).unwrap(),
            RelationSource::Ready(_)
        ));
        read_relation_source(&tools, HookFacts::default()).unwrap();
        assert_eq!(
            tools.lock().secret_reads,
            [
                ("secret:u1".to_string(), SecretRead::Refresh),
                ("secret:u1".to_string(), SecretRead::Tracked)
            ]
        );
        tools.lock().failing.insert(
            "relation-get".into(),
            (1, "ERROR connection refused".into()),
        );
        assert!(read_relation_source(&tools, HookFacts::default()).is_err());
    }

    #[test]
    fn mq_uri_wins_without_reading_the_relation() {
        let tools = related(&[("uris", "mongodb://m/db")]);
        let config = crate::reactive::source::parse_mq_uri("redis://r").unwrap();
        let source = read_queue_source(&tools, Some(&config), HookFacts::default()).unwrap();
        assert!(matches!(source, QueueSource::On { ref uri, .. } if uri.host() == "r"));
        assert!(tools.lock().calls.is_empty());
        let source = read_queue_source(&tools, None, HookFacts::default()).unwrap();
        assert!(matches!(source, QueueSource::On { ref uri, .. } if uri.host() == "m"));
    }

    #[test]
    fn only_the_leader_publishes_the_request() {
        let tools = related(&[]);
        publish_request(&tools, "mongodb:7").unwrap();
        assert!(!tools.lock().relations["mongodb:7"]
            .data
            .contains_key("<local-app>"));
        tools.lock().leader = true;
        publish_request(&tools, "mongodb:7").unwrap();
        let data = tools.lock().relations["mongodb:7"].data["<local-app>"].clone();
        assert_eq!(data["database"], "github-runner-webhook-router");
    }
}
