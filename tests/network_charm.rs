//! The runner network through `dispatch`: the real charm binary with the fake hook tools,
//! the real LXD daemon and the fake GitHub (tests/support/charm_env). The unit is pointed at
//! a bridge of the test's own (no NAT, an unused 10.x prefix) with the test knob
//! `GITHUB_RUNNER_LXD_BRIDGE`; no packet is sent here (tests/network_acl.rs sends them).

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/net_routes.rs"]
mod net_routes;
#[path = "support/redis_server/mod.rs"]
mod redis_server;

use charm_env::CharmEnv;
use github_runner::identity::UnitIdentity;
use github_runner::lxd::network::LxdNetworks;
use github_runner::network::converge::MANAGED_DESCRIPTION;
use github_runner::network::{acl_name, BRIDGE_ENV};
use std::collections::BTreeMap;

/// A bridge deleted on drop (after the env's instances are gone).
struct TestBridge(String);

impl TestBridge {
    /// A bridge `<prefix><pid>` on an unused 10.a.b.0/24, without NAT (nothing routes out),
    /// with the `(a, b)` of its subnet.
    fn create(prefix: &str) -> (TestBridge, (u8, u8)) {
        let (a, b) = net_routes::unused_prefixes();
        let bridge = TestBridge(format!("{prefix}{}", std::process::id() % 1_000_000));
        lxc_ok(&[
            "network",
            "create",
            &bridge.0,
            &format!("ipv4.address=10.{a}.{b}.1/24"),
            "ipv4.nat=false",
            "ipv6.address=none",
        ]);
        (bridge, (a, b))
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = lxd_fixture::lxc_raw(
            &lxd_fixture::shared_conf_dir(),
            None,
            &["network", "delete", &self.0],
        );
    }
}

/// `lxc` outside any test project (networks are global), through the fixtures' client.
fn lxc_ok(args: &[&str]) {
    let out = lxd_fixture::lxc_raw(&lxd_fixture::shared_conf_dir(), None, args);
    assert!(
        out.status.success(),
        "lxc {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tmate_unit(host: &str, port: &str) -> BTreeMap<String, String> {
    [
        ("host", host),
        ("port", port),
        ("rsa_fingerprint", "SHA256:rsaFP+/="),
        ("ed25519_fingerprint", "SHA256:edFP"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The remote units' data of relation `id` in the fake world.
fn relation_units<'e>(
    env: &'e mut CharmEnv,
    id: &str,
) -> &'e mut BTreeMap<String, BTreeMap<String, String>> {
    let relation = env.h.world.relations.iter_mut().find(|r| r.id == id);
    &mut relation.expect("the relation exists").remote_units
}

/// The runner's environment file as the job sees it.
fn runner_env(env: &CharmEnv, instance: &str) -> String {
    env.fx.lxc_ok(&[
        "exec",
        instance,
        "--",
        "cat",
        "/home/ubuntu/github-runner/.env",
    ])
}

fn deny_rule(env: &CharmEnv, acl: &str) -> Option<String> {
    let info = env
        .fx
        .lxd()
        .acl(acl)
        .unwrap()
        .expect("the unit's ACL exists");
    info.egress
        .iter()
        .find(|r| r.description == "denylist")
        .map(|r| r.destination.clone())
}

#[test]
fn debug_ssh_servers_reach_runners_and_the_acl_follows_config_and_relation_changes() {
    let (bridge, (a, b)) = TestBridge::create("ghn");
    // Made before the env, so it is dropped after the env's project (which uses it).
    let mut env = CharmEnv::new(1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    let tmate = format!("10.{a}.{}.5", b + 1);
    let relation = env.h.add_relation("debug-ssh", "tmate-ssh-server", 2);
    {
        let units = relation_units(&mut env, &relation);
        let names: Vec<String> = units.keys().cloned().collect();
        units.insert(names[0].clone(), tmate_unit(&tmate, "10022"));
        units.insert(names[1].clone(), tmate_unit("10.9.9.9", "0"));
    }
    env.set_config("denylist", format!("10.{a}.{}.0/24", b + 1));
    env.deploy();
    let first = env.wait_online(1);

    // The unit's ACL is attached to the bridge and exempts the tmate server.
    let acl = acl_name(&env.unit);
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert_eq!(config["security.acls"], acl);
    let denied = deny_rule(&env, &acl).expect("a denylist rule");
    assert!(!denied.contains(&format!("{tmate}/32")), "{denied}");
    assert!(
        denied.contains(&format!("10.{a}.{}.4/32", b + 1)),
        "{denied}"
    );
    // Someone detaches the ACL and empties it: the timer's event puts both back, though
    // nothing of the unit's own changed.
    env.fx
        .lxc_ok(&["network", "unset", &bridge.0, "security.acls"]);
    env.fx.lxc_ok(&[
        "query",
        "-X",
        "PATCH",
        &format!("/1.0/network-acls/{acl}"),
        "-d",
        r#"{"egress": []}"#,
    ]);
    assert_eq!(deny_rule(&env, &acl), None);
    env.reconcile().assert_ok();
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert_eq!(config["security.acls"], acl);
    assert_eq!(deny_rule(&env, &acl), Some(denied.clone()));

    // The runner NIC is on the bridge, filtered.
    let nic = env.fx.lxc_ok(&["config", "show", "--expanded", &first[0]]);
    assert!(nic.contains(&format!("network: {}", bridge.0)), "{nic}");
    assert!(nic.contains("security.mac_filtering: \"true\""), "{nic}");
    assert!(nic.contains("security.ipv4_filtering: \"true\""), "{nic}");

    // The valid server reaches the runner; the unit with port 0 was ignored with a warning.
    let vars = runner_env(&env, &first[0]);
    assert!(
        vars.contains(&format!("\nTMATE_SERVER_HOST={tmate}\n")),
        "{vars}"
    );
    assert!(vars.contains("\nTMATE_SERVER_PORT=10022\n"), "{vars}");
    assert!(vars.contains("\nTMATE_SERVER_RSA_FINGERPRINT=SHA256:rsaFP+/=\n"));
    assert!(vars.contains("\nTMATE_SERVER_ED25519_FINGERPRINT=SHA256:edFP\n"));
    assert!(!vars.contains("10.9.9.9"), "{vars}");
    assert!(env
        .h
        .logs()
        .iter()
        .any(|l| l.message.contains("ignoring debug-ssh data") && l.message.contains("port")));

    // Clearing denylist rewrites the ACL in place: only the host rules stay.
    env.set_config("denylist", "");
    env.config_changed().assert_ok();
    assert_eq!(deny_rule(&env, &acl), None);
    let rules = env.fx.lxd().acl(&acl).unwrap().unwrap().egress;
    assert!(rules
        .iter()
        .any(|r| r.description == "host: every protocol"));
    assert_eq!(
        env.instances(),
        first,
        "a denylist change keeps running runners"
    );

    // A changed server: idle runners are replaced and the new one sees it.
    {
        let units = relation_units(&mut env, &relation);
        let first_unit = units.keys().next().unwrap().clone();
        units.insert(first_unit, tmate_unit("10.7.7.7", "2222"));
    }
    env.h.hook("debug-ssh-relation-changed").assert_ok();
    let second = env.wait_online(1);
    assert_ne!(second, first, "the idle runner was flushed");
    let vars = runner_env(&env, &second[0]);
    assert!(vars.contains("\nTMATE_SERVER_HOST=10.7.7.7\n"), "{vars}");
    assert!(vars.contains("\nTMATE_SERVER_PORT=2222\n"), "{vars}");

    // A server named by host name is exempted by the addresses this machine resolves it
    // to (the real getent): here `localhost`, inside a denied 127.0.0.0/8.
    {
        let units = relation_units(&mut env, &relation);
        let second_unit = units.keys().nth(1).unwrap().clone();
        units.insert(second_unit, tmate_unit("localhost", "22"));
    }
    env.set_config("denylist", "127.0.0.0/8");
    env.config_changed().assert_ok();
    let denied = deny_rule(&env, &acl).expect("a denylist rule");
    assert!(
        !denied
            .split(',')
            .any(|n| n == "127.0.0.1/32" || n == "127.0.0.0/8"),
        "{denied}"
    );
    assert!(denied.split(',').any(|n| n == "127.0.0.0/32"), "{denied}");
    assert!(denied.split(',').any(|n| n == "127.0.0.2/31"), "{denied}");

    // remove: the ACL goes, the operator's (here the test's) bridge stays, without it.
    env.h.hook("stop").assert_ok();
    env.h.hook("remove").assert_ok();
    assert_eq!(env.fx.lxd().acl(&acl).unwrap(), None);
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert!(!config.contains_key("security.acls"), "{config:?}");
}

/// Two units share the machine's bridge, and LXD applies both their ACLs to every runner
/// on it: a unit whose option another unit's ACL overrides is Blocked, naming that ACL, and
/// Active again once the other unit agrees. Checked by the timer's event too.
#[test]
fn a_promise_another_units_acl_breaks_is_refused_with_blocked() {
    let (bridge, _) = TestBridge::create("ghp");
    let mut env = CharmEnv::new(1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    env.set_config("allow-link-local", true);
    env.deploy();
    let runners = env.wait_online(1);
    assert_eq!(env.status().0, "active", "{:?}", env.status());

    // Another application's unit arrives with the default: link-local rejected.
    let mut other = env.unit_on_same_machine("strict-runners/0", 0);
    other.deploy();
    let other_acl = acl_name(&UnitIdentity::parse("strict-runners/0", &other.model_uuid).unwrap());
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert!(config["security.acls"].contains(&other_acl), "{config:?}");
    assert_eq!(other.last_status().unwrap().0, "active");

    // The timer's event of the first unit sees it: Blocked, naming the option and the ACL;
    // its runner is left alone.
    env.reconcile().assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "blocked", "{message}");
    assert!(message.contains("allow-link-local=true"), "{message}");
    assert!(message.contains(&other_acl), "{message}");
    assert_eq!(env.instances(), runners);
    // A config-changed of its own says the same.
    env.config_changed().assert_ok();
    assert_eq!(env.status().0, "blocked");

    // The other unit allows link-local too: the next timer event is Active again.
    other.set_config("allow-link-local", true);
    other.hook("config-changed").assert_ok();
    env.reconcile().assert_ok();
    assert_eq!(env.status().0, "active", "{:?}", env.status());

    for hook in ["stop", "remove"] {
        other.hook(hook).assert_ok();
        env.h.hook(hook).assert_ok();
    }
}

/// Issue 19 items 4 and 5, through dispatch: in reactive mode the broker's addresses (its
/// host name resolved on the machine) are rejected for runners, the URI's password in no
/// log; and an operator's default ACL action on their own bridge survives setup and the
/// timer's event, with a warning.
#[test]
fn the_broker_is_rejected_and_an_operators_default_action_is_kept() {
    let (bridge, _) = TestBridge::create("ghq");
    lxc_ok(&[
        "network",
        "set",
        &bridge.0,
        "security.acls.default.egress.action=reject",
    ]);
    let redis = redis_server::RedisServer::start();
    let mut env = CharmEnv::new(0);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    // The test's own redis, named by host name and with a password in the URI.
    let uri = redis
        .uri()
        .replace("redis://127.0.0.1:", "redis://:brokerS3cret@localhost:");
    env.set_config("mq-uri", uri);
    env.deploy();
    env.reconcile().assert_ok();
    let acl = acl_name(&env.unit);
    let rules = env.fx.lxd().acl(&acl).unwrap().expect("the ACL").egress;
    let broker = rules
        .iter()
        .find(|r| r.description == "job queue broker")
        .unwrap_or_else(|| panic!("no broker rule: {rules:?}"));
    assert_eq!(
        broker.destination, "127.0.0.1",
        "localhost, as getent resolves it"
    );
    assert_eq!(broker.protocol, "");
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert_eq!(config["security.acls.default.egress.action"], "reject");
    assert_eq!(config["security.acls.default.ingress.action"], "allow");
    let logs = env.h.logs();
    assert!(
        logs.iter().any(|l| l.level == "WARNING"
            && l.message.contains("keeps the default ACL actions")
            && l.message.contains("reject")),
        "{logs:?}"
    );
    assert!(!logs.iter().any(|l| l.message.contains("brokerS3cret")));
    for hook in ["stop", "remove"] {
        env.h.hook(hook).assert_ok();
    }
}

/// A bridge the charm made (it carries the charm's description) goes on remove, after the
/// runner profile that used it.
#[test]
fn remove_deletes_a_bridge_the_charm_made_once_its_runner_profile_is_gone() {
    let (bridge, _) = TestBridge::create("ghm");
    // As the charm creates one: with its description (LXD 5.0's client has no flag for it).
    let patch = serde_json::json!({ "description": MANAGED_DESCRIPTION }).to_string();
    lxc_ok(&[
        "query",
        "-X",
        "PATCH",
        &format!("/1.0/networks/{}", bridge.0),
        "-d",
        &patch,
    ]);
    let mut env = CharmEnv::new(1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    env.deploy();
    let runner = env.wait_online(1).remove(0);
    let nic = env.fx.lxc_ok(&["config", "show", "--expanded", &runner]);
    assert!(nic.contains(&format!("network: {}", bridge.0)), "{nic}");
    let used_by = env.fx.lxd().network(&bridge.0).unwrap().unwrap().used_by;
    assert!(!used_by.is_empty(), "the runner profile uses the bridge");

    env.h.hook("stop").assert_ok();
    env.h.hook("remove").assert_ok();
    let acl = acl_name(&env.unit);
    assert_eq!(env.fx.lxd().acl(&acl).unwrap(), None);
    assert_eq!(
        env.fx.lxd().network(&bridge.0).unwrap().map(|n| n.used_by),
        None,
        "the charm's bridge is left"
    );
}

/// What a job cannot do from inside a runner (test mode: a container).
#[test]
fn a_runner_has_no_way_into_the_host_and_no_github_token() {
    let mut env = CharmEnv::new(1);
    env.deploy();
    let name = env.wait_online(1).remove(0);
    let raw = env.fx.lxc_ok(&[
        "query",
        &format!("/1.0/instances/{name}?project={}", env.fx.project),
    ]);
    let instance: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let config = instance["expanded_config"].as_object().unwrap();
    for key in ["security.privileged", "security.nesting"] {
        let value = config.get(key).and_then(|v| v.as_str()).unwrap_or("false");
        assert_eq!(value, "false", "{key}");
    }
    let token = env.gh.token();
    for (key, value) in config {
        assert!(!value.to_string().contains(&token), "the token is in {key}");
    }
    for (device, keys) in instance["expanded_devices"].as_object().unwrap() {
        match keys["type"].as_str().unwrap_or_default() {
            "disk" => {
                assert_eq!(keys["path"], "/", "{device}: only the root disk");
                assert!(
                    keys.get("source").is_none(),
                    "{device}: a host path is mounted"
                );
            }
            "nic" => {}
            // The fixture's loopback route to the fake GitHub: the test's, not the charm's.
            "proxy" => assert_eq!(device, "github-loopback"),
            other => panic!("{device}: a {other} device into the host"),
        }
    }
    let exec = |script: &str| env.fx.lxc(&["exec", &name, "--", "sh", "-c", script]);
    // Unprivileged: root inside is not root outside.
    let map = exec("cat /proc/self/uid_map");
    let map = String::from_utf8_lossy(&map.stdout).to_string();
    assert!(
        !map.split_whitespace().take(2).eq(["0", "0"]),
        "uid map {map}"
    );
    // No LXD socket of the host inside.
    for socket in [
        "/var/lib/lxd/unix.socket",
        "/var/snap/lxd/common/lxd/unix.socket",
        "/run/lxd.socket",
    ] {
        assert!(
            !exec(&format!("test -e {socket}")).status.success(),
            "{socket}"
        );
    }
    // The token is nowhere a job can read: its environment and every file outside the
    // kernel's pseudo filesystems.
    let env_out = exec("env; cat /proc/1/environ");
    assert!(!String::from_utf8_lossy(&env_out.stdout).contains(&token));
    let grep = "grep -rlF '{}' /etc /home /root /tmp /var /run /usr /bin /sbin 2>/dev/null";
    let probe = exec(&grep.replace("{}", "ACTIONS_RUNNER_HOOK_JOB_STARTED"));
    assert!(
        String::from_utf8_lossy(&probe.stdout).contains("/etc/environment"),
        "the search finds what is there"
    );
    let found = exec(&format!(
        "grep -rlF '{token}' /etc /home /root /tmp /var /run /usr /bin /sbin 2>/dev/null"
    ));
    assert_eq!(
        String::from_utf8_lossy(&found.stdout),
        "",
        "files holding the token"
    );
}

/// Juju's application names (`juju/names`: `[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*`) have
/// no length limit; a 200-character one deploys through `dispatch`: its ACL on the bridge,
/// its runner online, each LXD name within LXD's 63 characters; stop and remove take both.
#[test]
fn a_unit_of_a_200_character_application_gets_its_acl_and_a_runner() {
    let (bridge, _) = TestBridge::create("ghl");
    let app: String = "runners-x86-large-"
        .chars()
        .cycle()
        .take(199)
        .collect::<String>()
        + "z";
    assert_eq!(app.len(), 200);
    let mut env = CharmEnv::for_unit(&format!("{app}/0"), 1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    env.deploy();
    let (status, message) = env.status();
    assert_eq!(status, "active", "{message}");
    let runner = env.wait_online(1).remove(0);
    assert!(runner.len() <= 63, "{runner}");
    assert!(env.unit.owns_name(&runner), "{runner}");
    assert_eq!(env.instances(), std::slice::from_ref(&runner));

    let acl = acl_name(&env.unit);
    assert!(acl.len() <= 63, "{acl}");
    assert!(acl.ends_with("-0"), "{acl}");
    let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
    assert_eq!(config["security.acls"], acl);
    assert!(env.fx.lxd().acl(&acl).unwrap().is_some());

    env.h.hook("stop").assert_ok();
    env.h.hook("remove").assert_ok();
    assert_eq!(env.fx.lxd().acl(&acl).unwrap(), None);
    assert!(env.instances().is_empty());
}

/// The Python charm's ACL name, in LXD's default project (ACLs are global to the fixtures'
/// projects): one test at a time has it; deleted on drop, after the test's bridge.
struct OldAcl(#[allow(dead_code)] std::sync::MutexGuard<'static, ()>);

impl OldAcl {
    fn create() -> OldAcl {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let held = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let acl = github_runner::legacy::cleanup::ACL;
        let _ = lxd_fixture::lxc_raw(
            &lxd_fixture::shared_conf_dir(),
            None,
            &["network", "acl", "delete", acl],
        );
        lxc_ok(&["network", "acl", "create", acl]);
        OldAcl(held)
    }
}

impl Drop for OldAcl {
    fn drop(&mut self) {
        let _ = lxd_fixture::lxc_raw(
            &lxd_fixture::shared_conf_dir(),
            None,
            &[
                "network",
                "acl",
                "delete",
                github_runner::legacy::cleanup::ACL,
            ],
        );
    }
}

/// An ACL named like the Python charm's (`github`) on a machine that charm never ran on is
/// an operator's: a deploy, a reconcile and stop/remove keep it, attached to the bridge;
/// the take-over is then done (its marker written) without touching it.
#[test]
fn an_operators_acl_named_github_is_never_taken_for_the_python_charms() {
    let _only_test_with_it = OldAcl::create();
    let (bridge, _) = TestBridge::create("ghs");
    let acl = github_runner::legacy::cleanup::ACL;
    lxc_ok(&["network", "set", &bridge.0, &format!("security.acls={acl}")]);
    let mut env = CharmEnv::new(1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    env.h.hook("upgrade-charm").assert_ok();
    env.deploy();
    env.reconcile().assert_ok();
    let paths = github_runner::paths::HostPaths::for_unit(&env.h.host_root, &env.h.unit_name);
    assert!(paths.python_charm_cleared_marker().exists());
    assert!(!paths.python_charm_seen_marker().exists());
    let attached = || {
        let config = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config;
        config["security.acls"].split(',').any(|a| a == acl)
    };
    assert!(attached(), "the operator's ACL stays on the bridge");
    for hook in ["stop", "remove"] {
        env.h.hook(hook).assert_ok();
    }
    assert!(attached());
    assert!(
        env.fx.lxd().acl(acl).unwrap().is_some(),
        "the operator's ACL stays"
    );
}

/// The host's TCP rule of the unit's ACL: its port ranges.
fn host_tcp_ports(env: &CharmEnv, acl: &str) -> String {
    let rules = env.fx.lxd().acl(acl).unwrap().expect("the ACL").egress;
    rules
        .iter()
        .find(|r| r.description == "host: tcp" || r.description == "host: every protocol")
        .map(|r| r.destination_port.clone())
        .unwrap_or_else(|| panic!("no host rule: {rules:?}"))
}

/// Issue 21 on a bridge: while the Python charm's busy runner runs its job, host TCP 8080
/// (its job-start policy check) stays open and its `github` ACL stays attached; once the
/// runner is gone the policy service goes, 8080 closes and the `github` ACL is detached
/// from the bridge and deleted.
#[test]
fn a_refresh_keeps_the_policy_port_and_the_old_acl_until_the_last_old_runner_is_gone() {
    let _only_test_with_it = OldAcl::create();
    let (bridge, _) = TestBridge::create("gho");
    let mut env = CharmEnv::new(1);
    env.h.env.insert(BRIDGE_ENV.into(), bridge.0.clone());
    let old_acl = github_runner::legacy::cleanup::ACL;
    env.fx.lxc_ok(&[
        "network",
        "acl",
        "rule",
        "add",
        old_acl,
        "egress",
        "action=reject",
        "destination=10.250.0.0/16",
    ]);
    lxc_ok(&[
        "network",
        "set",
        &bridge.0,
        &format!("security.acls={old_acl}"),
    ]);
    let paths = github_runner::paths::HostPaths::new(&env.h.host_root);
    let service = paths.python_policy_service_unit();
    std::fs::create_dir_all(service.parent().unwrap()).unwrap();
    std::fs::write(&service, "[Service]\nExecStart=/bin/true\n").unwrap();
    let busy = format!("{}-0-0123456789abcdef01234567", env.unit.app);
    env.fx
        .lxc_ok(&["launch", lxd_fixture::IMAGE_ALIAS, busy.as_str()]);
    env.gh
        .add_runner(charm_env::REPO, &busy, &[&env.unit.app.clone()]);
    assert!(env.gh.set_runner_busy(&busy, true));

    env.h.hook("upgrade-charm").assert_ok();
    env.deploy();
    let acl = acl_name(&env.unit);
    assert_eq!(host_tcp_ports(&env, &acl), "1-8079,8081-65535");
    let acls = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config["security.acls"].clone();
    assert!(acls.split(',').any(|a| a == old_acl), "{acls}");
    assert!(service.exists());

    // Its job ends: the VM powers off, GitHub drops the ephemeral registration.
    env.fx.lxc_ok(&["stop", "--force", busy.as_str()]);
    assert!(env.gh.remove_runner(&busy));
    env.reconcile().assert_ok();
    assert!(!service.exists());
    assert_eq!(host_tcp_ports(&env, &acl), "", "every port closed again");
    let acls = env.fx.lxd().network(&bridge.0).unwrap().unwrap().config["security.acls"].clone();
    assert_eq!(acls, acl);
    assert_eq!(env.fx.lxd().acl(old_acl).unwrap(), None);
    for hook in ["stop", "remove"] {
        env.h.hook(hook).assert_ok();
    }
}
