//! The pipeline end to end, one file per group of events.

mod actions;
mod config_changed;
mod hooks;
mod lifecycle;
