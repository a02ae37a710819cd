//! config-changed: validate, remember the token's fingerprint, set the status.

use super::{status, CharmError, Context};
use crate::juju::state::UnitState;

pub fn handle(ctx: &Context<'_>) -> Result<(), CharmError> {
    let Some(config) = status::config_or_block(ctx)? else {
        return Ok(());
    };
    let before = UnitState::load(ctx.tools)?;
    let mut after = before.clone();
    if before.token_changed(&config.token) {
        if before.token_fingerprint.is_some() {
            tracing::info!("the GitHub token changed");
        }
        after.token_fingerprint = Some(config.token.fingerprint());
    }
    after.save(&before, ctx.tools)?;
    status::set_ready(ctx)
}

#[cfg(test)]
mod tests {
    use crate::charm::testing::{run, valid_config};
    use crate::juju::event::Event;
    use crate::juju::memory::MemoryHookTools;
    use crate::juju::state::TOKEN_FINGERPRINT_KEY;
    use crate::secret::Secret;

    #[test]
    fn remembers_only_the_fingerprint() {
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        run(&tools, &Event::ConfigChanged).unwrap();
        let state = tools.lock().unit_state.clone();
        assert_eq!(
            state.get(TOKEN_FINGERPRINT_KEY),
            Some(&Secret::new("ghp_secret").fingerprint())
        );
        assert!(!state.values().any(|v| v.contains("ghp_secret")));
        assert!(tools.logs().is_empty());
    }

    #[test]
    fn invalid_config_leaves_state_alone() {
        let tools = MemoryHookTools::default();
        tools
            .lock()
            .config
            .insert("token".into(), "ghp_secret".into());
        run(&tools, &Event::ConfigChanged).unwrap();
        assert!(tools.lock().unit_state.is_empty());
        assert!(!tools.lock().calls.iter().any(|c| c.starts_with("state-")));
    }

    #[test]
    fn unchanged_token_writes_nothing() {
        let tools = MemoryHookTools::default();
        valid_config(&tools);
        run(&tools, &Event::ConfigChanged).unwrap();
        tools.lock().calls.clear();
        run(&tools, &Event::ConfigChanged).unwrap();
        assert_eq!(
            tools.lock().calls,
            ["config-get", "state-get", "status-set"]
        );
    }
}
