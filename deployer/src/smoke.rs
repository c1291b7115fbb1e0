//! `smoke-test`: proves a deployed pipeline works, as a client would use it, and that the
//! deployed roles grant exactly what the allow/deny matrix says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use policies::Bindings;
use policies::matrix::{Expect, matrix};
use serde::Serialize;
use serde_json::Value;
use stack::synth::outputs;
use stack::{App, Stage};
use thiserror::Error;

use crate::aws::{self, AwsError, Target};
use crate::cfn::{self, CfnError};
use crate::deploy::client_api_url;

/// The photograph uploaded when no `--image` is given (see `assets/ATTRIBUTION.md`).
pub const DEFAULT_IMAGE: &[u8] = include_bytes!("../assets/smoke-test.png");

#[derive(Debug, Clone)]
pub struct SmokeConfig {
    pub target: Target,
    pub stage: Stage,
    /// The image to upload; `None` uses [`DEFAULT_IMAGE`].
    pub image: Option<Vec<u8>>,
    /// How long to wait for labels.
    pub timeout: Duration,
    /// Leave the uploaded object and its item in place.
    pub keep: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: String,
    pub passed: bool,
    pub elapsed_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct SmokeReport {
    pub stack: String,
    pub target: String,
    pub api_url: String,
    pub image_id: Option<String>,
    pub labels: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub passed: bool,
    pub cleaned_up: bool,
    pub elapsed_ms: u64,
}

#[derive(Debug, Error)]
pub enum SmokeError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error("stack {0} is not deployed: run `cargo xtask deploy` for this stage first")]
    NotDeployed(String),
    #[error("stack {stack} is {status}, not ready for a smoke test")]
    NotReady { stack: String, status: String },
    #[error("stack {stack} has no output {output}; was it deployed by this version of the tool?")]
    MissingOutput { stack: String, output: String },
    #[error("cannot create an HTTP client: {0}")]
    Http(String),
}

/// What the smoke test reports as it goes.
pub trait SmokeObserver {
    fn check(&self, result: &CheckResult);
    fn note(&self, message: &str);
}

struct Ctx<'a> {
    http: reqwest::Client,
    api: String,
    outputs: &'a BTreeMap<String, String>,
    bodies: Vec<String>,
}

impl Ctx<'_> {
    async fn get(&mut self, path: &str) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.api);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        self.read(resp, &format!("GET {path}")).await
    }

    async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.api);
        let resp = self
            .http
            .post(&url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        self.read(resp, &format!("POST {path}")).await
    }

    async fn read(&mut self, resp: reqwest::Response, what: &str) -> Result<(u16, Value), String> {
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{what}: reading the body: {e}"))?;
        self.bodies.push(text.clone());
        let json = serde_json::from_str(&text).map_err(|_| {
            format!(
                "{what}: {status} with a body that is not JSON: {}",
                clip(&text)
            )
        })?;
        Ok((status, json))
    }
}

/// An SDK error with its whole chain of causes, for a check's detail.
fn sdk(e: &(dyn std::error::Error + 'static)) -> String {
    aws_smithy_types::error::display::DisplayErrorContext(e).to_string()
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(300).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Sniffs the content type the way a client would label it.
fn content_type(image: &[u8]) -> &'static str {
    if image.starts_with(b"\x89PNG") {
        "image/png"
    } else {
        "image/jpeg"
    }
}

pub async fn smoke_test(
    cfg: &SmokeConfig,
    obs: &dyn SmokeObserver,
) -> Result<SmokeReport, SmokeError> {
    let start = Instant::now();
    let stack_name = cfg.stage.stack_name();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let info = cfn::describe(&clients.cfn, &stack_name)
        .await?
        .ok_or_else(|| SmokeError::NotDeployed(stack_name.clone()))?;
    if !matches!(
        info.status.as_str(),
        "CREATE_COMPLETE" | "UPDATE_COMPLETE" | "UPDATE_ROLLBACK_COMPLETE"
    ) {
        return Err(SmokeError::NotReady {
            stack: stack_name,
            status: info.status,
        });
    }
    let need = |k: &str| {
        info.outputs
            .get(k)
            .cloned()
            .ok_or_else(|| SmokeError::MissingOutput {
                stack: stack_name.clone(),
                output: k.to_string(),
            })
    };
    let api = client_api_url(&cfg.target, &need(outputs::API_URL)?);
    let bucket = need(outputs::BUCKET)?;
    let table = need(outputs::TABLE)?;
    let queue = need(outputs::FAILURE_QUEUE_URL)?;
    let http = aws::http_client(&cfg.target, Duration::from_secs(35)).map_err(SmokeError::Http)?;
    let mut ctx = Ctx {
        http,
        api: api.clone(),
        outputs: &info.outputs,
        bodies: Vec::new(),
    };
    let mut checks = Vec::new();
    let mut record = |name: &str, t: Instant, r: Result<String, String>| {
        let c = CheckResult {
            name: name.to_string(),
            passed: r.is_ok(),
            elapsed_ms: t.elapsed().as_millis() as u64,
            detail: match r {
                Ok(d) | Err(d) => d,
            },
        };
        obs.check(&c);
        checks.push(c);
    };

    // Upload.
    let image = cfg.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_vec());
    let t = Instant::now();
    let uploaded = ctx
        .post("/upload", content_type(&image), image.clone())
        .await
        .and_then(|(status, body)| match (status, body["image_id"].as_str()) {
            (201, Some(id)) => Ok(id.to_string()),
            _ => Err(format!(
                "expected 201 with an image_id, got {status}: {body}"
            )),
        });
    let image_id = uploaded.as_ref().ok().cloned();
    record(
        "upload",
        t,
        uploaded.map(|id| format!("201, image_id {id}, {} bytes", image.len())),
    );

    // Labels.
    let mut labels = Vec::new();
    if let Some(id) = &image_id {
        let t = Instant::now();
        // The default photograph has content every label model recognises; a user's image
        // may legitimately get no label above the confidence threshold.
        let need_labels = cfg.image.is_none();
        let r = poll_labels(&mut ctx, id, cfg.timeout, need_labels).await;
        if let Ok(l) = &r {
            labels = l.clone();
        }
        record(
            "labels",
            t,
            r.map(|l| {
                if l.is_empty() {
                    "labeled (no label reached the confidence threshold)".to_string()
                } else {
                    format!("labeled: {}", l.join(", "))
                }
            }),
        );

        // Listing.
        let t = Instant::now();
        let r = find_in_listing(&mut ctx, id).await;
        record("listing", t, r);
    }

    // Presigned upload: POST /uploads, PUT to the URL it hands out, then labels.
    let t = Instant::now();
    let presigned = presigned_upload(&mut ctx, &image).await;
    let presigned_id = presigned.as_ref().ok().cloned();
    let r = match presigned {
        Ok(id) => poll_labels(&mut ctx, &id, cfg.timeout, cfg.image.is_none())
            .await
            .map(|l| {
                format!(
                    "image {id} uploaded with a presigned PUT and labeled ({} labels)",
                    l.len()
                )
            }),
        Err(e) => Err(e),
    };
    record("presigned-upload", t, r);

    // Bad upload: rejected with a 4xx JSON error, nothing stored.
    let t = Instant::now();
    let before = count_uploads(&clients.s3, &bucket).await;
    let r = match ctx
        .post("/upload", "image/jpeg", b"this is not an image".to_vec())
        .await
    {
        Ok((status, body)) if (400..500).contains(&status) && body["error"]["code"].is_string() => {
            let after = count_uploads(&clients.s3, &bucket).await;
            match (before, after) {
                (Ok(b), Ok(a)) if a == b => Ok(format!(
                    "{status} {}; nothing stored",
                    body["error"]["code"].as_str().unwrap_or_default()
                )),
                (Ok(b), Ok(a)) => Err(format!(
                    "rejected with {status}, but uploads went from {b} to {a} objects"
                )),
                (Err(e), _) | (_, Err(e)) => Err(e),
            }
        }
        Ok((status, body)) => Err(format!("expected a 4xx JSON error, got {status}: {body}")),
        Err(e) => Err(e),
    };
    record("bad-upload", t, r);

    // No response mentions S3.
    let t = Instant::now();
    let leaks: Vec<String> = ctx
        .bodies
        .iter()
        .filter(|b| {
            b.contains(&bucket)
                || b.contains("s3.amazonaws.com")
                || b.contains("X-Amz-")
                || b.contains(stack::app::UPLOAD_PREFIX)
                || b.contains("s3://")
        })
        .map(|b| clip(b))
        .collect();
    record(
        "no-s3-urls",
        t,
        if leaks.is_empty() {
            Ok(format!("{} responses checked", ctx.bodies.len()))
        } else {
            Err(format!("responses mention S3: {}", leaks.join(" | ")))
        },
    );

    // IAM matrix.
    let t = Instant::now();
    let bindings = Bindings {
        partition: identity.partition.clone(),
        region: identity.region.clone(),
        account: identity.account.clone(),
        refs: BTreeMap::from([(
            stack::app::STAGE_PARAM.to_string(),
            cfg.stage.as_str().to_string(),
        )]),
    };
    let r = check_matrix(&clients.iam, ctx.outputs, &bindings).await;
    record("iam-matrix", t, r);

    // Failure queue.
    let t = Instant::now();
    let r = queue_depth(&clients.sqs, &queue).await.and_then(|n| {
        if n == 0 {
            Ok("empty".to_string())
        } else {
            Err(format!("{n} failed events are waiting in {queue}"))
        }
    });
    record("failure-queue", t, r);

    // Clean up.
    let mut cleaned_up = false;
    let uploaded: Vec<&String> = image_id.iter().chain(presigned_id.iter()).collect();
    if !uploaded.is_empty() && !cfg.keep {
        cleaned_up = true;
    }
    for id in uploaded.into_iter().filter(|_| !cfg.keep) {
        let key = format!("{}{id}", stack::app::UPLOAD_PREFIX);
        let objects = delete_object_versions(&clients.s3, &bucket, &key).await;
        let item = clients
            .dynamodb
            .delete_item()
            .table_name(&table)
            .key(
                "image_id",
                aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
            )
            .send()
            .await;
        match (objects, item) {
            (Ok(()), Ok(_)) => obs.note(&format!("removed image {id} (object and item)")),
            (Err(e), _) => {
                cleaned_up = false;
                obs.note(&format!("could not remove the object {key}: {e}"));
            }
            (_, Err(e)) => {
                cleaned_up = false;
                obs.note(&format!("could not remove the item {id}: {}", sdk(&e)));
            }
        }
    }

    let passed = checks.iter().all(|c| c.passed);
    Ok(SmokeReport {
        stack: stack_name,
        target: cfg.target.describe(),
        api_url: api,
        image_id,
        labels,
        checks,
        passed,
        cleaned_up,
        elapsed_ms: start.elapsed().as_millis() as u64,
    })
}

/// Asks `POST /uploads` for a presigned PUT and sends the image with exactly the headers it
/// names; the new image's id.
async fn presigned_upload(ctx: &mut Ctx<'_>, image: &[u8]) -> Result<String, String> {
    let ask = serde_json::json!({
        "content_type": content_type(image),
        "size_bytes": image.len(),
    });
    let (status, body) = ctx
        .post("/uploads", "application/json", ask.to_string().into_bytes())
        .await?;
    // The one response that hands out an S3 URL by design: not part of the no-S3-URL check.
    ctx.bodies.pop();
    let (201, Some(id), Some(url)) = (
        status,
        body["image_id"].as_str(),
        body["upload"]["url"].as_str(),
    ) else {
        return Err(format!(
            "POST /uploads: expected 201 with an image_id and an upload URL, got {status}: {body}"
        ));
    };
    let mut put = ctx.http.put(url).body(image.to_vec());
    if let Some(headers) = body["upload"]["headers"].as_object() {
        for (k, v) in headers {
            put = put.header(k, v.as_str().unwrap_or_default());
        }
    }
    let resp = put
        .send()
        .await
        .map_err(|e| format!("PUT to the presigned URL: {e}"))?;
    let code = resp.status().as_u16();
    if code != 200 {
        let text = resp.text().await.unwrap_or_default();
        return Err(format!(
            "the presigned PUT answered {code}: {}",
            clip(&text)
        ));
    }
    Ok(id.to_string())
}

async fn poll_labels(
    ctx: &mut Ctx<'_>,
    id: &str,
    timeout: Duration,
    need_labels: bool,
) -> Result<Vec<String>, String> {
    let start = Instant::now();
    loop {
        let last;
        match ctx.get(&format!("/metadata/{id}")).await {
            Ok((200, body)) => match body["status"].as_str() {
                Some("labeled") => {
                    let names: Vec<String> = body["labels"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter_map(|x| x["name"].as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default();
                    if names.is_empty() && need_labels {
                        return Err(format!("labeled with no labels: {body}"));
                    }
                    return Ok(names);
                }
                Some("failed") => return Err(format!("the pipeline recorded a failure: {body}")),
                _ => last = format!("200 {body}"),
            },
            Ok((404, _)) => last = "404 (not labeled yet)".into(),
            Ok((status, body)) => return Err(format!("unexpected {status}: {body}")),
            Err(e) => last = e,
        }
        if start.elapsed() >= timeout {
            return Err(format!(
                "no labels after {} s; last answer: {last}",
                timeout.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn find_in_listing(ctx: &mut Ctx<'_>, id: &str) -> Result<String, String> {
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        pages += 1;
        let path = match &token {
            Some(t) => format!("/metadata?limit=100&next_token={t}"),
            None => "/metadata?limit=100".to_string(),
        };
        let (status, body) = ctx.get(&path).await?;
        if status != 200 {
            return Err(format!("GET /metadata: {status} {body}"));
        }
        let found = body["items"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["image_id"].as_str() == Some(id)));
        if found {
            return Ok(format!("found on page {pages}"));
        }
        match body["next_token"].as_str() {
            Some(t) if pages < 1000 => token = Some(t.to_string()),
            _ => return Err(format!("not in {pages} pages of GET /metadata")),
        }
    }
}

async fn count_uploads(s3: &aws_sdk_s3::Client, bucket: &str) -> Result<usize, String> {
    let mut n = 0;
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(stack::app::UPLOAD_PREFIX)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| format!("listing {bucket}: {}", sdk(&e)))?;
        n += out.contents().len();
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            return Ok(n);
        }
    }
}

async fn delete_object_versions(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
) -> Result<(), String> {
    let out = s3
        .list_object_versions()
        .bucket(bucket)
        .prefix(key)
        .send()
        .await
        .map_err(|e| sdk(&e))?;
    let mut versions: Vec<Option<String>> = out
        .versions()
        .iter()
        .filter(|v| v.key() == Some(key))
        .map(|v| v.version_id().map(str::to_string))
        .collect();
    versions.extend(
        out.delete_markers()
            .iter()
            .filter(|m| m.key() == Some(key))
            .map(|m| m.version_id().map(str::to_string)),
    );
    if versions.is_empty() {
        versions.push(None);
    }
    for v in versions {
        s3.delete_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(v.filter(|v| v != "null"))
            .send()
            .await
            .map_err(|e| sdk(&e))?;
    }
    Ok(())
}

async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64, String> {
    use aws_sdk_sqs::types::QueueAttributeName;
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("reading {url}: {}", sdk(&e)))?;
    let attrs = out.attributes();
    let n = |k: QueueAttributeName| {
        attrs
            .and_then(|a| a.get(&k))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(n(QueueAttributeName::ApproximateNumberOfMessages)
        + n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible))
}

/// Checks every row of every function's allow/deny matrix against its deployed role with
/// `SimulatePrincipalPolicy`, one call per (role, resource) with all its actions.
async fn check_matrix(
    iam: &aws_sdk_iam::Client,
    outputs: &BTreeMap<String, String>,
    bindings: &Bindings,
) -> Result<String, String> {
    let app = App::image_pipeline();
    let all = app.accesses();
    let mut rows = 0;
    let mut wrong = Vec::new();
    for (spec, access) in app.functions.iter().zip(&all) {
        let key = spec.role_arn_output();
        let role = outputs
            .get(&key)
            .ok_or_else(|| format!("the stack has no output {key}"))?;
        let mut by_resource: BTreeMap<String, Vec<(String, Expect)>> = BTreeMap::new();
        for check in matrix(access, &all) {
            let resource = check
                .request
                .resource
                .resolve(bindings)
                .map_err(|e| format!("{}: {e}", spec.name))?;
            by_resource
                .entry(resource)
                .or_default()
                .push((check.request.action.to_string(), check.expect));
        }
        for (resource, actions) in by_resource {
            let out = iam
                .simulate_principal_policy()
                .policy_source_arn(role)
                .set_action_names(Some(actions.iter().map(|(a, _)| a.clone()).collect()))
                .resource_arns(&resource)
                .send()
                .await
                .map_err(|e| format!("SimulatePrincipalPolicy for {role}: {}", sdk(&e)))?;
            for (action, expect) in &actions {
                rows += 1;
                let decision = out
                    .evaluation_results()
                    .iter()
                    .find(|r| r.eval_action_name() == action)
                    .map(|r| r.eval_decision().as_str().to_string());
                let allowed = decision.as_deref() == Some("allowed");
                let ok = match expect {
                    Expect::Allow => allowed,
                    Expect::Deny => decision.is_some() && !allowed,
                };
                if !ok {
                    wrong.push(format!(
                        "{}: {action} on {resource} expected {expect:?}, IAM says {}",
                        spec.name,
                        decision.as_deref().unwrap_or("nothing")
                    ));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "{rows} decisions as expected across {} roles",
            app.functions.len()
        ))
    } else {
        Err(format!(
            "{} of {rows} decisions wrong:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        ))
    }
}
