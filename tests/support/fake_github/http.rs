//! A minimal HTTP/1.1 server on std's TcpListener: one request per connection
//! (`Connection: close`), so the fake controls exactly how each answer ends (cut short,
//! broken chunking) and a stop never waits on a kept-alive client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// A client that stops sending mid-request must not pin a thread forever.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(30);

/// A parsed request. Header names are lowercase.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    /// Percent-decoded path, without the query.
    pub path: String,
    /// Raw query string, without `?` (empty when absent).
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// First value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        query_pairs(&self.query)
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
}

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// `Content-Length` and the whole body.
    Complete,
    /// `Transfer-Encoding: chunked`, well formed (no length known up front).
    Chunked,
    /// `Content-Length` of the whole body, then only the first `n` bytes, then close.
    TruncateAfter(usize),
    /// Chunked: the first `n` bytes in a valid chunk, then a malformed chunk header and close.
    BrokenChunkedAfter(usize),
}

#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub delivery: Delivery,
}

impl HttpResponse {
    pub fn new(status: u16) -> Self {
        HttpResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delivery: Delivery::Complete,
        }
    }

    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        let mut r = HttpResponse::new(status);
        r.headers.push((
            "Content-Type".into(),
            "application/json; charset=utf-8".into(),
        ));
        r.body = serde_json::to_vec(value).unwrap_or_default();
        r
    }

    pub fn text(status: u16, text: &str) -> Self {
        let mut r = HttpResponse::new(status);
        r.headers
            .push(("Content-Type".into(), "text/plain; charset=utf-8".into()));
        r.body = text.as_bytes().to_vec();
        r
    }

    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

pub type Handler = Arc<dyn Fn(HttpRequest) -> HttpResponse + Send + Sync>;

/// The running server; stops (and joins its accept thread) on drop.
pub struct HttpServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept_thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serve `handler` on 127.0.0.1:<random port>, one thread per connection.
    pub fn start(handler: Handler) -> std::io::Result<HttpServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop_flag = stopping.clone();
        let accept_thread = std::thread::Builder::new()
            .name(format!("fake-github-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop_flag.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = conn else { continue };
                    let handler = handler.clone();
                    let _ = std::thread::Builder::new()
                        .name("fake-github-conn".into())
                        .spawn(move || serve_connection(stream, &handler));
                }
            })?;
        Ok(HttpServer {
            addr,
            stopping,
            accept_thread: Some(accept_thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the thread sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(stream: TcpStream, handler: &Handler) {
    let _ = stream.set_read_timeout(Some(SOCKET_TIMEOUT));
    let _ = stream.set_write_timeout(Some(SOCKET_TIMEOUT));
    let _ = stream.set_nodelay(true);
    let request = match read_request(&stream) {
        Ok(Some(r)) => r,
        Ok(None) => return, // the wake-up connection of a stop, or a client that left
        Err(reason) => {
            let _ = write_response(&stream, &HttpResponse::text(400, &format!("{reason}\n")));
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    };
    let head_only = request.method == "HEAD";
    let mut response = handler(request);
    if head_only {
        response.body.clear();
    }
    let _ = write_response(&stream, &response);
    let _ = stream.shutdown(Shutdown::Both);
}

fn read_request(stream: &TcpStream) -> Result<Option<HttpRequest>, String> {
    let mut reader = BufReader::new(stream);
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD_BYTES - head.len()) as u64 + 1)
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("reading request: {e}"))?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err("connection closed mid-request".into())
            };
        }
        if head.len() > MAX_HEAD_BYTES {
            return Err("request head too large".into());
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let head = String::from_utf8(head).map_err(|_| "request head is not UTF-8".to_string())?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target), Some(_version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {request_line:?}"));
    };
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if header("transfer-encoding").is_some() {
        return Err("chunked request bodies are not supported by the fake".into());
    }
    let length: usize = match header("content-length") {
        Some(v) => v.parse().map_err(|_| format!("bad content-length {v:?}"))?,
        None => 0,
    };
    if length > MAX_BODY_BYTES {
        return Err("request body too large".into());
    }
    let mut body = vec![0u8; length];
    reader
        .read_exact(&mut body)
        .map_err(|e| format!("reading request body: {e}"))?;
    // Absolute-form targets (as sent to a proxy) keep only their path.
    let target = match target.find("://") {
        Some(i) => match target[i + 3..].find('/') {
            Some(j) => &target[i + 3 + j..],
            None => "/",
        },
        None => target,
    };
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Some(HttpRequest {
        method: method.to_string(),
        path: percent_decode(path),
        query: query.to_string(),
        headers,
        body,
    }))
}

fn write_response(mut stream: &TcpStream, r: &HttpResponse) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason_phrase(r.status));
    for (name, value) in &r.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let no_body = r.status == 204 || r.status == 304;
    match r.delivery {
        Delivery::Complete | Delivery::TruncateAfter(_) if !no_body => {
            head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
        }
        Delivery::Chunked | Delivery::BrokenChunkedAfter(_) if !no_body => {
            head.push_str("Transfer-Encoding: chunked\r\n");
        }
        _ => {}
    }
    head.push_str("Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    if no_body {
        return stream.flush();
    }
    match r.delivery {
        Delivery::Complete => stream.write_all(&r.body)?,
        Delivery::TruncateAfter(n) => stream.write_all(&r.body[..n.min(r.body.len())])?,
        Delivery::Chunked => {
            for chunk in r.body.chunks(64 * 1024) {
                write!(stream, "{:x}\r\n", chunk.len())?;
                stream.write_all(chunk)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"0\r\n\r\n")?;
        }
        Delivery::BrokenChunkedAfter(n) => {
            let first = &r.body[..n.min(r.body.len())];
            if !first.is_empty() {
                write!(stream, "{:x}\r\n", first.len())?;
                stream.write_all(first)?;
                stream.write_all(b"\r\n")?;
            }
            stream.write_all(b"zz-not-a-chunk-size\r\n")?;
        }
    }
    stream.flush()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

/// `a=1&b=x%20y` -> [("a","1"), ("b","x y")].
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(hex, 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake's state, shared by its connection threads and the test: every change wakes
/// every waiter (long polls, `wait_until`).
pub struct Shared<S> {
    pub state: Mutex<S>,
    pub changed: Condvar,
}

impl<S> Shared<S> {
    /// The state; a test thread that panicked while holding the lock must not hide the
    /// state from the assertions that follow, so poisoning is ignored.
    pub fn lock(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Change the state and wake every waiter (long-polls, `wait_until`).
    pub fn update<T>(&self, f: impl FnOnce(&mut S) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st);
        drop(st);
        self.changed.notify_all();
        out
    }
}

/// Whether the fake is stopping: waits end then.
pub trait Stopping {
    fn stopping(&self) -> bool;
}

impl<S: Stopping> Shared<S> {
    /// Wait (lock released) until `done` holds, the fake stops, or `timeout` passes.
    /// Returns the guard and whether `done` held.
    pub fn wait_for<'a>(
        &'a self,
        mut st: MutexGuard<'a, S>,
        timeout: Duration,
        mut done: impl FnMut(&mut S) -> bool,
    ) -> (MutexGuard<'a, S>, bool) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if done(&mut st) {
                return (st, true);
            }
            let now = std::time::Instant::now();
            if st.stopping() || now >= deadline {
                return (st, false);
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}
