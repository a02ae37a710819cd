//! How a worker settles a message with the broker: ack, drop, requeue, release, and the
//! put-back of a message whose lease the broker lost; and the report of a repository the
//! token cannot read.

use super::{Round, Worker, WorkerEvent};
use crate::reactive::job::{DropReason, JobLookup, JobTarget};
use crate::reactive::queue::{Delivery, JobQueue, QueueError};

impl Worker<'_> {
    pub(super) fn settle_err(&self, what: &str, d: &Delivery, r: Result<(), QueueError>) {
        if let Err(e) = r {
            // The lease expires and the message returns: at-least-once holds.
            tracing::warn!(message = %d.id, "could not {what} the message: {e}");
        }
    }

    pub(super) fn drop_message(&mut self, d: &Delivery, reason: &DropReason) {
        tracing::info!(message = %d.id, "dropping job message: {reason}");
        let r = self.queue.ack(d);
        self.settle_err("ack", d, r);
        self.report.event(WorkerEvent::JobDropped {
            reason: reason.name(),
        });
    }

    pub(super) fn requeue(&mut self, d: &Delivery, not_before_epoch: u64) {
        let count = d.process_count.saturating_add(1);
        self.put_back(d, count, not_before_epoch);
        self.report.event(WorkerEvent::Requeued {
            process_count: count,
        });
    }

    /// Back on the queue unchanged, served next.
    pub(super) fn release(&mut self, d: &Delivery) {
        let now = self.clock.now_epoch();
        self.put_back(d, d.process_count, now);
    }

    /// Requeue (count raised) or release (count unchanged): the job is not served, so the
    /// message must not be lost. A broker that dropped the connection gets one more try (the
    /// transport reconnects); a lease the broker no longer knows (it lost its data) means
    /// the message is put back from the copy this worker holds, unless the broker has one.
    pub(super) fn put_back(&mut self, d: &Delivery, process_count: u32, not_before_epoch: u64) {
        let settle = |q: &mut dyn JobQueue| {
            if process_count == d.process_count && not_before_epoch <= self.clock.now_epoch() {
                q.release(d)
            } else {
                q.requeue_counted(d, process_count, not_before_epoch)
            }
        };
        let mut r = settle(&mut *self.queue);
        if matches!(r, Err(QueueError::Unreachable { .. })) {
            r = settle(&mut *self.queue);
        }
        match r {
            Err(QueueError::LeaseLost { .. }) => {
                match self.queue.restore(d, process_count, not_before_epoch) {
                    Ok(true) => tracing::warn!(
                        message = %d.id,
                        "the broker no longer had the message (did it lose its data?); put it back"
                    ),
                    Ok(false) => tracing::info!(
                        message = %d.id,
                        "lease lost; the broker still has the message"
                    ),
                    Err(e) => self.settle_err("put back", d, Err(e)),
                }
            }
            other => self.settle_err("requeue", d, other),
        }
    }

    pub(super) fn release_and_pause(&mut self, d: &Delivery, resume_epoch: u64) -> Round {
        self.release(d);
        self.pause_until(resume_epoch);
        Round::Handled
    }

    /// Keeps the worker's report of a repository the token cannot read up to date.
    pub(super) fn note_access(&mut self, target: &JobTarget, lookup: &JobLookup) {
        let repo = format!("{}/{}", target.owner, target.repo);
        match lookup {
            JobLookup::NoAccess { repo } => {
                tracing::warn!("{}", crate::messages::cannot_read_jobs(repo));
                let text = crate::messages::cannot_read_jobs(repo);
                self.unreadable_repo = Some(repo.clone());
                self.set_state(|s| s.job_access = Some(text));
            }
            JobLookup::Found(_) if self.unreadable_repo.as_deref() == Some(repo.as_str()) => {
                self.unreadable_repo = None;
                self.set_state(|s| s.job_access = None);
            }
            _ => {}
        }
    }

    pub(super) fn ack_picked(&mut self, d: &Delivery) {
        let r = self.queue.ack(d);
        self.settle_err("ack", d, r);
        let queue_seconds = d
            .enqueued_epoch
            .map(|e| self.clock.now_epoch().saturating_sub(e) as f64);
        self.report.event(WorkerEvent::PickedUp { queue_seconds });
    }
}
