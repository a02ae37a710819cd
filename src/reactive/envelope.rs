//! kombu's message envelope, read and written as kombu does (reactive.md §3, §9).
//!
//! A payload is the JSON text of `{body, content-encoding, content-type, headers,
//! properties}` as Python's `json.dumps` writes it (`", "` and `": "` separators, non-ASCII
//! escaped). Keys keep their order ([`PyJson`]), so a requeued payload has exactly the bytes
//! kombu's own requeue writes: `{body, properties, content-type, content-encoding, headers,
//! "redelivered": true}`.

use base64::Engine;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt::{self, Write};

/// Largest payload a worker reads; a bigger one is unservable (no job body is this long).
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// kombu's retry counter header.
pub const PROCESS_COUNT_HEADER: &str = "X-Process-Count";

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum PyJson {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<PyJson>),
    Object(Vec<(String, PyJson)>),
}

impl PyJson {
    pub fn get(&self, key: &str) -> Option<&PyJson> {
        match self {
            PyJson::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyJson::String(s) => Some(s),
            _ => None,
        }
    }

    /// Python's `json.dumps(value)` with default arguments.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        self.write_to(&mut out);
        out
    }

    fn write_to(&self, out: &mut String) {
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            PyJson::Number(n) => out.push_str(&n.to_string()),
            PyJson::String(s) => write_py_string(s, out),
            PyJson::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    item.write_to(out);
                }
                out.push(']');
            }
            PyJson::Object(entries) => {
                out.push('{');
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_py_string(key, out);
                    out.push_str(": ");
                    value.write_to(out);
                }
                out.push('}');
            }
        }
    }
}

/// `ensure_ascii=True`: everything outside printable ASCII is `\uXXXX` (UTF-16 units).
fn write_py_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // Writing to a String cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push('"');
}

impl<'de> Deserialize<'de> for PyJson {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PyJsonVisitor;
        impl<'de> Visitor<'de> for PyJsonVisitor {
            type Value = PyJson;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<PyJson, E> {
                Ok(PyJson::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<PyJson, E> {
                Ok(PyJson::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PyJson, E> {
                Ok(PyJson::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<PyJson, E> {
                Ok(PyJson::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<PyJson, E> {
                serde_json::Number::from_f64(v)
                    .map(PyJson::Number)
                    .ok_or_else(|| E::custom("not a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<PyJson, E> {
                Ok(PyJson::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<PyJson, E> {
                Ok(PyJson::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PyJson, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(PyJson::Array(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PyJson, A::Error> {
                let mut entries = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, PyJson>()? {
                    entries.push((k, v));
                }
                Ok(PyJson::Object(entries))
            }
        }
        deserializer.deserialize_any(PyJsonVisitor)
    }
}

/// A kombu message as a worker needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    raw: PyJson,
}

impl Envelope {
    pub fn parse(payload: &[u8]) -> Result<Envelope, String> {
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(format!(
                "payload of {} bytes exceeds {MAX_PAYLOAD_BYTES}",
                payload.len()
            ));
        }
        let raw: PyJson =
            serde_json::from_slice(payload).map_err(|e| format!("payload is not JSON: {e}"))?;
        match raw {
            PyJson::Object(_) => Ok(Envelope { raw }),
            _ => Err("payload is not a JSON object".into()),
        }
    }

    fn property(&self, key: &str) -> Option<&PyJson> {
        self.raw.get("properties").and_then(|p| p.get(key))
    }

    /// `properties.delivery_tag`: kept across requeues, so it identifies the message.
    pub fn delivery_tag(&self) -> Option<&str> {
        self.property("delivery_tag").and_then(PyJson::as_str)
    }

    /// `X-Process-Count`, 0 when absent or not a whole number.
    pub fn process_count(&self) -> u32 {
        match self
            .raw
            .get("headers")
            .and_then(|h| h.get(PROCESS_COUNT_HEADER))
        {
            Some(PyJson::Number(n)) => n.as_u64().map_or(0, |n| n.min(u32::MAX as u64) as u32),
            Some(PyJson::String(s)) => s.trim().parse().unwrap_or(0),
            _ => 0,
        }
    }

    /// The body as the producer gave it: base64 undone; for `application/json`, a JSON string
    /// unwrapped (kombu's json serializer wraps a str body in quotes).
    pub fn body(&self) -> Result<Vec<u8>, String> {
        if self
            .raw
            .get("headers")
            .and_then(|h| h.get("compression"))
            .is_some()
        {
            return Err("compressed bodies are not supported".into());
        }
        let body = match self.raw.get("body") {
            Some(PyJson::String(s)) => s.as_str(),
            Some(PyJson::Null) | None => "",
            Some(_) => return Err("body is not a string".into()),
        };
        let bytes = match self.property("body_encoding").and_then(PyJson::as_str) {
            Some("base64") => base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|e| format!("body is not valid base64: {e}"))?,
            None => body.as_bytes().to_vec(),
            Some(other) => return Err(format!("unsupported body_encoding {other:?}")),
        };
        let content_type = self.raw.get("content-type").and_then(PyJson::as_str);
        match content_type {
            Some("text/plain") | None => Ok(bytes),
            Some("application/json") => match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::String(inner)) => Ok(inner.into_bytes()),
                Ok(_) => Ok(bytes),
                Err(e) => Err(format!("application/json body is not JSON: {e}")),
            },
            Some(other) => Err(format!("unsupported content-type {other:?}")),
        }
    }

    /// The payload kombu's requeue writes (`Message.serializable()` plus `redelivered`), with
    /// `X-Process-Count` set.
    pub fn requeued(&self, process_count: u32) -> String {
        let field = |key: &str| self.raw.get(key).cloned().unwrap_or(PyJson::Null);
        let mut headers = match self.raw.get("headers") {
            Some(PyJson::Object(entries)) => entries.clone(),
            _ => Vec::new(),
        };
        headers.retain(|(k, _)| k != "compression");
        let count = PyJson::Number(process_count.into());
        match headers.iter_mut().find(|(k, _)| k == PROCESS_COUNT_HEADER) {
            Some(entry) => entry.1 = count,
            None => headers.push((PROCESS_COUNT_HEADER.to_string(), count)),
        }
        PyJson::Object(vec![
            ("body".into(), field("body")),
            ("properties".into(), field("properties")),
            ("content-type".into(), field("content-type")),
            ("content-encoding".into(), field("content-encoding")),
            ("headers".into(), PyJson::Object(headers)),
            ("redelivered".into(), PyJson::Bool(true)),
        ])
        .dumps()
    }

    /// The transport priority kombu derives from `properties.priority` (0 when absent).
    pub fn priority(&self) -> u8 {
        match self.property("priority") {
            Some(PyJson::Number(n)) => n.as_u64().map_or(0, |n| n.min(255) as u8),
            _ => 0,
        }
    }
}

/// A payload as kombu's `SimpleQueue(queue).put(text)` writes it (for producers in tests and
/// benches; the router is the producer in production).
pub fn kombu_payload(text: &str, queue: &str, delivery_tag: &str) -> String {
    let s = |v: &str| PyJson::String(v.to_string());
    PyJson::Object(vec![
        (
            "body".into(),
            s(&base64::engine::general_purpose::STANDARD.encode(text)),
        ),
        ("content-encoding".into(), s("utf-8")),
        ("content-type".into(), s("text/plain")),
        ("headers".into(), PyJson::Object(vec![])),
        (
            "properties".into(),
            PyJson::Object(vec![
                ("delivery_mode".into(), PyJson::Number(2.into())),
                (
                    "delivery_info".into(),
                    PyJson::Object(vec![
                        ("exchange".into(), s(queue)),
                        ("routing_key".into(), s(queue)),
                    ]),
                ),
                ("priority".into(), PyJson::Number(0.into())),
                ("body_encoding".into(), s("base64")),
                ("delivery_tag".into(), s(delivery_tag)),
            ]),
        ),
    ])
    .dumps()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// reactive.md §3's example, as the router's kombu wrote it.
    const ROUTER_PAYLOAD: &str = r#"{"body": "eyJsYWJlbHMiOlsibGFyZ2UiLCJ4NjQiXSwic3RhdHVzIjoicXVldWVkIiwidXJsIjoiaHR0cHM6Ly9hcGkuZ2l0aHViLmNvbS9yZXBvcy9jYW5vbmljYWwvZXhhbXBsZS9hY3Rpb25zL2pvYnMvMTIzNDU2Nzg5In0=", "content-encoding": "utf-8", "content-type": "text/plain", "headers": {}, "properties": {"delivery_mode": 2, "delivery_info": {"exchange": "large-x64", "routing_key": "large-x64"}, "priority": 0, "body_encoding": "base64", "delivery_tag": "2de492dd-fc50-45f3-b2f5-d13ff6389605"}}"#;

    #[test]
    fn reads_the_routers_message() {
        let env = Envelope::parse(ROUTER_PAYLOAD.as_bytes()).unwrap();
        assert_eq!(
            env.delivery_tag(),
            Some("2de492dd-fc50-45f3-b2f5-d13ff6389605")
        );
        assert_eq!(env.process_count(), 0);
        assert_eq!(env.priority(), 0);
        assert_eq!(
            String::from_utf8(env.body().unwrap()).unwrap(),
            r#"{"labels":["large","x64"],"status":"queued","url":"https://api.github.com/repos/canonical/example/actions/jobs/123456789"}"#
        );
    }

    #[test]
    fn dumps_round_trips_python_bytes() {
        let raw: PyJson = serde_json::from_str(ROUTER_PAYLOAD).unwrap();
        assert_eq!(raw.dumps(), ROUTER_PAYLOAD);
        let tricky: PyJson =
            serde_json::from_str(r#"{"z": "é\u0001\"\\\n😀\u007f", "a": [1, -2, null, true]}"#)
                .unwrap();
        assert_eq!(
            tricky.dumps(),
            r#"{"z": "\u00e9\u0001\"\\\n\ud83d\ude00\u007f", "a": [1, -2, null, true]}"#
        );
    }

    #[test]
    fn the_producer_payload_matches_kombus_bytes() {
        let body = r#"{"labels":["large","x64"],"status":"queued","url":"https://api.github.com/repos/canonical/example/actions/jobs/123456789"}"#;
        assert_eq!(
            kombu_payload(body, "large-x64", "2de492dd-fc50-45f3-b2f5-d13ff6389605"),
            ROUTER_PAYLOAD
        );
    }

    #[test]
    fn requeue_writes_kombus_restore_format_with_the_count() {
        let env = Envelope::parse(ROUTER_PAYLOAD.as_bytes()).unwrap();
        let once = env.requeued(1);
        assert!(once.starts_with(r#"{"body": "eyJ"#), "{once}");
        assert!(once.ends_with(r#""content-type": "text/plain", "content-encoding": "utf-8", "headers": {"X-Process-Count": 1}, "redelivered": true}"#), "{once}");
        let again = Envelope::parse(once.as_bytes()).unwrap();
        assert_eq!(again.process_count(), 1);
        assert_eq!(again.body().unwrap(), env.body().unwrap());
        let twice = Envelope::parse(again.requeued(2).as_bytes()).unwrap();
        assert_eq!(twice.process_count(), 2);
        assert_eq!(twice.delivery_tag(), env.delivery_tag());
    }

    #[test]
    fn json_content_and_string_bodies() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let msg = |ct: &str, body: &str| {
            format!(
                r#"{{"body": "{}", "content-type": "{ct}", "headers": {{}}, "properties": {{"body_encoding": "base64", "delivery_tag": "t"}}}}"#,
                b64(body)
            )
        };
        let wrapped = msg("application/json", r#""{\"labels\": []}""#);
        assert_eq!(
            Envelope::parse(wrapped.as_bytes()).unwrap().body().unwrap(),
            br#"{"labels": []}"#
        );
        let object = msg("application/json", r#"{"labels": []}"#);
        assert_eq!(
            Envelope::parse(object.as_bytes()).unwrap().body().unwrap(),
            br#"{"labels": []}"#
        );
        for bad in [
            msg("application/x-python-serialize", "x"),
            msg("application/json", "{not json"),
            r#"{"body": "%%%", "properties": {"body_encoding": "base64"}}"#.to_string(),
            r#"{"body": "x", "headers": {"compression": "application/x-gzip"}, "properties": {}}"#
                .to_string(),
        ] {
            assert!(
                Envelope::parse(bad.as_bytes()).unwrap().body().is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_payloads_are_refused_not_crashed_on() {
        assert!(Envelope::parse(b"[1]").is_err());
        assert!(Envelope::parse(b"{").is_err());
        assert!(Envelope::parse(&vec![b' '; MAX_PAYLOAD_BYTES + 1]).is_err());
        let odd = Envelope::parse(br#"{"headers": {"X-Process-Count": "3"}}"#).unwrap();
        assert_eq!(odd.process_count(), 3);
        assert_eq!(odd.delivery_tag(), None);
    }
}
