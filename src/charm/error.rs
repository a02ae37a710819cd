//! The one way a hook fails.

use super::setup::SetupError;
use crate::host::lock::LockError;
use crate::juju::HookToolError;

/// A hook that fails: the unit goes into error state and Juju retries the hook.
#[derive(Debug, thiserror::Error)]
pub enum CharmError {
    #[error(transparent)]
    HookTool(#[from] HookToolError),
    /// Another reconcile or flush held the unit lock for longer than the bounded wait.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The host could not be made ready for a reason a retry may fix.
    #[error(transparent)]
    Setup(#[from] SetupError),
}
