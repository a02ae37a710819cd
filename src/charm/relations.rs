//! Relation hooks of the three endpoints. The runner manager will read them: mongodb for the
//! reactive job queue, debug-ssh for tmate servers, cos-agent for metrics and logs.

use super::{CharmError, Context};
use crate::juju::event::{Endpoint, RelationEventKind};

pub fn handle(
    ctx: &Context<'_>,
    endpoint: Endpoint,
    kind: RelationEventKind,
) -> Result<(), CharmError> {
    match endpoint {
        Endpoint::Mongodb => mongodb(ctx, kind),
        Endpoint::DebugSsh => debug_ssh(ctx, kind),
        Endpoint::CosAgent => cos_agent(ctx, kind),
    }
}

fn relation_id<'a>(ctx: &Context<'a>) -> &'a str {
    ctx.hook
        .relation
        .as_ref()
        .map(|r| r.relation_id.as_str())
        .unwrap_or("")
}

fn mongodb(ctx: &Context<'_>, kind: RelationEventKind) -> Result<(), CharmError> {
    tracing::debug!(
        relation = relation_id(ctx),
        event = kind.name(),
        "mongodb: not used yet"
    );
    Ok(())
}

fn debug_ssh(ctx: &Context<'_>, kind: RelationEventKind) -> Result<(), CharmError> {
    tracing::debug!(
        relation = relation_id(ctx),
        event = kind.name(),
        "debug-ssh: not used yet"
    );
    Ok(())
}

fn cos_agent(ctx: &Context<'_>, kind: RelationEventKind) -> Result<(), CharmError> {
    tracing::debug!(
        relation = relation_id(ctx),
        event = kind.name(),
        "cos-agent: not used yet"
    );
    Ok(())
}
