//! A real `redis-server` (Debian's package) on a loopback port, in a temp dir, for one test.
//! Dropping it kills the server; nothing is persisted (`save ""`, no AOF), so
//! [`RedisServer::restart`] comes back empty, as a broker without persistence does.
#![allow(dead_code)]

pub mod handover_proxy;

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        // A port the kernel just handed out; a rare collision is retried.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free loopback port");
            if let Some(server) = RedisServer::start_on(port) {
                return server;
            }
        }
        panic!("redis-server did not start on loopback");
    }

    fn start_on(port: u16) -> Option<RedisServer> {
        let binary = which::which("redis-server")
            .expect("redis-server missing: apt-get install redis-server (Makefile APT_PACKAGES)");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = Command::new(&binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // port taken
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(RedisServer {
                    child,
                    port,
                    _dir: dir,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Kill the server and start a new one on the same port: every key is gone.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(fresh) = RedisServer::start_on(self.port) {
                *self = fresh;
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not come back");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `LPUSH` these bytes onto `list`, as a producer that is not kombu might.
    pub fn push_raw(&self, list: &str, payload: &[u8]) {
        let mut c = redis::Client::open(self.uri())
            .and_then(|c| c.get_connection())
            .expect("connect to redis-server");
        let _: () = redis::cmd("LPUSH")
            .arg(list)
            .arg(payload)
            .query(&mut c)
            .expect("LPUSH");
    }

    /// Every key on the server.
    pub fn keys(&self) -> Vec<String> {
        let mut c = redis::Client::open(self.uri())
            .and_then(|c| c.get_connection())
            .expect("connect to redis-server");
        redis::cmd("KEYS").arg("*").query(&mut c).expect("KEYS")
    }

    pub fn uri(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
