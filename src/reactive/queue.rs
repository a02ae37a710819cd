//! The job queue as a worker sees it: lease a message, then ack, requeue or release it.
//!
//! At-least-once: a leased message stays in the broker until it is acked; a lease that is
//! neither renewed nor settled expires and the message becomes available again (a worker
//! killed while holding it loses nothing). Implementations: MongoDB (kombu's `messages`
//! collection) and Redis (kombu's list layout), both readable by kombu producers/consumers.

use std::time::Duration;

/// One leased message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Stable across requeues: kombu's `properties.delivery_tag`, or the broker's own id
    /// when the envelope has none.
    pub id: String,
    /// The job body as the producer wrote it (kombu envelope decoded: base64, content type),
    /// or why the envelope could not be read. Hostile input: the worker validates it.
    pub body: Result<Vec<u8>, String>,
    /// kombu's `X-Process-Count` header: how many times a worker has handled it before.
    pub process_count: u32,
    /// When the message was first put on the queue (epoch seconds), when the broker knows.
    pub enqueued_epoch: Option<u64>,
    /// Identifies this lease to the broker (opaque to the worker).
    pub lease: String,
}

/// Queue length as an operator reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLength {
    /// Messages no worker holds (including ones waiting for their not-before time).
    pub waiting: u64,
    /// Messages leased by some worker right now.
    pub leased: u64,
}

/// What went wrong talking to the broker. Messages never hold credentials.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("message broker {host} unreachable: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("message broker {host} refused the operation: {detail}")]
    Refused { host: String, detail: String },
    /// The lease expired and another worker may hold the message now.
    #[error("lease of message {id} was lost")]
    LeaseLost { id: String },
}

/// A worker's view of one queue (the application's name). Implementations block on the
/// broker where it can (Redis); MongoDB polls at kombu's own interval.
// `len` is a count of two kinds of message, not a container's length: no `is_empty`.
#[allow(clippy::len_without_is_empty)]
pub trait JobQueue: Send {
    /// The next message whose not-before time has passed, leased for `lease_for`; None when
    /// none arrived within `wait`.
    fn lease_next(
        &mut self,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Delivery>, QueueError>;
    /// Extends the lease while the worker is still handling the message.
    fn renew(&mut self, delivery: &Delivery, lease_for: Duration) -> Result<(), QueueError>;
    /// Done with it for good (served, or dropped as unservable): removed from the broker.
    fn ack(&mut self, delivery: &Delivery) -> Result<(), QueueError>;
    /// Back on the queue (at the tail, kombu's `redelivered: true`) with `X-Process-Count`
    /// set to `process_count`, not to be leased before `not_before_epoch`.
    fn requeue_counted(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<(), QueueError>;
    /// Back on the queue with its count one higher (the worker handled it once more).
    fn requeue(&mut self, delivery: &Delivery, not_before_epoch: u64) -> Result<(), QueueError> {
        let count = delivery.process_count.saturating_add(1);
        self.requeue_counted(delivery, count, not_before_epoch)
    }
    /// Back on the queue with its count unchanged: its lease lapsed while another worker of
    /// this unit still handles its job, which settles it (the holder's own ack or requeue
    /// then finds the lease lost).
    fn defer(&mut self, delivery: &Delivery, not_before_epoch: u64) -> Result<(), QueueError> {
        self.requeue_counted(delivery, delivery.process_count, not_before_epoch)
    }
    /// Back on the queue unchanged (the worker is stopping before it handled the message).
    fn release(&mut self, delivery: &Delivery) -> Result<(), QueueError>;
    /// A requeue or release found the lease gone and the job is not served: when the broker
    /// has no copy of the message left (it lost its data: Redis restarted without
    /// persistence), put the one this worker holds back as a new message in kombu's format
    /// (kombu's requeue shape, `X-Process-Count` = `process_count`), not to be leased before
    /// `not_before_epoch`. True when put back; false when the broker still has it (the lease
    /// lapsed and the message went back, or another worker holds it now).
    fn restore(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<bool, QueueError>;
    fn len(&mut self) -> Result<QueueLength, QueueError>;
}
