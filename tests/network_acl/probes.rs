//! Host isolation beyond TCP, UDP and ICMP (issue 19 item 6): probes of another IP
//! protocol, broadcast and multicast from the runner, sent by a static probe sender
//! (tests/support/probe_sender.rs, built here: busybox sends neither), watched for on the
//! host by a raw socket and a UDP socket.

use super::*;

impl Lab {
    /// Pushes the probe sender (tests/support/probe_sender.rs, built here) into the runner.
    fn push_probe_sender(&self) {
        let dir = tempfile::tempdir().unwrap();
        let binary = dir.path().join("probe_sender");
        let source = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/probe_sender.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let out = Command::new(rustc)
            .args([
                "-O",
                "-C",
                "target-feature=+crt-static",
                "-C",
                "strip=symbols",
            ])
            .arg(source)
            .arg("-o")
            .arg(&binary)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run rustc");
        assert!(
            out.status.success(),
            "build the probe sender: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = format!("{}/bin/probe_sender", self.container);
        self.fixture.lxc_ok(&[
            "file",
            "push",
            binary.to_str().unwrap(),
            &target,
            "--mode",
            "0755",
        ]);
    }

    /// Sends one probe from the runner (`raw <addr> <protocol>` or `udp <addr> <port>`).
    fn probe(&self, args: &str) {
        self.exec_ok(&format!("probe_sender {args}"));
    }
}

/// An IP protocol no rule names (253: for experiments, RFC 3692).
const OTHER_PROTOCOL: i32 = 253;
/// How long a probe the host should not get is waited for.
const ABSENCE_WAIT: Duration = Duration::from_secs(3);

/// A raw socket on the host: it sees every packet of its protocol the host accepts (after
/// the firewall's input hook, where LXD's ACL sits). Closed on drop.
struct RawReceiver(i32);

impl RawReceiver {
    fn new(protocol: i32) -> RawReceiver {
        // SAFETY: plain syscalls; the descriptor is owned by the returned value.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, protocol);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let timeout = libc::timeval {
                tv_sec: ABSENCE_WAIT.as_secs() as libc::time_t,
                tv_usec: 0,
            };
            let set = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            assert_eq!(set, 0, "{}", std::io::Error::last_os_error());
            RawReceiver(fd)
        }
    }

    /// Whether a probe from `from` arrives before the timeout (other packets are skipped).
    fn got_probe_from(&self, from: Ipv4Addr) -> bool {
        let mut buf = [0u8; 2048];
        loop {
            // SAFETY: the buffer outlives the call and its length is passed.
            let n = unsafe { libc::recv(self.0, buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return false; // the timeout
            }
            let packet = &buf[..n as usize];
            if packet.len() > 20
                && packet[12..16] == from.octets()
                && packet.ends_with(b"ghr-probe")
            {
                return true;
            }
        }
    }
}

impl Drop for RawReceiver {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// A UDP socket on the host's wildcard address (it gets broadcasts) that joined `group`
/// on the bridge.
fn udp_receiver(group: Ipv4Addr, bridge_address: Ipv4Addr) -> std::net::UdpSocket {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).unwrap();
    socket.join_multicast_v4(&group, &bridge_address).unwrap();
    socket.set_read_timeout(Some(ABSENCE_WAIT)).unwrap();
    socket
}

fn udp_probe_from(socket: &std::net::UdpSocket, from: Ipv4Addr) -> bool {
    let mut buf = [0u8; 64];
    while let Ok((n, peer)) = socket.recv_from(&mut buf) {
        if peer.ip() == std::net::IpAddr::V4(from) && &buf[..n] == b"ghr-probe" {
            return true;
        }
    }
    false
}

/// Issue 19 item 6: nothing of another IP protocol, and no broadcast or multicast, reaches
/// the host; DHCP and DNS still do.
#[test]
fn the_host_gets_no_other_protocol_broadcast_or_multicast_but_dhcp_and_dns_pass() {
    let lab = Lab::new();
    lab.check_no_route_out();
    assert_eq!(
        lab.exec_ok("cat /sys/class/net/eth0/address").trim(),
        runner_hwaddr("model/app/0", &lab.container),
        "the runner has the MAC the charm gives it"
    );
    lab.push_probe_sender();
    let group = Ipv4Addr::new(239, 255, 77, 19);
    let raw = RawReceiver::new(OTHER_PROTOCOL);
    let udp = udp_receiver(group, lab.gateway);
    let port = udp.local_addr().unwrap().port();
    let send_all = || {
        lab.probe(&format!("raw {} {OTHER_PROTOCOL}", lab.gateway));
        lab.probe(&format!("udp 255.255.255.255 {port}"));
        lab.probe(&format!("udp {group} {port}"));
    };
    // Without the ACL each probe arrives: the sender and the receivers work.
    lab.probe(&format!("raw {} {OTHER_PROTOCOL}", lab.gateway));
    assert!(raw.got_probe_from(lab.runner_addr), "control: raw protocol");
    lab.probe(&format!("udp 255.255.255.255 {port}"));
    assert!(udp_probe_from(&udp, lab.runner_addr), "control: broadcast");
    lab.probe(&format!("udp {group} {port}"));
    assert!(udp_probe_from(&udp, lab.runner_addr), "control: multicast");

    lab.apply(&[], &[], &[]);
    send_all();
    assert!(
        !raw.got_probe_from(lab.runner_addr),
        "IP protocol {OTHER_PROTOCOL} reached the host"
    );
    assert!(
        !udp_probe_from(&udp, lab.runner_addr),
        "a broadcast or multicast datagram reached the host"
    );
    // What runners need still passes: a DHCP lease and an answer from the bridge's DNS.
    lab.exec_ok("udhcpc -i eth0 -n -q -t 3 -T 1 -s /bin/true");
    let dns = lab.exec(&format!("nslookup {} {}", lab.container, lab.gateway));
    let answer =
        String::from_utf8_lossy(&dns.stdout).to_string() + &String::from_utf8_lossy(&dns.stderr);
    assert!(
        answer.contains(&format!("Address:\t{}:53", lab.gateway))
            && !answer.contains("timed out")
            && !answer.contains("no servers"),
        "DNS to the bridge: {answer}"
    );
}
