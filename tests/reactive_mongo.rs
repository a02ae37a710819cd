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
