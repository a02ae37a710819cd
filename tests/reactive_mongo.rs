//! The MongoDB transport (`reactive::mongo::MongoQueue`, the official driver) against a
//! wire-protocol stand-in (tests/support/mongo_standin: mockupdb serving an in-memory store),
//! fed and read back by the real kombu MongoDB transport over pymongo.

#[macro_use]
#[path = "support/queue_conformance.rs"]
mod conformance;
#[path = "support/mongo_standin/mod.rs"]
mod mongo_standin;

use conformance::{kombu, StepClock, LEASE};
use github_runner::reactive::mongo::MongoQueue;
use github_runner::reactive::queue::JobQueue;
use github_runner::reactive::source::parse_mq_uri;
use mongo_standin::MongoStandIn;
use std::time::Duration;

fn standin() -> MongoStandIn {
    MongoStandIn::start(&kombu::python())
}

conformance_tests!(standin());

/// A waiting worker polls at kombu's 1 s interval and takes a message put meanwhile.
#[test]
fn a_waiting_worker_polls_each_second_and_takes_a_later_put() {
    let server = standin();
    let uri = parse_mq_uri(&server.uri()).unwrap();
    let waiter = std::thread::spawn(move || {
        let mut q = MongoQueue::open(&uri, "later", StepClock::new());
        let got = q.lease_next(Duration::from_secs(20), LEASE).unwrap();
        (got, q.round_trips())
    });
    std::thread::sleep(Duration::from_millis(1500));
    kombu::put(&server.uri(), "later", &[&conformance::job(20)]);
    let (got, round_trips) = waiter.join().unwrap();
    assert_eq!(
        got.expect("taken").body.unwrap(),
        conformance::job(20).into_bytes()
    );
    assert!(round_trips <= 20, "{round_trips} polls");
}

#[test]
fn an_unreachable_broker_is_named_by_host_without_credentials() {
    conformance::an_unreachable_broker_is_named_by_host_without_credentials(
        &|port| format!("mongodb://u:hunter2@127.0.0.1:{port}/db"),
        &|uri| {
            Box::new(MongoQueue::open(
                &parse_mq_uri(uri).unwrap(),
                "q",
                StepClock::new(),
            ))
        },
    );
}

/// Issue 20 item 12: a document whose `_id` is not an ObjectId (not kombu's) is handed over
/// as unreadable and the ack removes it, once; it does not come back every lease period.
#[test]
fn a_document_whose_id_is_not_an_object_id_is_leased_as_unreadable_and_acked_once() {
    use mongodb::bson::doc;
    let server = standin();
    let client = mongodb::sync::Client::with_uri_str(server.uri()).unwrap();
    let messages = client
        .database("github-runner-webhook-router")
        .collection::<mongodb::bson::Document>("messages");
    let payload =
        github_runner::reactive::envelope::kombu_payload(&conformance::job(50), "odd-id", "t-50");
    messages
        .insert_one(doc! { "_id": "not-an-object-id", "payload": payload, "queue": "odd-id", "priority": 9 })
        .run()
        .unwrap();
    let clock = StepClock::new();
    let mut q = MongoQueue::open(
        &parse_mq_uri(&server.uri()).unwrap(),
        "odd-id",
        clock.clone(),
    );
    let d = q
        .lease_next(Duration::ZERO, LEASE)
        .unwrap()
        .expect("leased");
    assert!(d.body.clone().unwrap_err().contains("ObjectId"));
    assert_eq!(d.enqueued_epoch, None);
    q.ack(&d).unwrap();
    clock.advance(LEASE.as_secs() + 1);
    assert_eq!(
        q.lease_next(Duration::ZERO, LEASE).unwrap(),
        None,
        "gone for good"
    );
    assert_eq!(messages.count_documents(doc! {}).run().unwrap(), 0);
}
