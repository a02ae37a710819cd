//! The Redis transport (`reactive::redis::RedisQueue`) against a real `redis-server` on
//! loopback, fed and read back by the real kombu Redis transport (the .venv's kombu).

#[macro_use]
#[path = "support/queue_conformance.rs"]
mod conformance;
#[path = "support/redis_server/mod.rs"]
mod redis_server;

use conformance::{kombu, StepClock, LEASE};
use github_runner::reactive::queue::{JobQueue, QueueLength};
use github_runner::reactive::redis::RedisQueue;
use github_runner::reactive::source::parse_mq_uri;
use redis_server::RedisServer;
use std::time::{Duration, Instant};

conformance_tests!(RedisServer::start());

/// A waiting worker blocks on the broker (BLMOVE) and wakes when kombu puts a message: a
/// handful of commands, however long it waited.
#[test]
fn a_waiting_worker_blocks_on_the_broker_and_wakes_on_put() {
    let server = RedisServer::start();
    let uri = parse_mq_uri(&server.uri()).unwrap();
    let waiter = {
        let uri = uri.clone();
        std::thread::spawn(move || {
            let mut q = RedisQueue::open(&uri, "blocking", StepClock::new()).unwrap();
            let started = Instant::now();
            let got = q.lease_next(Duration::from_secs(30), LEASE).unwrap();
            (got, started.elapsed(), q.round_trips())
        })
    };
    // Give the waiter time to block first; correctness does not depend on it.
    std::thread::sleep(Duration::from_millis(300));
    kombu::put(&server.uri(), "blocking", &[&conformance::job(9)]);
    let (got, waited, round_trips) = waiter.join().unwrap();
    let got = got.expect("woken by the put");
    assert_eq!(got.body.unwrap(), conformance::job(9).into_bytes());
    assert!(waited < Duration::from_secs(20), "waited {waited:?}");
    assert!(round_trips <= 4, "{round_trips} commands: a poll loop?");
}

/// A requeued message whose not-before falls inside a worker's wait wakes it in time.
#[test]
fn a_waiting_worker_wakes_when_a_delayed_message_falls_due() {
    let server = RedisServer::start();
    let uri = parse_mq_uri(&server.uri()).unwrap();
    kombu::put(&server.uri(), "delayed", &[&conformance::job(10)]);
    let clock = StepClock::new();
    let mut q = RedisQueue::open(&uri, "delayed", clock.clone()).unwrap();
    let d = q.lease_next(Duration::ZERO, LEASE).unwrap().unwrap();
    use github_runner::clock::Clock;
    q.requeue(&d, clock.now_epoch() + 1).unwrap();
    // The step clock stands still, so the worker waits for the due time by the broker's
    // timeout; move the clock from another thread while it blocks.
    let mover = {
        let clock = clock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            clock.advance(1);
        })
    };
    let again = q.lease_next(Duration::from_secs(5), LEASE).unwrap();
    mover.join().unwrap();
    assert_eq!(again.map(|a| a.process_count), Some(1));
}

#[test]
fn an_unreachable_broker_is_named_by_host_without_credentials() {
    conformance::an_unreachable_broker_is_named_by_host_without_credentials(
        &|port| format!("redis://:hunter2@127.0.0.1:{port}/0"),
        &|uri| {
            Box::new(RedisQueue::open(&parse_mq_uri(uri).unwrap(), "q", StepClock::new()).unwrap())
        },
    );
}

/// Messages kombu puts with a priority land in kombu's priority lists; they are leased too.
#[test]
fn the_length_counts_every_priority_list_and_delayed_messages() {
    let server = RedisServer::start();
    let uri = parse_mq_uri(&server.uri()).unwrap();
    let mut raw = redis::Client::open(server.uri())
        .unwrap()
        .get_connection()
        .unwrap();
    let payload =
        github_runner::reactive::envelope::kombu_payload(&conformance::job(11), "prio", "tag-9");
    let _: () = redis::cmd("LPUSH")
        .arg("prio\x06\x169")
        .arg(&payload)
        .query(&mut raw)
        .unwrap();
    kombu::put(&server.uri(), "prio", &[&conformance::job(12)]);
    let clock = StepClock::new();
    let mut q = RedisQueue::open(&uri, "prio", clock).unwrap();
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 2,
            leased: 0
        }
    );
    let first = q.lease_next(Duration::ZERO, LEASE).unwrap().unwrap();
    assert_eq!(
        first.body.unwrap(),
        conformance::job(12).into_bytes(),
        "priority 0 first"
    );
    let second = q.lease_next(Duration::ZERO, LEASE).unwrap().unwrap();
    assert_eq!(second.id, "tag-9");
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 0,
            leased: 2
        }
    );
}

/// A worker killed between its blocking move and turning the claim into a lease leaves the
/// message in its lease list under a claim: once the claim's deadline passes, any worker
/// puts it back and it is served.
#[test]
fn a_worker_killed_right_after_its_blocking_move_loses_nothing() {
    use github_runner::clock::Clock;
    let server = RedisServer::start();
    let uri = parse_mq_uri(&server.uri()).unwrap();
    let clock = StepClock::new();
    let payload = github_runner::reactive::envelope::kombu_payload(
        &conformance::job(13),
        "claimed",
        "tag-13",
    );
    let mut raw = redis::Client::open(server.uri())
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline_ms = (clock.now_epoch() + 90) * 1000;
    let _: () = redis::cmd("ZADD")
        .arg("github-runner.claims.claimed")
        .arg(deadline_ms)
        .arg("deadbeef")
        .query(&mut raw)
        .unwrap();
    let _: () = redis::cmd("LPUSH")
        .arg("github-runner.lease.claimed.deadbeef")
        .arg(&payload)
        .query(&mut raw)
        .unwrap();
    let mut q = RedisQueue::open(&uri, "claimed", clock.clone()).unwrap();
    assert_eq!(
        q.lease_next(Duration::ZERO, LEASE).unwrap(),
        None,
        "claim still live"
    );
    clock.advance(91);
    let served = q
        .lease_next(Duration::ZERO, LEASE)
        .unwrap()
        .expect("claim reaped");
    assert_eq!(served.id, "tag-13");
    q.ack(&served).unwrap();
    let leftovers: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    assert!(
        leftovers
            .iter()
            .all(|k| !k.starts_with("github-runner.lease.")),
        "{leftovers:?}"
    );
}

/// Issue 20 item 13: the connection drops just as the lease script hands the message over.
/// The message is hidden only for the first lease, not for the full lease length.
#[test]
fn a_connection_dropped_as_the_lease_script_hands_a_message_over_hides_it_for_seconds() {
    use github_runner::reactive::redis::FIRST_LEASE;
    use redis_server::handover_proxy::HandoverProxy;
    let full_lease = Duration::from_secs(900);
    let server = RedisServer::start();
    kombu::put(&server.uri(), "handover", &[&conformance::job(30)]);
    let proxy = HandoverProxy::start(server.port);
    let clock = StepClock::new();
    let mut cut = RedisQueue::open(
        &parse_mq_uri(&proxy.uri()).unwrap(),
        "handover",
        clock.clone(),
    )
    .unwrap();
    assert!(
        cut.lease_next(Duration::ZERO, full_lease).is_err(),
        "the reply never came"
    );
    assert!(proxy.dropped.load(std::sync::atomic::Ordering::SeqCst));
    let mut q = RedisQueue::open(&uri_of(&server), "handover", clock.clone()).unwrap();
    assert_eq!(
        q.lease_next(Duration::ZERO, full_lease).unwrap(),
        None,
        "still leased"
    );
    clock.advance(FIRST_LEASE.as_secs() + 1);
    let served = q
        .lease_next(Duration::ZERO, full_lease)
        .unwrap()
        .expect("back after the first lease, not after the full one");
    assert_eq!(served.body.unwrap(), conformance::job(30).into_bytes());
    // A confirmed lease has the full length.
    clock.advance(FIRST_LEASE.as_secs() + 1);
    assert_eq!(q.lease_next(Duration::ZERO, full_lease).unwrap(), None);
}

/// The same when the hand-over is the blocking move's reply.
#[test]
fn a_connection_dropped_as_the_blocking_move_hands_a_message_over_hides_it_for_seconds() {
    use github_runner::reactive::redis::FIRST_LEASE;
    use redis_server::handover_proxy::HandoverProxy;
    let full_lease = Duration::from_secs(900);
    let wait = Duration::from_secs(5);
    let server = RedisServer::start();
    let proxy = HandoverProxy::start(server.port);
    let clock = StepClock::new();
    let waiter = {
        let uri = parse_mq_uri(&proxy.uri()).unwrap();
        let clock = clock.clone();
        std::thread::spawn(move || {
            let mut q = RedisQueue::open(&uri, "handover-block", clock).unwrap();
            q.lease_next(wait, full_lease).map(|d| d.map(|d| d.id))
        })
    };
    // Give the waiter time to block first; if the put comes before, the lease script hands
    // the message over instead, which the proxy cuts just the same.
    std::thread::sleep(Duration::from_millis(300));
    kombu::put(&server.uri(), "handover-block", &[&conformance::job(31)]);
    assert!(waiter.join().unwrap().is_err(), "the reply never came");
    assert!(proxy.dropped.load(std::sync::atomic::Ordering::SeqCst));
    let mut q = RedisQueue::open(&uri_of(&server), "handover-block", clock.clone()).unwrap();
    assert_eq!(
        q.lease_next(Duration::ZERO, full_lease).unwrap(),
        None,
        "still held"
    );
    clock.advance(FIRST_LEASE.as_secs() + wait.as_secs() + 1);
    let served = q
        .lease_next(Duration::ZERO, full_lease)
        .unwrap()
        .expect("back after the first lease and the wait");
    assert_eq!(served.body.unwrap(), conformance::job(31).into_bytes());
}

/// Issue 20 item 12: a payload that is not UTF-8 is handed over as unreadable and settled by
/// the ack, once; it does not fail every lease call until its lease lapses.
#[test]
fn a_payload_that_is_not_utf8_is_leased_as_unreadable_and_acked_once() {
    let server = RedisServer::start();
    server.push_raw("poison", &[0xffu8, 0xfe, b'{', b'}'][..]);
    let clock = StepClock::new();
    let mut q = RedisQueue::open(&uri_of(&server), "poison", clock).unwrap();
    let d = q
        .lease_next(Duration::ZERO, LEASE)
        .unwrap()
        .expect("leased");
    let why = d.body.clone().unwrap_err();
    assert!(why.contains("not UTF-8"), "{why}");
    q.ack(&d).unwrap();
    assert_eq!(q.len().unwrap(), QueueLength::default());
}

fn uri_of(server: &RedisServer) -> github_runner::reactive::source::MqUri {
    parse_mq_uri(&server.uri()).unwrap()
}
