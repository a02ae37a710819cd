//! The exporter process: `github-runner-charm metrics-exporter --listen ADDR`. One thread,
//! one `GET /metrics` at a time; each scrape reads the state file and the log's new lines,
//! never GitHub or LXD. Diagnostics go to stderr (the journal under systemd).

use std::net::SocketAddr;
use std::path::PathBuf;

use super::exposition::{render, CONTENT_TYPE};
use super::log_stats::{LogMetrics, LogTail};
use super::state;
use crate::paths::HostPaths;

/// The first argument that selects the exporter mode of the charm's binary.
pub const SUBCOMMAND: &str = "metrics-exporter";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArgsError {
    #[error("usage: github-runner-charm metrics-exporter --listen <ip:port> [--unit <app/N>]")]
    Usage,
    #[error("--listen {0:?} is not an ip:port address")]
    BadListen(String),
}

/// `--listen ADDR [--unit app/N]` (nothing secret goes through argv).
pub fn parse_args(args: &[String]) -> Result<ExporterArgs, ArgsError> {
    let (listen, rest) = match args {
        [flag, value, rest @ ..] if flag == "--listen" => (value.as_str(), rest),
        [one, rest @ ..] => (one.strip_prefix("--listen=").ok_or(ArgsError::Usage)?, rest),
        [] => return Err(ArgsError::Usage),
    };
    let listen = listen
        .parse()
        .map_err(|_| ArgsError::BadListen(listen.to_string()))?;
    let unit = match rest {
        [] => None,
        [flag, unit] if flag == "--unit" => Some(unit.clone()),
        _ => return Err(ArgsError::Usage),
    };
    Ok(ExporterArgs { listen, unit })
}

/// The exporter's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExporterArgs {
    pub listen: SocketAddr,
    /// `app/N`: the unit whose state file is served (its paths are per unit).
    pub unit: Option<String>,
}

/// The scrape side: the state file and the log's metrics.
#[derive(Debug)]
pub struct Exporter {
    state_path: PathBuf,
    /// The unit's scale-set listener folders (None: paths of no unit).
    scale_set: Option<crate::reactive::workers::UnitDirs>,
    tail: LogTail,
    log: LogMetrics,
}

impl Exporter {
    pub fn new(paths: &HostPaths) -> Self {
        let scale_set = paths.unit_folder().map(|key| {
            crate::reactive::workers::UnitDirs::new(
                paths.scale_set_dir(key),
                paths.scale_set_log_dir(key),
            )
        });
        Exporter {
            scale_set,
            state_path: paths.exporter_state(),
            tail: LogTail::new(paths.metrics_log()),
            log: LogMetrics::default(),
        }
    }

    /// Read the log's backlog (bounded: at most `rounds` reads of
    /// `log_stats::MAX_READ_PER_SCRAPE`), so the first scrape is as quick as the next ones.
    pub fn catch_up(&mut self, rounds: usize) {
        for _ in 0..rounds {
            match self.tail.poll(&self.log) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) => {
                    eprintln!(
                        "metrics-exporter: reading {}: {e}",
                        self.tail.path().display()
                    );
                    return;
                }
            }
        }
    }

    /// One scrape's body. Problems reading the files are reported on stderr and leave the
    /// part they concern out; the scrape itself always answers.
    pub fn scrape(&mut self) -> String {
        if let Err(e) = self.tail.poll(&self.log) {
            eprintln!(
                "metrics-exporter: reading {}: {e}",
                self.tail.path().display()
            );
        }
        let state = state::read(&self.state_path).unwrap_or_else(|e| {
            eprintln!("metrics-exporter: {e}");
            None
        });
        let scale_set = self
            .scale_set
            .as_ref()
            .and_then(super::scale_set::read_view);
        render(state.as_ref(), &self.log, scale_set.as_ref())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("could not listen on {addr}: {reason}")]
    Bind { addr: SocketAddr, reason: String },
}

/// Serve until the process is stopped.
pub fn serve(listen: SocketAddr, paths: &HostPaths) -> Result<(), ServeError> {
    let mut exporter = Exporter::new(paths);
    exporter.catch_up(64);
    let server = tiny_http::Server::http(listen).map_err(|e| ServeError::Bind {
        addr: listen,
        reason: e.to_string(),
    })?;
    eprintln!("metrics-exporter: serving /metrics on {listen}");
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = match (request.method(), path) {
            (tiny_http::Method::Get, "/metrics") => {
                let body = exporter.scrape();
                // A static, valid header: parsing cannot fail.
                let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                    .map_err(|_| ())
                    .ok();
                let mut response = tiny_http::Response::from_string(body);
                if let Some(h) = header {
                    response.add_header(h);
                }
                response
            }
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
            }
            _ => tiny_http::Response::from_string("GET only\n").with_status_code(405),
        };
        if let Err(e) = request.respond(response) {
            eprintln!("metrics-exporter: answering a scrape: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listen_and_the_unit_are_the_only_arguments() {
        assert_eq!(
            parse_args(&args(&["--listen", "127.0.0.1:9470"])).unwrap(),
            ExporterArgs {
                listen: "127.0.0.1:9470".parse().unwrap(),
                unit: None
            }
        );
        assert_eq!(
            parse_args(&args(&["--listen=[::1]:9", "--unit", "github-runner/3"])).unwrap(),
            ExporterArgs {
                listen: "[::1]:9".parse().unwrap(),
                unit: Some("github-runner/3".into())
            }
        );
        assert_eq!(
            parse_args(&args(&["--listen", "127.0.0.1:1", "--unit"])),
            Err(ArgsError::Usage)
        );
        assert_eq!(parse_args(&args(&[])), Err(ArgsError::Usage));
        assert_eq!(
            parse_args(&args(&["--listen", "localhost"])),
            Err(ArgsError::BadListen("localhost".into()))
        );
        assert_eq!(
            parse_args(&args(&["--token", "x", "--listen", "127.0.0.1:1"])),
            Err(ArgsError::Usage)
        );
    }

    /// A unit's exporter scrapes its own listener's slot file, not another unit's.
    #[test]
    fn a_scrape_shows_this_units_scale_set_listener_only() {
        use crate::identity::UnitIdentity;
        use crate::reactive::workers::SlotHold;
        use crate::scaleset::process::{unit_dirs, ListenerSnapshot, LISTENER_SLOT};
        let root = tempfile::tempdir().unwrap();
        let paths = HostPaths::new(root.path());
        let other = unit_dirs(&paths, &UnitIdentity::parse("gr/1", "m").unwrap());
        other.create().unwrap();
        let mut hold = SlotHold::acquire(&other, LISTENER_SLOT, std::time::Duration::ZERO)
            .unwrap()
            .unwrap();
        hold.status.listener = Some(ListenerSnapshot::default());
        hold.publish().unwrap();
        let mut mine = Exporter::new(&paths.clone().with_unit("gr/0"));
        assert!(!mine.scrape().contains("github_runner_scale_set_listener"));
        let mut theirs = Exporter::new(&paths.with_unit("gr/1"));
        assert!(theirs
            .scrape()
            .contains("github_runner_scale_set_listener{phase=\"starting\"} 1"));
    }
}
