//! The client as the App's [`TokenMinter`]: `POST {api}/app/installations/{id}/access_tokens`
//! with the JWT as bearer (201 with `token` and `expires_at`). On GitHub Enterprise Server
//! the base is `<github-url>/api/v3`, so the path is `/api/v3/app/...`.

use serde::Deserialize;

use super::GitHubClient;
use crate::credential::app::{parse_expires_at, InstallationToken};
use crate::credential::provider::TokenMinter;
use crate::credential::AppCredential;
use crate::github::calls::ApiCall;
use crate::github::GitHubError;
use crate::secret::Secret;

#[derive(Deserialize)]
struct AccessTokenJson {
    token: String,
    expires_at: String,
}

impl TokenMinter for GitHubClient {
    fn mint(&self, app: &AppCredential, jwt: &Secret) -> Result<InstallationToken, GitHubError> {
        let id = app.installation_id.to_string();
        let url = self.api_url(&["app", "installations", &id, "access_tokens"]);
        let reply = self.send_as(ApiCall::InstallationToken, "POST", &url, None, jwt)?;
        let answer: AccessTokenJson = self.parse(&reply, "POST", &url)?;
        let expires_at =
            parse_expires_at(&answer.expires_at).ok_or_else(|| GitHubError::Protocol {
                method: "POST".into(),
                path: url.path().to_string(),
                reason: format!("expires_at {:?} is not a UTC time", answer.expires_at),
            })?;
        Ok(InstallationToken {
            token: Secret::new(answer.token),
            expires_at,
            obtained_at: self.clock.now_epoch(),
        })
    }
}
