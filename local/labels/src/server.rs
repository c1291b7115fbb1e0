//! The HTTP side: a small pool of threads on 127.0.0.1 answering the AWS JSON 1.1 protocol,
//! plus `GET /health` for whoever starts the service.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Response as HttpResponse, Server};

use crate::auth;
use crate::model::MODEL_VERSION;
use crate::service::{ApiError, MAX_BYTES, Service, TARGET};

/// A request body may carry 5 MB of image as base64 plus the JSON around it.
const MAX_BODY: usize = MAX_BYTES / 3 * 4 + 64 * 1024;

/// A running service; `stop` shuts it down and joins the workers.
pub struct Running {
    pub port: u16,
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("port", &self.port).finish()
    }
}

impl Running {
    pub fn stop(self) {
        self.server.unblock();
        for _ in 1..self.workers.len() {
            self.server.unblock();
        }
        for w in self.workers {
            let _ = w.join();
        }
    }

    /// Blocks until the workers end (they do not, unless stopped).
    pub fn wait(self) {
        for w in self.workers {
            let _ = w.join();
        }
    }
}

pub fn start(service: Arc<Service>, addr: &str, workers: usize) -> std::io::Result<Running> {
    let server = Arc::new(Server::http(addr).map_err(std::io::Error::other)?);
    let port = server.server_addr().to_ip().map_or(0, |a| a.port());
    let ids = Arc::new(AtomicU64::new(1));
    let workers = (0..workers.max(1))
        .map(|_| {
            let (server, service, ids) = (server.clone(), service.clone(), ids.clone());
            std::thread::spawn(move || {
                while let Ok(req) = server.recv() {
                    let id = ids.fetch_add(1, Ordering::SeqCst);
                    // Whatever happens to one request, the worker lives on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        handle(&service, req, id)
                    }));
                }
            })
        })
        .collect();
    Ok(Running {
        port,
        server,
        workers,
    })
}

fn header(name: &str, value: &str) -> Option<Header> {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).ok()
}

fn reply(req: tiny_http::Request, status: u16, body: String, id: u64, error: Option<&str>) {
    let mut resp = HttpResponse::from_string(body).with_status_code(status);
    let request_id = format!("00000000-0000-4000-8000-{id:012x}");
    let mut headers = vec![
        header("Content-Type", "application/x-amz-json-1.1"),
        header("x-amzn-RequestId", &request_id),
    ];
    if let Some(kind) = error {
        headers.push(header("x-amzn-ErrorType", kind));
    }
    for h in headers.into_iter().flatten() {
        resp.add_header(h);
    }
    let _ = req.respond(resp);
}

fn handle(service: &Service, mut req: tiny_http::Request, id: u64) {
    if req.method() == &Method::Get && req.url() == "/health" {
        let body = serde_json::json!({
            "status": "ok",
            "model": MODEL_VERSION,
            "model_load_ms": service.model.load_time.as_millis() as u64,
            "faults_injected": service.faults.injected.load(Ordering::SeqCst),
        });
        return reply(req, 200, body.to_string(), id, None);
    }
    let target = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("x-amz-target"))
        .map(|h| h.value.as_str().to_string())
        .unwrap_or_default();
    if req.method() != &Method::Post || target != TARGET {
        let e = ApiError {
            kind: "UnknownOperationException",
            message: format!("this service implements only {TARGET}"),
            status: 400,
        };
        return reply(req, e.status, e.body(), id, Some(e.kind));
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|h| {
            (
                h.field.as_str().as_str().to_ascii_lowercase(),
                h.value.as_str().to_string(),
            )
        })
        .collect();
    let (method, url) = (req.method().as_str().to_string(), req.url().to_string());
    let mut body = Vec::new();
    let read = req
        .as_reader()
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut body);
    let result = match read {
        Err(e) => Err(ApiError::invalid_parameter(format!(
            "cannot read the request: {e}"
        ))),
        Ok(_) if body.len() > MAX_BODY => Err(ApiError::too_large(
            "Image size is too large (5 MB for Bytes)",
        )),
        // As on AWS, the signature is checked before anything in the request is looked at.
        Ok(_) => auth::authenticate(
            &auth::SignedRequest {
                method: &method,
                url: &url,
                headers: &headers,
                body: &body,
            },
            service.keys.as_ref(),
        )
        .and_then(|caller| {
            // A panic while handling one image answers that request with an error and
            // leaves the worker serving the next.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                service.detect_labels(&caller, &body)
            }))
            .unwrap_or_else(|_| {
                Err(ApiError::internal(
                    "the service failed on this request; it keeps serving others",
                ))
            })
        }),
    };
    match result {
        Ok(json) => reply(req, 200, json, id, None),
        Err(e) => {
            eprintln!("detect-labels: request {id}: {} {}", e.kind, e.message);
            reply(req, e.status, e.body(), id, Some(e.kind))
        }
    }
}
