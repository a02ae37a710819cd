//! A loopback TCP proxy in front of a Redis server that drops the client's connection just as
//! Redis hands a message over: the first reply that carries a leased message (the lease
//! script's `{1, payload}` or a non-nil `BLMOVE` reply) is swallowed and both sides are
//! closed, as a network failure at that instant would. Everything else passes through.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub struct HandoverProxy {
    pub port: u16,
    /// Set once a hand-over was dropped.
    pub dropped: Arc<AtomicBool>,
}

impl HandoverProxy {
    pub fn start(redis_port: u16) -> HandoverProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let dropped = Arc::new(AtomicBool::new(false));
        let flag = dropped.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)) else {
                    return;
                };
                relay(client, server, flag.clone());
            }
        });
        HandoverProxy { port, dropped }
    }

    pub fn uri(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

/// Is this reply (to a command that was a `BLMOVE` when `blmove`) a message hand-over?
fn is_handover(reply: &[u8], blmove: bool) -> bool {
    reply.starts_with(b"*2\r\n:1\r\n")
        || (blmove && reply.starts_with(b"$") && !reply.starts_with(b"$-1"))
}

fn relay(client: TcpStream, server: TcpStream, dropped: Arc<AtomicBool>) {
    let last_was_blmove = Arc::new(AtomicBool::new(false));
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let blmove = last_was_blmove.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = c_read.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            blmove.store(
                chunk.windows(6).any(|w| w.eq_ignore_ascii_case(b"BLMOVE")),
                Ordering::SeqCst,
            );
            if s_write.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = s_write.shutdown(Shutdown::Both);
    });
    let (mut s_read, mut c_write) = (server, client);
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while let Ok(n) = s_read.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = &buf[..n];
            if !dropped.load(Ordering::SeqCst)
                && is_handover(chunk, last_was_blmove.load(Ordering::SeqCst))
            {
                dropped.store(true, Ordering::SeqCst);
                break;
            }
            if c_write.write_all(chunk).is_err() {
                break;
            }
        }
        let _ = c_write.shutdown(Shutdown::Both);
        let _ = s_read.shutdown(Shutdown::Both);
    });
}
