//! Where the host routes an address, and picking 10.x prefixes the host does not use: the
//! network tests check both before sending anything (see tests/README.md).
#![allow(dead_code)] // each includer uses a different part

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The device `ip route get` picks for `addr` on the host (`local` for its own addresses).
pub fn host_route_dev(addr: &str) -> String {
    let out = Command::new("ip")
        .args(["-4", "route", "get", addr])
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.starts_with("local ") {
        return "local".into();
    }
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().unwrap_or_default().to_string();
        }
    }
    panic!("no dev in {out:?}")
}

/// (a, b) such that neither 10.a.b.0/24 nor 10.a.(b+1).0/24 is routed on the host other
/// than by its default route; different for every call in a process and across processes.
pub fn unused_prefixes() -> (u8, u8) {
    let default_dev = host_route_dev("10.255.255.254");
    for attempt in 0..200u32 {
        let seed = std::process::id() + NEXT.fetch_add(1, Ordering::SeqCst) * 13 + attempt * 7;
        let a = 100 + (seed % 100) as u8;
        let b = ((seed / 100) % 120) as u8 * 2;
        let free = |third: u8| host_route_dev(&format!("10.{a}.{third}.2")) == default_dev;
        if free(b) && free(b + 1) {
            return (a, b);
        }
    }
    panic!("no unused 10.x prefix on this host");
}
