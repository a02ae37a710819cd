//! Relation hooks of the three endpoints. The runner manager will read them: mongodb for the
//! reactive job queue, debug-ssh for tmate servers, cos-agent for metrics and logs.

use super::{CharmError, Context};
use crate::juju::event::{Endpoint, RelationEventKind};

/// debug-ssh: the tmate servers changed, so the ACL is rebuilt and idle runners are
/// replaced by ones that see the change. The other endpoints' data is not used yet: their
/// events are noted and succeed.
pub fn handle(
    ctx: &Context<'_>,
    endpoint: Endpoint,
    kind: RelationEventKind,
) -> Result<(), CharmError> {
    // created/joined: the remote unit has published nothing yet; changed follows.
    if endpoint == Endpoint::DebugSsh
        && matches!(
            kind,
            RelationEventKind::Changed | RelationEventKind::Departed | RelationEventKind::Broken
        )
    {
        return debug_ssh_changed(ctx);
    }
    tracing::debug!(
        relation = relation_id(ctx),
        event = kind.name(),
        "{}: not used yet",
        endpoint.name()
    );
    Ok(())
}

fn relation_id<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.hook
        .relation
        .as_ref()
        .map(|r| r.relation_id.as_str())
        .unwrap_or("")
}

fn debug_ssh_changed(ctx: &Context<'_>) -> Result<(), CharmError> {
    let Some(rt) = super::reconcile::prepare(ctx)? else {
        return Ok(());
    };
    let edges = super::setup::HostEdges::from_env(ctx.paths);
    if let Err(e) = super::setup::converge_runner_network(ctx, &rt.config, &edges) {
        return super::setup::report(ctx, e);
    }
    let mode = crate::manager::flush::FlushMode::FlushIdle;
    let options = super::reconcile::Options::default();
    super::reconcile::flush_then_reconcile(ctx, &rt, mode, &rt, &options).map(drop)
}
