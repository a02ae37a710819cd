//! The `JobQueue` contract, checked the same way on every transport against messages the
//! real kombu producer wrote, and read back by the real kombu consumer.
//!
//! Time: leases and not-before times follow a [`StepClock`] the test moves, so expiry is
//! tested without sleeping.

use github_runner::clock::Clock;
use github_runner::reactive::queue::{JobQueue, QueueError, QueueLength};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[path = "kombu/mod.rs"]
pub mod kombu;

/// One `#[test]` per scenario above, each on a fresh broker from `$start` (anything with a
/// `uri()`), opened through `reactive::open_queue`.
#[macro_export]
macro_rules! conformance_tests {
    ($start:expr) => {
        /// A real worker process SIGKILLed while holding a lease (the test binary re-run
        /// as one).
        #[test]
        fn a_sigkilled_worker_loses_nothing() {
            use $crate::conformance::{open_uri, CHILD_URI_ENV};
            if let Ok(uri) = std::env::var(CHILD_URI_ENV) {
                return $crate::conformance::hold_until_killed("sigkill", &open_uri(&uri));
            }
            let server = $start;
            let uri = server.uri();
            let name = "a_sigkilled_worker_loses_nothing";
            $crate::conformance::a_sigkilled_worker_loses_nothing(name, &uri, "sigkill", &open_uri(&uri));
        }
        $crate::conformance_tests!($start; kombu_messages_are_leased_in_order_and_acked, requeued_messages_count_and_stay_readable_by_kombu, not_before_holds_a_requeued_message_back, defer_keeps_the_count_and_holds_the_message_back, a_killed_consumers_lease_expires_and_the_message_is_served_again, renew_keeps_a_lease_and_a_lost_lease_is_reported, release_puts_the_message_back_unchanged_and_first);
    };
    ($start:expr; $($name:ident),+) => {
        $(
            #[test]
            fn $name() {
                let server = $start;
                let uri = server.uri();
                $crate::conformance::$name(&uri, stringify!($name), &$crate::conformance::open_uri(&uri));
            }
        )+
    };
}

/// A clock that moves only when told.
#[derive(Debug)]
pub struct StepClock(AtomicU64);

impl StepClock {
    pub fn new() -> Arc<StepClock> {
        Arc::new(StepClock(AtomicU64::new(1_800_000_000)))
    }
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for StepClock {
    fn now_epoch(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
    fn sleep(&self, d: Duration) {
        self.advance(d.as_secs());
    }
}

/// Opens a consumer of `queue` on the broker under test, on `clock`.
pub type Open<'a> = &'a dyn Fn(&str, Arc<StepClock>) -> Box<dyn JobQueue>;

/// Consumers on `uri` as the worker side opens them: `reactive::open_queue`.
pub fn open_uri(uri: &str) -> impl Fn(&str, Arc<StepClock>) -> Box<dyn JobQueue> + '_ {
    move |queue, clock| {
        let uri = github_runner::reactive::source::parse_mq_uri(uri).unwrap();
        github_runner::reactive::open_queue(&uri, queue, clock).unwrap()
    }
}

pub const LEASE: Duration = Duration::from_secs(60);
const NOW: Duration = Duration::ZERO;

pub fn job(id: u32) -> String {
    format!(
        r#"{{"labels":["large","x64"],"status":"queued","url":"https://api.github.com/repos/octo/hello/actions/jobs/{id}"}}"#
    )
}

fn body(d: &github_runner::reactive::queue::Delivery) -> String {
    String::from_utf8(d.body.clone().expect("decodable body")).unwrap()
}

pub fn kombu_messages_are_leased_in_order_and_acked(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(1), &job(2)]);
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 2,
            leased: 0
        }
    );
    let first = q.lease_next(NOW, LEASE).unwrap().expect("first message");
    assert_eq!(body(&first), job(1));
    assert_eq!(first.process_count, 0);
    assert_eq!(
        first.id.len(),
        36,
        "kombu's uuid4 delivery tag: {}",
        first.id
    );
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 1,
            leased: 1
        }
    );
    q.ack(&first).unwrap();
    let second = q.lease_next(NOW, LEASE).unwrap().expect("second message");
    assert_eq!(body(&second), job(2));
    assert_ne!(second.id, first.id);
    q.ack(&second).unwrap();
    assert_eq!(q.len().unwrap(), QueueLength::default());
    assert_eq!(q.lease_next(NOW, LEASE).unwrap(), None);
    assert!(matches!(q.ack(&second), Err(QueueError::LeaseLost { .. })));
}

pub fn requeued_messages_count_and_stay_readable_by_kombu(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(3)]);
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    let d = q.lease_next(NOW, LEASE).unwrap().expect("message");
    q.requeue(&d, clock.now_epoch()).unwrap();
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 1,
            leased: 0
        }
    );
    let again = q.lease_next(NOW, LEASE).unwrap().expect("requeued message");
    assert_eq!((again.id.as_str(), again.process_count), (d.id.as_str(), 1));
    assert_eq!(body(&again), job(3));
    q.requeue(&again, clock.now_epoch()).unwrap();
    drop(q);
    let read = kombu::get(uri, queue, 5.0).expect("kombu reads the requeued message");
    assert_eq!(read["body"], job(3));
    assert_eq!(read["headers"]["X-Process-Count"], 2);
    assert_eq!(read["delivery_tag"], d.id.as_str());
    assert_eq!(read["content_type"], "text/plain");
}

/// A deferred message (its lease lapsed while another worker handles its job) keeps its
/// `X-Process-Count` and waits for its not-before time; kombu still reads it.
pub fn defer_keeps_the_count_and_holds_the_message_back(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(8)]);
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    let d = q.lease_next(NOW, LEASE).unwrap().expect("message");
    q.requeue(&d, clock.now_epoch()).unwrap();
    let counted = q.lease_next(NOW, LEASE).unwrap().expect("requeued message");
    assert_eq!(counted.process_count, 1);
    q.defer(&counted, clock.now_epoch() + 60).unwrap();
    assert_eq!(
        q.lease_next(NOW, LEASE).unwrap(),
        None,
        "not before its time"
    );
    clock.advance(60);
    let again = q.lease_next(NOW, LEASE).unwrap().expect("deferred message");
    assert_eq!((again.id.as_str(), again.process_count), (d.id.as_str(), 1));
    assert_eq!(body(&again), job(8));
    q.defer(&again, clock.now_epoch()).unwrap();
    drop(q);
    let read = kombu::get(uri, queue, 5.0).expect("kombu reads the deferred message");
    assert_eq!(read["body"], job(8));
    assert_eq!(read["headers"]["X-Process-Count"], 1);
}

pub fn not_before_holds_a_requeued_message_back(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(4)]);
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    let d = q.lease_next(NOW, LEASE).unwrap().expect("message");
    q.requeue(&d, clock.now_epoch() + 120).unwrap();
    assert_eq!(
        q.lease_next(NOW, LEASE).unwrap(),
        None,
        "not before its time"
    );
    assert_eq!(
        q.len().unwrap(),
        QueueLength {
            waiting: 1,
            leased: 0
        }
    );
    clock.advance(119);
    assert_eq!(q.lease_next(NOW, LEASE).unwrap(), None);
    clock.advance(1);
    let due = q.lease_next(NOW, LEASE).unwrap().expect("due message");
    assert_eq!((due.id, due.process_count), (d.id, 1));
}

pub fn a_killed_consumers_lease_expires_and_the_message_is_served_again(
    uri: &str,
    queue: &str,
    open: Open,
) {
    kombu::put(uri, queue, &[&job(5)]);
    let clock = StepClock::new();
    let mut killed = open(queue, clock.clone());
    let held = killed.lease_next(NOW, LEASE).unwrap().expect("message");
    drop(killed); // no ack, no release: as SIGKILL
    let mut other = open(queue, clock.clone());
    assert_eq!(other.lease_next(NOW, LEASE).unwrap(), None, "still leased");
    assert_eq!(
        other.len().unwrap(),
        QueueLength {
            waiting: 0,
            leased: 1
        }
    );
    clock.advance(LEASE.as_secs() + 1);
    let again = other
        .lease_next(NOW, LEASE)
        .unwrap()
        .expect("lease expired");
    assert_eq!(again.id, held.id);
    assert_eq!(body(&again), job(5));
    other.ack(&again).unwrap();
    assert_eq!(other.len().unwrap(), QueueLength::default());
}

pub fn renew_keeps_a_lease_and_a_lost_lease_is_reported(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(6)]);
    let clock = StepClock::new();
    let mut slow = open(queue, clock.clone());
    let mut other = open(queue, clock.clone());
    let d = slow.lease_next(NOW, LEASE).unwrap().expect("message");
    clock.advance(50);
    slow.renew(&d, LEASE).unwrap();
    clock.advance(50);
    assert_eq!(other.lease_next(NOW, LEASE).unwrap(), None, "renewed");
    clock.advance(20);
    let taken = other.lease_next(NOW, LEASE).unwrap().expect("expired");
    assert_eq!(taken.id, d.id);
    assert!(matches!(
        slow.renew(&d, LEASE),
        Err(QueueError::LeaseLost { .. })
    ));
    assert!(matches!(slow.ack(&d), Err(QueueError::LeaseLost { .. })));
    other.ack(&taken).unwrap();
}

pub fn release_puts_the_message_back_unchanged_and_first(uri: &str, queue: &str, open: Open) {
    kombu::put(uri, queue, &[&job(7), &job(8)]);
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    let d = q.lease_next(NOW, LEASE).unwrap().expect("message");
    q.release(&d).unwrap();
    let again = q.lease_next(NOW, LEASE).unwrap().expect("released message");
    assert_eq!((again.id.as_str(), again.process_count), (d.id.as_str(), 0));
    assert_eq!(body(&again), job(7));
}

/// `open_uri` gets a URI with a password for a loopback port nobody listens on: the error
/// names the broker by host and never carries the password.
pub fn an_unreachable_broker_is_named_by_host_without_credentials(
    scheme_uri: &dyn Fn(u16) -> String,
    open_uri: &dyn Fn(&str) -> Box<dyn JobQueue>,
) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut q = open_uri(&scheme_uri(port));
    let err = q.len().unwrap_err();
    assert!(matches!(err, QueueError::Unreachable { .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// Set in a re-executed test binary: the broker URI the child holds a message on.
pub const CHILD_URI_ENV: &str = "QUEUE_TEST_CHILD_URI";

/// Child side of [`a_sigkilled_worker_loses_nothing`]: lease one message, say so, wait to be
/// killed (bounded, so a lost parent does not leave it behind).
pub fn hold_until_killed(queue: &str, open: Open) {
    use std::io::Write;
    let mut q = open(queue, StepClock::new());
    let d = q
        .lease_next(Duration::from_secs(5), LEASE)
        .unwrap()
        .expect("a message");
    println!("LEASED {}", d.id);
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed within 60 s");
}

/// A real worker process is SIGKILLed while it holds a lease: the message comes back once
/// the lease expires (same step-clock epoch in both processes), nothing is lost.
pub fn a_sigkilled_worker_loses_nothing(test_name: &str, uri: &str, queue: &str, open: Open) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    kombu::put(uri, queue, &[&job(30)]);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_URI_ENV, uri)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("re-run the test binary as a worker");
    let stdout = child.stdout.take().unwrap();
    let leased = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split_once("LEASED ")
                .map(|(_, id)| id.trim().to_string())
        });
    child.kill().expect("SIGKILL the worker");
    child.wait().unwrap();
    let held_id = leased.expect("the child leased the message");
    let clock = StepClock::new();
    let mut q = open(queue, clock.clone());
    assert_eq!(
        q.lease_next(NOW, LEASE).unwrap(),
        None,
        "still leased by the dead worker"
    );
    clock.advance(LEASE.as_secs() + 1);
    let again = q.lease_next(NOW, LEASE).unwrap().expect("served again");
    assert_eq!(again.id, held_id);
    assert_eq!(body(&again), job(30));
    q.ack(&again).unwrap();
    assert_eq!(q.len().unwrap(), QueueLength::default());
}
