//! What every stage of a hook may use: the hook tools, the hook's context, the host paths.

use crate::juju::context::HookContext;
use crate::juju::HookTools;
use crate::paths::HostPaths;

/// The hook's edges to Juju and the host's paths.
pub struct Context<'a> {
    pub tools: &'a dyn HookTools,
    pub hook: &'a HookContext,
    pub paths: &'a HostPaths,
}

/// The charm's version: `juju status` shows it as the application version, and the host
/// setup's fingerprint includes it (a new charm checks the host again).
pub const CHARM_VERSION: &str = env!("CARGO_PKG_VERSION");

impl Context<'_> {
    /// The id of the `endpoint` relation this hook tears down (`<endpoint>-relation-broken`):
    /// it counts as gone for what the hook converges.
    pub fn broken_relation(&self, endpoint: &str) -> Option<&str> {
        self.hook
            .dispatch_path
            .as_deref()
            .filter(|p| {
                p.rsplit('/')
                    .next()
                    .is_some_and(|hook| hook == format!("{endpoint}-relation-broken"))
            })
            .and(self.hook.relation.as_ref())
            .map(|r| r.relation_id.as_str())
    }

    /// What this hook tells the job-queue source reading: the `mongodb` relation it tears
    /// down, and the secret a `secret-changed` hook is about.
    pub fn queue_hook_facts(&self) -> crate::reactive::relation::HookFacts<'_> {
        crate::reactive::relation::HookFacts {
            broken: self.broken_relation(crate::reactive::relation::ENDPOINT),
            changed_secret: self.hook.secret_id.as_deref(),
        }
    }
}
