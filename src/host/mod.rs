//! Host-side effects of the charm: the periodic-reconcile timer, the unit lock, the metrics log.

pub mod lock;
pub mod metrics;
pub mod timer;
