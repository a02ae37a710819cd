//! Where reactive mode's job queue lives: the `mq-uri` option or the `mongodb` relation.
//!
//! Pure: parsing a broker URI, reading the relation's data (plain `uris`, or the Juju secret
//! named by `secret-user`), and the rule that `mq-uri` wins. The URI carries a password, so
//! it is held in a [`Secret`]; only the broker's host list ever leaves this module in clear.

use crate::secret::Secret;
use std::collections::BTreeMap;
use std::fmt;

/// The database the charm asks the `mongodb` relation for (the webhook router writes there).
pub const RELATION_DATABASE: &str = "github-runner-webhook-router";
/// kombu's database when a `mongodb://` URI names none: the same URI in the router and
/// here must mean the same database.
pub const KOMBU_DEFAULT_DATABASE: &str = "kombu_default";

/// What `mq-uri` must look like, for the Blocked message.
pub const MQ_URI_EXPECTED: &str =
    "expected mongodb://[user:password@]host[:port][,host...]/[database][?options] \
     or redis://[[user]:password@]host[:port][/db-number], with user and password \
     percent-encoded (the value is not shown: it may hold a password)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    MongoDb,
    Redis,
}

/// A broker URI that parsed. `Debug` shows the kind and hosts only.
#[derive(Clone, PartialEq, Eq)]
pub struct MqUri {
    kind: BrokerKind,
    uri: Secret,
    hosts: String,
    database: String,
}

impl MqUri {
    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    /// `host[:port][,host...]` without credentials: what status messages may name.
    pub fn host(&self) -> &str {
        &self.hosts
    }

    /// MongoDB: the database (kombu's default when the URI names none). Redis: the db number.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The full URI with its password: only for the broker client (see [`Secret::expose`]).
    pub fn secret(&self) -> &Secret {
        &self.uri
    }
}

impl fmt::Debug for MqUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqUri")
            .field("kind", &self.kind)
            .field("hosts", &self.hosts)
            .field("database", &self.database)
            .finish_non_exhaustive()
    }
}

/// Parses `mongodb://…` or `redis://…`. The error never quotes the value.
pub fn parse_mq_uri(text: &str) -> Result<MqUri, String> {
    let (kind, rest) = if let Some(rest) = text.strip_prefix("mongodb://") {
        (BrokerKind::MongoDb, rest)
    } else if let Some(rest) = text.strip_prefix("redis://") {
        (BrokerKind::Redis, rest)
    } else if text.starts_with("mongodb+srv://") {
        return Err(format!(
            "mongodb+srv:// (DNS seed lists) is not supported, list the hosts; {MQ_URI_EXPECTED}"
        ));
    } else {
        return Err(MQ_URI_EXPECTED.into());
    };
    let before_query = rest.split('?').next().unwrap_or("");
    let (userinfo, after_user) = match before_query.rfind('@') {
        Some(at) => (Some(&before_query[..at]), &before_query[at + 1..]),
        None => (None, before_query),
    };
    if let Some(info) = userinfo {
        if info.contains(['/', '@']) || !percent_encoding_ok(info) {
            return Err(format!(
                "the user name and password must be percent-encoded; {MQ_URI_EXPECTED}"
            ));
        }
    }
    let (hosts, path) = match after_user.split_once('/') {
        Some((h, p)) => (h, p),
        None => (after_user, ""),
    };
    check_hosts(kind, hosts)?;
    let database = match kind {
        BrokerKind::MongoDb => {
            if path.contains(['/', '\\', ' ', '"', '$', '.']) {
                return Err(format!("invalid database name; {MQ_URI_EXPECTED}"));
            }
            if path.is_empty() {
                KOMBU_DEFAULT_DATABASE.to_string()
            } else {
                path.to_string()
            }
        }
        BrokerKind::Redis => {
            if rest.contains('?') {
                return Err(format!("redis:// takes no ?options; {MQ_URI_EXPECTED}"));
            }
            match path {
                "" => "0".to_string(),
                n if n.parse::<u16>().is_ok() => n.to_string(),
                _ => {
                    return Err(format!(
                        "the redis database must be a number; {MQ_URI_EXPECTED}"
                    ))
                }
            }
        }
    };
    Ok(MqUri {
        kind,
        uri: Secret::new(text),
        hosts: hosts.to_string(),
        database,
    })
}

fn percent_encoding_ok(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    })
}

fn check_hosts(kind: BrokerKind, hosts: &str) -> Result<(), String> {
    let list: Vec<&str> = hosts.split(',').collect();
    if kind == BrokerKind::Redis && list.len() > 1 {
        return Err(format!("redis:// takes one host; {MQ_URI_EXPECTED}"));
    }
    for host in list {
        let (name, port) = match host.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((addr, tail)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => {
                    (addr, tail.strip_prefix(':'))
                }
                _ => return Err(format!("invalid IPv6 host; {MQ_URI_EXPECTED}")),
            },
            None => match host.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (host, None),
            },
        };
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'));
        if !name_ok {
            return Err(format!("missing or invalid host; {MQ_URI_EXPECTED}"));
        }
        if let Some(port) = port {
            if !matches!(port.parse::<u16>(), Ok(p) if p > 0) {
                return Err(format!("invalid port; {MQ_URI_EXPECTED}"));
            }
        }
    }
    Ok(())
}

/// What the `mongodb` relation provides, read from the remote application's databag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelationSource {
    /// No `mongodb` relation.
    Absent,
    /// Related, but the provider has not (or not yet) sent usable connection data.
    Waiting(String),
    /// The provider asks for what reactive mode does not do (TLS): Blocked, never a
    /// plaintext try.
    Unsupported(String),
    Ready(MqUri),
}

/// The provider's answer -> a source. `secret_content` is the content of the Juju secret
/// named by `secret-user` (None when the databag names none or it could not be read).
/// Newer providers put `uris` (or `username`/`password` with `endpoints`) in that secret;
/// older ones put `uris` in the databag itself.
pub fn relation_source(
    app_data: &BTreeMap<String, String>,
    secret_content: Option<&BTreeMap<String, String>>,
) -> RelationSource {
    let field = |key: &str| {
        secret_content
            .and_then(|s| s.get(key))
            .or_else(|| app_data.get(key))
            .filter(|v| !v.is_empty())
    };
    if field("tls").is_some_and(|tls| tls.eq_ignore_ascii_case("true")) {
        return RelationSource::Unsupported(crate::messages::MONGODB_TLS_UNSUPPORTED.into());
    }
    let uri = match (field("uris"), field("username"), field("password")) {
        (Some(uris), _, _) => uris.clone(),
        (None, Some(user), Some(password)) => match app_data.get("endpoints") {
            Some(endpoints) if !endpoints.is_empty() => {
                let database = app_data
                    .get("database")
                    .filter(|d| !d.is_empty())
                    .map_or(RELATION_DATABASE, String::as_str);
                let mut uri = format!(
                    "mongodb://{}:{}@{endpoints}/{database}?authSource=admin",
                    percent_encode(user),
                    percent_encode(password)
                );
                if let Some(replset) = app_data.get("replset").filter(|r| !r.is_empty()) {
                    uri.push_str(&format!("&replicaSet={}", percent_encode(replset)));
                }
                uri
            }
            _ => return RelationSource::Waiting("mongodb relation: no endpoints yet".into()),
        },
        _ if app_data.contains_key("secret-user") && secret_content.is_none() => {
            return RelationSource::Waiting(
                "mongodb relation: cannot read the credentials secret yet".into(),
            )
        }
        _ => return RelationSource::Waiting("mongodb relation: missing uris".into()),
    };
    match parse_mq_uri(&uri) {
        Ok(parsed) if parsed.kind() == BrokerKind::MongoDb => RelationSource::Ready(parsed),
        Ok(_) => RelationSource::Waiting("mongodb relation: uris is not a mongodb:// URI".into()),
        Err(reason) => {
            RelationSource::Waiting(format!("mongodb relation: unusable uris ({reason})"))
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the charm (as leader) writes in its own application databag on the relation, as
/// the data_interfaces requirer library does, so the MongoDB charm creates a user.
pub fn requirer_app_data() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("database".to_string(), RELATION_DATABASE.to_string()),
        (
            "requested-secrets".to_string(),
            r#"["username", "password", "tls", "tls-ca", "uris"]"#.to_string(),
        ),
    ])
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceOrigin {
    Config,
    Relation,
}

/// The mode the unit runs in, as far as the queue goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueSource {
    /// Pull mode: no queue.
    Off,
    /// Reactive mode is asked for (the relation exists) but cannot start yet.
    Waiting(String),
    /// The relation asks for what reactive mode does not do (Blocked).
    Unsupported(String),
    On {
        uri: MqUri,
        origin: SourceOrigin,
    },
}

/// `mq-uri` wins over the relation; the relation alone turns reactive mode on once ready.
pub fn effective_source(config_uri: Option<&MqUri>, relation: &RelationSource) -> QueueSource {
    match (config_uri, relation) {
        (Some(uri), _) => QueueSource::On {
            uri: uri.clone(),
            origin: SourceOrigin::Config,
        },
        (None, RelationSource::Ready(uri)) => QueueSource::On {
            uri: uri.clone(),
            origin: SourceOrigin::Relation,
        },
        (None, RelationSource::Waiting(why)) => QueueSource::Waiting(why.clone()),
        (None, RelationSource::Unsupported(why)) => QueueSource::Unsupported(why.clone()),
        (None, RelationSource::Absent) => QueueSource::Off,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::juju::state::string_map as map;

    #[test]
    fn mongodb_uris_parse_with_hosts_and_database() {
        let u = parse_mq_uri(
            "mongodb://relation-3:s3cr%40t@h1:27017,h2,10.0.0.3:27018/github-runner-webhook-router?replicaSet=mongodb&authSource=admin",
        )
        .unwrap();
        assert_eq!(u.kind(), BrokerKind::MongoDb);
        assert_eq!(u.host(), "h1:27017,h2,10.0.0.3:27018");
        assert_eq!(u.database(), "github-runner-webhook-router");
        let bare = parse_mq_uri("mongodb://localhost").unwrap();
        assert_eq!(bare.database(), KOMBU_DEFAULT_DATABASE);
        assert_eq!(
            parse_mq_uri("mongodb://[::1]:27017/db").unwrap().host(),
            "[::1]:27017"
        );
    }

    #[test]
    fn redis_uris_parse_with_db_number() {
        let u = parse_mq_uri("redis://:pw@cache.internal:6380/2").unwrap();
        assert_eq!(u.kind(), BrokerKind::Redis);
        assert_eq!(u.host(), "cache.internal:6380");
        assert_eq!(u.database(), "2");
        assert_eq!(parse_mq_uri("redis://r").unwrap().database(), "0");
    }

    #[test]
    fn bad_uris_are_refused_without_quoting_them() {
        for bad in [
            "",
            "http://h",
            "mongodb+srv://u:hunter2@cluster",
            "mongodb://u:hun/ter2@h",
            "mongodb://u:hunter2%zz@h",
            "mongodb://u:hunter2@",
            "mongodb://u:hunter2@h:0",
            "mongodb://u:hunter2@h:99999",
            "mongodb://u:hunter2@h/a.b",
            "redis://u:hunter2@h/x",
            "redis://u:hunter2@h1,h2",
            "redis://u:hunter2@h?ssl=true",
            "mongodb://u:hunter2@[zz]:1",
        ] {
            let err = parse_mq_uri(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{bad}: {err}");
            assert!(err.contains("expected mongodb://"), "{bad}: {err}");
        }
    }

    #[test]
    fn debug_shows_the_host_never_the_password() {
        let u = parse_mq_uri("mongodb://user:hunter2@h1/db").unwrap();
        let shown = format!("{u:?} {:?}", Some(&u));
        assert!(
            shown.contains("h1") && !shown.contains("hunter2"),
            "{shown}"
        );
        assert_eq!(u.secret().expose(), "mongodb://user:hunter2@h1/db");
    }

    #[test]
    fn relation_uris_in_the_databag() {
        let data = map(&[(
            "uris",
            "mongodb://relation-1:pw@m1/github-runner-webhook-router",
        )]);
        match relation_source(&data, None) {
            RelationSource::Ready(u) => assert_eq!(u.host(), "m1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relation_uris_in_the_secret_win_over_the_databag() {
        let data = map(&[("secret-user", "secret:abc"), ("uris", "mongodb://old/db")]);
        let secret = map(&[
            (
                "uris",
                "mongodb://relation-1:pw@m2/github-runner-webhook-router",
            ),
            ("username", "relation-1"),
            ("password", "pw"),
        ]);
        match relation_source(&data, Some(&secret)) {
            RelationSource::Ready(u) => assert_eq!(u.host(), "m2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn relation_credentials_without_uris_are_assembled() {
        let data = map(&[
            ("secret-user", "secret:abc"),
            ("endpoints", "m1:27017,m2:27017"),
            ("replset", "mongodb"),
            ("database", "github-runner-webhook-router"),
        ]);
        let secret = map(&[("username", "relation-1"), ("password", "p@ss/w")]);
        let RelationSource::Ready(u) = relation_source(&data, Some(&secret)) else {
            panic!("not ready")
        };
        assert_eq!(
            u.secret().expose(),
            "mongodb://relation-1:p%40ss%2Fw@m1:27017,m2:27017/github-runner-webhook-router?authSource=admin&replicaSet=mongodb"
        );
    }

    #[test]
    fn relation_without_data_waits_and_never_quotes_the_uri() {
        assert!(matches!(
            relation_source(&BTreeMap::new(), None),
            RelationSource::Waiting(w) if w.contains("missing uris")
        ));
        let unread = map(&[("secret-user", "secret:abc")]);
        assert!(matches!(
            relation_source(&unread, None),
            RelationSource::Waiting(w) if w.contains("secret")
        ));
        let redis = map(&[("uris", "redis://:hunter2@r")]);
        assert!(matches!(
            relation_source(&redis, None),
            RelationSource::Waiting(w) if !w.contains("hunter2")
        ));
        let bad = map(&[("uris", "mongodb://u:hunter2@")]);
        assert!(matches!(
            relation_source(&bad, None),
            RelationSource::Waiting(w) if !w.contains("hunter2")
        ));
    }

    /// Issue 20 item 4: TLS asked for by the provider is never tried in plaintext.
    #[test]
    fn a_provider_asking_for_tls_is_unsupported_wherever_it_says_so() {
        let uris = ("uris", "mongodb://u:pw@m1/github-runner-webhook-router");
        for (data, secret) in [
            (map(&[uris, ("tls", "true")]), None),
            (map(&[uris, ("tls", "True")]), None),
            (
                map(&[uris]),
                Some(map(&[("tls", "true"), ("tls-ca", "PEM")])),
            ),
        ] {
            assert_eq!(
                relation_source(&data, secret.as_ref()),
                RelationSource::Unsupported(crate::messages::MONGODB_TLS_UNSUPPORTED.into())
            );
        }
        assert!(matches!(
            relation_source(&map(&[uris, ("tls", "false")]), None),
            RelationSource::Ready(_)
        ));
        assert_eq!(
            effective_source(None, &RelationSource::Unsupported("x".into())),
            QueueSource::Unsupported("x".into())
        );
    }

    #[test]
    fn config_wins_over_the_relation() {
        let config = parse_mq_uri("redis://r1").unwrap();
        let related = RelationSource::Ready(parse_mq_uri("mongodb://m1/db").unwrap());
        for relation in [
            RelationSource::Absent,
            RelationSource::Waiting("x".into()),
            related.clone(),
        ] {
            assert_eq!(
                effective_source(Some(&config), &relation),
                QueueSource::On {
                    uri: config.clone(),
                    origin: SourceOrigin::Config
                }
            );
        }
        assert!(matches!(
            effective_source(None, &related),
            QueueSource::On { origin: SourceOrigin::Relation, ref uri } if uri.host() == "m1"
        ));
        assert_eq!(
            effective_source(None, &RelationSource::Absent),
            QueueSource::Off
        );
        assert_eq!(
            effective_source(None, &RelationSource::Waiting("w".into())),
            QueueSource::Waiting("w".into())
        );
    }

    #[test]
    fn requirer_data_asks_for_the_router_database_and_secrets() {
        let data = requirer_app_data();
        assert_eq!(data["database"], "github-runner-webhook-router");
        let requested: Vec<String> = serde_json::from_str(&data["requested-secrets"]).unwrap();
        assert_eq!(requested, ["username", "password", "tls", "tls-ca", "uris"]);
    }
}
