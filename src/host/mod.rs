//! Host-side effects of the charm: the periodic-reconcile timer, the unit lock, the metrics log, the boot time.

pub mod admission;
pub mod boot;
pub mod capacity;
pub mod child;
pub mod file;
pub mod lock;
pub mod metrics;
pub mod sweep;
pub mod timer;
