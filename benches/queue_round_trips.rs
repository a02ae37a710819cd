//! Broker round trips per job for each transport: lease (message ready), lease (worker
//! blocked until a put), ack, requeue, release, renew, len. Against a real redis-server and
//! the MongoDB wire stand-in, fed by the real kombu producer. Prints a table.
//!
//! `cargo bench --bench queue_round_trips`; under `cargo test --all-targets` the same run
//! (it is a count, not a timing, and takes a few seconds).

#[path = "../tests/support/queue_conformance.rs"]
#[allow(dead_code)]
mod conformance;
#[path = "../tests/support/mongo_standin/mod.rs"]
mod mongo_standin;
#[path = "../tests/support/redis_server/mod.rs"]
mod redis_server;

use conformance::{kombu, StepClock, LEASE};
use github_runner::clock::Clock;
use github_runner::reactive::mongo::MongoQueue;
use github_runner::reactive::queue::JobQueue;
use github_runner::reactive::redis::RedisQueue;
use github_runner::reactive::source::parse_mq_uri;
use std::time::{Duration, Instant};

/// A transport and how to read its command counter.
trait Counted: JobQueue {
    fn count(&self) -> u64;
}
impl Counted for RedisQueue {
    fn count(&self) -> u64 {
        self.round_trips()
    }
}
impl Counted for MongoQueue {
    fn count(&self) -> u64 {
        self.round_trips()
    }
}

struct Row {
    transport: &'static str,
    counts: Vec<(&'static str, u64)>,
    blocked_wait: Duration,
}

fn measure<Q: Counted>(
    transport: &'static str,
    uri: &str,
    open: impl Fn() -> Q,
    clock: &StepClock,
) -> Row {
    let queue = "bench";
    kombu::put(uri, queue, &[&conformance::job(1), &conformance::job(2)]);
    let mut q = open();
    // Connect (and, for Redis, nothing else) before counting.
    q.len().unwrap();
    let mut counts = Vec::new();
    let mut step = |name, q: &mut Q, f: &mut dyn FnMut(&mut Q)| {
        let before = q.count();
        f(q);
        counts.push((name, q.count() - before));
    };
    let mut held = None;
    step("lease (ready)", &mut q, &mut |q| {
        held = q.lease_next(Duration::ZERO, LEASE).unwrap()
    });
    let d = held.clone().expect("message");
    step("renew", &mut q, &mut |q| q.renew(&d, LEASE).unwrap());
    step("requeue", &mut q, &mut |q| {
        q.requeue(&d, clock.now_epoch()).unwrap()
    });
    step("lease (ready)", &mut q, &mut |q| {
        held = q.lease_next(Duration::ZERO, LEASE).unwrap()
    });
    let d = held.clone().expect("message");
    step("release", &mut q, &mut |q| q.release(&d).unwrap());
    step("lease (ready)", &mut q, &mut |q| {
        held = q.lease_next(Duration::ZERO, LEASE).unwrap()
    });
    let d = held.clone().expect("message");
    step("ack", &mut q, &mut |q| q.ack(&d).unwrap());
    let d = q
        .lease_next(Duration::ZERO, LEASE)
        .unwrap()
        .expect("second");
    q.ack(&d).unwrap();
    step("len", &mut q, &mut |q| {
        q.len().unwrap();
    });
    // Blocked: the queue is empty; a producer puts after ~1.2 s.
    let producer_uri = uri.to_string();
    let producer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        kombu::put(&producer_uri, "bench", &[&conformance::job(3)]);
    });
    let started = Instant::now();
    step("lease (blocked ~1.2 s)", &mut q, &mut |q| {
        held = q.lease_next(Duration::from_secs(30), LEASE).unwrap()
    });
    let blocked_wait = started.elapsed();
    producer.join().unwrap();
    assert!(held.is_some(), "the blocked lease got the put");
    Row {
        transport,
        counts,
        blocked_wait,
    }
}

fn main() {
    let python = kombu::python();
    let redis = redis_server::RedisServer::start();
    let mongo = mongo_standin::MongoStandIn::start(&python);
    let clock = StepClock::new();
    let redis_uri = parse_mq_uri(&redis.uri()).unwrap();
    let mongo_uri = parse_mq_uri(&mongo.uri()).unwrap();
    let rows = [
        measure(
            "redis",
            &redis.uri(),
            || RedisQueue::open(&redis_uri, "bench", clock.clone()).unwrap(),
            &clock,
        ),
        measure(
            "mongodb",
            &mongo.uri(),
            || MongoQueue::open(&mongo_uri, "bench", clock.clone()),
            &clock,
        ),
    ];
    println!("broker round trips per operation (commands sent)");
    println!(
        "{:<24} {:>8} {:>8}",
        "operation", rows[0].transport, rows[1].transport
    );
    for (i, (name, redis_n)) in rows[0].counts.iter().enumerate() {
        println!("{:<24} {:>8} {:>8}", name, redis_n, rows[1].counts[i].1);
    }
    let per_job = |row: &Row| {
        let get = |n: &str| row.counts.iter().find(|(k, _)| *k == n).map_or(0, |c| c.1);
        get("lease (ready)") + get("ack")
    };
    println!(
        "{:<24} {:>8} {:>8}",
        "job served (lease+ack)",
        per_job(&rows[0]),
        per_job(&rows[1])
    );
    println!(
        "blocked lease woke after: redis {:.2} s, mongodb {:.2} s (put at 1.2 s; mongodb polls each 1 s)",
        rows[0].blocked_wait.as_secs_f64(),
        rows[1].blocked_wait.as_secs_f64()
    );
}
