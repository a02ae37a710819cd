//! What a GitHub answer means, from its status, rate-limit headers and message alone:
//! GitHub's rules for telling a rate limit from a permission error, as pure functions.

use super::GitHubPath;

/// The parts of an answer that decide what it means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseFacts {
    pub status: u16,
    pub ratelimit_remaining: Option<String>,
    pub ratelimit_reset: Option<String>,
    pub retry_after: Option<String>,
    pub accepted_permissions: Option<String>,
    /// `message` of the error body, if any.
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Class {
    Success,
    /// 5xx: may pass on a retry.
    ServerError,
    /// Secondary rate limit: wait `retry_after` seconds if given; `reset_epoch` when the
    /// answer also says the primary limit is spent.
    SecondaryLimit {
        retry_after: Option<u64>,
        reset_epoch: Option<u64>,
    },
    /// Primary limit spent: nothing passes before `reset_epoch`.
    PrimaryLimit {
        reset_epoch: Option<u64>,
    },
    Unauthorized,
    /// 403 without rate-limit markers: a permission problem; never retried.
    Forbidden {
        accepted_permissions: Option<String>,
    },
    NotFound,
    Conflict,
    Unprocessable,
    /// Any other 4xx (400, 410, ...).
    OtherClientError,
}

fn parse_secs(v: &Option<String>) -> Option<u64> {
    v.as_deref().and_then(|s| s.trim().parse().ok())
}

pub fn classify(f: &ResponseFacts) -> Class {
    match f.status {
        100..=399 => Class::Success,
        401 => Class::Unauthorized,
        403 | 429 => classify_limit(f),
        404 => Class::NotFound,
        409 => Class::Conflict,
        422 => Class::Unprocessable,
        500..=599 => Class::ServerError,
        _ => Class::OtherClientError,
    }
}

/// GitHub's rules: `retry-after` or a "secondary rate limit" message means secondary;
/// `x-ratelimit-remaining: 0` means primary; a 429 is always some rate limit; any other
/// 403 is a permission error.
fn classify_limit(f: &ResponseFacts) -> Class {
    let retry_after = parse_secs(&f.retry_after);
    let exhausted = f.ratelimit_remaining.as_deref().map(str::trim) == Some("0");
    let reset_epoch = parse_secs(&f.ratelimit_reset);
    let message = f.message.to_ascii_lowercase();
    let says_secondary = message.contains("secondary rate limit");
    if retry_after.is_some() || says_secondary {
        return Class::SecondaryLimit {
            retry_after,
            reset_epoch: if exhausted { reset_epoch } else { None },
        };
    }
    if exhausted || message.contains("rate limit") {
        return Class::PrimaryLimit {
            reset_epoch: if exhausted { reset_epoch } else { None },
        };
    }
    if f.status == 429 {
        return Class::SecondaryLimit {
            retry_after: None,
            reset_epoch: None,
        };
    }
    Class::Forbidden {
        accepted_permissions: f.accepted_permissions.clone(),
    }
}

/// What the token needs for runner endpoints on `path`, for a 403 error message.
pub fn permission_needed(path: &GitHubPath, accepted: Option<&str>) -> String {
    let base = match path {
        GitHubPath::Repo { .. } => {
            "repository runners need a classic token with the `repo` scope or a fine-grained \
             token with repository permission Administration: write"
        }
        GitHubPath::Org(_) => {
            "organisation runners need a classic token with the `admin:org` scope or a \
             fine-grained token with organisation permission Self-hosted runners: write"
        }
    };
    match accepted.map(str::trim).filter(|a| !a.is_empty()) {
        Some(a) => format!("{base} (GitHub accepts: {a})"),
        None => base.to_string(),
    }
}

/// The `rel="next"` URL of a `Link` header, if any.
pub fn next_link(header: &str) -> Option<&str> {
    header.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| matches!(p.trim(), "rel=\"next\"" | "rel=next"));
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        is_next.then_some(url)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(status: u16) -> ResponseFacts {
        ResponseFacts {
            status,
            ..Default::default()
        }
    }

    #[test]
    fn plain_statuses() {
        for (status, class) in [
            (200, Class::Success),
            (201, Class::Success),
            (204, Class::Success),
            (401, Class::Unauthorized),
            (404, Class::NotFound),
            (409, Class::Conflict),
            (422, Class::Unprocessable),
            (500, Class::ServerError),
            (502, Class::ServerError),
            (503, Class::ServerError),
            (504, Class::ServerError),
            (400, Class::OtherClientError),
            (410, Class::OtherClientError),
        ] {
            assert_eq!(classify(&facts(status)), class, "{status}");
        }
    }

    #[test]
    fn forbidden_without_markers_is_a_permission_error() {
        let mut f = facts(403);
        f.message = "Resource not accessible by personal access token".into();
        f.ratelimit_remaining = Some("4999".into());
        f.accepted_permissions = Some("administration=write".into());
        assert_eq!(
            classify(&f),
            Class::Forbidden {
                accepted_permissions: Some("administration=write".into())
            }
        );
    }

    #[test]
    fn primary_exhaustion_on_403_and_429() {
        for status in [403, 429] {
            let mut f = facts(status);
            f.ratelimit_remaining = Some("0".into());
            f.ratelimit_reset = Some("1700000000".into());
            f.message = "API rate limit exceeded for user ID 1.".into();
            assert_eq!(
                classify(&f),
                Class::PrimaryLimit {
                    reset_epoch: Some(1_700_000_000)
                }
            );
        }
        // The message alone still says rate limit, without a usable reset.
        let mut f = facts(403);
        f.message = "API rate limit exceeded".into();
        assert_eq!(classify(&f), Class::PrimaryLimit { reset_epoch: None });
    }

    #[test]
    fn secondary_limits_by_header_or_message() {
        let mut f = facts(429);
        f.retry_after = Some("30".into());
        assert_eq!(
            classify(&f),
            Class::SecondaryLimit {
                retry_after: Some(30),
                reset_epoch: None
            }
        );
        let mut f = facts(403);
        f.message = "You have exceeded a Secondary Rate Limit. Please wait.".into();
        f.ratelimit_remaining = Some("12".into());
        f.ratelimit_reset = Some("99".into());
        assert_eq!(
            classify(&f),
            Class::SecondaryLimit {
                retry_after: None,
                reset_epoch: None
            }
        );
        // Secondary with the primary also spent carries the reset.
        f.ratelimit_remaining = Some("0".into());
        assert_eq!(
            classify(&f),
            Class::SecondaryLimit {
                retry_after: None,
                reset_epoch: Some(99)
            }
        );
        // A bare 429 is a rate limit, never a permission error.
        assert_eq!(
            classify(&facts(429)),
            Class::SecondaryLimit {
                retry_after: None,
                reset_epoch: None
            }
        );
        // An unparsable retry-after is ignored, not trusted.
        let mut f = facts(429);
        f.retry_after = Some("Wed, 21 Oct 2015 07:28:00 GMT".into());
        assert_eq!(
            classify(&f),
            Class::SecondaryLimit {
                retry_after: None,
                reset_epoch: None
            }
        );
    }

    #[test]
    fn permission_hints_name_the_scope_for_each_path_kind() {
        let repo = GitHubPath::Repo {
            owner: "o".into(),
            repo: "r".into(),
        };
        let org = GitHubPath::Org("o".into());
        let r = permission_needed(&repo, None);
        assert!(
            r.contains("`repo` scope") && r.contains("Administration: write"),
            "{r}"
        );
        let o = permission_needed(&org, Some("organization_self_hosted_runners=write"));
        assert!(
            o.contains("`admin:org`") && o.contains("Self-hosted runners: write"),
            "{o}"
        );
        assert!(o.ends_with("(GitHub accepts: organization_self_hosted_runners=write)"));
        assert_eq!(
            permission_needed(&org, Some("  ")),
            permission_needed(&org, None)
        );
    }

    #[test]
    fn next_link_parsing() {
        let h = "<https://api.github.com/x?page=2>; rel=\"next\", <https://api.github.com/x?page=5>; rel=\"last\"";
        assert_eq!(next_link(h), Some("https://api.github.com/x?page=2"));
        let h = "<https://a/x?page=1>; rel=\"prev\", <https://a/x?page=1>; rel=\"first\"";
        assert_eq!(next_link(h), None);
        let h = "<https://a/x?page=1>; rel=\"first\", <https://a/x?page=3>; rel=\"next\"";
        assert_eq!(next_link(h), Some("https://a/x?page=3"));
        assert_eq!(next_link(""), None);
        assert_eq!(next_link("garbage"), None);
        assert_eq!(next_link("https://a/x; rel=\"next\""), None);
    }
}
