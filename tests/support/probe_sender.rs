//! A static probe sender pushed into a busybox runner (busybox sends only TCP, UDP and
//! ICMP, and to no broadcast address). Built by tests/network_acl.rs with `rustc` alone
//! (`-C target-feature=+crt-static`: the image has no libc), so it uses nothing but std and
//! the two libc calls a raw socket needs.
//!
//! `probe_sender raw <ipv4> <protocol number>`: one IPv4 packet of that protocol.
//! `probe_sender udp <ipv4> <port>`: one UDP datagram, broadcast allowed.
//! Each carries the payload `ghr-probe`; exit 0 once sent.

use std::net::{Ipv4Addr, UdpSocket};

const PAYLOAD: &[u8] = b"ghr-probe";
const AF_INET: i32 = 2;
const SOCK_RAW: i32 = 3;

#[repr(C)]
struct SockaddrIn {
    family: u16,
    port: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn sendto(fd: i32, buf: *const u8, len: usize, flags: i32, addr: *const SockaddrIn, len: u32)
        -> isize;
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: probe_sender raw|udp <ipv4> <protocol|port>";
    let (mode, addr, number) = match args.as_slice() {
        [_, mode, addr, number] => (mode.as_str(), addr, number),
        _ => fail(usage),
    };
    let addr: Ipv4Addr = addr.parse().unwrap_or_else(|_| fail(usage));
    let number: u16 = number.parse().unwrap_or_else(|_| fail(usage));
    match mode {
        "udp" => {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap_or_else(|e| fail(&e.to_string()));
            socket.set_broadcast(true).unwrap_or_else(|e| fail(&e.to_string()));
            socket
                .send_to(PAYLOAD, (addr, number))
                .unwrap_or_else(|e| fail(&e.to_string()));
        }
        "raw" => {
            let to = SockaddrIn {
                family: AF_INET as u16,
                port: 0,
                addr: addr.octets(),
                zero: [0; 8],
            };
            // SAFETY: plain syscalls on a fresh descriptor with a valid buffer and address.
            let sent = unsafe {
                let fd = socket(AF_INET, SOCK_RAW, i32::from(number));
                if fd < 0 {
                    fail(&std::io::Error::last_os_error().to_string());
                }
                sendto(fd, PAYLOAD.as_ptr(), PAYLOAD.len(), 0, &to, 16)
            };
            if sent < 0 {
                fail(&std::io::Error::last_os_error().to_string());
            }
        }
        _ => fail(usage),
    }
}

fn fail(why: &str) -> ! {
    eprintln!("{why}");
    std::process::exit(1)
}
