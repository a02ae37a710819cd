//! The charm's egress ACL proven with traffic on the real LXD daemon.
//!
//! Each test builds a lab of its own: a bridge without NAT (unique name and unused 10.x
//! prefix), a busybox container on it with the charm's runner NIC and only two routes (to
//! the listener's /30 and to the host), and a network namespace reached through a routed
//! veth pair, whose address sits in the "denied" network. Before any packet the test checks
//! the kernel routes every target to this machine (the veth, the bridge or a local address).
//! Everything is deleted on drop, also after a failed assertion.

#[path = "support/executable.rs"]
mod executable;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;
#[path = "support/net_routes.rs"]
mod net_routes;
#[path = "network_acl/probes.rs"]
mod probes;

use github_runner::lxd::network::LxdNetworks;
use github_runner::network::acl::{egress_rules, AclInputs};
use github_runner::network::cidr::Ipv4Net;
use github_runner::network::{converge, runner_hwaddr, runner_nic, RUNNER_HWADDR_KEY};
use lxd_fixture::{wait_for, LxdFixture, IMAGE_ALIAS};
use net_routes::{host_route_dev, unused_prefixes};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);
const LISTENER_PORT: u16 = 8000;

fn run(program: &str, args: &[&str]) -> std::process::Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A name part unique in this process and across concurrent processes.
fn unique_id() -> String {
    format!(
        "{}{}",
        std::process::id() % 100_000,
        NEXT.fetch_add(1, Ordering::SeqCst)
    )
}

struct Lab {
    fixture: LxdFixture,
    bridge: String,
    acl: String,
    netns: String,
    veth: String,
    gateway: Ipv4Addr,
    runner_addr: Ipv4Addr,
    /// The listener inside the namespace, in the "denied" /24.
    target: Ipv4Addr,
    denied: Ipv4Net,
    container: String,
    /// Other instances on the bridge (deleted on drop, before the bridge).
    neighbours: std::cell::RefCell<Vec<String>>,
    listener: Option<Child>,
}

impl Lab {
    fn new() -> Lab {
        let fixture = LxdFixture::new();
        let id = unique_id();
        let (a, b) = unused_prefixes();
        let mut lab = Lab {
            fixture,
            bridge: format!("ghb{id}"),
            acl: format!("ghrt-acl-{id}"),
            netns: format!("ghrt-ns-{id}"),
            veth: format!("ghv{id}"),
            gateway: Ipv4Addr::new(10, a, b, 1),
            runner_addr: Ipv4Addr::new(10, a, b, 10),
            target: Ipv4Addr::new(10, a, b + 1, 2),
            denied: Ipv4Net::new(Ipv4Addr::new(10, a, b + 1, 0), 24).unwrap(),
            container: "runner".into(),
            neighbours: Default::default(),
            listener: None,
        };
        assert!(lab.bridge.len() <= 15 && lab.veth.len() < 15);
        // The bridge: no NAT, so nothing it carries leaves this machine with a routable source.
        run_ok(
            "lxc",
            &[
                "network",
                "create",
                &lab.bridge,
                &format!("ipv4.address={}/24", lab.gateway),
                "ipv4.nat=false",
                "ipv6.address=none",
            ],
        );
        let (host_end, ns_end) = (format!("{}h", lab.veth), format!("{}n", lab.veth));
        run_ok("ip", &["netns", "add", &lab.netns]);
        run_ok(
            "ip",
            &[
                "link", "add", &host_end, "type", "veth", "peer", "name", &ns_end,
            ],
        );
        run_ok("ip", &["link", "set", &ns_end, "netns", &lab.netns]);
        let host_side = Ipv4Addr::new(10, a, b + 1, 1);
        run_ok(
            "ip",
            &["addr", "add", &format!("{host_side}/30"), "dev", &host_end],
        );
        run_ok("ip", &["link", "set", &host_end, "up"]);
        let ns = |args: &[&str]| {
            let mut full = vec!["-n", lab.netns.as_str()];
            full.extend_from_slice(args);
            run_ok("ip", &full)
        };
        ns(&["addr", "add", &format!("{}/30", lab.target), "dev", &ns_end]);
        ns(&["link", "set", &ns_end, "up"]);
        ns(&["link", "set", "lo", "up"]);
        ns(&[
            "route",
            "add",
            &format!("10.{a}.{b}.0/24"),
            "via",
            &host_side.to_string(),
        ]);
        lab.listener = Some(
            Command::new("ip")
                .args(["netns", "exec", &lab.netns, "busybox", "nc", "-ll", "-p"])
                .arg(LISTENER_PORT.to_string())
                .args(["-e", "echo", "reached"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("listener"),
        );
        lab.launch_runner();
        lab
    }

    /// An instance on the bridge with the runner NIC (port isolation as given) at `addr`.
    fn launch_on_bridge(&self, name: &str, addr: Ipv4Addr, port_isolation: bool) {
        let mut nic: Vec<String> = runner_nic(&self.bridge)
            .into_iter()
            .filter(|(k, _)| k != "type")
            .map(|(k, v)| match k.as_str() {
                "security.port_isolation" => format!("{k}={port_isolation}"),
                _ => format!("{k}={v}"),
            })
            .collect();
        nic.push(format!("ipv4.address={addr}"));
        // The MAC a runner of the charm gets (a unit's prefix), as the charm sets it.
        let mac = format!("{RUNNER_HWADDR_KEY}={}", runner_hwaddr("model/app/0", name));
        self.fixture
            .lxc_ok(&["init", IMAGE_ALIAS, name, "--config", &mac]);
        let mut args = vec!["config", "device", "add", name, "eth0", "nic"];
        args.extend(nic.iter().map(String::as_str));
        self.fixture.lxc_ok(&args);
        self.fixture.lxc_ok(&["start", name]);
    }

    /// A neighbour on the bridge (no routes: it only answers on its own /24).
    fn launch_neighbour(&self, name: &str, addr: Ipv4Addr, port_isolation: bool) {
        self.neighbours.borrow_mut().push(name.to_string());
        self.launch_on_bridge(name, addr, port_isolation);
        let out = self.fixture.lxc(&[
            "exec",
            name,
            "--",
            "sh",
            "-c",
            &format!("ip addr add {addr}/24 dev eth0 && ip link set eth0 up"),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn launch_runner(&self) {
        self.launch_on_bridge(&self.container, self.runner_addr, true);
        let host = host_address();
        // Only two routes out of the bridge: the listener's /30 and the host's address, both
        // via the bridge; and broadcast and multicast onto the bridge itself.
        self.exec_ok(&format!(
            "ip addr add {}/24 dev eth0 && ip link set eth0 up && \
             ip route add {}/30 via {gw} && ip route add {host}/32 via {gw} && \
             ip route add 224.0.0.0/4 dev eth0 && ip route add 255.255.255.255/32 dev eth0",
            self.runner_addr,
            Ipv4Net::new(self.target, 30)
                .unwrap()
                .to_string()
                .trim_end_matches("/30"),
            gw = self.gateway
        ));
    }

    fn exec(&self, script: &str) -> std::process::Output {
        self.fixture
            .lxc(&["exec", &self.container, "--", "sh", "-c", script])
    }

    fn exec_ok(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every address the test sends to stays on this machine: the bridge has no NAT, the host
    /// routes the listener to our veth, the runner's only routes go via the bridge.
    fn check_no_route_out(&self) {
        let info = self.fixture.lxd().network(&self.bridge).unwrap().unwrap();
        assert_eq!(info.config["ipv4.nat"], "false");
        assert_eq!(
            host_route_dev(&self.target.to_string()),
            format!("{}h", self.veth)
        );
        assert_eq!(host_route_dev(&self.gateway.to_string()), "local");
        assert_eq!(host_route_dev(&host_address().to_string()), "local");
        let routes = self.exec_ok("ip -4 route show");
        for line in routes.lines() {
            assert!(!line.starts_with("default"), "a default route: {routes}");
        }
        for target in [self.target, host_address()] {
            let via = self.exec_ok(&format!("ip route get {target}"));
            assert!(via.contains(&format!("via {}", self.gateway)), "{via}");
        }
    }

    fn tcp(&self, addr: Ipv4Addr, port: u16) -> bool {
        let out = self.exec(&format!("nc -w 3 {addr} {port} </dev/null"));
        let text = String::from_utf8_lossy(&out.stdout);
        out.status.success() && text.contains("reached")
    }

    fn ping(&self, addr: Ipv4Addr) -> bool {
        self.exec(&format!("ping -c 1 -W 1 {addr}"))
            .status
            .success()
    }

    fn apply(&self, denylist: &[Ipv4Net], exempt: &[Ipv4Addr], allowed: &[u16]) {
        self.apply_inputs(AclInputs {
            allowed_host_tcp_ports: allowed.to_vec(),
            denylist: denylist.to_vec(),
            exempt: exempt.to_vec(),
            ..self.inputs()
        });
    }

    /// The charm's inputs for this lab: the host's addresses and the bridge's broadcast.
    fn inputs(&self) -> AclInputs {
        let [a, b, c, _] = self.gateway.octets();
        AclInputs {
            host_addresses: vec![self.gateway, host_address()],
            host_broadcasts: vec![Ipv4Addr::new(a, b, c, 255)],
            reject_link_local: true,
            ..AclInputs::default()
        }
    }

    fn apply_inputs(&self, inputs: AclInputs) {
        let rules = egress_rules(&inputs);
        converge::converge(self.fixture.lxd(), &self.bridge, &self.acl, &rules).unwrap();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut child) = self.listener.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = self.fixture.lxc(&["delete", "--force", &self.container]);
        for name in self.neighbours.borrow().iter() {
            let _ = self.fixture.lxc(&["delete", "--force", name]);
        }
        let _ = converge::remove(self.fixture.lxd(), &self.bridge, &self.acl);
        let _ = self.fixture.lxd().delete_acl(&self.acl);
        let _ = run("lxc", &["network", "delete", &self.bridge]);
        let _ = run("ip", &["link", "del", &format!("{}h", self.veth)]);
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// The host's first global IPv4 address (not the bridge's).
fn host_address() -> Ipv4Addr {
    let out = run_ok("ip", &["-4", "-o", "addr", "show", "scope", "global"]);
    out.lines()
        .filter(|l| !l.contains(" ghb"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .find(|a: &Ipv4Addr| !a.octets().starts_with(&[10]))
        .or_else(|| {
            out.lines()
                .filter(|l| !l.contains(" ghb") && !l.contains(" ghv"))
                .filter_map(|l| l.split_whitespace().nth(3))
                .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
                .next()
        })
        .expect("a global IPv4 address on the host")
}

/// Listens on `addr` (port chosen by the kernel), answering "reached" to each connection.
fn host_listener(addr: Ipv4Addr, port: u16) -> u16 {
    let listener = TcpListener::bind((addr, port)).expect("bind a host listener");
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = conn.write_all(b"reached\n");
            let mut sink = [0u8; 16];
            let _ = conn.read(&mut sink);
        }
    });
    port
}

#[test]
fn the_acl_refuses_denied_networks_and_host_ports_and_follows_denylist_changes() {
    let lab = Lab::new();
    let allowed = host_listener(lab.gateway, 0);
    let closed = host_listener(lab.gateway, 0);
    let host = host_address();
    let host_allowed = host_listener(host, allowed);
    assert_eq!(host_allowed, allowed);
    lab.check_no_route_out();
    assert!(
        wait_for(Duration::from_secs(10), || lab
            .tcp(lab.target, LISTENER_PORT)),
        "before any ACL the listener answers"
    );

    lab.apply(&[lab.denied], &[], &[allowed]);
    assert!(!lab.tcp(lab.target, LISTENER_PORT), "denied network: tcp");
    assert!(!lab.ping(lab.target), "denied network: icmp");
    assert!(lab.tcp(lab.gateway, allowed), "the allowed host port");
    assert!(
        lab.tcp(host, allowed),
        "the allowed port on the host's own address"
    );
    assert!(!lab.tcp(lab.gateway, closed), "any other host port");
    assert!(!lab.ping(lab.gateway), "icmp to the host");

    lab.apply(&[], &[], &[allowed]);
    assert!(
        lab.tcp(lab.target, LISTENER_PORT),
        "denylist cleared: reachable"
    );
    assert!(lab.ping(lab.target));
    assert!(!lab.tcp(lab.gateway, closed), "host rules stay");

    lab.apply(&[lab.denied], &[lab.target], &[allowed]);
    assert!(
        lab.tcp(lab.target, LISTENER_PORT),
        "a debug-ssh server inside a denied network stays reachable"
    );
}

#[test]
fn attaching_changing_and_detaching_repeatedly_leaves_nothing_behind() {
    let lab = Lab::new();
    lab.check_no_route_out();
    for round in 0..3 {
        lab.apply(&[lab.denied], &[], &[]);
        let config = lab
            .fixture
            .lxd()
            .network(&lab.bridge)
            .unwrap()
            .unwrap()
            .config;
        assert_eq!(config["security.acls"], lab.acl, "round {round}");
        assert!(
            !lab.tcp(lab.target, LISTENER_PORT),
            "round {round}: enforced"
        );
        lab.apply(&[], &[], &[]);
        assert!(
            lab.tcp(lab.target, LISTENER_PORT),
            "round {round}: changed in place"
        );
        converge::remove(lab.fixture.lxd(), &lab.bridge, &lab.acl).unwrap();
        let config = lab
            .fixture
            .lxd()
            .network(&lab.bridge)
            .unwrap()
            .unwrap()
            .config;
        assert!(
            !config.contains_key("security.acls"),
            "round {round}: {config:?}"
        );
        assert!(
            !config.contains_key("security.acls.default.egress.action"),
            "round {round}: {config:?}"
        );
        assert_eq!(
            lab.fixture.lxd().acl(&lab.acl).unwrap(),
            None,
            "round {round}"
        );
        assert!(
            lab.fixture.lxd().network(&lab.bridge).unwrap().is_some(),
            "the test's own bridge is not the charm's to delete"
        );
        lab.apply(&[lab.denied], &[], &[]);
        lab.apply(&[lab.denied], &[], &[]);
        assert!(
            !lab.tcp(lab.target, LISTENER_PORT),
            "round {round}: re-attached"
        );
        converge::remove(lab.fixture.lxd(), &lab.bridge, &lab.acl).unwrap();
        assert!(
            lab.tcp(lab.target, LISTENER_PORT),
            "round {round}: detached"
        );
    }
}

#[test]
fn a_missing_bridge_is_created_and_removed_with_the_acl() {
    let fixture = LxdFixture::new();
    let id = unique_id();
    let (bridge, acl) = (format!("ghc{id}"), format!("ghrt-acl-c{id}"));
    let lxd = fixture.lxd();
    let rules = egress_rules(&AclInputs::default());
    let (a, b) = unused_prefixes();
    let config = [
        ("ipv4.address".to_string(), format!("10.{a}.{b}.1/24")),
        ("ipv4.nat".to_string(), "false".to_string()),
        ("ipv6.address".to_string(), "none".to_string()),
    ]
    .into();
    let done = converge::converge_creating(lxd, &bridge, &config, &acl, &rules);
    let cleanup = || {
        let _ = converge::remove(lxd, &bridge, &acl);
        let _ = run("lxc", &["network", "delete", &bridge]);
    };
    let done = done.unwrap_or_else(|e| {
        cleanup();
        panic!("{e}")
    });
    let info = lxd.network(&bridge).unwrap();
    let again = converge::converge_creating(lxd, &bridge, &config, &acl, &rules);
    converge::remove(lxd, &bridge, &acl).unwrap();
    let gone = (lxd.network(&bridge).unwrap(), lxd.acl(&acl).unwrap());
    cleanup();
    assert!(done.bridge_created && done.acl_written);
    let info = info.expect("created");
    assert_eq!(info.config["ipv6.address"], "none");
    assert_eq!(info.config["security.acls"], acl);
    assert_eq!(
        again.unwrap(),
        converge::Converged::default(),
        "nothing to do twice"
    );
    assert_eq!(
        gone,
        (None, None),
        "the charm's own bridge and ACL go on remove"
    );
}

#[test]
fn runners_cannot_reach_each_other_on_the_bridge() {
    let lab = Lab::new();
    lab.check_no_route_out();
    let [a, b, c, _] = lab.gateway.octets();
    let (other_runner, not_isolated) = (Ipv4Addr::new(a, b, c, 11), Ipv4Addr::new(a, b, c, 12));
    lab.launch_neighbour("other-runner", other_runner, true);
    lab.launch_neighbour("plain", not_isolated, false);
    // The control: the same path to an instance without port isolation works...
    assert!(
        wait_for(Duration::from_secs(10), || lab.ping(not_isolated)),
        "an instance without port isolation answers"
    );
    // ...and between two runners (both isolated) nothing passes.
    assert!(!lab.ping(other_runner), "runner to runner");
}

/// Issue 19 item 5: the job queue broker is rejected for runners like the host.
#[test]
fn the_job_queue_broker_is_out_of_reach() {
    let lab = Lab::new();
    lab.check_no_route_out();
    lab.apply(&[], &[], &[]);
    assert!(
        wait_for(Duration::from_secs(10), || lab
            .tcp(lab.target, LISTENER_PORT)),
        "control: reachable while it is no broker"
    );
    lab.apply_inputs(AclInputs {
        brokers: vec![lab.target],
        ..lab.inputs()
    });
    assert!(!lab.tcp(lab.target, LISTENER_PORT), "the broker: tcp");
    assert!(!lab.ping(lab.target), "the broker: icmp");
}

/// Issue 19 item 4: an operator's default actions on their own bridge are theirs.
#[test]
fn an_operators_default_acl_actions_are_kept_and_reported() {
    let fixture = LxdFixture::new();
    let id = unique_id();
    let (bridge, acl) = (format!("ghd{id}"), format!("ghrt-acl-d{id}"));
    let (a, b) = unused_prefixes();
    run_ok(
        "lxc",
        &[
            "network",
            "create",
            &bridge,
            &format!("ipv4.address=10.{a}.{b}.1/24"),
            "ipv4.nat=false",
            "ipv6.address=none",
            "security.acls.default.egress.action=reject",
        ],
    );
    let lxd = fixture.lxd();
    let rules = egress_rules(&AclInputs::default());
    let first = converge::converge(lxd, &bridge, &acl, &rules);
    let second = converge::converge(lxd, &bridge, &acl, &rules);
    let config = lxd.network(&bridge).unwrap().map(|n| n.config);
    let _ = converge::remove(lxd, &bridge, &acl);
    let _ = run("lxc", &["network", "delete", &bridge]);
    let (first, second) = (first.unwrap(), second.unwrap());
    let config = config.expect("the bridge");
    assert_eq!(config["security.acls.default.egress.action"], "reject");
    assert_eq!(
        config["security.acls.default.ingress.action"], "allow",
        "unset: the charm's"
    );
    for done in [&first, &second] {
        assert_eq!(
            done.kept_defaults
                .get("security.acls.default.egress.action"),
            Some(&"reject".to_string()),
            "{done:?}"
        );
    }
    assert!(second.bridge_keys_set.is_empty(), "{second:?}");
}
