//! End-to-end credentials (issue 22): the real charm through `dispatch` (fake hook tools
//! answering `secret-get` as Juju does for a consumer), the real LXD daemon and the fake
//! GitHub with a GitHub App. A token in a user secret, not granted then granted; its
//! rotation with the old token revoked; PAT -> App keeping a busy runner; the App's
//! installation token expiring mid-fleet (short lifetimes); a bad private key. Each checks
//! that no secret shows outside the unit's 0600 credential files.

#[path = "support/charm_env/mod.rs"]
mod charm_env;
#[path = "support/executable.rs"]
mod executable;
#[path = "support/fake_github/mod.rs"]
mod fake_github;
#[path = "support/juju_harness/mod.rs"]
mod juju_harness;
#[path = "support/lxd_fixture/mod.rs"]
mod lxd_fixture;

use charm_env::{CharmEnv, GONE_WITHIN};
use fake_github::Endpoint;
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

const TOKEN_SECRET: &str = "secret:d5tokenuser00000000";
const KEY_SECRET: &str = "secret:d5appkey000000000000";
const APP_ID: i64 = 31337;
const INSTALLATION: i64 = 4711;
const KEY: &str = include_str!("fixtures/test-app-key-pkcs8.pem");

fn content(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A line of the key's body: what must show nowhere.
fn key_body() -> &'static str {
    KEY.lines().nth(3).expect("a PEM body line")
}

fn set(names: &[String]) -> BTreeSet<String> {
    names.iter().cloned().collect()
}

/// Every API request since the last clear carried `token`.
#[track_caller]
fn all_with(env: &CharmEnv, token: &str) {
    let requests = env.gh.requests();
    for r in requests
        .iter()
        .filter(|r| r.endpoint.is_api() && r.endpoint != Endpoint::InstallationToken)
    {
        let auth = r.header("authorization").unwrap_or("");
        assert!(
            auth.strip_prefix("Bearer ") == Some(token),
            "{} {} sent with another credential",
            r.method,
            r.path
        );
    }
}

/// The unit configured with its App (the key in a granted user secret) instead of a token.
fn use_app(env: &mut CharmEnv, key_pem: &str) {
    env.gh.add_app(
        APP_ID as u64,
        INSTALLATION as u64,
        KEY,
        json!({"administration": "write", "metadata": "read"}),
    );
    env.h
        .world
        .secrets
        .insert(KEY_SECRET.into(), content(&[("private-key", key_pem)]));
    env.set_config("token", "")
        .set_config("github-app-id", APP_ID)
        .set_config("github-app-installation-id", INSTALLATION)
        .set_config("github-app-private-key", KEY_SECRET);
}

/// The one installation token issued last.
fn latest_installation_token(env: &CharmEnv) -> String {
    env.gh
        .installation_tokens()
        .into_iter()
        .max_by_key(|(token, t)| (t.issued_at, token.clone()))
        .map(|(token, _)| token)
        .expect("an installation token was minted")
}

#[test]
fn a_token_secret_not_granted_blocks_touching_nothing_until_granted() {
    let mut env = CharmEnv::new(2);
    let pat = env.gh.token();
    env.h
        .world
        .secrets
        .insert(TOKEN_SECRET.into(), content(&[("token", &pat)]));
    env.h.world.secrets_not_granted.insert(TOKEN_SECRET.into());
    env.set_config("token", TOKEN_SECRET);
    env.deploy();
    let (status, message) = env.status();
    assert_eq!(status, "blocked", "{message}");
    assert!(message.contains("token"), "{message}");
    assert!(message.contains("juju grant-secret"), "{message}");
    assert!(message.contains(&env.h.app_name()), "{message}");
    assert_eq!(env.gh.count(Endpoint::GenerateJitConfig), 0);
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert!(env.instances().is_empty(), "{:?}", env.instances());

    // `juju grant-secret`: no hook runs; the timer's next reconcile picks it up.
    env.h.world.secrets_not_granted.clear();
    let run = env.reconcile();
    run.assert_ok();
    env.wait_online(2);
    env.assert_runners(2);
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    assert!(env.assert_secrets_kept(&run, &[&pat]));
}

#[test]
fn a_rotated_token_secret_is_followed_at_secret_changed_and_the_old_token_never_used_again() {
    let mut env = CharmEnv::new(2);
    let old = env.gh.token();
    env.h
        .world
        .secrets
        .insert(TOKEN_SECRET.into(), content(&[("token", &old)]));
    env.set_config("token", TOKEN_SECRET);
    env.deploy();
    let runners = env.wait_online(2);

    // The owner adds a revision and revokes the old token at once.
    let new = "ghp_ROTATEDtoken0123456789abcdefghijklm";
    env.gh.add_token(new);
    env.gh.revoke_token(&old);
    env.h
        .world
        .secrets
        .insert(TOKEN_SECRET.into(), content(&[("token", new)]));
    env.gh.clear_requests();
    let changed = env
        .h
        .hook_with("secret-changed", &[("JUJU_SECRET_ID", TOKEN_SECRET)]);
    changed.assert_ok();
    // The hook's calls (the harness keeps the last run's).
    let refreshed = env
        .h
        .calls()
        .iter()
        .any(|c| c.tool == "secret-get" && c.args.iter().any(|a| a == "--refresh"));
    assert!(refreshed, "secret-changed did not take the new revision");
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    all_with(&env, new);
    let reconciled = env.reconcile();
    reconciled.assert_ok();
    all_with(&env, new);
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert_eq!(set(&env.assert_runners(2)), set(&runners));
    for run in [&changed, &reconciled] {
        assert!(env.assert_secrets_kept(run, &[&old, new]));
    }
}

#[test]
fn pat_to_app_keeps_a_busy_runner_and_every_call_after_uses_the_app() {
    let mut env = CharmEnv::new(2);
    env.deploy();
    let online = env.wait_online(2);
    let busy = online[0].clone();
    let job = env.gh.assign_held_job(&busy).expect("assign a job");
    assert!(env
        .gh
        .wait_until(GONE_WITHIN, |s| s.runner(&busy).is_some_and(|r| r.busy)));
    let pat = env.gh.token();
    use_app(&mut env, KEY);
    env.gh.revoke_token(&pat);
    env.gh.clear_requests();

    let changed = env.config_changed();
    changed.assert_ok();
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    assert_eq!(env.gh.count(Endpoint::InstallationToken), 1);
    all_with(&env, &latest_installation_token(&env));
    // Every runner kept, the busy one on its job.
    assert_eq!(set(&env.assert_runners(2)), set(&online));
    assert!(env.gh.runner(&busy).is_some_and(|r| r.busy));
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert!(env.assert_secrets_kept(&changed, &[&pat, key_body()]));

    // The job ends; the App's credential replaces the runner.
    assert!(env.gh.release_job(job));
    assert!(env.wait_instances(GONE_WITHIN, |names| !names.contains(&busy)));
    let reconciled = env.reconcile();
    reconciled.assert_ok();
    env.wait_online(2);
    env.assert_runners(2);
    assert!(env.assert_secrets_kept(&reconciled, &[&pat, key_body()]));
    assert_eq!(env.gh.expired_token_uses(), 0);
}

/// Also the measurement of a steady reconcile with App auth.
#[test]
fn the_apps_token_expiring_mid_fleet_is_minted_again_once_and_never_sent_expired() {
    let mut env = CharmEnv::new(2);
    use_app(&mut env, KEY);
    env.deploy();
    env.wait_online(2);
    env.reconcile().assert_ok();

    env.gh.clear_requests();
    env.reconcile().assert_ok();
    let counts = env.gh.counts();
    println!("API calls per steady reconcile with App auth: {counts:?}");
    assert_eq!(counts.get(&Endpoint::ListRunners), Some(&1), "{counts:?}");
    assert_eq!(counts.get(&Endpoint::InstallationToken), None, "{counts:?}");

    // GitHub ends the token early; the next ones live 20 s.
    env.gh.set_installation_token_lifetime(20);
    env.gh.expire_installation_tokens();
    env.gh.clear_requests();
    env.reconcile().assert_ok();
    assert_eq!(env.gh.count(Endpoint::InstallationToken), 1, "one renewal");
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    let renewed = env.gh.installation_tokens()[&latest_installation_token(&env)].clone();

    // Past the renewed token's expires_at (a known instant, not a guess), the next round
    // mints once before its first call and never sends the expired one.
    let expired_uses = env.gh.expired_token_uses();
    let wait = renewed
        .expires_at
        .saturating_sub(fake_github::now_epoch())
        .saturating_add(1);
    std::thread::sleep(Duration::from_secs(wait));
    env.gh.clear_requests();
    let run = env.reconcile();
    run.assert_ok();
    assert_eq!(env.gh.count(Endpoint::InstallationToken), 1);
    assert_eq!(env.gh.expired_token_uses(), expired_uses);
    assert_eq!(env.status().0, "active", "{:?}", env.status());
    env.assert_runners(2);
    assert!(env.assert_secrets_kept(&run, &[key_body()]));
}

#[test]
fn a_bad_private_key_blocks_naming_the_option_and_showing_none_of_it() {
    let mut env = CharmEnv::new(2);
    env.deploy();
    let runners = env.wait_online(2);
    let bad = "-----BEGIN PRIVATE KEY-----\nTUlJRXZRSUJBREFOQmdrcWhraUc5dzBCQVFFRkFBU0NCS2N3Z2dTakFnRUFBb0lCQVFD\n-----END PRIVATE KEY-----\n";
    use_app(&mut env, bad);
    env.gh.clear_requests();
    let changed = env.config_changed();
    changed.assert_ok();
    let (status, message) = env.status();
    assert_eq!(status, "blocked", "{message}");
    assert!(message.contains("github-app-private-key"), "{message}");
    assert_eq!(env.gh.count(Endpoint::DeleteRunner), 0);
    assert_eq!(env.gh.count(Endpoint::InstallationToken), 0);
    assert_eq!(set(&env.assert_runners(2)), set(&runners));
    assert!(env.assert_secrets_kept(&changed, &["TUlJRXZRSUJBREFOQmdrcWhraUc5dzBC"]));
}
