//! A `tracing` layer that forwards events to `juju-log` at the matching level.
//!
//! Each `juju-log` call is a process spawn (about a millisecond), so only INFO and above are
//! forwarded by default; DEBUG too while `JUJU_DEBUG` is set (a `juju debug-hooks` session).
//! TRACE is never forwarded. Logging never fails a hook: when `juju-log` cannot run, the line
//! goes to stderr, which Juju records in the unit log at WARNING.

use super::{HookTools, LogLevel};
use std::cell::Cell;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

thread_local! {
    /// Set while this thread runs juju-log, so nothing logged during that call loops back.
    static FORWARDING: Cell<bool> = const { Cell::new(false) };
}

/// The most verbose level forwarded to juju-log.
pub fn forwarded_level(debug: bool) -> LevelFilter {
    if debug {
        LevelFilter::DEBUG
    } else {
        LevelFilter::INFO
    }
}

pub fn juju_level(level: &Level) -> LogLevel {
    match *level {
        Level::ERROR => LogLevel::Error,
        Level::WARN => LogLevel::Warning,
        Level::INFO => LogLevel::Info,
        Level::DEBUG => LogLevel::Debug,
        Level::TRACE => LogLevel::Trace,
    }
}

pub struct JujuLogLayer<T> {
    tools: Arc<T>,
}

impl<T> JujuLogLayer<T> {
    pub fn new(tools: Arc<T>) -> Self {
        JujuLogLayer { tools }
    }
}

impl<S, T> Layer<S> for JujuLogLayer<T>
where
    S: Subscriber,
    T: HookTools + Send + Sync + 'static,
{
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if FORWARDING.with(Cell::get) {
            return;
        }
        let mut line = LineVisitor::default();
        event.record(&mut line);
        let level = juju_level(event.metadata().level());
        FORWARDING.with(|f| f.set(true));
        let result = self.tools.juju_log(level, &line.finish());
        FORWARDING.with(|f| f.set(false));
        if let Err(e) = result {
            // Best effort: a closed stderr leaves nowhere else to report.
            let _ = writeln!(
                std::io::stderr(),
                "{level:?}: {} (juju-log failed: {e})",
                line.finish()
            );
        }
    }
}

/// `message key=value key=value`.
#[derive(Default)]
pub(crate) struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    pub(crate) fn finish(&self) -> String {
        format!("{}{}", self.message, self.fields)
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

/// Install the layer as the global subscriber. Returns false when one was already set.
pub fn install<T: HookTools + Send + Sync + 'static>(tools: Arc<T>, debug: bool) -> bool {
    let subscriber = tracing_subscriber::registry()
        .with(JujuLogLayer::new(tools).with_filter(forwarded_level(debug)));
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::juju::memory::MemoryHookTools;

    fn with_layer(tools: &Arc<MemoryHookTools>, debug: bool, f: impl FnOnce()) {
        let subscriber = tracing_subscriber::registry()
            .with(JujuLogLayer::new(tools.clone()).with_filter(forwarded_level(debug)));
        tracing::subscriber::with_default(subscriber, f);
    }

    #[test]
    fn forwards_info_and_above_at_matching_levels() {
        let tools = Arc::new(MemoryHookTools::default());
        with_layer(&tools, false, || {
            tracing::error!("e");
            tracing::warn!(runner = "x-0-abc", "w");
            tracing::info!(count = 3, "i");
            tracing::debug!("d");
            tracing::trace!("t");
        });
        assert_eq!(
            tools.logs(),
            vec![
                (LogLevel::Error, "e".to_string()),
                (LogLevel::Warning, "w runner=x-0-abc".to_string()),
                (LogLevel::Info, "i count=3".to_string()),
            ]
        );
    }

    #[test]
    fn debug_sessions_forward_debug_but_never_trace() {
        let tools = Arc::new(MemoryHookTools::default());
        with_layer(&tools, true, || {
            tracing::debug!("d");
            tracing::trace!("t");
        });
        assert_eq!(tools.logs(), vec![(LogLevel::Debug, "d".to_string())]);
    }

    #[test]
    fn a_failing_juju_log_does_not_panic() {
        let tools = Arc::new(MemoryHookTools::default());
        tools.fail_tool("juju-log", 1, "ERROR connection refused");
        with_layer(&tools, false, || tracing::error!("still fine"));
        assert!(tools.logs().is_empty());
    }
}
