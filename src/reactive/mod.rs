//! Reactive mode: runners spawned for jobs a webhook router puts on a message queue.
//!
//! `queue` is the contract between the broker side (MongoDB and Redis transports that lease
//! kombu messages) and the worker side (what a worker does with one job message). `source`
//! decides where the queue lives (`mq-uri` or the `mongodb` relation), `relation` reads and
//! answers that relation, `envelope` reads and writes kombu's message format.

pub mod claim;
pub mod envelope;
pub mod github_jobs;
pub mod health;
pub mod job;
#[cfg(any(test, feature = "testkit"))]
pub mod memory_queue;
pub mod mode;
pub mod mongo;
pub mod observed;
pub mod pacing;
pub mod queue;
pub mod redis;
mod redis_scripts;
pub mod relation;
pub mod run;
pub mod source;
pub mod worker;
pub mod workers;

use crate::clock::Clock;
use source::{BrokerKind, MqUri};
use std::sync::Arc;

/// The queue named `queue_name` (the application's name) on the broker `uri` names. Only in
/// worker processes: the MongoDB driver starts its own runtime. Nothing connects until the
/// first call, so a broker that is down shows up as `QueueError::Unreachable` there.
pub fn open_queue(
    uri: &MqUri,
    queue_name: &str,
    clock: Arc<dyn Clock>,
) -> Result<Box<dyn queue::JobQueue>, queue::QueueError> {
    Ok(match uri.kind() {
        BrokerKind::MongoDb => Box::new(mongo::MongoQueue::open(uri, queue_name, clock)),
        BrokerKind::Redis => Box::new(redis::RedisQueue::open(uri, queue_name, clock)?),
    })
}
