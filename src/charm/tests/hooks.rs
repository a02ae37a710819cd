//! Hooks through the whole pipeline: update-status's cost and timer repair, the
//! remembered status, a failed host setup.

use crate::charm::fake_world::{FakeWorld, WorldHost};
use crate::charm::setup::fakes::{Edges, Fake};
use crate::charm::setup::{self, HOST_READY_KEY};
use crate::charm::testing::{run, valid_config};
use crate::host::timer::{self, TIMER_UNIT};
use crate::juju::event::Event;
use crate::juju::memory::MemoryHookTools;
use crate::juju::state::{encode_status, LAST_STATUS_KEY};
use crate::juju::{Status, StorageInfo};
use crate::messages;

#[test]
fn blocks_on_invalid_config() {
    let tools = MemoryHookTools::default();
    tools.lock().config.insert("vm-cpu".into(), 0.into());
    run(&tools, &Event::UpdateStatus).unwrap();
    assert!(matches!(&tools.statuses()[..], [Status::Blocked(m)] if m.contains("vm-cpu 0")));
}

#[test]
fn three_tool_calls_with_valid_config() {
    let tools = MemoryHookTools::default();
    valid_config(&tools);
    run(&tools, &Event::UpdateStatus).unwrap();
    // The status shown is the one the last reconcile remembered in unit state.
    assert_eq!(
        tools.lock().calls,
        ["config-get", "state-get", "status-set"]
    );
}

#[test]
fn a_failing_tool_fails_the_hook() {
    let tools = MemoryHookTools::default();
    tools.fail_tool("config-get", 1, "ERROR permission denied");
    let err = run(&tools, &Event::UpdateStatus).unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

#[test]
fn an_inactive_timer_is_restarted_an_active_or_absent_one_left_alone() {
    let host = WorldHost::new();
    let tools = MemoryHookTools::default();
    valid_config(&tools);
    let systemd = &host.edges.fake;

    host.run(&tools, &Event::UpdateStatus).unwrap();
    assert!(systemd.log().is_empty(), "never installed: not even asked");

    host.as_unit(&tools, |ctx| {
        let config = crate::charm::observe::read_config(ctx).unwrap().unwrap();
        timer::install(ctx.paths, &setup::timer_spec(ctx, &config), systemd).unwrap();
    });
    systemd.clear();

    host.run(&tools, &Event::UpdateStatus).unwrap();
    assert_eq!(
        systemd.log(),
        [format!("is-active {TIMER_UNIT}")],
        "active: only asked"
    );

    systemd.clear();
    *systemd.timer_active.borrow_mut() = false;
    host.run(&tools, &Event::UpdateStatus).unwrap();
    assert_eq!(
        systemd.log(),
        [
            format!("is-active {TIMER_UNIT}"),
            format!("is-active {TIMER_UNIT}"),
            format!("systemctl enable --now {TIMER_UNIT}")
        ]
    );
    assert!(*systemd.timer_active.borrow());
    assert!(
        !tools
            .lock()
            .calls
            .iter()
            .any(|c| c.starts_with("state-set")),
        "no state written"
    );
}

#[test]
fn ready_status_shows_the_remembered_one() {
    let tools = MemoryHookTools::default();
    valid_config(&tools);
    run(&tools, &Event::UpdateStatus).unwrap();
    assert_eq!(
        tools.statuses(),
        vec![Status::Waiting(messages::FIRST_RECONCILE.into())]
    );
    let active = Status::Active("3/3 runners: 2 idle, 1 busy".into());
    tools
        .lock()
        .unit_state
        .insert(LAST_STATUS_KEY.into(), encode_status(&active));
    run(&tools, &Event::UpdateStatus).unwrap();
    assert_eq!(tools.statuses().last(), Some(&active));
}

#[test]
fn a_host_setup_failure_sets_and_remembers_its_status_and_stops_before_the_runners() {
    let host = WorldHost::over(
        FakeWorld::new(),
        Edges::new(Fake {
            lxd_down: true,
            ..Fake::ready()
        }),
    );
    let tools = MemoryHookTools::default();
    valid_config(&tools);
    {
        let mut s = tools.lock();
        s.config.insert("test-mode".into(), "insecure".into());
        s.config
            .insert("github-url".into(), "http://127.0.0.1:1".into());
        s.storage.insert(
            "runner/0".into(),
            StorageInfo {
                kind: "filesystem".into(),
                location: "/storage/juju".into(),
            },
        );
    }
    host.run(&tools, &Event::ConfigChanged).unwrap();
    assert!(
        matches!(&tools.statuses()[..], [Status::Waiting(m)] if m.starts_with("LXD is not answering"))
    );
    assert!(
        !tools.lock().unit_state.contains_key(HOST_READY_KEY),
        "a failed setup is retried by the periodic event"
    );
    assert!(tools.lock().unit_state.contains_key(LAST_STATUS_KEY));
    assert!(host.world.instance_names().is_empty());
}
