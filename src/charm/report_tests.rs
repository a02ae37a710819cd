//! What report shows of an outcome.

use super::*;
use crate::charm::act::actions::ActionError;
use crate::charm::testing::hook_context;
use crate::juju::event::Event;
use crate::juju::memory::MemoryHookTools;
use crate::juju::state::LAST_STATUS_KEY;
use crate::paths::HostPaths;

fn show(tools: &MemoryHookTools, intent: &Intent, outcome: Outcome) {
    let hook = hook_context();
    let paths = HostPaths::new("/nonexistent-test-root");
    let ctx = Context {
        tools,
        hook: &hook,
        paths: &paths,
    };
    report(&ctx, intent, outcome).unwrap();
}

#[test]
fn a_remembered_status_is_kept_a_set_one_is_not() {
    let tools = MemoryHookTools::default();
    let waiting = Status::Waiting("w".into());
    show(
        &tools,
        &Intent::ReportOnly,
        Outcome {
            shown: Shown::Set(waiting.clone()),
            ..Outcome::default()
        },
    );
    assert!(!tools.lock().unit_state.contains_key(LAST_STATUS_KEY));
    show(
        &tools,
        &Intent::ReportOnly,
        Outcome {
            shown: Shown::Remember(waiting.clone()),
            ..Outcome::default()
        },
    );
    assert_eq!(tools.statuses(), [waiting.clone(), waiting]);
    assert!(tools.lock().unit_state.contains_key(LAST_STATUS_KEY));
}

#[test]
fn install_and_upgrade_set_the_version_and_an_action_failure_is_said() {
    let tools = MemoryHookTools::default();
    tools.lock().action_params = Some(Default::default());
    show(
        &tools,
        &Intent::of(&Event::Install),
        Outcome {
            action: Some(Err(ActionError::NotReady("not yet".into()))),
            ..Outcome::default()
        },
    );
    assert_eq!(tools.lock().app_versions, [CHARM_VERSION]);
    assert_eq!(tools.lock().action_failure.as_deref(), Some("not yet"));
    assert!(tools.statuses().is_empty(), "status left as it is");
}
