//! GitHub App authentication against the fake GitHub: the fake checks the JWT as GitHub does
//! (each rule refused on its own), and the real client with the credential provider mints
//! an installation token once, reuses it from the unit's file, renews it on a 401 once,
//! never sends one past its `expires_at` (an injected clock), and two processes renewing at
//! once mint once.

#[path = "support/fake_github/mod.rs"]
mod fake_github;

use fake_github::{sign_jwt, Endpoint, FakeGitHub};
use github_runner::clock::{Clock, ManualClock, SystemClock};
use github_runner::credential::app::AppKey;
use github_runner::credential::provider::CredentialProvider;
use github_runner::credential::store::CredentialStore;
use github_runner::credential::{AppCredential, Credential};
use github_runner::github::{GitHub, GitHubClient, GitHubError, GitHubPath};
use github_runner::identity::UnitIdentity;
use github_runner::paths::HostPaths;
use github_runner::secret::Secret;
use serde_json::{json, Value};
use std::sync::{Arc, Barrier};
use std::time::Duration;

const APP_ID: u64 = 4242;
const INSTALLATION: u64 = 77;
const KEY: &str = include_str!("fixtures/test-app-key-pkcs1.pem");
const KEY_PKCS8: &str = include_str!("fixtures/test-app-key-pkcs8.pem");
const ROTATED_KEY: &str = include_str!("fixtures/test-app-key-rotated-pkcs8.pem");

fn fake_with_app() -> FakeGitHub {
    let gh = FakeGitHub::start();
    gh.add_app(
        APP_ID,
        INSTALLATION,
        KEY,
        json!({"organization_self_hosted_runners": "write", "metadata": "read"}),
    );
    gh
}

fn now() -> u64 {
    SystemClock.now_epoch()
}

fn post(url: &str, bearer: &str) -> (u16, Value) {
    let req = ureq::post(url)
        .set("Accept", "application/vnd.github+json")
        .set("User-Agent", "github-app-test")
        .set("Authorization", &format!("Bearer {bearer}"))
        .timeout(Duration::from_secs(10));
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{url}: {e}"),
    };
    (resp.status(), resp.into_json().unwrap_or(Value::Null))
}

fn get(url: &str, bearer: &str) -> u16 {
    let req = ureq::get(url)
        .set("User-Agent", "github-app-test")
        .set("Authorization", &format!("Bearer {bearer}"));
    match req.call() {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(s, _)) => s,
        Err(e) => panic!("{url}: {e}"),
    }
}

fn mint_url(gh: &FakeGitHub, installation: u64) -> String {
    format!(
        "{}/app/installations/{installation}/access_tokens",
        gh.api_base()
    )
}

fn jwt(key: &str, header: Value, claims: Value) -> String {
    sign_jwt(key, &header, &claims)
}

fn rs256() -> Value {
    json!({"alg": "RS256", "typ": "JWT"})
}

#[test]
fn a_valid_jwt_gets_an_installation_token_shaped_as_github_documents_it() {
    let gh = fake_with_app();
    // The charm's own JWT, from either PEM form of the key.
    for pem in [KEY, KEY_PKCS8] {
        let token = AppKey::from_pem(&Secret::new(pem))
            .unwrap()
            .jwt(APP_ID, now())
            .unwrap();
        let (status, body) = post(&mint_url(&gh, INSTALLATION), token.expose());
        assert_eq!(status, 201, "{body}");
        let installation_token = body["token"].as_str().unwrap();
        let expires_at =
            github_runner::credential::app::parse_expires_at(body["expires_at"].as_str().unwrap())
                .unwrap();
        assert!(
            (now() + 3590..=now() + 3600).contains(&expires_at),
            "{body}"
        );
        assert_eq!(body["permissions"]["metadata"], "read");
        assert_eq!(body["repository_selection"], "all");
        // The installation token authorises the API; the JWT does not.
        let runners = format!("{}/orgs/acme/actions/runners", gh.api_base());
        assert_eq!(get(&runners, installation_token), 200);
        assert_eq!(get(&runners, token.expose()), 401);
    }
}

/// Each of GitHub's rules, broken alone, is a 401 naming it (and no token).
#[test]
fn the_fake_refuses_every_jwt_github_refuses() {
    let gh = fake_with_app();
    let t = now();
    let good = json!({"iat": t - 60, "exp": t + 540, "iss": APP_ID});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "signed with another key",
            jwt(ROTATED_KEY, rs256(), good.clone()),
            "bad signature",
        ),
        (
            "exp more than 10 minutes after iat",
            jwt(
                KEY,
                rs256(),
                json!({"iat": t - 60, "exp": t - 60 + 601, "iss": APP_ID}),
            ),
            "too far in the future",
        ),
        (
            "iat in the future",
            jwt(
                KEY,
                rs256(),
                json!({"iat": t + 120, "exp": t + 300, "iss": APP_ID}),
            ),
            "'iat'",
        ),
        (
            "exp in the past",
            jwt(
                KEY,
                rs256(),
                json!({"iat": t - 700, "exp": t - 100, "iss": APP_ID}),
            ),
            "'exp'",
        ),
        (
            "another App's iss",
            jwt(
                KEY,
                rs256(),
                json!({"iat": t - 60, "exp": t + 540, "iss": 1}),
            ),
            "Integration not found",
        ),
        (
            "alg none",
            jwt(KEY, json!({"alg": "none"}), good.clone()),
            "'alg' must be RS256",
        ),
        (
            "alg HS256",
            jwt(KEY, json!({"alg": "HS256", "typ": "JWT"}), good.clone()),
            "'alg' must be RS256",
        ),
        ("not a JWT", "ghp_not_a_jwt".into(), "could not be decoded"),
    ];
    for (case, token, says) in &cases {
        let (status, body) = post(&mint_url(&gh, INSTALLATION), token);
        assert_eq!(status, 401, "{case}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains(says),
            "{case}: {body}"
        );
        assert!(body.get("token").is_none(), "{case}");
    }
    assert!(gh.installation_tokens().is_empty());
    // The same claims, well signed, pass; `iss` as a string too.
    let (status, _) = post(&mint_url(&gh, INSTALLATION), &jwt(KEY, rs256(), good));
    assert_eq!(status, 201);
    let as_string = json!({"iat": t - 60, "exp": t + 540, "iss": APP_ID.to_string()});
    assert_eq!(
        post(&mint_url(&gh, INSTALLATION), &jwt(KEY, rs256(), as_string)).0,
        201
    );
    // An installation of no App of this key: 404.
    let (status, _) = post(
        &mint_url(&gh, 999),
        &jwt(
            KEY,
            rs256(),
            json!({"iat": t - 60, "exp": t + 540, "iss": APP_ID}),
        ),
    );
    assert_eq!(status, 404);
}

#[test]
fn an_installation_token_past_its_expires_at_answers_401() {
    let gh = fake_with_app();
    gh.set_installation_token_lifetime(0);
    let token = AppKey::from_pem(&Secret::new(KEY))
        .unwrap()
        .jwt(APP_ID, now())
        .unwrap();
    let (_, body) = post(&mint_url(&gh, INSTALLATION), token.expose());
    let runners = format!("{}/orgs/acme/actions/runners", gh.api_base());
    assert_eq!(get(&runners, body["token"].as_str().unwrap()), 401);
    assert_eq!(gh.expired_token_uses(), 1);
}

// ---- the charm's client and credential provider against it ----

struct Unit {
    _dir: tempfile::TempDir,
    store: CredentialStore,
}

fn unit() -> Unit {
    let dir = tempfile::tempdir().unwrap();
    let store = CredentialStore::for_unit(&HostPaths::for_unit(dir.path(), "github-runner/0"));
    Unit { _dir: dir, store }
}

fn app_credential() -> Credential {
    Credential::App(AppCredential {
        app_id: APP_ID,
        installation_id: INSTALLATION,
        private_key: Secret::new(KEY),
    })
}

/// A hook's client (a new process: a new provider over the unit's file).
fn hook_client(
    gh: &FakeGitHub,
    unit: &Unit,
    path: GitHubPath,
    clock: Arc<dyn Clock>,
) -> GitHubClient {
    unit.store.put(&app_credential(), &*clock).unwrap();
    let identity = UnitIdentity::parse("github-runner/0", "model-uuid").unwrap();
    let mut settings = gh.client_settings(path, identity);
    settings.credential = Arc::new(CredentialProvider::resolved(
        app_credential(),
        unit.store.clone(),
        clock.clone(),
    ));
    GitHubClient::new(settings).unwrap().with_clock(clock)
}

fn org() -> GitHubPath {
    GitHubPath::Org("acme".into())
}

/// Also the measurement of a steady reconcile with App auth: one listing, no token call.
#[test]
fn the_client_mints_once_on_the_ghes_path_and_every_later_hook_reuses_it() {
    let gh = fake_with_app();
    let unit = unit();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    for path in [
        org(),
        GitHubPath::Repo {
            owner: "acme".into(),
            repo: "app".into(),
        },
    ] {
        let first = hook_client(&gh, &unit, path.clone(), clock.clone());
        first.list_runners().unwrap();
        first.list_runners().unwrap();
        gh.clear_requests();
        // A steady reconcile: the next hook, the same unit.
        let next = hook_client(&gh, &unit, path, clock.clone());
        next.list_runners().unwrap();
        let counts = gh.counts();
        println!("API calls per steady reconcile with App auth: {counts:?}");
        assert_eq!(counts.get(&Endpoint::ListRunners), Some(&1), "{counts:?}");
        assert_eq!(counts.get(&Endpoint::InstallationToken), None, "{counts:?}");
    }
    // One token for the unit, minted on the GHES path (`/api/v3/app/...`) by the first hook.
    assert_eq!(gh.installation_tokens().len(), 1);
}

#[test]
fn a_revoked_token_is_renewed_once_and_a_refused_renewal_names_the_app() {
    let gh = fake_with_app();
    let unit = unit();
    let client = hook_client(&gh, &unit, org(), Arc::new(SystemClock));
    client.list_runners().unwrap();
    // GitHub revoked it early: one 401, one renewal, one retry.
    gh.expire_installation_tokens();
    gh.clear_requests();
    client.list_runners().unwrap();
    assert_eq!(gh.count(Endpoint::InstallationToken), 1);
    assert_eq!(gh.count(Endpoint::ListRunners), 2);
    // Every new token refused too: Blocked naming the App, after one renewal.
    gh.set_installation_token_lifetime(0);
    gh.expire_installation_tokens();
    gh.clear_requests();
    let err = client.list_runners().unwrap_err();
    assert!(matches!(err, GitHubError::Credential { .. }), "{err:?}");
    assert!(err.to_string().contains("GitHub App 4242"), "{err}");
    assert_eq!(gh.count(Endpoint::InstallationToken), 1);
    assert_eq!(gh.count(Endpoint::ListRunners), 2);
    assert!(!err.to_string().contains("BEGIN"), "{err}");
}

/// With the clock injected: a 20-second token (as the fake issues it) is reused while
/// usable and renewed before its `expires_at`, once, never sent after it.
#[test]
fn a_short_lived_token_is_renewed_once_before_it_expires_and_never_sent_after() {
    let gh = fake_with_app();
    gh.set_installation_token_lifetime(20);
    let unit = unit();
    let clock = Arc::new(ManualClock::at(now()));
    let client = hook_client(&gh, &unit, org(), clock.clone());
    for _ in 0..5 {
        client.list_runners().unwrap();
        clock.advance(Duration::from_secs(3));
    }
    // 15 s in: still the first token. At 18 s (2 s before expiry) a new one, once.
    assert_eq!(gh.count(Endpoint::InstallationToken), 1);
    clock.advance(Duration::from_secs(3));
    for _ in 0..3 {
        client.list_runners().unwrap();
    }
    assert_eq!(gh.count(Endpoint::InstallationToken), 2);
    assert_eq!(gh.expired_token_uses(), 0);
    // The first five listings carried the first token, the last three the second.
    let used: Vec<String> = gh
        .requests()
        .iter()
        .filter(|r| r.endpoint == Endpoint::ListRunners)
        .map(bearer_of)
        .collect();
    let by_token = |token: &str| used.iter().filter(|u| *u == token).count();
    assert_eq!(used.len(), 8);
    assert_eq!(
        used[5..]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        1
    );
    assert_ne!(used[0], used[7]);
    assert_eq!(by_token(&used[0]), 5);
    assert_eq!(by_token(&used[7]), 3);
}

fn bearer_of(r: &fake_github::RecordedRequest) -> String {
    r.headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_string()
}

/// Two processes of one unit (two hooks, a hook and a worker) needing a token at once: one
/// mint, the other reads it from the file under the lock.
#[test]
fn two_processes_needing_a_token_at_once_mint_once() {
    let gh = Arc::new(fake_with_app());
    let unit = Arc::new(unit());
    unit.store.put(&app_credential(), &SystemClock).unwrap();
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (gh, unit, barrier) = (gh.clone(), unit.clone(), barrier.clone());
            std::thread::spawn(move || {
                let client = hook_client(&gh, &unit, org(), Arc::new(SystemClock));
                barrier.wait();
                client.list_runners().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(gh.count(Endpoint::InstallationToken), 1);
    assert_eq!(gh.count(Endpoint::ListRunners), 2);
}
