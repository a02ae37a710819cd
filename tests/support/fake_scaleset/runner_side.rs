//! The runner side, for runners in containers: the fake GitHub's listener protocol
//! (`/_fake/listener/{online,wait-job,done}?key=K`, plain text, no auth; see
//! `tests/support/fake_github/mod.rs`) over this fake's model, so that the fake runner
//! (`tests/fixtures/fake-runner/bin/Runner.Listener`) serves scale-set jobs unchanged.
//! Its JIT configs are base64 of `<url> <key>` once [`super::FakeScaleSetService::serve_fake_runners`]
//! is on (a real one is base64 of a JSON object, which the fake otherwise hands out).
//! - `online`: the registration is online -> `ok` | 404 `gone`.
//! - `wait-job[&timeout=S]` (long poll, S ≤ 60, default 30): an assigned job of the runner's
//!   scale set is its job now (`JobStarted`) -> `job <id> <runner request id> scale-set/fake`
//!   | `none` | 404 `gone`.
//! - `done`: its job completed "succeeded" (`JobCompleted`, the ephemeral registration gone)
//!   -> `ok` | 404 `gone`.

use super::http::{HttpRequest, HttpResponse};
use super::state::{Endpoint, JobState, Shared, State};
use std::time::Duration;

pub const RUNNER_PREFIX: &str = "/_fake/listener/";

pub fn classify(method: &str, path: &str) -> Option<Endpoint> {
    let rest = path.strip_prefix(RUNNER_PREFIX)?;
    Some(match (method, rest) {
        ("GET", "online") => Endpoint::RunnerOnline,
        ("GET", "wait-job") => Endpoint::RunnerWaitJob,
        ("GET", "done") => Endpoint::RunnerDone,
        _ => Endpoint::Other,
    })
}

fn gone() -> HttpResponse {
    HttpResponse::text(404, "gone")
}

/// The registration a key belongs to: (runner id, name).
fn runner_of(st: &State, key: &str) -> Option<(u64, String)> {
    st.runners
        .values()
        .find(|r| !r.key.is_empty() && r.key == key)
        .map(|r| (r.id, r.name.clone()))
}

pub fn answer(shared: &Shared, req: &HttpRequest, endpoint: Endpoint) -> HttpResponse {
    let key = req.query_param("key").unwrap_or_default();
    match endpoint {
        Endpoint::RunnerOnline => shared.update(|st| {
            let Some((id, _)) = runner_of(st, &key) else {
                return gone();
            };
            if let Some(r) = st.runners.get_mut(&id) {
                if !r.online {
                    st.came_online.push((id, std::time::Instant::now()));
                }
                r.online = true;
            }
            HttpResponse::text(200, "ok")
        }),
        Endpoint::RunnerWaitJob => {
            let secs = req
                .query_param("timeout")
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(30)
                .min(60);
            // Some(None): the registration went away meanwhile.
            let mut found: Option<Option<(String, i64)>> = None;
            let st = shared.lock();
            let (st, _) = shared.wait_for(st, Duration::from_secs(secs), |st| {
                let Some((_, name)) = runner_of(st, &key) else {
                    found = Some(None);
                    return true;
                };
                if let Some(job) = st.runner_starts_job(&name) {
                    let request = st.jobs.get(&job).map_or(0, |j| j.runner_request_id);
                    found = Some(Some((job, request)));
                    return true;
                }
                false
            });
            drop(st);
            // Wake the queue's polls: JobStarted is waiting in a message.
            shared.update(|_| ());
            match found {
                Some(Some((job, request))) => {
                    HttpResponse::text(200, &format!("job {job} {request} scale-set/fake"))
                }
                Some(None) => gone(),
                None => HttpResponse::text(200, "none"),
            }
        }
        Endpoint::RunnerDone => shared.update(|st| {
            let Some((id, _)) = runner_of(st, &key) else {
                return gone();
            };
            let job = st
                .jobs
                .values()
                .find(|j| matches!(j.state, JobState::Running { runner_id, .. } if runner_id == id))
                .map(|j| j.id.clone());
            match job {
                Some(job) if st.complete_job(&job, "succeeded") => HttpResponse::text(200, "ok"),
                _ => gone(),
            }
        }),
        _ => HttpResponse::text(404, "no such endpoint in the fake\n"),
    }
}
