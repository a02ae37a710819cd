//! Sessions and the message queue: create (409 while another lives), the queue token's
//! session, acquisition, and the long poll held on the condition variable.

use super::http::{query_pairs, HttpRequest};
use super::routes::{bearer, body, error, segment, Reply, CONFLICT, NOT_FOUND, QUEUE_PREFIX};
use super::state::{Endpoint, FakeSession, Shared, State};
use serde_json::{json, Value};

pub fn session_json(st: &State, s: &FakeSession, empty_queue_url: bool) -> Value {
    let set = st
        .scale_sets
        .get(&s.scale_set_id)
        .map(|x| st.scale_set_json(x))
        .unwrap_or(Value::Null);
    let url = if empty_queue_url {
        String::new()
    } else {
        format!(
            "{}{QUEUE_PREFIX}{}/message?sessionId={}",
            st.base_url, s.scale_set_id, s.id
        )
    };
    json!({"sessionId": s.id, "ownerName": s.owner, "runnerScaleSet": set, "messageQueueUrl": url,
           "messageQueueAccessToken": s.queue_token, "statistics": st.statistics(s.scale_set_id)})
}

pub fn create_session(st: &mut State, req: &HttpRequest, id: u64, empty_queue_url: bool) -> Reply {
    if !st.scale_sets.contains_key(&id) {
        return error(404, NOT_FOUND, "scale set not found");
    }
    let now = st.now();
    let stale_after = st.stale_session_after;
    if let Some(held) = st.sessions.values().find(|s| s.scale_set_id == id) {
        let stale = stale_after.is_some_and(|after| now.saturating_sub(held.last_seen) >= after);
        if !stale {
            let message = format!(
                "The runner scale set {id} already has an active session for owner {}.",
                held.owner
            );
            return error(409, CONFLICT, &message);
        }
        let sid = held.id.clone();
        st.sessions.remove(&sid);
        st.queue_tokens.retain(|_, (s, _)| *s != sid);
    }
    let owner = body(req)["ownername"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let n = st.next();
    let sid = format!("6f0c2c1e-0000-4000-8000-{n:012}");
    let lifetime = st.queue_token_lifetime;
    let (token, exp) = st.mint_jwt("queue", lifetime);
    let session = FakeSession {
        id: sid.clone(),
        scale_set_id: id,
        owner,
        queue_token: token.clone(),
        last_seen: now,
    };
    if !empty_queue_url {
        st.queue_tokens.insert(token, (sid.clone(), exp));
        st.sessions.insert(sid, session.clone());
    }
    Reply::Json(200, session_json(st, &session, empty_queue_url))
}

/// The session a queue token belongs to, if the token is live.
pub fn queue_session(st: &State, req: &HttpRequest) -> Result<FakeSession, Reply> {
    let token = bearer(req).unwrap_or_default();
    match st.queue_tokens.get(&token) {
        Some((sid, exp)) if *exp > st.now() => st
            .sessions
            .get(sid)
            .cloned()
            .ok_or_else(|| error(404, "RunnerAdminException", "session lost")),
        Some(_) => Err(error(
            401,
            "TokenExpired",
            "the message queue token expired",
        )),
        None => Err(error(401, "Unauthorized", "unknown message queue token")),
    }
}

pub fn acquire(st: &mut State, req: &HttpRequest) -> Reply {
    let session = match queue_session(st, req) {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let ids: Vec<i64> = body(req)
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let acquired = st.acquire(session.scale_set_id, &ids);
    Reply::Json(200, json!({"count": acquired.len(), "value": acquired}))
}

pub fn queue(shared: &Shared, req: &HttpRequest, endpoint: Endpoint) -> Reply {
    let started = shared.update(|st| {
        let session = queue_session(st, req)?;
        if endpoint == Endpoint::DeleteMessage {
            let id: i64 = segment(req, QUEUE_PREFIX, 2).parse().unwrap_or(0);
            if let Some(s) = st.scale_sets.get_mut(&session.scale_set_id) {
                s.messages.retain(|(m, _)| *m != id);
            }
            return Err(Reply::Empty(204));
        }
        let capacity = req
            .header("x-scalesetmaxcapacity")
            .and_then(|c| c.trim().parse().ok());
        let now = st.now();
        if let Some(s) = st.sessions.get_mut(&session.id) {
            s.last_seen = now;
        }
        if let Some(s) = st.scale_sets.get_mut(&session.scale_set_id) {
            s.max_capacity = capacity;
        }
        st.assign();
        st.polls_waiting += 1;
        Ok((session, st.poll_timeout))
    });
    let (session, timeout) = match started {
        Ok(s) => s,
        Err(reply) => return reply,
    };
    let last: i64 = query_pairs(&req.query)
        .into_iter()
        .find(|(k, _)| k == "lastMessageId")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    // Some(None): the session went away while the poll was held.
    let mut found = None;
    let st = shared.lock();
    let (st, _) = shared.wait_for(st, timeout, |st| {
        if !st.sessions.contains_key(&session.id) {
            found = Some(None);
        } else if let Some(m) = st.next_message(session.scale_set_id, last) {
            found = Some(Some(m));
        }
        found.is_some()
    });
    drop(st);
    shared.update(|st| {
        st.polls_waiting -= 1;
        match found {
            Some(Some((id, jobs))) => Reply::Json(
                200,
                json!({"messageId": id, "messageType": "RunnerScaleSetJobMessages",
                       "body": Value::Array(jobs).to_string(), "statistics": st.statistics(session.scale_set_id)}),
            ),
            Some(None) => error(404, "RunnerAdminException", "session lost"),
            None => Reply::Empty(202),
        }
    })
}
