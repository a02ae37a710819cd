//! An in-memory [`JobQueue`] with the contract's semantics (leases, not-before, requeue at
//! the tail with the count raised, release unchanged), for tests and benchmarks. Clones share
//! one queue, as several connections to one broker do. Time comes from a [`Clock`]; with a
//! real clock `lease_next` blocks on a condition variable (no polling).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::queue::{Delivery, JobQueue, QueueError, QueueLength};
use crate::clock::Clock;

#[derive(Debug, Clone)]
struct Message {
    id: String,
    body: Vec<u8>,
    process_count: u32,
    enqueued_epoch: u64,
    not_before_epoch: u64,
}

#[derive(Default)]
struct Inner {
    waiting: VecDeque<Message>,
    leased: BTreeMap<String, (Message, u64)>,
    next_id: u64,
    acked: u64,
    /// Round trips served (every trait call).
    round_trips: u64,
    /// Calls left that fail as unreachable, and the host they name.
    failures: Option<(String, u32)>,
}

#[derive(Clone)]
pub struct MemoryQueue {
    inner: Arc<(Mutex<Inner>, Condvar)>,
    clock: Arc<dyn Clock>,
}

impl MemoryQueue {
    pub fn new(clock: Arc<dyn Clock>) -> MemoryQueue {
        MemoryQueue {
            inner: Arc::new((Mutex::new(Inner::default()), Condvar::new())),
            clock,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A producer's put: a new message at the tail.
    pub fn put(&self, body: Vec<u8>, process_count: u32) -> String {
        let now = self.clock.now_epoch();
        let mut inner = self.lock();
        inner.next_id += 1;
        let id = format!("m{}", inner.next_id);
        inner.waiting.push_back(Message {
            id: id.clone(),
            body,
            process_count,
            enqueued_epoch: now,
            not_before_epoch: 0,
        });
        self.inner.1.notify_all();
        id
    }

    /// The broker loses every message, waiting or leased (a restart without persistence).
    pub fn lose_everything(&self) {
        let mut inner = self.lock();
        inner.waiting.clear();
        inner.leased.clear();
    }

    /// The next `times` calls fail as if `host` were unreachable.
    pub fn fail_with_unreachable(&self, host: &str, times: u32) {
        self.lock().failures = Some((host.to_string(), times));
    }

    /// Waiting messages: (id, process count, not-before epoch).
    pub fn waiting(&self) -> Vec<(String, u32, u64)> {
        self.lock()
            .waiting
            .iter()
            .map(|m| (m.id.clone(), m.process_count, m.not_before_epoch))
            .collect()
    }

    pub fn leased(&self) -> usize {
        self.lock().leased.len()
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    pub fn round_trips(&self) -> u64 {
        self.lock().round_trips
    }

    /// Messages still on the broker (waiting or leased).
    pub fn total(&self) -> usize {
        let inner = self.lock();
        inner.waiting.len() + inner.leased.len()
    }

    /// Counts the call; fails it when failures are armed.
    fn enter(&self, inner: &mut Inner) -> Result<(), QueueError> {
        inner.round_trips += 1;
        if let Some((host, left)) = inner.failures.as_mut() {
            if *left > 0 {
                *left -= 1;
                return Err(QueueError::Unreachable {
                    host: host.clone(),
                    detail: "connection refused".into(),
                });
            }
        }
        Ok(())
    }

    fn take_lease(&self, inner: &mut Inner, d: &Delivery) -> Result<Message, QueueError> {
        inner
            .leased
            .remove(&d.lease)
            .map(|(m, _)| m)
            .ok_or_else(|| QueueError::LeaseLost { id: d.id.clone() })
    }
}

impl JobQueue for MemoryQueue {
    fn lease_next(
        &mut self,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        loop {
            let now = self.clock.now_epoch();
            // Expired leases return to the queue.
            let expired: Vec<String> = inner
                .leased
                .iter()
                .filter(|(_, (_, until))| *until <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for k in expired {
                if let Some((m, _)) = inner.leased.remove(&k) {
                    inner.waiting.push_front(m);
                }
            }
            if let Some(pos) = inner.waiting.iter().position(|m| m.not_before_epoch <= now) {
                let m = inner.waiting.remove(pos).expect("position is in range");
                inner.next_id += 1;
                let lease = format!("lease-{}", inner.next_id);
                let delivery = Delivery {
                    id: m.id.clone(),
                    body: Ok(m.body.clone()),
                    process_count: m.process_count,
                    enqueued_epoch: Some(m.enqueued_epoch),
                    lease: lease.clone(),
                };
                inner
                    .leased
                    .insert(lease, (m, now + lease_for.as_secs().max(1)));
                return Ok(Some(delivery));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Woken by a put; also re-checks not-before and lease times every 100 ms.
            let (guard, _) = self
                .inner
                .1
                .wait_timeout(inner, left.min(Duration::from_millis(100)))
                .unwrap_or_else(PoisonError::into_inner);
            inner = guard;
        }
    }

    fn renew(&mut self, d: &Delivery, lease_for: Duration) -> Result<(), QueueError> {
        let now = self.clock.now_epoch();
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        match inner.leased.get_mut(&d.lease) {
            Some((_, until)) => {
                *until = now + lease_for.as_secs().max(1);
                Ok(())
            }
            None => Err(QueueError::LeaseLost { id: d.id.clone() }),
        }
    }

    fn ack(&mut self, d: &Delivery) -> Result<(), QueueError> {
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        self.take_lease(&mut inner, d)?;
        inner.acked += 1;
        Ok(())
    }

    fn requeue_counted(
        &mut self,
        d: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<(), QueueError> {
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        let mut m = self.take_lease(&mut inner, d)?;
        m.process_count = process_count;
        m.not_before_epoch = not_before_epoch;
        inner.waiting.push_back(m);
        self.inner.1.notify_all();
        Ok(())
    }

    fn release(&mut self, d: &Delivery) -> Result<(), QueueError> {
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        let m = self.take_lease(&mut inner, d)?;
        inner.waiting.push_front(m);
        self.inner.1.notify_all();
        Ok(())
    }

    fn restore(
        &mut self,
        d: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<bool, QueueError> {
        let now = self.clock.now_epoch();
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        let still_there = inner.waiting.iter().any(|m| m.id == d.id)
            || inner.leased.values().any(|(m, _)| m.id == d.id);
        if still_there {
            return Ok(false);
        }
        inner.waiting.push_back(Message {
            id: d.id.clone(),
            body: d.body.clone().unwrap_or_default(),
            process_count,
            enqueued_epoch: d.enqueued_epoch.unwrap_or(now),
            not_before_epoch,
        });
        self.inner.1.notify_all();
        Ok(true)
    }

    fn len(&mut self) -> Result<QueueLength, QueueError> {
        let mut inner = self.lock();
        self.enter(&mut inner)?;
        Ok(QueueLength {
            waiting: inner.waiting.len() as u64,
            leased: inner.leased.len() as u64,
        })
    }
}
