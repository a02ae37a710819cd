//! What can go wrong talking to the Actions service, in terms an operator (or the listener
//! deciding what to do next) can act on. Messages carry method, path and status, never a
//! token, a JIT config or a message-queue URL's query.

use crate::github::proxy::ProxyError;
use crate::github::GitHubError;

#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    #[error("scale-set registration URL {url:?} is not usable: {reason}")]
    BadConfigUrl { url: String, reason: String },
    #[error("could not get a runner registration token from GitHub: {0}")]
    RegistrationToken(#[source] GitHubError),
    #[error("GitHub refused the runner-registration exchange ({status} on POST {path}): the registration token was not accepted for {config_url}; check that the token may manage self-hosted runners there")]
    RegistrationRefused {
        status: u16,
        path: String,
        config_url: String,
    },
    #[error("the Actions service rejected a fresh admin token (401 on {method} {path}); check the token's runner permissions")]
    AdminUnauthorized { method: String, path: String },
    #[error("the Actions service denied {method} {path} (403): {message}; the token needs Administration (repository) or Self-hosted runners (organisation) read and write")]
    Forbidden {
        method: String,
        path: String,
        message: String,
    },
    /// Another live session holds the scale set (another listener, or a crashed one's
    /// session that has not expired yet): back off and try again.
    #[error("scale set {scale_set_id} already has an active message session ({message}); another listener holds it or a crashed listener's session has not expired yet: waiting and retrying")]
    SessionConflict { scale_set_id: u64, message: String },
    /// 401 on a message-queue call: refresh the session, then retry once.
    #[error(
        "the message queue token expired (401 on {method} {path}); the session must be refreshed"
    )]
    MessageQueueTokenExpired { method: String, path: String },
    /// 404 `RunnerScaleSetNotFoundException`: GitHub deleted the scale set (dormancy, an
    /// incident, an operator): create it again and reset the message cursor.
    #[error("scale set {scale_set_id} no longer exists on GitHub ({method} {path}); it must be created again")]
    ScaleSetNotFound {
        scale_set_id: u64,
        method: String,
        path: String,
    },
    /// The session was evicted on the service's side: create a new one.
    #[error("message session of scale set {scale_set_id} is gone on GitHub's side ({method} {path}); a new session must be created")]
    SessionNotFound {
        scale_set_id: u64,
        method: String,
        path: String,
    },
    #[error(
        "runner group {name:?} does not exist on GitHub; set `group` to an existing runner group"
    )]
    RunnerGroupNotFound { name: String },
    #[error("a runner named {name:?} is already registered on GitHub; remove that registration or use another name")]
    RunnerExists { name: String },
    #[error("the Actions service is rate limiting {method} {path} (429{}); retrying later", retry_after.map(|s| format!(", retry after {s} s")).unwrap_or_default())]
    RateLimited {
        method: String,
        path: String,
        retry_after: Option<u64>,
    },
    #[error("the Actions service answered {status} on {method} {path}, also after retries")]
    Server {
        method: String,
        path: String,
        status: u16,
    },
    #[error("could not reach {host} for {method} {path}: {reason}")]
    Transport {
        host: String,
        method: String,
        path: String,
        reason: String,
    },
    #[error("the Actions service answered {status} on {method} {path}: {type_name} {message}")]
    Service {
        status: u16,
        method: String,
        path: String,
        /// The .NET exception type (`typeName`), possibly assembly-qualified.
        type_name: String,
        message: String,
    },
    #[error("unexpected answer for {method} {path}: {reason}")]
    Protocol {
        method: String,
        path: String,
        reason: String,
    },
    #[error("refusing plain http:// URL {url} from GitHub: only loopback hosts may use http")]
    InsecureUrl { url: String },
    #[error(transparent)]
    Proxy(#[from] ProxyError),
}
