//! What observe reads, and that it reads it once.

use super::*;
use crate::charm::fake_world::WorldHost;
use crate::juju::event::{Action, Event};
use crate::juju::memory::MemoryHookTools;

#[test]
fn reads_are_answered_once_and_writes_kept() {
    let tools = MemoryHookTools::default();
    tools.lock().unit_state.insert("a".into(), "1".into());
    let once = OnceReads::new(&tools);
    once.config_get().unwrap();
    once.config_get().unwrap();
    assert_eq!(
        once.state_get().unwrap().get("a").map(String::as_str),
        Some("1")
    );
    once.state_set(&BTreeMap::from([("b".to_string(), "2".to_string())]))
        .unwrap();
    once.state_delete("a").unwrap();
    let state = once.state_get().unwrap();
    assert_eq!(state, BTreeMap::from([("b".to_string(), "2".to_string())]));
    assert_eq!(
        tools.lock().calls,
        ["config-get", "state-get", "state-set", "state-delete"]
    );
}

#[test]
fn each_intent_reads_only_what_it_needs() {
    let host = WorldHost::new();
    let cases: Vec<(Event, bool, Vec<&str>)> = vec![
        (Event::LeaderElected, true, vec![]),
        (Event::UpdateStatus, false, vec!["config-get"]),
        (Event::UpdateStatus, true, vec!["config-get", "state-get"]),
        (Event::ConfigChanged, false, vec!["config-get"]),
        (Event::ConfigChanged, true, vec!["config-get", "state-get"]),
        (
            Event::Action(Action::CheckRunners),
            true,
            vec!["config-get", "state-get"],
        ),
        (Event::Stop, false, vec!["config-get", "state-get"]),
        (Event::Stop, true, vec!["config-get"]),
    ];
    for (event, valid, expected) in cases {
        let tools = MemoryHookTools::default();
        if valid {
            crate::charm::testing::valid_config(&tools);
        }
        host.as_unit(&tools, |ctx| {
            observe(ctx, &host, &Intent::of(&event)).unwrap();
        });
        assert_eq!(tools.lock().calls, expected, "{event} valid={valid}");
    }
}

#[test]
fn cleanup_falls_back_to_the_credentials_the_charm_last_acted_on() {
    let ctx = ConfigContext {
        app_name: "github-runner",
        juju_proxy_configured: false,
    };
    let mut raw = serde_json::Map::new();
    crate::charm::fake_world::insert_world_config(&mut raw);
    let current = cleanup_config(&raw, None, &ctx).unwrap();
    assert_eq!(current.token().unwrap().expose(), "ghp_secret");

    let mut previous = PreviousCredentials::of(&current).unwrap();
    previous.credential =
        crate::credential::Credential::Token(crate::secret::Secret::new("ghp_previous"));
    let mut cleared = raw.clone();
    cleared.remove("token");
    cleared.insert("path".into(), "".into());
    assert!(cleanup_config(&cleared, None, &ctx).is_none());
    let fallback = cleanup_config(&cleared, Some(&previous), &ctx).unwrap();
    assert_eq!(fallback.token().unwrap().expose(), "ghp_previous");
    assert_eq!(fallback.path, current.path);
    assert_eq!(
        cleanup_config(&raw, Some(&previous), &ctx)
            .unwrap()
            .token()
            .unwrap()
            .expose(),
        "ghp_secret",
        "a valid configuration wins"
    );

    let mut broken = cleared.clone();
    broken.insert("vm-cpu".into(), 0.into());
    assert!(
        cleanup_config(&broken, Some(&previous), &ctx).is_none(),
        "other problems are not papered over"
    );
}
