//! aproxy's host side: the snap calls against a fake `snap` on PATH, and the nft ruleset
//! applied by the real `nft`, inside a network namespace of the test's own (a wrapper on
//! PATH runs `ip netns exec <ns> nft ...`), so the host's own ruleset is never touched.

#[path = "support/executable.rs"]
mod executable;

use executable::write_executable;
use github_runner::charm::setup::commands::SystemCommands;
use github_runner::identity::UnitIdentity;
use github_runner::network::aproxy::{self, AproxyError, AproxyTarget, LEGACY_NFT_TABLE};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let name = format!(
            "ghrt-ap-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        assert_ok(
            &Command::new("ip")
                .args(["netns", "add", &name])
                .output()
                .unwrap(),
        );
        Netns(name)
    }

    /// The real nft with `args` in this namespace.
    fn nft(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "nft"])
            .args(args)
            .output()
            .unwrap()
    }

    /// `table` in this namespace, as `nft list` shows it (None: no such table).
    fn table(&self, table: &str) -> Option<String> {
        let out = self.nft(&["list", "table", "ip", table]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Applies `ruleset` in this namespace.
    fn apply(&self, ruleset: &str, dir: &Path) {
        let file = dir.join("extra.nft");
        std::fs::write(&file, ruleset).unwrap();
        assert_ok(&self.nft(&["-f", file.to_str().unwrap()]));
    }
}

fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A PATH dir with a `snap` that logs its arguments and an `nft` that runs the real one in
/// `netns`.
fn tools(dir: &Path, netns: &Netns, snap_exit: i32) -> SystemCommands {
    let log = dir.join("snap.calls");
    write_executable(
        &dir.join("snap"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexit {snap_exit}\n",
            log.display()
        ),
    );
    let nft = which::which("nft").expect("nftables is installed (Makefile APT_PACKAGES)");
    write_executable(
        &dir.join("nft"),
        &format!(
            "#!/bin/sh\nexec ip netns exec '{}' '{}' \"$@\"\n",
            netns.0,
            nft.display()
        ),
    );
    SystemCommands::new(Some(dir.to_str().unwrap()), dir)
}

fn snap_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("snap.calls"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn unit(app: &str, n: u32) -> UnitIdentity {
    UnitIdentity {
        app: app.into(),
        unit_number: n,
        model_uuid: "5bb2e5a4-1d0b-4d6e".into(),
    }
}

/// The target of `unit` with its files below `dir` (as HostPaths lays them out: one file
/// per unit, the legacy machine-wide one beside them).
fn target(dir: &Path, unit: &UnitIdentity) -> AproxyTarget {
    let folder = format!("{}-{}", unit.app, unit.unit_number);
    AproxyTarget {
        table: aproxy::table_name(unit),
        nft_file: dir.join(format!("state/aproxy-{folder}.nft")),
        legacy_nft_file: dir.join("state/aproxy.nft"),
        bridge: "lxdbr0".into(),
        runner_mac_prefix: github_runner::network::unit_mac_prefix(&unit.owner_value()),
    }
}

#[test]
fn on_installs_and_configures_aproxy_and_redirects_then_off_removes_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 0);
    let own = target(dir.path(), &unit("github-runner", 0));

    aproxy::converge(&commands, &own, Some("squid.internal:3128")).unwrap();
    assert_eq!(
        snap_calls(dir.path()),
        [
            "install aproxy --edge",
            "set aproxy proxy=squid.internal:3128 listen=:54969"
        ]
    );
    let table = netns
        .table(&own.table)
        .expect("the unit's table is in place");
    assert!(table.contains("iifname \"lxdbr0\""), "{table}");
    assert!(
        table.contains("tcp dport { 80, 443 } redirect to :54969"),
        "{table}"
    );
    assert!(table.contains("10.0.0.0/8"), "{table}");

    // Converging again replaces the table rather than adding a second rule.
    aproxy::converge(&commands, &own, Some("squid.internal:3128")).unwrap();
    let again = netns.table(&own.table).unwrap();
    assert_eq!(again.matches("redirect to").count(), 1, "{again}");

    aproxy::converge(&commands, &own, None).unwrap();
    assert_eq!(
        netns.table(&own.table),
        None,
        "option off: the redirect is gone"
    );
    assert!(!own.nft_file.exists());
    aproxy::converge(&commands, &own, None).unwrap();
    assert_eq!(snap_calls(dir.path()).len(), 4, "off never calls snap");
}

/// Issue 19 item 3: two units on one machine, one with aproxy: the other's setup and remove
/// leave its redirect alone, and the redirect matches only its own runners.
#[test]
fn a_units_redirect_is_its_own_and_matches_only_its_runners() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 0);
    let (with, without) = (unit("github-runner", 0), unit("other-runners", 0));
    let (on, off) = (target(dir.path(), &with), target(dir.path(), &without));
    assert_ne!(on.table, off.table);
    assert_ne!(on.nft_file, off.nft_file);

    aproxy::converge(&commands, &on, Some("squid:3128")).unwrap();
    // The other unit's setup and its remove, both with aproxy off.
    aproxy::converge(&commands, &off, None).unwrap();
    aproxy::converge(&commands, &off, None).unwrap();
    let table = netns
        .table(&on.table)
        .expect("the other unit left this unit's redirect");
    assert!(on.nft_file.exists());

    // Only runners with this unit's MAC prefix are redirected (nft shows the prefix it
    // matches); the other unit's runners have another prefix.
    let [a, b, c] = on.runner_mac_prefix;
    let prefix = format!("{a:02x}:{b:02x}:{c:02x}:00:00:00");
    assert!(
        table.contains(&format!("ether saddr & ff:ff:ff:00:00:00 == {prefix}")),
        "{table}"
    );
    assert_eq!(
        table.matches(&prefix).count(),
        2,
        "redirect and isolation: {table}"
    );
    let mac =
        github_runner::network::runner_hwaddr(&with.owner_value(), "github-runner-0-0123456789ab");
    assert!(mac.starts_with(&prefix[..8]), "{mac} {prefix}");
    let other = github_runner::network::runner_hwaddr(
        &without.owner_value(),
        "other-runners-0-0123456789ab",
    );
    assert!(!other.starts_with(&prefix[..8]), "{other} {prefix}");
}

/// The machine-wide table of earlier revisions (it redirected every runner) goes with the
/// first converge of this revision, on or off.
#[test]
fn the_legacy_machine_wide_table_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 0);
    let own = target(dir.path(), &unit("github-runner", 0));
    let legacy = format!(
        "table ip {LEGACY_NFT_TABLE} {{\n\tchain prerouting {{\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tiifname \"lxdbr0\" tcp dport {{ 80, 443 }} redirect to :54969\n\t}}\n}}\n"
    );
    netns.apply(&legacy, dir.path());
    std::fs::create_dir_all(own.legacy_nft_file.parent().unwrap()).unwrap();
    std::fs::write(&own.legacy_nft_file, &legacy).unwrap();
    assert!(netns.table(LEGACY_NFT_TABLE).is_some());
    aproxy::converge(&commands, &own, None).unwrap();
    assert_eq!(netns.table(LEGACY_NFT_TABLE), None);
    assert!(!own.legacy_nft_file.exists());
}

#[test]
fn a_failing_snap_install_is_reported_and_no_redirect_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 1);
    let own = target(dir.path(), &unit("github-runner", 0));
    let err = aproxy::converge(&commands, &own, Some("squid:3128")).unwrap_err();
    assert!(
        matches!(&err, AproxyError::Command { command, .. } if command == "snap install aproxy --edge"),
        "{err}"
    );
    assert_eq!(netns.table(&own.table), None);
}

#[test]
fn without_snap_the_option_cannot_be_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let commands = SystemCommands::new(Some(dir.path().to_str().unwrap()), dir.path());
    if which::which("snap").is_ok() {
        return; // a machine with snapd: the fake-free case is covered above
    }
    let own = target(dir.path(), &unit("github-runner", 0));
    let err = aproxy::converge(&commands, &own, Some("s:1")).unwrap_err();
    assert_eq!(err, AproxyError::SnapMissing);
}
