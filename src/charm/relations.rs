//! Relation hooks of the three endpoints. The runner manager will read them: mongodb for the
//! reactive job queue, debug-ssh for tmate servers, cos-agent for metrics and logs.

use super::{CharmError, Context};
use crate::juju::event::{Endpoint, RelationEventKind};

/// The leader asks the mongodb provider for the router's database when the relation comes
/// up; otherwise every relation event is noted and succeeds.
pub fn handle(
    ctx: &Context<'_>,
    endpoint: Endpoint,
    kind: RelationEventKind,
) -> Result<(), CharmError> {
    if endpoint == Endpoint::Mongodb
        && matches!(kind, RelationEventKind::Created | RelationEventKind::Joined)
    {
        crate::reactive::relation::publish_request(ctx.tools, relation_id(ctx))?;
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
