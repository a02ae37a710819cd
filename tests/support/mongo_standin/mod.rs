//! The MongoDB wire-protocol stand-in (mongo_standin.py, mockupdb + an in-memory store) as
//! a child process on a loopback port. It serves until its stdin closes; Drop kills it.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};

pub struct MongoStandIn {
    child: Child,
    _stdin: ChildStdin,
    pub port: u16,
}

impl MongoStandIn {
    pub fn start(python: &std::path::Path) -> MongoStandIn {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/mongo_standin/mongo_standin.py"
        );
        let mut child = Command::new(python)
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the MongoDB stand-in");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        // The first line is the port; it comes once the server listens (or EOF on failure).
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the stand-in's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("the MongoDB stand-in did not start (printed {line:?})")
        });
        MongoStandIn {
            child,
            _stdin: stdin,
            port,
        }
    }

    /// The database the webhook router's relation names.
    pub fn uri(&self) -> String {
        format!(
            "mongodb://127.0.0.1:{}/github-runner-webhook-router",
            self.port
        )
    }
}

impl Drop for MongoStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
