//! Relation hooks of the three endpoints. The runner manager will read them: mongodb for the
//! reactive job queue, debug-ssh for tmate servers, cos-agent for metrics and logs.

use super::{CharmError, Context};
use crate::juju::event::{Endpoint, RelationEventKind};

/// No endpoint's data is used yet: every relation event is noted and succeeds.
pub fn handle(
    ctx: &Context<'_>,
    endpoint: Endpoint,
    kind: RelationEventKind,
) -> Result<(), CharmError> {
    if endpoint == Endpoint::CosAgent
        && matches!(kind, RelationEventKind::Joined | RelationEventKind::Changed)
    {
        return Ok(crate::observability::refresh_cos_agent(
            ctx.tools, ctx.hook,
        )?);
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
