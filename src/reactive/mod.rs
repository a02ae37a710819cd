//! Reactive mode: runners spawned for jobs a webhook router puts on a message queue.
//!
//! `queue` is the contract between the broker side (MongoDB and Redis transports that lease
//! kombu messages) and the worker side (what a worker does with one job message).

pub mod claim;
pub mod job;
#[cfg(any(test, feature = "testkit"))]
pub mod memory_queue;
pub mod mode;
pub mod queue;
pub mod run;
pub mod worker;
pub mod workers;
