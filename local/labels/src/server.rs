//! The HTTP side: a small HTTP/1.1 server on 127.0.0.1 answering the AWS JSON 1.1 protocol,
//! plus `GET /health` for whoever starts the service.
//!
//! A client cannot hold the service: every connection has its own thread with read and write
//! timeouts, a request body must arrive within a deadline, a body announced as too large is
//! refused before any of it is read, and connections beyond a cap are refused at once with a
//! throttling error. Model inference, the CPU-heavy part, runs at most `workers` at a time, so
//! `/health` (answered on the connection's own thread) never waits for it.
//!
//! It is written on `std` rather than on a server crate because the one used before could not
//! put a timeout on a connection: a client that stopped sending held a worker for ever.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::auth;
use crate::model::MODEL_VERSION;
use crate::service::{ApiError, MAX_BYTES, Service, TARGET};

/// A request body may carry 5 MB of image as base64 plus the JSON around it.
const MAX_BODY: usize = MAX_BYTES / 3 * 4 + 64 * 1024;
/// The request line and headers together.
const MAX_HEAD: usize = 32 * 1024;

/// How the server guards itself against its clients.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Inferences run at once.
    pub workers: usize,
    /// The longest wait for one read or write on a connection (idle keep-alive included).
    pub io_timeout: Duration,
    /// The longest a request body may take to arrive in full.
    pub body_deadline: Duration,
    /// Connections served at once. Up to as many again are read and answered with
    /// `ThrottlingException` (which the SDK retries with backoff); past that, a connection is
    /// closed at once.
    pub max_connections: usize,
}

impl Config {
    pub fn with_workers(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            io_timeout: Duration::from_secs(10),
            body_deadline: Duration::from_secs(30),
            max_connections: 256,
        }
    }
}

/// A running service; `stop` shuts it down.
pub struct Running {
    pub port: u16,
    stopping: Arc<AtomicBool>,
    acceptor: JoinHandle<()>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("port", &self.port).finish()
    }
}

impl Running {
    /// Stops accepting; connections in progress end at their next timeout at the latest.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        let _ = self.acceptor.join();
    }

    /// Blocks until the server ends (it does not, unless stopped).
    pub fn wait(self) {
        let _ = self.acceptor.join();
    }
}

/// A counting semaphore: at most `n` holders at once.
#[derive(Debug)]
struct Permits {
    free: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn new(n: usize) -> Self {
        Self {
            free: Mutex::new(n),
            freed: Condvar::new(),
        }
    }

    fn run<T>(&self, f: impl FnOnce() -> T) -> T {
        {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            while *free == 0 {
                free = self.freed.wait(free).unwrap_or_else(|p| p.into_inner());
            }
            *free -= 1;
        }
        // Give the permit back even if `f` panics.
        struct Release<'a>(&'a Permits);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                let mut free = self.0.free.lock().unwrap_or_else(|p| p.into_inner());
                *free += 1;
                self.0.freed.notify_one();
            }
        }
        let _release = Release(self);
        f()
    }
}

/// One request in flight; dropping it frees the slot.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Self> {
        count
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub fn start(service: Arc<Service>, addr: &str, workers: usize) -> std::io::Result<Running> {
    start_with(service, addr, Config::with_workers(workers))
}

/// What every connection thread shares.
struct Shared {
    service: Arc<Service>,
    config: Config,
    inference: Permits,
    ids: AtomicU64,
}

pub fn start_with(service: Arc<Service>, addr: &str, config: Config) -> std::io::Result<Running> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    let stopping = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        service,
        config,
        inference: Permits::new(config.workers),
        ids: AtomicU64::new(1),
    });
    let connections = Arc::new(AtomicUsize::new(0));
    let refusing = Arc::new(AtomicUsize::new(0));
    let stop = stopping.clone();
    let acceptor = std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else {
                // Out of descriptors or a connection reset before accept: keep serving.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let timeouts = stream
                .set_read_timeout(Some(config.io_timeout))
                .and_then(|()| stream.set_write_timeout(Some(config.io_timeout)));
            if timeouts.is_err() {
                continue;
            }
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            if let Some(slot) = Slot::take(&connections, config.max_connections) {
                std::thread::spawn(move || {
                    let _slot = slot;
                    // Whatever happens on one connection, the service lives on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        serve(&shared, stream)
                    }));
                });
            } else if let Some(slot) = Slot::take(&refusing, config.max_connections) {
                // Over the limit: a proper answer to the request, which the SDK retries.
                std::thread::spawn(move || {
                    let _slot = slot;
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        throttle(&shared, stream)
                    }));
                });
            }
            // Past both limits the connection is dropped: the client sees it closed.
        }
    });
    Ok(Running {
        port,
        stopping,
        acceptor,
    })
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    /// Lower-cased names, values as sent.
    headers: Vec<(String, String)>,
    close: bool,
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a connection stops.
enum Failure {
    /// The client closed, or stayed idle between requests: nothing to answer.
    Gone,
    /// Answer this and close.
    Answer(ApiError),
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn read_head(reader: &mut BufReader<TcpStream>) -> Result<Head, Failure> {
    let mut lines = Vec::new();
    let mut total = 0;
    loop {
        let mut line = Vec::new();
        let read = reader
            .by_ref()
            .take((MAX_HEAD - total + 1) as u64)
            .read_until(b'\n', &mut line);
        match read {
            Ok(0) => return Err(Failure::Gone),
            Ok(n) => total += n,
            Err(e) if timed_out(&e) && total == 0 => return Err(Failure::Gone),
            Err(e) if timed_out(&e) => {
                return Err(Failure::Answer(ApiError::new(
                    "RequestTimeoutException",
                    408,
                    "the request headers did not arrive in time",
                )));
            }
            Err(_) => return Err(Failure::Gone),
        }
        if total > MAX_HEAD {
            return Err(Failure::Answer(ApiError::invalid_parameter(
                "the request headers are too large",
            )));
        }
        if !line.ends_with(b"\n") {
            return Err(Failure::Gone);
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        if text.is_empty() {
            if lines.is_empty() {
                continue; // tolerated blank line before a request
            }
            break;
        }
        lines.push(text);
    }
    let bad = |m: &str| Failure::Answer(ApiError::invalid_parameter(m.to_string()));
    let mut first = lines[0].split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (first.next(), first.next(), first.next(), first.next())
    else {
        return Err(bad("malformed request line"));
    };
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(bad("only HTTP/1.1 is served"));
    }
    let mut headers = Vec::new();
    for line in &lines[1..] {
        let Some((name, value)) = line.split_once(':') else {
            return Err(bad("malformed header line"));
        };
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut head = Head {
        method: method.to_string(),
        target: target.to_string(),
        headers,
        close: version == "HTTP/1.0",
    };
    if head
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    {
        head.close = true;
    }
    Ok(head)
}

/// Reads exactly `len` bytes of body, giving up at `deadline`.
fn read_body(
    reader: &mut BufReader<TcpStream>,
    len: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ApiError> {
    let timeout = |m: &str| ApiError::new("RequestTimeoutException", 408, m.to_string());
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        if Instant::now() > deadline {
            return Err(timeout("the request body did not arrive in time"));
        }
        match reader.read(&mut body[got..]) {
            Ok(0) => {
                return Err(ApiError::invalid_parameter(
                    "the connection closed before the whole body arrived",
                ));
            }
            Ok(n) => got += n,
            Err(e) if timed_out(&e) => {
                return Err(timeout("the client stopped sending the request body"));
            }
            Err(e) => {
                return Err(ApiError::invalid_parameter(format!(
                    "cannot read the request: {e}"
                )));
            }
        }
    }
    Ok(body)
}

/// A response to write.
struct Reply {
    status: u16,
    body: String,
    error: Option<&'static str>,
}

impl Reply {
    fn error(e: &ApiError) -> Self {
        Self {
            status: e.status,
            body: e.body(),
            error: Some(e.kind),
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    stream: &mut TcpStream,
    reply: &Reply,
    id: u64,
    close: bool,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-RequestId: 00000000-0000-4000-8000-{id:012x}\r\nContent-Length: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len()
    );
    if let Some(kind) = reply.error {
        head.push_str(&format!("x-amzn-ErrorType: {kind}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(reply.body.as_bytes())?;
    stream.flush()
}

/// Serves one connection: requests one after another until the client closes, stays idle past
/// the timeout, or a request fails in a way that leaves the stream unusable.
fn serve(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    loop {
        let head = read_head(&mut reader);
        let id = shared.ids.fetch_add(1, Ordering::SeqCst);
        let (reply, close) = match head {
            Err(Failure::Gone) => return,
            Err(Failure::Answer(e)) => (Reply::error(&e), true),
            Ok(head) => respond(shared, &mut reader, &head),
        };
        if let Some(kind) = reply.error {
            eprintln!("detect-labels: request {id}: {kind} {}", reply.body);
        }
        if write_response(&mut writer, &reply, id, close).is_err() || close {
            return;
        }
    }
}

/// Reads one request head and answers it with `ThrottlingException`, then closes.
fn throttle(shared: &Shared, stream: TcpStream) {
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut writer = stream;
    if read_head(&mut reader).is_ok() {
        let id = shared.ids.fetch_add(1, Ordering::SeqCst);
        let e = ApiError::new("ThrottlingException", 400, "Rate exceeded");
        let _ = write_response(&mut writer, &Reply::error(&e), id, true);
    }
}

/// Answers one request; the flag says whether the connection must close after it (when the
/// body was not read, the stream is no longer at a request boundary).
fn respond(shared: &Shared, reader: &mut BufReader<TcpStream>, head: &Head) -> (Reply, bool) {
    if head.method == "GET" && head.target == "/stats" {
        let stats = crate::meter::Stats {
            stub_latency_ms: shared
                .service
                .stub
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            ..shared.service.meter.stats()
        };
        let reply = Reply {
            status: 200,
            body: serde_json::to_string(&stats).unwrap_or_default(),
            error: None,
        };
        return (reply, head.close);
    }
    if head.method == "GET" && head.target == "/health" {
        let service = &shared.service;
        let body = serde_json::json!({
            "status": "ok",
            "model": MODEL_VERSION,
            "model_load_ms": u64::try_from(service.model.load_time.as_millis()).unwrap_or(u64::MAX),
            "faults_injected": service.faults.injected.load(Ordering::SeqCst),
        });
        let reply = Reply {
            status: 200,
            body: body.to_string(),
            error: None,
        };
        return (reply, head.close);
    }
    if head.header("transfer-encoding").is_some() {
        let e = ApiError::invalid_parameter("send the body with a Content-Length");
        return (Reply::error(&e), true);
    }
    let length = match head.header("content-length").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            let e = ApiError::invalid_parameter("Content-Length is not a number");
            return (Reply::error(&e), true);
        }
    };
    if length > MAX_BODY {
        // Refused on the announced length: nothing of the body is read.
        let e = ApiError::too_large("Image size is too large (5 MB for Bytes)");
        return (Reply::error(&e), true);
    }
    let deadline = Instant::now() + shared.config.body_deadline;
    let body = match read_body(reader, length, deadline) {
        Ok(body) => body,
        Err(e) => return (Reply::error(&e), true),
    };
    if head.method != "POST" || head.header("x-amz-target") != Some(TARGET) {
        let e = ApiError {
            kind: "UnknownOperationException",
            message: format!("this service implements only {TARGET}"),
            status: 400,
        };
        return (Reply::error(&e), head.close);
    }
    let result = auth::authenticate(
        &auth::SignedRequest {
            method: &head.method,
            url: &head.target,
            headers: &head.headers,
            body: &body,
        },
        shared.service.keys.as_ref(),
    )
    .and_then(|caller| {
        // Over the rate, refused before any work; in flight until answered.
        let in_flight = shared.service.meter.admit()?;
        // A panic while handling one image answers that request with an error and leaves
        // the service serving the next.
        let answer = shared.inference.run(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                shared.service.detect_labels(&caller, &body)
            }))
            .unwrap_or_else(|_| {
                Err(ApiError::internal(
                    "the service failed on this request; it keeps serving others",
                ))
            })
        });
        if answer.is_ok() {
            in_flight.served();
        }
        answer
    });
    let reply = match result {
        Ok(json) => Reply {
            status: 200,
            body: json,
            error: None,
        },
        Err(e) => Reply::error(&e),
    };
    (reply, head.close)
}
