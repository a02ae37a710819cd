//! The MongoDB transport (`reactive::mongo::MongoQueue`, the official driver) against a
//! wire-protocol stand-in (tests/support/mongo_standin: mockupdb serving an in-memory store),
//! fed and read back by the real kombu MongoDB transport over pymongo.

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

macro_rules! conformance_test {
    ($name:ident) => {
        #[test]
        fn $name() {
            let server = standin();
            conformance::$name(
                &server.uri(),
                stringify!($name),
                &conformance::open_uri(&server.uri()),
            );
        }
    };
}

conformance_test!(kombu_messages_are_leased_in_order_and_acked);
conformance_test!(requeued_messages_count_and_stay_readable_by_kombu);
conformance_test!(not_before_holds_a_requeued_message_back);
conformance_test!(a_killed_consumers_lease_expires_and_the_message_is_served_again);
conformance_test!(renew_keeps_a_lease_and_a_lost_lease_is_reported);
conformance_test!(release_puts_the_message_back_unchanged_and_first);

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

/// A real worker process SIGKILLed while holding a lease (the test binary re-run as one).
#[test]
fn a_sigkilled_worker_loses_nothing() {
    if let Ok(uri) = std::env::var(conformance::CHILD_URI_ENV) {
        return conformance::hold_until_killed("sigkill", &conformance::open_uri(&uri));
    }
    let server = standin();
    let uri = server.uri();
    conformance::a_sigkilled_worker_loses_nothing(
        "a_sigkilled_worker_loses_nothing",
        &uri,
        "sigkill",
        &conformance::open_uri(&uri),
    );
}
