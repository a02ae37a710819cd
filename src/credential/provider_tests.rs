use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::paths::HostPaths;

const START: u64 = 1_700_000_000;
/// GitHub's installation tokens live an hour.
const LIFETIME: u64 = 3600;

fn app(key: &str) -> Credential {
    Credential::App(AppCredential {
        app_id: 7,
        installation_id: 99,
        private_key: Secret::new(key),
    })
}

fn test_key() -> Credential {
    app(include_str!("../../tests/fixtures/test-app-key-pkcs1.pem"))
}

/// Issues `ghs_<n>` valid for [`LIFETIME`] from `clock`'s now, checking each JWT.
struct CountingMinter {
    clock: Arc<ManualClock>,
    minted: AtomicU32,
}

impl CountingMinter {
    fn new(clock: &Arc<ManualClock>) -> Self {
        CountingMinter {
            clock: clock.clone(),
            minted: AtomicU32::new(0),
        }
    }
    fn count(&self) -> u32 {
        self.minted.load(Ordering::SeqCst)
    }
}

impl TokenMinter for CountingMinter {
    fn mint(&self, app: &AppCredential, jwt: &Secret) -> Result<InstallationToken, GitHubError> {
        assert_eq!(app.installation_id, 99);
        assert_eq!(jwt.expose().split('.').count(), 3);
        let n = self.minted.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(InstallationToken {
            token: Secret::new(format!("ghs_{n}")),
            expires_at: self.clock.now_epoch() + LIFETIME,
            obtained_at: self.clock.now_epoch(),
        })
    }
}

fn setup(credential: Credential) -> (tempfile::TempDir, CredentialStore, Arc<ManualClock>) {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::for_unit(&HostPaths::for_unit(dir.path(), "runner/0"));
    let clock = Arc::new(ManualClock::at(START));
    store.put(&credential, &*clock).unwrap();
    (dir, store, clock)
}

#[test]
fn a_personal_access_token_is_sent_as_is_and_nothing_is_minted() {
    let (_dir, store, clock) = setup(Credential::Token(Secret::new("ghp_x")));
    let minter = CountingMinter::new(&clock);
    let p = CredentialProvider::resolved(
        Credential::Token(Secret::new("ghp_x")),
        store,
        clock.clone(),
    );
    assert_eq!(p.bearer(&minter).unwrap().expose(), "ghp_x");
    assert!(p.renew(&Secret::new("ghp_x"), &minter).unwrap().is_none());
    assert_eq!(minter.count(), 0);
}

#[test]
fn an_installation_token_is_reused_until_five_minutes_before_it_expires() {
    let (_dir, store, clock) = setup(test_key());
    let minter = CountingMinter::new(&clock);
    let p = CredentialProvider::resolved(test_key(), store.clone(), clock.clone());
    assert_eq!(p.bearer(&minter).unwrap().expose(), "ghs_1");
    clock.advance(Duration::from_secs(LIFETIME - 301));
    assert_eq!(p.bearer(&minter).unwrap().expose(), "ghs_1");
    assert_eq!(minter.count(), 1);
    clock.advance(Duration::from_secs(1));
    assert_eq!(p.bearer(&minter).unwrap().expose(), "ghs_2");
    // The next process (the next hook) reuses the file's token: no mint.
    let next_hook = CredentialProvider::resolved(test_key(), store, clock.clone());
    assert_eq!(next_hook.bearer(&minter).unwrap().expose(), "ghs_2");
    assert_eq!(minter.count(), 2);
}

#[test]
fn a_day_of_hourly_and_ten_minute_reconciles_mints_about_once_an_hour() {
    let (_dir, store, clock) = setup(test_key());
    let minter = CountingMinter::new(&clock);
    // Every reconcile is a new hook process: a new provider over the same file.
    for _ in 0..(24 * 6) {
        let hook = CredentialProvider::resolved(test_key(), store.clone(), clock.clone());
        hook.bearer(&minter).unwrap();
        clock.advance(Duration::from_secs(600));
    }
    // A token lives 60 minutes and is renewed 5 before: one per 60 minutes of 10-minute
    // rounds (renewed at the 60-minute round, since 55 is not a round).
    println!(
        "installation-token calls over a day of 10-minute reconciles: {}",
        minter.count()
    );
    assert_eq!(minter.count(), 24);
}

#[test]
fn a_token_rejected_with_401_is_renewed_once_unless_another_process_already_did() {
    let (_dir, store, clock) = setup(test_key());
    let minter = CountingMinter::new(&clock);
    let worker = CredentialProvider::following(store.clone(), clock.clone());
    let hook = CredentialProvider::resolved(test_key(), store, clock.clone());
    let first = worker.bearer(&minter).unwrap();
    // The hook is rejected first and renews.
    let renewed = hook.renew(&first, &minter).unwrap().unwrap();
    assert_eq!(renewed.expose(), "ghs_2");
    // The worker's 401 on the same token finds the hook's new one: no second mint.
    assert_eq!(
        worker.renew(&first, &minter).unwrap().unwrap().expose(),
        "ghs_2"
    );
    assert_eq!(minter.count(), 2);
}

#[test]
fn a_new_key_or_app_never_reuses_the_old_ones_token() {
    let (_dir, store, clock) = setup(test_key());
    let minter = CountingMinter::new(&clock);
    CredentialProvider::resolved(test_key(), store.clone(), clock.clone())
        .bearer(&minter)
        .unwrap();
    let rotated = app(include_str!(
        "../../tests/fixtures/test-app-key-rotated-pkcs8.pem"
    ));
    store.put(&rotated, &*clock).unwrap();
    let p = CredentialProvider::following(store, clock.clone());
    assert_eq!(p.bearer(&minter).unwrap().expose(), "ghs_2");
}

#[test]
fn a_worker_follows_the_token_the_hook_recorded() {
    let (_dir, store, clock) = setup(Credential::Token(Secret::new("ghp_old")));
    let minter = CountingMinter::new(&clock);
    let worker = CredentialProvider::following(store.clone(), clock.clone());
    assert_eq!(worker.bearer(&minter).unwrap().expose(), "ghp_old");
    store
        .put(&Credential::Token(Secret::new("ghp_new")), &*clock)
        .unwrap();
    assert_eq!(worker.bearer(&minter).unwrap().expose(), "ghp_new");
}

#[test]
fn a_bad_key_is_an_error_naming_the_app_and_not_the_key() {
    let (_dir, store, clock) = setup(app(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0\n-----END PRIVATE KEY-----\n",
    ));
    let minter = CountingMinter::new(&clock);
    let p = CredentialProvider::following(store, clock.clone());
    let err = p.bearer(&minter).unwrap_err().to_string();
    assert!(
        err.contains("GitHub App 7") && err.contains("github-app-private-key"),
        "{err}"
    );
    assert!(!err.contains("c2VjcmV0"), "{err}");
    assert_eq!(minter.count(), 0);
}

/// Mints, but first waits until the other process is blocked on the file's lock.
struct WaitingMinter {
    inner: CountingMinter,
    clocks: [Arc<ManualClock>; 2],
}

impl TokenMinter for WaitingMinter {
    fn mint(&self, app: &AppCredential, jwt: &Secret) -> Result<InstallationToken, GitHubError> {
        // A process polls the lock by sleeping on its clock: once one has slept, it is
        // waiting for this mint (the minting one never sleeps while holding the lock).
        while self.clocks.iter().all(|c| c.sleeps().is_empty()) {
            std::thread::yield_now();
        }
        self.inner.mint(app, jwt)
    }
}

#[test]
fn two_processes_renewing_at_once_mint_once() {
    let (_dir, store, clock) = setup(test_key());
    let other_clock = Arc::new(ManualClock::at(START));
    let minter = Arc::new(WaitingMinter {
        inner: CountingMinter::new(&clock),
        clocks: [clock.clone(), other_clock.clone()],
    });
    let first = CredentialProvider::following(store.clone(), clock.clone());
    let second = CredentialProvider::following(store, other_clock.clone());
    let m = minter.clone();
    let a = std::thread::spawn(move || first.bearer(&*m).unwrap());
    let m = minter.clone();
    let b = std::thread::spawn(move || second.bearer(&*m).unwrap());
    let (ta, tb) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(ta, tb);
    assert_eq!(minter.inner.count(), 1);
}
