//! aproxy's host side: the snap calls against a fake `snap` on PATH, and the nft ruleset
//! applied by the real `nft`, inside a network namespace of the test's own (a wrapper on
//! PATH runs `ip netns exec <ns> nft ...`), so the host's own ruleset is never touched.

#[path = "support/executable.rs"]
mod executable;

use executable::write_executable;
use github_runner::charm::setup::commands::SystemCommands;
use github_runner::network::aproxy::{self, AproxyError, NFT_TABLE};
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
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Netns(name)
    }

    /// The charm's table in this namespace, as `nft list` shows it (None: no such table).
    fn table(&self) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns", "exec", &self.0, "nft", "list", "table", "ip", NFT_TABLE,
            ])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
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

#[test]
fn on_installs_and_configures_aproxy_and_redirects_then_off_removes_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 0);
    let nft_file = dir.path().join("state/aproxy.nft");

    aproxy::converge(&commands, &nft_file, "lxdbr0", Some("squid.internal:3128")).unwrap();
    assert_eq!(
        snap_calls(dir.path()),
        [
            "install aproxy --edge",
            "set aproxy proxy=squid.internal:3128 listen=:54969"
        ]
    );
    let table = netns.table().expect("the charm's table is in place");
    assert!(table.contains("iifname \"lxdbr0\""), "{table}");
    assert!(
        table.contains("tcp dport { 80, 443 } redirect to :54969"),
        "{table}"
    );
    assert!(table.contains("10.0.0.0/8"), "{table}");

    // Converging again replaces the table rather than adding a second rule.
    aproxy::converge(&commands, &nft_file, "lxdbr0", Some("squid.internal:3128")).unwrap();
    let again = netns.table().unwrap();
    assert_eq!(again.matches("redirect to").count(), 1, "{again}");

    aproxy::converge(&commands, &nft_file, "lxdbr0", None).unwrap();
    assert_eq!(netns.table(), None, "option off: the redirect is gone");
    assert!(!nft_file.exists());
    aproxy::converge(&commands, &nft_file, "lxdbr0", None).unwrap();
    assert_eq!(snap_calls(dir.path()).len(), 4, "off never calls snap");
}

#[test]
fn a_failing_snap_install_is_reported_and_no_redirect_is_added() {
    let dir = tempfile::tempdir().unwrap();
    let netns = Netns::new();
    let commands = tools(dir.path(), &netns, 1);
    let nft_file = dir.path().join("aproxy.nft");
    let err = aproxy::converge(&commands, &nft_file, "lxdbr0", Some("squid:3128")).unwrap_err();
    assert!(
        matches!(&err, AproxyError::Command { command, .. } if command == "snap install aproxy --edge"),
        "{err}"
    );
    assert_eq!(netns.table(), None);
}

#[test]
fn without_snap_the_option_cannot_be_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let commands = SystemCommands::new(Some(dir.path().to_str().unwrap()), dir.path());
    if which::which("snap").is_ok() {
        return; // a machine with snapd: the fake-free case is covered above
    }
    let err = aproxy::converge(&commands, &dir.path().join("f"), "br", Some("s:1")).unwrap_err();
    assert_eq!(err, AproxyError::SnapMissing);
}
