//! What a GitHub failure means for the unit's status: Blocked when only the operator can fix
//! it (token, permissions, path, group), Maintenance when time will (rate limit, outage).

use super::download::DownloadError;
use super::GitHubError;
use crate::juju::Status;
use crate::messages;

/// How the charm should treat an error from the GitHub client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// The operator must change configuration or the token.
    Blocked(String),
    /// Nothing passes before `reset_epoch`; retry after it.
    RateLimited { reset_epoch: u64 },
    /// A bad minute at GitHub or on the network; the next reconcile retries.
    Transient(String),
}

pub fn disposition(err: &GitHubError) -> Disposition {
    match err {
        GitHubError::Unauthorized { .. }
        | GitHubError::Forbidden { .. }
        | GitHubError::NotFound { .. }
        | GitHubError::GroupNotFound { .. }
        | GitHubError::Credential { .. } => Disposition::Blocked(blocked_message(err)),
        GitHubError::RateLimited { reset_epoch, .. } => Disposition::RateLimited {
            reset_epoch: *reset_epoch,
        },
        GitHubError::Conflict { .. }
        | GitHubError::Unprocessable { .. }
        | GitHubError::Server { .. }
        | GitHubError::Transport { .. }
        | GitHubError::Protocol { .. } => Disposition::Transient(messages::github_transient(err)),
    }
}

fn blocked_message(err: &GitHubError) -> String {
    match err {
        GitHubError::Unauthorized { .. } => messages::GITHUB_TOKEN_INVALID.to_string(),
        GitHubError::Forbidden {
            method,
            path,
            needed,
        } => messages::github_token_lacks_permission(method, path, needed),
        GitHubError::NotFound { method, path } => messages::github_not_found(method, path),
        other => other.to_string(),
    }
}

/// The status to set for `err`.
pub fn status_for(err: &GitHubError) -> Status {
    match disposition(err) {
        Disposition::Blocked(m) => Status::Blocked(m),
        Disposition::RateLimited { reset_epoch } => rate_limit_status(reset_epoch),
        Disposition::Transient(m) => Status::Maintenance(m),
    }
}

/// Maintenance "GitHub rate limit reached, retrying after HH:MM UTC".
pub fn rate_limit_status(reset_epoch: u64) -> Status {
    Status::Maintenance(messages::rate_limited(reset_epoch))
}

pub use crate::messages::hh_mm_utc;

/// A failed runner download never blocks: the old tarball stays and the next reconcile
/// retries.
pub fn download_status(err: &DownloadError) -> Status {
    Status::Maintenance(messages::binary_update_failed(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp() -> (String, String) {
        (
            "GET".to_string(),
            "/api/v3/repos/o/r/actions/runners".to_string(),
        )
    }

    #[test]
    fn operator_fixable_errors_block_with_the_fix() {
        let (method, path) = mp();
        let cases = [
            (
                GitHubError::Unauthorized {
                    method: method.clone(),
                    path: path.clone(),
                },
                "set a valid `token`",
            ),
            (
                GitHubError::Forbidden {
                    method: method.clone(),
                    path: path.clone(),
                    needed: "repository runners need the `repo` scope".into(),
                },
                "need the `repo` scope",
            ),
            (
                GitHubError::NotFound {
                    method: method.clone(),
                    path: path.clone(),
                },
                "check `path`",
            ),
            (
                GitHubError::GroupNotFound {
                    org: "o".into(),
                    group: "gpu".into(),
                },
                "\"gpu\"",
            ),
        ];
        for (err, fix) in cases {
            match status_for(&err) {
                Status::Blocked(m) => assert!(m.contains(fix), "{m}"),
                other => panic!("{err}: {other:?}"),
            }
        }
    }

    #[test]
    fn rate_limits_say_when_in_utc() {
        let (method, path) = mp();
        // 2023-11-14T22:13:20Z
        let err = GitHubError::RateLimited {
            method,
            path,
            reset_epoch: 1_700_000_000,
        };
        assert_eq!(
            status_for(&err),
            Status::Maintenance("GitHub rate limit reached, retrying after 22:13 UTC".into())
        );
        assert_eq!(hh_mm_utc(0), "00:00");
        assert_eq!(hh_mm_utc(86_399), "23:59");
        assert_eq!(hh_mm_utc(86_400 + 3_660), "01:01");
    }

    #[test]
    fn outages_are_maintenance_and_retried() {
        let (method, path) = mp();
        for err in [
            GitHubError::Server {
                method: method.clone(),
                path: path.clone(),
                status: 502,
            },
            GitHubError::Transport {
                method: method.clone(),
                path: path.clone(),
                reason: "Connection Failed".into(),
            },
            GitHubError::Conflict {
                method: method.clone(),
                path: path.clone(),
                message: "exists".into(),
            },
            GitHubError::Unprocessable {
                method: method.clone(),
                path: path.clone(),
                message: "busy".into(),
            },
            GitHubError::Protocol {
                method: method.clone(),
                path: path.clone(),
                reason: "bad JSON".into(),
            },
        ] {
            match status_for(&err) {
                Status::Maintenance(m) => {
                    assert!(m.contains("retrying at the next reconcile"), "{m}");
                    assert!(m.contains(&path), "{m}");
                }
                other => panic!("{err}: {other:?}"),
            }
        }
    }
}
