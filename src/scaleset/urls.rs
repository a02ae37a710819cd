//! Pure URL rules: the config URL naming the registration scope, the REST base derived from
//! it, and the Actions service URLs built from the service base the exchange returns.

use super::ScaleSetError;
use crate::github::proxy::is_loopback_host;
use crate::github::GitHubPath;
use url::Url;

/// Every Actions service call carries this (the message poll carries it in `Accept`).
pub const API_VERSION: &str = "6.0-preview";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationScope {
    Repository { owner: String, repo: String },
    Organization(String),
    Enterprise(String),
}

/// `https://HOST/ORG`, `https://HOST/ORG/REPO` or `https://HOST/enterprises/ENT`: the scope
/// the scale set lives in, sent as is in the registration exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigUrl {
    text: String,
    scope: RegistrationScope,
    api_base: Url,
}

impl ConfigUrl {
    /// Trailing slashes are trimmed; any other path depth is rejected. `http://` only for
    /// loopback hosts (tests).
    pub fn parse(text: &str) -> Result<ConfigUrl, ScaleSetError> {
        let trimmed = text.trim().trim_end_matches('/');
        let bad = |reason: &str| ScaleSetError::BadConfigUrl {
            url: trimmed.to_string(),
            reason: reason.to_string(),
        };
        let url = Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment"));
        }
        match url.scheme() {
            "https" => {}
            "http" if is_loopback_host(&host) => {}
            _ => return Err(bad("scheme must be https")),
        }
        let segments: Vec<&str> = url.path_segments().map(|s| s.collect()).unwrap_or_default();
        let scope = match segments.as_slice() {
            [first, ent] if first.eq_ignore_ascii_case("enterprises") && !ent.is_empty() => {
                RegistrationScope::Enterprise(ent.to_string())
            }
            [org] if !org.is_empty() => RegistrationScope::Organization(org.to_string()),
            [owner, repo] if !owner.is_empty() && !repo.is_empty() => {
                RegistrationScope::Repository {
                    owner: owner.to_string(),
                    repo: repo.to_string(),
                }
            }
            _ => {
                return Err(bad(
                    "expected https://<host>/<org>, https://<host>/<owner>/<repo> or https://<host>/enterprises/<enterprise>",
                ))
            }
        };
        let api_base = rest_base(&url, &host).map_err(|e| bad(&e))?;
        Ok(ConfigUrl {
            text: trimmed.to_string(),
            scope,
            api_base,
        })
    }

    /// The config URL of the charm's `github-url` (`scheme://host[:port]`) and `path`.
    pub fn for_path(github_url: &str, path: &GitHubPath) -> Result<ConfigUrl, ScaleSetError> {
        ConfigUrl::parse(&format!(
            "{}/{}",
            github_url.trim_end_matches('/'),
            path.display()
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn scope(&self) -> &RegistrationScope {
        &self.scope
    }

    /// `{api}`: `https://api.<host>` for github.com and GHE.com, `https://<host>/api/v3` for
    /// GitHub Enterprise Server.
    pub fn api_base(&self) -> &Url {
        &self.api_base
    }

    /// `{api}/actions/runner-registration`.
    pub fn registration_exchange_url(&self) -> Url {
        join_segments(&self.api_base, &["actions", "runner-registration"])
    }
}

/// Hosted when the host is github.com, www.github.com, github.localhost or `*.ghe.com`.
fn rest_base(url: &Url, host: &str) -> Result<Url, String> {
    let hosted = matches!(host, "github.com" | "www.github.com" | "github.localhost")
        || host.ends_with(".ghe.com");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    let text = if hosted {
        let host = if host == "www.github.com" {
            "github.com"
        } else {
            host
        };
        format!("{}://api.{host}{port}", url.scheme())
    } else {
        format!("{}://{}{port}/api/v3", url.scheme(), url_host(url))
    };
    Url::parse(&text).map_err(|e| e.to_string())
}

/// The host as it goes in a URL (IPv6 in brackets).
fn url_host(url: &Url) -> String {
    match url.host() {
        Some(url::Host::Ipv6(a)) => format!("[{a}]"),
        Some(h) => h.to_string().to_ascii_lowercase(),
        None => String::new(),
    }
}

fn join_segments(base: &Url, segments: &[&str]) -> Url {
    let mut url = base.clone();
    // A parsed http(s) URL always has a path that can hold segments.
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
    url
}

/// `{svc}` joined with `relative` (`_apis/...`, may end in `/`), `{svc}`'s own query kept,
/// `query` appended (percent-encoded) and `api-version` added unless present.
pub fn service_url(svc: &Url, relative: &str, query: &[(&str, &str)]) -> Url {
    let mut base = svc.clone();
    let kept: Vec<(String, String)> = base.query_pairs().into_owned().collect();
    base.set_query(None);
    base.set_fragment(None);
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let mut url = base
        .join(relative.trim_start_matches('/'))
        .unwrap_or_else(|_| base.clone());
    url.set_query(None);
    {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        for (k, v) in query {
            pairs.append_pair(k, v);
        }
        let has_version = kept.iter().any(|(k, _)| k == "api-version")
            || query.iter().any(|(k, _)| *k == "api-version");
        if !has_version {
            pairs.append_pair("api-version", API_VERSION);
        }
    }
    url
}

/// `{mq}` with `lastMessageId` added to its query when > 0.
pub fn poll_url(mq: &Url, last_message_id: i64) -> Url {
    let mut url = mq.clone();
    if last_message_id > 0 {
        url.query_pairs_mut()
            .append_pair("lastMessageId", &last_message_id.to_string());
    }
    url
}

/// `{mq}` with `/<id>` appended to its path, its query kept.
pub fn message_url(mq: &Url, message_id: i64) -> Url {
    let mut url = mq.clone();
    let path = format!("{}/{message_id}", url.path().trim_end_matches('/'));
    url.set_path(&path);
    url
}

/// A URL the service handed out may carry a token: only https, or http to loopback.
pub fn check_secure(url: &Url) -> Result<(), ScaleSetError> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if url.host_str().is_some_and(is_loopback_host) => Ok(()),
        _ => Err(ScaleSetError::InsecureUrl {
            url: format!(
                "{}://{}{}",
                url.scheme(),
                url.host_str().unwrap_or(""),
                url.path()
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(text: &str) -> String {
        ConfigUrl::parse(text).unwrap().api_base().to_string()
    }

    #[test]
    fn the_rest_base_follows_the_host() {
        assert_eq!(api("https://github.com/octo"), "https://api.github.com/");
        assert_eq!(
            api("https://www.github.com/octo"),
            "https://api.github.com/"
        );
        assert_eq!(
            api("https://github.localhost/o/r"),
            "https://api.github.localhost/"
        );
        assert_eq!(api("https://acme.ghe.com/o"), "https://api.acme.ghe.com/");
        assert_eq!(
            api("https://ghes.example.com/o/r"),
            "https://ghes.example.com/api/v3"
        );
        assert_eq!(
            api("https://GHES.example.com:8443/o"),
            "https://ghes.example.com:8443/api/v3"
        );
        assert_eq!(
            api("http://127.0.0.1:9000/o/r"),
            "http://127.0.0.1:9000/api/v3"
        );
        assert_eq!(api("http://[::1]:9000/o"), "http://[::1]:9000/api/v3");
        assert_eq!(
            ConfigUrl::parse("https://ghes.example.com/o/")
                .unwrap()
                .registration_exchange_url()
                .as_str(),
            "https://ghes.example.com/api/v3/actions/runner-registration"
        );
        assert_eq!(
            ConfigUrl::parse("https://github.com/o")
                .unwrap()
                .registration_exchange_url()
                .as_str(),
            "https://api.github.com/actions/runner-registration"
        );
    }

    #[test]
    fn the_scope_comes_from_the_path_depth() {
        let scope = |t: &str| ConfigUrl::parse(t).unwrap().scope().clone();
        assert_eq!(
            scope("https://github.com/octo//"),
            RegistrationScope::Organization("octo".into())
        );
        assert_eq!(
            scope("https://github.com/octo/hello"),
            RegistrationScope::Repository {
                owner: "octo".into(),
                repo: "hello".into()
            }
        );
        assert_eq!(
            scope("https://github.com/Enterprises/acme"),
            RegistrationScope::Enterprise("acme".into())
        );
        assert_eq!(
            ConfigUrl::parse("https://github.com/octo/")
                .unwrap()
                .as_str(),
            "https://github.com/octo"
        );
        for bad in [
            "https://github.com",
            "https://github.com/",
            "https://github.com/a/b/c",
            "https://github.com//b",
            "http://github.com/octo",
            "ftp://github.com/octo",
            "https://u:p@github.com/octo",
            "https://github.com/octo?x=1",
            "not a url",
        ] {
            assert!(ConfigUrl::parse(bad).is_err(), "{bad}");
        }
        let path = GitHubPath::Repo {
            owner: "o".into(),
            repo: "r".into(),
        };
        assert_eq!(
            ConfigUrl::for_path("https://github.com/", &path)
                .unwrap()
                .as_str(),
            "https://github.com/o/r"
        );
    }

    #[test]
    fn service_urls_join_merge_the_query_and_carry_the_api_version() {
        let with_slash = Url::parse("https://pipelines.example/tenant/123/").unwrap();
        let without = Url::parse("https://pipelines.example/tenant/123").unwrap();
        for svc in [&with_slash, &without] {
            assert_eq!(
                service_url(svc, "_apis/runtime/runnergroups/", &[("groupName", "my group&x")]).as_str(),
                "https://pipelines.example/tenant/123/_apis/runtime/runnergroups/?groupName=my+group%26x&api-version=6.0-preview"
            );
        }
        let with_query = Url::parse("https://b.example/rest?tenant=9").unwrap();
        assert_eq!(
            service_url(&with_query, "/_apis/runtime/runnerscalesets/4", &[]).as_str(),
            "https://b.example/rest/_apis/runtime/runnerscalesets/4?tenant=9&api-version=6.0-preview"
        );
        assert_eq!(
            service_url(&with_slash, "_apis/x", &[("api-version", "7.0")]).as_str(),
            "https://pipelines.example/tenant/123/_apis/x?api-version=7.0"
        );
    }

    #[test]
    fn message_urls_keep_the_queue_query() {
        let mq = Url::parse("https://broker.example/scalesets/message?sessionId=abc").unwrap();
        assert_eq!(poll_url(&mq, 0).as_str(), mq.as_str());
        assert_eq!(
            poll_url(&mq, 17).as_str(),
            "https://broker.example/scalesets/message?sessionId=abc&lastMessageId=17"
        );
        assert_eq!(
            message_url(&mq, 17).as_str(),
            "https://broker.example/scalesets/message/17?sessionId=abc"
        );
    }

    #[test]
    fn urls_from_the_service_must_be_https_or_loopback() {
        assert!(check_secure(&Url::parse("https://x.example/a").unwrap()).is_ok());
        assert!(check_secure(&Url::parse("http://127.0.0.1:5/a").unwrap()).is_ok());
        assert!(check_secure(&Url::parse("http://x.example/a?token=s").unwrap()).is_err());
        let err = check_secure(&Url::parse("http://x.example/a?token=s").unwrap()).unwrap_err();
        assert!(!err.to_string().contains("token=s"));
    }
}
