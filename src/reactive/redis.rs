//! [`JobQueue`] over Redis, on kombu's own list layout so kombu producers work unchanged.
//!
//! kombu (transport/redis.py) keeps queue `Q` as lists `Q` (priority 0) and `Q\x06\x16{3,6,9}`;
//! producers `LPUSH` the payload, consumers pop the oldest from the right, lists in that
//! order. A lease here moves the message atomically into a list of its own,
//! `github-runner.lease.Q.<lease id>`, recorded with its deadline in the sorted set
//! `github-runner.leases.Q`; ack deletes both. Any worker's next lease call first returns
//! every expired lease to the head of `Q` (served next) and moves due requeued messages from
//! `github-runner.delayed.Q` (scored by not-before) to the tail. All of that is one Lua
//! script, so each step is atomic.
//!
//! Waiting blocks on the broker: when nothing is ready, `BLMOVE Q <lease list>` with a
//! timeout bounded by the next due time (a delayed message or an expiring lease). While it
//! blocks the lease list is registered in `github-runner.claims.Q`, so a worker killed right
//! after the move loses nothing either. A lease (or claim) starts short, [`FIRST_LEASE`],
//! and gets its full length only once the worker has the message in hand: a connection
//! dropped just as Redis hands a message over hides it for seconds, not a lease length.
//! Payloads are bytes: one that is not UTF-8 is handed to the worker as unreadable (it
//! drops it once) instead of failing every lease call. Messages with a priority other than 0 (the router
//! never sets one) are seen by the non-blocking step, i.e. within the wait. Standalone Redis
//! only (the scripts touch keys they derive, which Redis Cluster forbids).

use super::envelope::Envelope;
use super::queue::{Delivery, JobQueue, QueueError, QueueLength};
use super::source::MqUri;
use crate::clock::Clock;
use ::redis::{Connection, Script};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// kombu's priority separator and steps (transport/redis.py `sep`, `PRIORITY_STEPS`).
const KOMBU_SEP: &str = "\x06\x16";
const PRIORITY_STEPS: [u8; 4] = [0, 3, 6, 9];
/// Most expired leases or due messages one lease call moves (bounds the script's run time).
const MAX_MOVED_PER_CALL: u32 = 100;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Reply timeout beyond a blocking call's own timeout.
const REPLY_MARGIN: Duration = Duration::from_secs(10);
/// A lease's length until the worker confirms it holds the message (one renew after the
/// payload arrived): a lost reply hides the message this long, plus the blocking wait.
pub const FIRST_LEASE: Duration = Duration::from_secs(30);

use super::redis_scripts::{
    ACK_SCRIPT, LEASE_SCRIPT, PROMOTE_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT, REQUEUE_SCRIPT,
    RESTORE_SCRIPT,
};

struct Keys {
    /// kombu's lists, in consumption order.
    queues: Vec<String>,
    leases: String,
    claims: String,
    delayed: String,
    lease_prefix: String,
}

impl Keys {
    fn new(queue: &str) -> Keys {
        let queues = PRIORITY_STEPS
            .iter()
            .map(|p| match p {
                0 => queue.to_string(),
                p => format!("{queue}{KOMBU_SEP}{p}"),
            })
            .collect();
        Keys {
            queues,
            leases: format!("github-runner.leases.{queue}"),
            claims: format!("github-runner.claims.{queue}"),
            delayed: format!("github-runner.delayed.{queue}"),
            lease_prefix: format!("github-runner.lease.{queue}."),
        }
    }

    fn lease_list(&self, lease: &str) -> String {
        format!("{}{lease}", self.lease_prefix)
    }
}

/// One worker's connection to a Redis queue.
pub struct RedisQueue {
    client: ::redis::Client,
    connection: Option<Connection>,
    host: String,
    keys: Keys,
    clock: Arc<dyn Clock>,
    /// Payloads of the messages this worker holds, by lease id (for requeue and restore).
    held: HashMap<String, Vec<u8>>,
    round_trips: u64,
}

impl RedisQueue {
    pub fn open(uri: &MqUri, queue: &str, clock: Arc<dyn Clock>) -> Result<Self, QueueError> {
        let host = uri.host().to_string();
        let client =
            ::redis::Client::open(uri.secret().expose()).map_err(|e| QueueError::Refused {
                host: host.clone(),
                detail: format!("invalid redis URI ({:?})", e.kind()),
            })?;
        Ok(RedisQueue {
            client,
            connection: None,
            host,
            keys: Keys::new(queue),
            clock,
            held: HashMap::new(),
            round_trips: 0,
        })
    }

    /// Commands sent to Redis so far (each one round trip).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    fn error(&mut self, e: ::redis::RedisError) -> QueueError {
        let detail = scrub(&e.to_string());
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_timeout()
            || e.is_connection_refusal()
        {
            // Reconnect on the next call.
            self.connection = None;
            QueueError::Unreachable {
                host: self.host.clone(),
                detail,
            }
        } else {
            QueueError::Refused {
                host: self.host.clone(),
                detail,
            }
        }
    }

    /// Runs `f` on a connection whose reply timeout is `reply_timeout`.
    fn with_connection<T>(
        &mut self,
        reply_timeout: Duration,
        f: impl FnOnce(&mut Connection) -> ::redis::RedisResult<T>,
    ) -> Result<T, QueueError> {
        if self.connection.is_none() {
            match self.client.get_connection_with_timeout(CONNECT_TIMEOUT) {
                Ok(c) => self.connection = Some(c),
                Err(e) => return Err(self.error(e)),
            }
        }
        self.round_trips += 1;
        let result = match self.connection.as_mut() {
            Some(connection) => connection
                .set_read_timeout(Some(reply_timeout))
                .and_then(|()| f(connection)),
            None => unreachable!("connected just above"),
        };
        result.map_err(|e| self.error(e))
    }

    fn now_ms(&self) -> u64 {
        self.clock.now_epoch().saturating_mul(1000)
    }

    fn delivery(&mut self, lease: String, payload: Vec<u8>) -> Delivery {
        let parsed = match std::str::from_utf8(&payload) {
            Ok(_) => Envelope::parse(&payload),
            Err(e) => Err(format!("payload is not UTF-8: {e}")),
        };
        let (id, body, process_count) = match parsed {
            Ok(env) => (
                env.delivery_tag().map(str::to_string),
                env.body(),
                env.process_count(),
            ),
            Err(reason) => (None, Err(reason), 0),
        };
        self.held.insert(lease.clone(), payload);
        Delivery {
            id: id.unwrap_or_else(|| format!("redis-lease-{lease}")),
            body,
            process_count,
            enqueued_epoch: None,
            lease,
        }
    }

    /// One non-blocking attempt: `Ok(Ok(delivery))`, or `Ok(Err(next due ms))` with the
    /// claim for a blocking move registered under `lease`.
    fn try_lease(
        &mut self,
        lease: &str,
        block: Duration,
    ) -> Result<Result<Vec<u8>, Option<u64>>, QueueError> {
        let now = self.now_ms();
        let deadline = now + FIRST_LEASE.as_millis() as u64;
        let claim_deadline = deadline + block.as_millis() as u64;
        let script = Script::new(LEASE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.claims)
            .key(&self.keys.delayed)
            .key(self.keys.lease_list(lease));
        for q in &self.keys.queues {
            invocation.key(q);
        }
        invocation
            .arg(now)
            .arg(deadline)
            .arg(lease)
            .arg(&self.keys.lease_prefix)
            .arg(claim_deadline)
            .arg(MAX_MOVED_PER_CALL);
        let (found, value): (u8, Vec<u8>) =
            self.with_connection(REPLY_MARGIN, |c| invocation.invoke(c))?;
        Ok(match found {
            1 => Ok(value),
            _ => Err(std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|v| u64::try_from(v).ok())),
        })
    }

    /// The worker has the payload: the first lease becomes a full one. Ok(false) when the
    /// first lease lapsed meanwhile (the message is back on the queue).
    fn confirm(&mut self, lease: &str, lease_for: Duration) -> Result<bool, QueueError> {
        let deadline = self.now_ms() + lease_for.as_millis() as u64;
        let leases = self.keys.leases.clone();
        match self.settle(
            RENEW_SCRIPT,
            &[&leases],
            &[lease.to_string(), deadline.to_string()],
            lease,
        ) {
            Ok(()) => Ok(true),
            Err(QueueError::LeaseLost { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops the held copy once the broker settled the message; a lost lease keeps it for
    /// [`JobQueue::restore`], an unreachable broker for the worker's retry.
    fn forget_unless_lost(&mut self, lease: &str, result: &Result<(), QueueError>) {
        if result.is_ok() {
            self.held.remove(lease);
        }
    }

    fn settle(
        &mut self,
        script: &str,
        keys: &[&str],
        args: &[String],
        id: &str,
    ) -> Result<(), QueueError> {
        let args: Vec<Vec<u8>> = args.iter().map(|a| a.clone().into_bytes()).collect();
        self.settle_bytes(script, keys, &args, id)
    }

    fn settle_bytes(
        &mut self,
        script: &str,
        keys: &[&str],
        args: &[Vec<u8>],
        id: &str,
    ) -> Result<(), QueueError> {
        let script = Script::new(script);
        let mut invocation = script.prepare_invoke();
        let invocation = &mut invocation;
        for k in keys {
            invocation.key(*k);
        }
        for a in args {
            invocation.arg(a);
        }
        let done: u8 = self.with_connection(REPLY_MARGIN, |c| invocation.invoke(c))?;
        match done {
            1 => Ok(()),
            _ => Err(QueueError::LeaseLost { id: id.to_string() }),
        }
    }
}

impl JobQueue for RedisQueue {
    fn lease_next(
        &mut self,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let started = Instant::now();
        loop {
            let lease = new_lease_id();
            let left = wait.saturating_sub(started.elapsed());
            let next_due = match self.try_lease(&lease, left)? {
                Ok(payload) if self.confirm(&lease, lease_for)? => {
                    return Ok(Some(self.delivery(lease, payload)))
                }
                // Lapsed before the confirmation: back on the queue, try again.
                Ok(_) => continue,
                Err(next_due) => next_due,
            };
            // Block until a message arrives, the wait ends, or something falls due.
            let until_due =
                next_due.map(|at| Duration::from_millis(at.saturating_sub(self.now_ms())));
            let block = match until_due {
                Some(due) => left.min(due.max(Duration::from_millis(10))),
                None => left,
            };
            let list = self.keys.lease_list(&lease);
            let moved: Option<Vec<u8>> = if block.is_zero() {
                None
            } else {
                let head = self.keys.queues[0].clone();
                self.with_connection(block + REPLY_MARGIN, |c| {
                    ::redis::cmd("BLMOVE")
                        .arg(&head)
                        .arg(&list)
                        .arg("RIGHT")
                        .arg("LEFT")
                        .arg(format!("{:.3}", block.as_secs_f64().max(0.001)))
                        .query(c)
                })?
            };
            if moved.is_some() {
                let deadline = self.now_ms() + FIRST_LEASE.as_millis() as u64;
                let claims = self.keys.claims.clone();
                let leases = self.keys.leases.clone();
                let promoted: Option<Vec<u8>> = self.with_connection(REPLY_MARGIN, |c| {
                    Script::new(PROMOTE_SCRIPT)
                        .key(&claims)
                        .key(&leases)
                        .key(&list)
                        .arg(&lease)
                        .arg(deadline)
                        .invoke(c)
                })?;
                if let Some(payload) = promoted {
                    if self.confirm(&lease, lease_for)? {
                        return Ok(Some(self.delivery(lease, payload)));
                    }
                }
                // Reaped while this worker stalled: the message is back on the queue.
                continue;
            }
            let claims = self.keys.claims.clone();
            let _: u8 = self.with_connection(REPLY_MARGIN, |c| {
                ::redis::cmd("ZREM").arg(&claims).arg(&lease).query(c)
            })?;
            if started.elapsed() >= wait {
                return Ok(None);
            }
        }
    }

    fn renew(&mut self, delivery: &Delivery, lease_for: Duration) -> Result<(), QueueError> {
        let deadline = self.now_ms() + lease_for.as_millis() as u64;
        let leases = self.keys.leases.clone();
        self.settle(
            RENEW_SCRIPT,
            &[&leases],
            &[delivery.lease.clone(), deadline.to_string()],
            &delivery.id,
        )
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), QueueError> {
        let leases = self.keys.leases.clone();
        let list = self.keys.lease_list(&delivery.lease);
        let result = self.settle(
            ACK_SCRIPT,
            &[&leases, &list],
            std::slice::from_ref(&delivery.lease),
            &delivery.id,
        );
        self.held.remove(&delivery.lease);
        result
    }

    fn requeue_counted(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<(), QueueError> {
        let Some(payload) = self.held.get(&delivery.lease) else {
            return Err(QueueError::LeaseLost {
                id: delivery.id.clone(),
            });
        };
        let requeued = requeued_payload(payload, process_count);
        let leases = self.keys.leases.clone();
        let list = self.keys.lease_list(&delivery.lease);
        let delayed = self.keys.delayed.clone();
        let head = self.keys.queues[0].clone();
        let args = [
            delivery.lease.clone().into_bytes(),
            requeued,
            not_before_epoch
                .saturating_mul(1000)
                .to_string()
                .into_bytes(),
            self.now_ms().to_string().into_bytes(),
        ];
        let result = self.settle_bytes(
            REQUEUE_SCRIPT,
            &[&leases, &list, &delayed, &head],
            &args,
            &delivery.id,
        );
        self.forget_unless_lost(&delivery.lease, &result);
        result
    }

    fn release(&mut self, delivery: &Delivery) -> Result<(), QueueError> {
        let leases = self.keys.leases.clone();
        let list = self.keys.lease_list(&delivery.lease);
        let head = self.keys.queues[0].clone();
        let result = self.settle(
            RELEASE_SCRIPT,
            &[&leases, &list, &head],
            std::slice::from_ref(&delivery.lease),
            &delivery.id,
        );
        self.forget_unless_lost(&delivery.lease, &result);
        result
    }

    fn restore(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<bool, QueueError> {
        let Some(payload) = self.held.remove(&delivery.lease) else {
            return Ok(false);
        };
        let tag = Envelope::parse(&payload)
            .ok()
            .and_then(|e| e.delivery_tag().map(str::to_string))
            .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        let (needle, exact) = match tag {
            Some(t) => (t.into_bytes(), "0"),
            None => (payload.clone(), "1"),
        };
        let requeued = requeued_payload(&payload, process_count);
        let script = Script::new(RESTORE_SCRIPT);
        let mut invocation = script.prepare_invoke();
        invocation
            .key(&self.keys.leases)
            .key(&self.keys.claims)
            .key(&self.keys.delayed);
        for q in &self.keys.queues {
            invocation.key(q);
        }
        invocation
            .arg(needle)
            .arg(&self.keys.lease_prefix)
            .arg(requeued)
            .arg(not_before_epoch.saturating_mul(1000))
            .arg(self.now_ms())
            .arg(exact);
        let put: u8 = self.with_connection(REPLY_MARGIN, |c| invocation.invoke(c))?;
        Ok(put == 1)
    }

    fn len(&mut self) -> Result<QueueLength, QueueError> {
        let mut pipe = ::redis::pipe();
        for q in &self.keys.queues {
            pipe.cmd("LLEN").arg(q);
        }
        pipe.cmd("ZCARD").arg(&self.keys.delayed);
        pipe.cmd("ZCARD").arg(&self.keys.leases);
        let counts: Vec<u64> = self.with_connection(REPLY_MARGIN, |c| pipe.query(c))?;
        let (waiting, leased) = counts.split_at(counts.len().saturating_sub(1));
        Ok(QueueLength {
            waiting: waiting.iter().sum(),
            leased: leased.iter().sum(),
        })
    }
}

/// kombu's requeue shape with the count set; a payload that is no envelope goes back as is.
fn requeued_payload(payload: &[u8], process_count: u32) -> Vec<u8> {
    match Envelope::parse(payload) {
        Ok(env) => env.requeued(process_count).into_bytes(),
        Err(_) => payload.to_vec(),
    }
}

/// 128 random bits, hex: names a lease (and its list) uniquely across workers and machines.
pub(crate) fn new_lease_id() -> String {
    let mut bytes = [0u8; 16];
    // The OS random source failing leaves a time-derived id: still unique per worker.
    if getrandom::getrandom(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = (nanos ^ (u128::from(std::process::id()) << 64)).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Broker error texts must not carry credentials: drop anything that looks like a URI's
/// user information.
pub(crate) fn scrub(detail: &str) -> String {
    detail
        .split(' ')
        .map(|word| {
            if word.contains("://") {
                crate::secret::redact_url_credentials(word)
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
