//! The charm's vocabulary: every status text, action-log line and action-fail text the
//! operator reads is made here, so the same fact reads the same everywhere (a rate limit in
//! `juju status` and in a failed `juju run` both say "retry(ing) after HH:MM UTC").
//!
//! Rules: times for people are `HH:MM UTC`, never epoch seconds; statuses name what to do
//! when the operator must act. Error types keep their `Display` (they carry the detail);
//! the sentences around them live here.

use std::time::Duration;

// ---- statuses of a unit at work (Maintenance) ----

/// install, upgrade-charm while the host is set up.
pub const SETTING_UP: &str = "Setting up the host";
/// start, upgrade-charm before the runners are flushed and reconciled.
pub const STARTING: &str = "Starting runners";
/// stop, remove while the runners go.
pub const STOPPING: &str = "Removing runners";
/// storage detaching while the runners on it go.
pub const DETACHING: &str = "Removing runners: their storage is detaching";
/// A new runner tarball downloads.
pub const DOWNLOADING_BINARY: &str = "Downloading runner binary";
/// `snap install lxd`.
pub const INSTALLING_LXD: &str = "Installing LXD";
/// `lxd init --auto` on a never-initialised server.
pub const INITIALISING_LXD: &str = "Initialising LXD";
/// The runner image is built (minutes).
pub const BUILDING_IMAGE: &str = "Building runner image";

/// The old runners go because these scope options changed.
pub fn config_change_flush(options: &[&str]) -> String {
    format!(
        "Removing runners due to config change ({} changed)",
        options.join(", ")
    )
}

/// A flush before a reconcile failed (the reconcile still ran).
pub fn flush_failed(mode: impl std::fmt::Display, error: impl std::fmt::Display) -> String {
    format!("{mode} failed: {error}")
}

/// The runner tarball could not be checked or downloaded (the old one stays).
pub fn binary_update_failed(reason: impl std::fmt::Display) -> String {
    format!("Failed to update runner binary: {reason}")
}

/// GitHub's rate limit, as a status and in every failure that meets it.
pub fn rate_limited(reset_epoch: u64) -> String {
    format!(
        "GitHub rate limit reached, retrying after {} UTC",
        hh_mm_utc(reset_epoch)
    )
}

/// [`rate_limited`] naming the request that met it (the GitHub client's error).
pub fn rate_limited_on(method: &str, path: &str, reset_epoch: u64) -> String {
    format!(
        "GitHub rate limit reached on {method} {path}, retrying after {} UTC",
        hh_mm_utc(reset_epoch)
    )
}

/// [`rate_limited`] with the runner summary after it.
pub fn rate_limited_with(reset_epoch: u64, summary: &str) -> String {
    format!("{}; {summary}", rate_limited(reset_epoch))
}

/// Some operations failed in a round that otherwise went through.
/// `skipped`: creations left for the next round because launches failed in a row.
pub fn retrying_next_round(
    summary: &str,
    first: impl std::fmt::Display,
    more: usize,
    skipped: u32,
) -> String {
    let others = match more {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    let paused = match skipped {
        0 => String::new(),
        n => format!("; {n} creations left for the next round after launches failed in a row"),
    };
    format!("{summary}; retrying on the next reconcile: {first}{others}{paused}")
}

/// What admission held back, named right after the runner count: `host memory allows 4`,
/// `at most 16 created a round, 4 more next round`.
pub fn held_back(host_allows: Option<(&str, u32)>, round: Option<(u32, u32)>) -> Option<String> {
    let mut parts = Vec::new();
    if let Some((resource, allowed)) = host_allows {
        parts.push(format!("{resource} allows {allowed}"));
    }
    if let Some((cap, more)) = round {
        parts.push(format!(
            "at most {cap} created a round, {more} more next round"
        ));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A creation admission refused at its launch: `no room on this machine for another runner
/// (8 instances on it): host memory allows 8`.
pub fn no_room(instances: u32, note: &str) -> String {
    let plural = if instances == 1 { "" } else { "s" };
    format!(
        "no room on this machine for another runner ({instances} instance{plural} on it): {note}"
    )
}

/// Admission could not check the machine (its creation lock or the instance listing).
pub fn admission_unavailable(reason: &str) -> String {
    format!("could not check the machine's room for another runner, so none was launched: {reason}")
}

/// The runner census: `3/3 runners: 2 idle, 1 busy`, then the non-zero extras
/// (`, 1 creating`).
pub fn runner_summary(desired: u32, idle: u32, busy: u32, extras: &[(u32, &str)]) -> String {
    let mut text = format!(
        "{}/{desired} runners: {idle} idle, {busy} busy",
        idle + busy
    );
    for (count, what) in extras {
        if *count > 0 {
            text.push_str(&format!(", {count} {what}"));
        }
    }
    text
}

// ---- Blocked: GitHub refuses, only the operator can fix it ----

pub const GITHUB_TOKEN_INVALID: &str =
    "GitHub token is invalid or expired (401): set a valid `token`";

pub fn github_token_lacks_permission(method: &str, path: &str, needed: &str) -> String {
    format!("GitHub token lacks permission (403 on {method} {path}): {needed}")
}

pub fn github_not_found(method: &str, path: &str) -> String {
    format!("GitHub answered 404 for {method} {path}: check `path` and that the token can see it")
}

/// A bad minute at GitHub or on the network.
pub fn github_transient(error: impl std::fmt::Display) -> String {
    format!("GitHub request failed ({error}); retrying at the next reconcile")
}

// ---- Waiting ----

/// Hooks with a valid configuration before any reconcile set a status.
pub const FIRST_RECONCILE: &str = "waiting for the first reconcile of the runners";

/// `lxc` is not there yet.
pub fn waiting_for_lxd_install(error: impl std::fmt::Display) -> String {
    format!("waiting for LXD to be installed: {error}")
}

/// LXD does not answer.
pub fn waiting_for_lxd(error: impl std::fmt::Display) -> String {
    format!("waiting for LXD: {error}")
}

/// No image under the base-image alias; the runner summary follows when there is one.
pub fn waiting_for_image(alias: &str, summary: Option<&str>) -> String {
    match summary {
        Some(s) => format!("waiting for the runner image {alias}; {s}"),
        None => format!("waiting for the runner image {alias}"),
    }
}

/// No verified runner tarball yet.
pub fn waiting_for_binary(summary: &str) -> String {
    format!("waiting for the runner binary; {summary}")
}

/// The round's summary while the Python charm's runners this charm took over from still
/// run their last job (`juju refresh` from it).
pub fn old_runners_finishing(summary: &str, old_runners: usize) -> String {
    match old_runners {
        1 => format!("{summary}; 1 old runner still finishing its job"),
        n => format!("{summary}; {n} old runners still finishing their jobs"),
    }
}

// ---- action-log lines ----

pub const RECONCILING: &str = "reconciling runners";
pub const BINARY_UPDATED_FLUSHING: &str = "runner binary updated: flushing idle runners";

/// update-dependencies' status when the new binary is in place but idle runners on the old
/// one could not all be removed.
pub const BINARY_UPDATED_FLUSH_FAILED: &str =
    "runner binary updated, but flushing the idle runners failed; the next reconcile replaces them";

/// update-dependencies' failure naming the runners that could not be flushed.
pub fn flush_incomplete(failures: impl std::fmt::Display) -> String {
    format!("the runner binary was updated, but flushing the idle runners failed: {failures}")
}

pub fn reconciled(created: usize, removed: usize, failed: usize) -> String {
    format!("reconciled: {created} created, {removed} removed, {failed} failed")
}

pub fn flushing_then_reconciling(mode: impl std::fmt::Display) -> String {
    format!("flushing runners ({mode}), then reconciling")
}

/// The flush kept busy runners: each is replaced once its job ends.
pub fn busy_runners_replaced_after_job(names: &[String]) -> String {
    format!(
        "{} busy runner(s) keep their job and are replaced once it ends: {}",
        names.len(),
        names.join(", ")
    )
}

/// The status line's count of runners flushed while busy (or of a previous scope).
pub fn awaiting_job_end(count: u32) -> &'static str {
    if count == 1 {
        "waiting for its job to end before replacement"
    } else {
        "waiting for their job to end before replacement"
    }
}

pub fn flush_wait_exhausted(waited: Duration) -> String {
    format!(
        "busy runners were still in their pre-job phase after {} s; flushed anyway",
        waited.as_secs()
    )
}

/// A bounded wait for the unit lock, in words; None when there was none.
pub fn lock_waited(waited_secs: u64) -> Option<String> {
    (waited_secs > 0).then(|| {
        format!(
            "waited {} for another reconcile or flush to finish",
            minutes_seconds(waited_secs)
        )
    })
}

// ---- action failures ----

pub fn observe_failed(error: impl std::fmt::Display) -> String {
    format!("could not list the runners: {error}")
}

pub fn unknown_action(name: &str) -> String {
    format!("unknown action {name:?}: this charm's actions are check-runners, reconcile-runners, flush-runners and update-dependencies")
}

// ---- times for people ----

/// `HH:MM` of an epoch time, in UTC.
pub fn hh_mm_utc(epoch: u64) -> String {
    let secs_of_day = epoch % 86_400;
    format!("{:02}:{:02}", secs_of_day / 3600, secs_of_day / 60 % 60)
}

/// `1m15s`, `5s`.
pub fn minutes_seconds(secs: u64) -> String {
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
#[path = "messages_tests.rs"]
mod tests;

/// Reactive mode's census: `reactive: 2/4 workers, 1 runner busy, queue 3` (the queue as a
/// worker last saw it; left out before any worker reported it).
pub fn reactive_summary(workers: usize, target: u32, runners: usize, queue: Option<u64>) -> String {
    let plural = if runners == 1 { "" } else { "s" };
    let mut text = format!("reactive: {workers}/{target} workers, {runners} runner{plural} busy");
    if let Some(q) = queue {
        text.push_str(&format!(", queue {q}"));
    }
    text
}

/// Reactive workers whose jobs wait for room on the machine, after the summary:
/// `reactive: 4/4 workers, 2 runners busy; 2 jobs waiting: no room on this machine ...`.
pub fn reactive_waiting_for_room(summary: &str, waiting: usize, refusal: &str) -> String {
    let plural = if waiting == 1 { "" } else { "s" };
    format!("{summary}; {waiting} job{plural} waiting: {refusal}")
}

/// Reactive workers cannot reach the broker: its host only, never the URI's credentials.
pub fn broker_unreachable(host: &str, workers: usize, target: u32) -> String {
    format!(
        "reactive: message broker {host} unreachable, workers retrying ({workers} of {target} up)"
    )
}

/// A reactive worker met a 401 (Blocked): GitHub's message carries the fix.
pub fn reactive_token_rejected(detail: &str) -> String {
    format!("reactive: workers cannot use the token: {detail}")
}

/// A slot's workers keep dying; `detail` is the last one's failure, if it left one.
pub fn reactive_crash_loop(slot: u32, crashes: u32, detail: Option<&str>) -> String {
    let why = detail.unwrap_or("see its log");
    format!("reactive: worker {slot} crashed {crashes} times in a row ({why})")
}

/// Reactive workers report a failure that still holds (`what` is the failure kind).
pub fn reactive_failing(what: &str, detail: &str, slots: usize, at_epoch: u64) -> String {
    let plural = if slots == 1 { "" } else { "s" };
    format!(
        "reactive: {what} on {slots} worker{plural} since {} UTC: {detail}",
        hh_mm_utc(at_epoch)
    )
}

/// One line of check-runners' `worker-failures`.
pub fn worker_failure_line(
    slot: u32,
    live: bool,
    crashes: u32,
    failure: Option<(&str, &str, u64)>,
) -> String {
    let state = if live { "running" } else { "not running" };
    let mut line = format!("worker {slot} ({state}");
    if crashes > 0 {
        line.push_str(&format!(", {crashes} crashes in a row"));
    }
    line.push(')');
    if let Some((kind, detail, at)) = failure {
        line.push_str(&format!(": {kind} at {} UTC: {detail}", hh_mm_utc(at)));
    }
    line
}

/// The `mongodb` provider sets `tls`: workers would try plaintext, so the unit says so.
pub const MONGODB_TLS_UNSUPPORTED: &str =
    "mongodb relation: the provider requires TLS, which reactive mode does not support; \
     turn TLS off for this relation or set mq-uri";

/// A reactive unit whose relation is unusable for now keeps serving on what it had.
pub fn reactive_held(why: &str) -> String {
    format!("{why}; reactive mode goes on with the last broker settings")
}

/// A worker got 404 for a job and for its repository: the token cannot read the repository.
pub fn cannot_read_jobs(repo: &str) -> String {
    format!("cannot read jobs of {repo}: the token needs Actions read")
}

// ---- Blocked: the credential options and their secrets ----

/// The fix when no credential is set.
pub fn credential_fix(app: &str) -> String {
    format!(
        "juju config {app} token=<token or secret URI> (or the three github-app-* options; see the README)"
    )
}

pub fn app_option_fix(app: &str, option: &str) -> String {
    format!("juju config {app} {option}=<value> (the github-app-* options go together)")
}

pub fn token_and_app_both_set(app: &str) -> String {
    format!(
        "set together with github-app-*: use one credential, unset the other with \
         juju config {app} --reset token (or --reset github-app-id,github-app-installation-id,github-app-private-key)"
    )
}

pub fn app_key_option_not_a_secret(app: &str) -> String {
    format!(
        "expected a Juju secret URI (the value is not shown): juju add-secret <name> \
         private-key#file=<key.pem>, juju grant-secret <name> {app}, then \
         juju config {app} github-app-private-key=<the secret URI>"
    )
}

/// `secret-get` refused (not granted, or no such secret); `juju_says` is its error.
pub fn secret_unreadable(uri: &str, app: &str, juju_says: &str) -> String {
    format!(
        "cannot read secret {uri} ({juju_says}): grant it with juju grant-secret <secret name> {app}"
    )
}

pub fn secret_key_missing(uri: &str, key: &str) -> String {
    format!("secret {uri} has no key `{key}`: add it with juju update-secret <secret name> {key}=<value>")
}

/// The private key does not parse; `why` never quotes it.
pub fn app_key_unusable(uri: &str, why: impl std::fmt::Display) -> String {
    format!(
        "the key in secret {uri} is unusable ({why}): store the App's PEM key with \
         juju update-secret <secret name> private-key#file=<key.pem>"
    )
}

/// A fresh installation token was refused too.
pub fn github_app_rejected(app_id: u64, installation_id: u64) -> String {
    format!(
        "GitHub rejected GitHub App {app_id}'s installation token (401) even after renewing it: \
         check github-app-id, github-app-installation-id ({installation_id}) and github-app-private-key"
    )
}

// ---- the scale-set listener (its phase, for the unit's status) ----

pub fn scale_set_listener_starting(scale_set: &str) -> String {
    format!("Scale set {scale_set}: listener starting")
}

/// A 409 on session create, waited out with backoff.
pub fn scale_set_waiting_for_session(scale_set: &str) -> String {
    format!("Scale set {scale_set}: waiting for the previous listener's session to expire")
}

/// Another deployment's listener holds the unit's scale set (a session of another owner).
pub fn scale_set_held_by_another(scale_set: &str, owner: &str) -> String {
    format!(
        "Scale set {scale_set} is held by another deployment's listener (session owner \
         {owner}), not taken over: change scale-set-name or stop that deployment"
    )
}

pub fn scale_set_listening(scale_set: &str) -> String {
    format!("Scale set {scale_set}: listening for jobs")
}

pub fn scale_set_listener_retrying(scale_set: &str, error: &str) -> String {
    format!("Scale set {scale_set}: retrying after an error: {error}")
}

pub fn scale_set_listener_stopped(scale_set: &str) -> String {
    format!("Scale set {scale_set}: listener stopped")
}

// ---- scale-set mode (options, mode, the listener as the charm sees it) ----

/// `min-idle-runners` above `virtual-machines` (the problem's expected text).
pub fn min_idle_above_virtual_machines(virtual_machines: u32) -> String {
    format!(
        "more than virtual-machines ({virtual_machines}), the most runners at once: lower \
         min-idle-runners or raise virtual-machines"
    )
}

/// `scale-set-name` with `mq-uri` (the problem's expected text).
pub const SCALE_SET_WITH_MQ_URI: &str = "cannot be set together with mq-uri (scale-set mode \
     takes jobs from GitHub, reactive mode from the queue): unset one of the two";

/// `scale-set-name` while the `mongodb` relation gives a queue.
pub fn scale_set_with_mongodb_relation(app: &str) -> String {
    format!(
        "scale-set-name and the mongodb relation are both set (scale-set mode takes jobs from \
         GitHub, reactive mode from the queue): remove the relation \
         (juju remove-relation {app} mongodb) or unset scale-set-name \
         (juju config {app} scale-set-name=)"
    )
}

/// Listening, with the statistics the service last sent.
pub fn scale_set_listening_with_jobs(listening: &str, assigned: u64, running: u64) -> String {
    format!("{listening}, {assigned} assigned, {running} running")
}

/// The listener slot died too often in a row.
pub fn scale_set_listener_crash_loop(scale_set: &str, crashes: u32, log: &str) -> String {
    format!("Scale set {scale_set}: the listener crashed {crashes} times in a row; see {log}")
}

/// The listener was started without a scale set name (the hook starts it only with one).
pub fn scale_set_name_missing(app: &str) -> String {
    format!(
        "scale-set-name is empty, so there is no scale set to listen on: \
         set it with juju config {app} scale-set-name=<name>"
    )
}
