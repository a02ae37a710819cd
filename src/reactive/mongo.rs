//! [`JobQueue`] over MongoDB: kombu's `messages` collection, with leases instead of kombu's
//! delete-on-get (reactive.md §3, defect D2).
//!
//! A lease is one atomic `findAndModify` on a document of the queue whose lease is absent or
//! expired and whose not-before has passed, in kombu's order (priority, then `_id`): it sets
//! `lease_owner` (a fresh random token) and `lease_until` (epoch ms). Ack deletes the document
//! if the token still owns it; requeue rewrites `payload` as kombu's requeue does
//! (`X-Process-Count` + 1, `redelivered`), sets `not_before` and clears the lease, in place and
//! atomically (kombu's delete + insert could lose or double the message between the two);
//! release clears the lease. Documents stay in kombu's format plus those fields, so kombu's
//! own consumer (`find_one_and_delete({queue})`) still reads them.
//!
//! MongoDB offers nothing to block on here (change streams need a replica set and more
//! privileges than the relation grants), so a waiting worker polls at kombu's own interval,
//! 1 s, one `findAndModify` each.
//!
//! The driver's sync API runs its own tokio runtime: this module is used by worker
//! processes only, never by hooks.

use super::envelope::Envelope;
use super::queue::{Delivery, JobQueue, QueueError, QueueLength};
use super::redis::{new_lease_id, scrub};
use super::source::MqUri;
use crate::clock::Clock;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, ReturnDocument};
use mongodb::sync::{Client, Collection};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// kombu's collection and polling interval (transport/mongodb.py).
pub const MESSAGES: &str = "messages";
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// One worker's connection to a MongoDB queue.
pub struct MongoQueue {
    uri: MqUri,
    queue: String,
    messages: Option<Collection<Document>>,
    clock: Arc<dyn Clock>,
    /// Document `_id` (as stored: kombu writes ObjectIds, anything else is settled by its
    /// own value) and payload of each message this worker holds, by lease token.
    held: HashMap<String, (Bson, String)>,
    round_trips: u64,
}

impl MongoQueue {
    /// Connects lazily: the first operation reaches the broker.
    pub fn open(uri: &MqUri, queue: &str, clock: Arc<dyn Clock>) -> Self {
        MongoQueue {
            uri: uri.clone(),
            queue: queue.to_string(),
            messages: None,
            clock,
            held: HashMap::new(),
            round_trips: 0,
        }
    }

    /// Commands sent to MongoDB so far (each one round trip).
    pub fn round_trips(&self) -> u64 {
        self.round_trips
    }

    fn error(&mut self, e: mongodb::error::Error) -> QueueError {
        let detail = scrub(&e.kind.to_string());
        let host = self.uri.host().to_string();
        use mongodb::error::ErrorKind;
        match *e.kind {
            ErrorKind::Io(_)
            | ErrorKind::ServerSelection { .. }
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. } => QueueError::Unreachable { host, detail },
            _ => QueueError::Refused { host, detail },
        }
    }

    fn messages(&mut self) -> Result<Collection<Document>, QueueError> {
        if let Some(c) = &self.messages {
            return Ok(c.clone());
        }
        let mut options = match ClientOptions::parse(self.uri.secret().expose()).run() {
            Ok(o) => o,
            Err(e) => return Err(self.error(e)),
        };
        options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        options.app_name = Some("github-runner-worker".into());
        let client = Client::with_options(options).map_err(|e| self.error(e))?;
        let collection = client.database(self.uri.database()).collection(MESSAGES);
        self.messages = Some(collection.clone());
        Ok(collection)
    }

    /// Runs one command against `messages`, counting it.
    fn run<T>(
        &mut self,
        f: impl FnOnce(&Collection<Document>) -> mongodb::error::Result<T>,
    ) -> Result<T, QueueError> {
        let messages = self.messages()?;
        self.round_trips += 1;
        f(&messages).map_err(|e| self.error(e))
    }

    fn now_ms(&self) -> i64 {
        i64::try_from(self.clock.now_epoch().saturating_mul(1000)).unwrap_or(i64::MAX)
    }

    fn try_lease(&mut self, lease_for: Duration) -> Result<Option<Delivery>, QueueError> {
        let now = self.now_ms();
        let token = new_lease_id();
        let until = now.saturating_add(lease_for.as_millis() as i64);
        let filter = doc! {
            "queue": &self.queue,
            "lease_until": { "$not": { "$gt": now } },
            "not_before": { "$not": { "$gt": now } },
        };
        let update = doc! { "$set": { "lease_owner": &token, "lease_until": until } };
        let found = self.run(|m| {
            m.find_one_and_update(filter, update)
                .sort(doc! { "priority": 1, "_id": 1 })
                .return_document(ReturnDocument::After)
                .run()
        })?;
        Ok(found.map(|document| self.delivery(token, &document)))
    }

    fn delivery(&mut self, token: String, document: &Document) -> Delivery {
        let id = document.get("_id").cloned().unwrap_or(Bson::Null);
        let oid = id.as_object_id();
        let payload = document.get_str("payload").unwrap_or_default().to_string();
        let (tag, body, process_count) = match (Envelope::parse(payload.as_bytes()), oid) {
            // Not kombu's: handed over as unreadable, so the worker drops it once.
            (_, None) => (None, Err("document _id is not an ObjectId".to_string()), 0),
            (Ok(env), _) => (
                env.delivery_tag().map(str::to_string),
                env.body(),
                env.process_count(),
            ),
            (Err(reason), _) => (None, Err(reason), 0),
        };
        let fallback_id = match oid {
            Some(oid) => oid.to_hex(),
            None => format!("mongo-lease-{token}"),
        };
        let enqueued_epoch =
            oid.and_then(|oid| u64::try_from(oid.timestamp().timestamp_millis() / 1000).ok());
        self.held.insert(token.clone(), (id, payload));
        Delivery {
            id: tag.unwrap_or(fallback_id),
            body,
            process_count,
            enqueued_epoch,
            lease: token,
        }
    }

    /// The filter matching a held message only while this worker's lease owns it.
    fn owned(&self, delivery: &Delivery) -> Result<Document, QueueError> {
        match self.held.get(&delivery.lease) {
            Some((id, _)) => Ok(doc! { "_id": id.clone(), "lease_owner": &delivery.lease }),
            None => Err(QueueError::LeaseLost {
                id: delivery.id.clone(),
            }),
        }
    }

    fn settle(&mut self, delivery: &Delivery, update: Document) -> Result<(), QueueError> {
        let filter = self.owned(delivery)?;
        let result = self.run(|m| m.update_one(filter, update).run())?;
        match result.matched_count {
            0 => Err(QueueError::LeaseLost {
                id: delivery.id.clone(),
            }),
            _ => Ok(()),
        }
    }
}

impl JobQueue for MongoQueue {
    fn lease_next(
        &mut self,
        wait: Duration,
        lease_for: Duration,
    ) -> Result<Option<Delivery>, QueueError> {
        let started = Instant::now();
        loop {
            if let Some(delivery) = self.try_lease(lease_for)? {
                return Ok(Some(delivery));
            }
            let left = wait.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            std::thread::sleep(left.min(POLL_INTERVAL));
        }
    }

    fn renew(&mut self, delivery: &Delivery, lease_for: Duration) -> Result<(), QueueError> {
        let until = self.now_ms().saturating_add(lease_for.as_millis() as i64);
        self.settle(delivery, doc! { "$set": { "lease_until": until } })
    }

    fn ack(&mut self, delivery: &Delivery) -> Result<(), QueueError> {
        let filter = self.owned(delivery)?;
        let result = self.run(|m| m.delete_one(filter).run());
        self.held.remove(&delivery.lease);
        match result?.deleted_count {
            0 => Err(QueueError::LeaseLost {
                id: delivery.id.clone(),
            }),
            _ => Ok(()),
        }
    }

    fn requeue_counted(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<(), QueueError> {
        let payload = match self.held.get(&delivery.lease) {
            Some((_, payload)) => match Envelope::parse(payload.as_bytes()) {
                Ok(env) => env.requeued(process_count),
                Err(_) => payload.clone(),
            },
            None => String::new(),
        };
        let not_before = i64::try_from(not_before_epoch.saturating_mul(1000)).unwrap_or(i64::MAX);
        let update = doc! {
            "$set": { "payload": payload, "not_before": not_before },
            "$unset": { "lease_owner": "", "lease_until": "" },
        };
        let result = self.settle(delivery, update);
        if result.is_ok() {
            self.held.remove(&delivery.lease);
        }
        result
    }

    fn release(&mut self, delivery: &Delivery) -> Result<(), QueueError> {
        let result = self.settle(
            delivery,
            doc! { "$unset": { "lease_owner": "", "lease_until": "" } },
        );
        if result.is_ok() {
            self.held.remove(&delivery.lease);
        }
        result
    }

    fn restore(
        &mut self,
        delivery: &Delivery,
        process_count: u32,
        not_before_epoch: u64,
    ) -> Result<bool, QueueError> {
        let Some((id, payload)) = self.held.remove(&delivery.lease) else {
            return Ok(false);
        };
        // Still there under another lease, or back on the queue: nothing was lost.
        if self
            .run(|m| m.find_one(doc! { "_id": id.clone() }).run())?
            .is_some()
        {
            return Ok(false);
        }
        let (payload, priority) = match Envelope::parse(payload.as_bytes()) {
            Ok(env) => (env.requeued(process_count), env.priority()),
            Err(_) => (payload, 0),
        };
        let not_before = i64::try_from(not_before_epoch.saturating_mul(1000)).unwrap_or(i64::MAX);
        let document = doc! {
            "payload": payload,
            "queue": &self.queue,
            // kombu's top-level priority (transport/virtual/base.py).
            "priority": 9 - i32::from(priority.min(9)),
            "not_before": not_before,
        };
        self.run(|m| m.insert_one(document).run())?;
        Ok(true)
    }

    fn len(&mut self) -> Result<QueueLength, QueueError> {
        let now = self.now_ms();
        let queue = self.queue.clone();
        let total = self.run(|m| m.count_documents(doc! { "queue": &queue }).run())?;
        let leased = self.run(|m| {
            m.count_documents(doc! { "queue": &queue, "lease_until": { "$gt": now } })
                .run()
        })?;
        Ok(QueueLength {
            waiting: total.saturating_sub(leased),
            leased,
        })
    }
}
