//! `smoke-test`: proves a deployed pipeline works, as a client would use it, and that the
//! deployed roles grant exactly what the allow/deny matrix says.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api_types::{
    ErrorBody, FailureReason, ImageMetadata, ImageStatus, LabelCounts, Page, PresignRequest,
    PresignedUpload, Uploaded,
};
use aws_sdk_iam::types::PolicyEvaluationDecisionType;
use policies::Bindings;
use policies::matrix::{Expect, matrix};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stack::{App, Stage};
use thiserror::Error;

use crate::cloud::aws::{self, AwsError, Clients, Identity, Target};
use crate::cloud::cognito::{self, Pool};
use crate::cloud::error::chain;
use crate::cloud::queue::queue_depth;
use crate::cloud::stage::{self, Deployed, StageError};
use crate::ops::users::StageUsers;
use crate::progress::Progress;
use crate::util::elapsed_ms;
use crate::verify::quota;

/// The photograph uploaded when no `--image` is given (see `assets/ATTRIBUTION.md`).
pub const DEFAULT_IMAGE: &[u8] = include_bytes!("../../assets/smoke-test.png");

#[derive(Debug, Clone)]
pub struct SmokeConfig {
    pub target: Target,
    pub stage: Stage,
    /// The image to upload; `None` uses [`DEFAULT_IMAGE`].
    pub image: Option<Vec<u8>>,
    /// How long to wait for labels.
    pub timeout: Duration,
    /// Leave the uploaded objects and items in place, and the user who owns them.
    pub keep: bool,
}

/// The smoke test's checks, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckName {
    /// Two throwaway users are added to the stage's pool and sign in with SRP; the other
    /// checks run as the first of them.
    SignIn,
    /// `POST /upload` stores the image: 201 with an id.
    Upload,
    /// The image gets its labels.
    Labels,
    /// `GET /metadata` lists it.
    Listing,
    /// `GET /metadata?label=` finds it under its first label (in another case), `GET /labels`
    /// counts that label, and `min_confidence` above the label's confidence leaves it out.
    LabelSearch,
    /// `GET /images/{id}` answers the uploaded bytes; `GET /images/{id}/thumbnail` a JPEG, the
    /// same bytes the second time (from the cache).
    Images,
    /// Every signed-in route answers 401 with no token, a garbage one, one whose payload was
    /// edited, or an ID token (which carries no scope); `GET /` needs none.
    Unauthorized,
    /// The second user sees, finds and reads none of the first user's images: 404 for its
    /// metadata, bytes and thumbnail, absent from their listing, search and counts.
    OtherUser,
    /// `GET /` answers the gallery page: HTML with nothing from elsewhere, under a
    /// Content-Security-Policy that names its inline script and style by hash.
    Gallery,
    /// `POST /uploads`, a PUT to the URL it hands out, then labels.
    PresignedUpload,
    /// `DELETE /images/{id}` of that image: 204, then 404 to every read, gone from the
    /// listing, the search and the counts, no object version left; a second DELETE is 204.
    Delete,
    /// An upload deleted at once, while its processing is under way: 204, and over the next
    /// [`RACE_WINDOW`] the image never comes back (404, not listed), no label count changes,
    /// and no object version is left.
    DeleteWhileProcessing,
    /// Something that is not an image: a 4xx JSON error, nothing stored.
    BadUpload,
    /// A third throwaway user, brought to 5 uploads short of the stage's daily quota, sends
    /// 20 uploads at once: exactly 5 are stored, 15 get 429 with `Retry-After` and store
    /// nothing, and a presign after them is refused too. The user and all they own are removed.
    Quota,
    /// Something that is not an image, PUT through a presigned URL: the item ends `failed`
    /// with `unsupported_image`, and the object is tagged for the lifecycle to expire.
    PresignedNonImage,
    /// No response (but the presigned one) mentions S3.
    NoS3Urls,
    /// Every row of the allow/deny matrix, asked of IAM for the deployed roles.
    IamMatrix,
    /// Nothing waits in the work queue's dead-letter queue.
    DeadLetters,
}

impl CheckName {
    pub const ALL: [CheckName; 18] = [
        CheckName::SignIn,
        CheckName::Upload,
        CheckName::Labels,
        CheckName::Listing,
        CheckName::LabelSearch,
        CheckName::Images,
        CheckName::Unauthorized,
        CheckName::OtherUser,
        CheckName::Gallery,
        CheckName::PresignedUpload,
        CheckName::Delete,
        CheckName::DeleteWhileProcessing,
        CheckName::BadUpload,
        CheckName::Quota,
        CheckName::PresignedNonImage,
        CheckName::NoS3Urls,
        CheckName::IamMatrix,
        CheckName::DeadLetters,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CheckName::SignIn => "sign-in",
            CheckName::Unauthorized => "unauthorized",
            CheckName::OtherUser => "other-user",
            CheckName::Upload => "upload",
            CheckName::Labels => "labels",
            CheckName::Listing => "listing",
            CheckName::LabelSearch => "label-search",
            CheckName::Images => "images",
            CheckName::Gallery => "gallery",
            CheckName::PresignedUpload => "presigned-upload",
            CheckName::Delete => "delete",
            CheckName::DeleteWhileProcessing => "delete-while-processing",
            CheckName::BadUpload => "bad-upload",
            CheckName::Quota => "quota",
            CheckName::PresignedNonImage => "presigned-non-image",
            CheckName::NoS3Urls => "no-s3-urls",
            CheckName::IamMatrix => "iam-matrix",
            CheckName::DeadLetters => "dead-letters",
        }
    }
}

impl std::fmt::Display for CheckName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `pad`, so that widths in format strings line the names up.
        f.pad(self.as_str())
    }
}

/// A [`Progress`] that also hears each smoke check as it finishes.
pub trait SmokeProgress: Progress {
    /// A smoke check finished.
    fn check(&self, _result: &CheckResult) {}
}

impl<F: Fn(&str)> SmokeProgress for F {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: CheckName,
    pub passed: bool,
    pub elapsed_ms: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmokeReport {
    pub stack: String,
    pub target: String,
    pub api_url: String,
    pub image_id: Option<String>,
    /// The `sub` of the user the checks ran as: the owner of `image_id`.
    #[serde(default)]
    pub owner: Option<String>,
    /// With `--keep`, the user kept with their images (remove both with `user remove`).
    #[serde(default)]
    pub kept_user: Option<String>,
    /// The images the checks deleted through the API (owned by `owner`).
    #[serde(default)]
    pub deleted: Vec<String>,
    pub labels: Vec<String>,
    pub checks: Vec<CheckResult>,
    pub passed: bool,
    pub cleaned_up: bool,
    pub elapsed_ms: u64,
}

impl SmokeReport {
    pub fn check(&self, name: CheckName) -> Option<&CheckResult> {
        self.checks.iter().find(|c| c.name == name)
    }
}

#[derive(Debug, Error)]
pub enum SmokeError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("cannot create an HTTP client: {0}")]
    Http(String),
}

/// An answer of the API: its status and body, kept whole for the no-S3-URL check.
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    /// The body as `T` when the status is `want`; otherwise a message with what came back.
    fn expect<T: DeserializeOwned>(&self, what: &str, want: u16) -> Result<T, String> {
        if self.status != want {
            return Err(format!(
                "{what}: expected {want}, got {}: {}",
                self.status,
                clip(&self.text)
            ));
        }
        serde_json::from_str(&self.text).map_err(|e| {
            format!(
                "{what}: {} with a body that is not the API's shape ({e}): {}",
                self.status,
                clip(&self.text)
            )
        })
    }

    /// The API's error body, when the answer is one.
    fn error(&self) -> Option<ErrorBody> {
        serde_json::from_str(&self.text).ok()
    }
}

/// Where a paged listing showed an image: on page N, or not in the N pages it has.
enum Found {
    OnPage(usize),
    NotIn(usize),
}

/// Everything the checks share: where the stack is, how to call it, and what earlier checks
/// found out.
struct Run<'a> {
    cfg: &'a SmokeConfig,
    clients: Clients,
    identity: Identity,
    http: reqwest::Client,
    api: String,
    outputs: &'a BTreeMap<String, String>,
    /// The stage as deployed.
    stage: &'a Deployed,
    bucket: String,
    queue: String,
    image: Vec<u8>,
    /// Every response body seen, for the no-S3-URL check.
    bodies: Vec<String>,
    image_id: Option<String>,
    presigned_id: Option<String>,
    rejected_id: Option<String>,
    /// Images deleted through the API.
    deleted: Vec<String>,
    labels: Vec<String>,
    /// The stage's user pool.
    pool: Pool,
    /// The throwaway users, signed in: the checks run as the first.
    users: Vec<SignedIn>,
}

/// A throwaway user of the smoke test and their tokens.
struct SignedIn {
    email: String,
    sub: String,
    access_token: String,
    id_token: String,
}

impl Run<'_> {
    /// The first user's access token, as every signed-in request carries it.
    fn bearer(&self) -> String {
        self.users
            .first()
            .map(|u| format!("Bearer {}", u.access_token))
            .unwrap_or_default()
    }

    /// Sends a GET of `path` under the API, as the first user.
    async fn send_get(&self, path: &str) -> Result<reqwest::Response, String> {
        self.http
            .get(format!("{}{path}", self.api))
            .header("authorization", self.bearer())
            .send()
            .await
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// A GET of `path` with `authorization` (none when `None`): the status and the body.
    async fn get_with(
        &mut self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Answer, String> {
        let mut req = self.http.get(format!("{}{path}", self.api));
        if let Some(a) = authorization {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.map_err(|e| format!("GET {path}: {e}"))?;
        self.read(resp, &format!("GET {path}")).await
    }

    async fn get(&mut self, path: &str) -> Result<Answer, String> {
        let resp = self.send_get(path).await?;
        self.read(resp, &format!("GET {path}")).await
    }

    async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Answer, String> {
        let resp = self
            .http
            .post(format!("{}{path}", self.api))
            .header("authorization", self.bearer())
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        self.read(resp, &format!("POST {path}")).await
    }

    async fn read(&mut self, resp: reqwest::Response, what: &str) -> Result<Answer, String> {
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("{what}: reading the body: {e}"))?;
        self.bodies.push(text.clone());
        Ok(Answer { status, text })
    }

    /// Runs one check.
    async fn check(&mut self, name: CheckName) -> Result<String, String> {
        match name {
            CheckName::SignIn => self.sign_in().await,
            CheckName::Unauthorized => self.unauthorized().await,
            CheckName::OtherUser => self.other_user().await,
            CheckName::Upload => self.upload().await,
            CheckName::Labels => self.labels().await,
            CheckName::Listing => self.listing().await,
            CheckName::LabelSearch => self.label_search().await,
            CheckName::Images => self.images().await,
            CheckName::Gallery => self.gallery().await,
            CheckName::PresignedUpload => self.presigned_upload().await,
            CheckName::Delete => self.delete().await,
            CheckName::DeleteWhileProcessing => self.delete_while_processing().await,
            CheckName::BadUpload => self.bad_upload().await,
            CheckName::Quota => self.quota().await,
            CheckName::PresignedNonImage => self.presigned_non_image().await,
            CheckName::NoS3Urls => self.no_s3_urls(),
            CheckName::IamMatrix => self.iam_matrix().await,
            CheckName::DeadLetters => self.dead_letters().await,
        }
    }

    /// The first user's `sub`: the owner of everything the checks upload.
    fn owner(&self) -> String {
        self.users
            .first()
            .map(|u| u.sub.clone())
            .unwrap_or_default()
    }

    /// Adds two throwaway users with random passwords and signs each in with SRP.
    async fn sign_in(&mut self) -> Result<String, String> {
        let tag = format!(
            "{}-{}",
            self.cfg.stage.as_str(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or_default()
        );
        for who in ["a", "b"] {
            let email = format!("smoke-{tag}-{who}@example.com");
            let password = throwaway_password()?;
            let c = &self.clients.cognito;
            cognito::add_user(c, &self.pool, &email, &password)
                .await
                .map_err(|e| format!("adding {email}: {e}"))?;
            // Pushed before signing in, so the clean-up removes the user whatever follows.
            self.users.push(SignedIn {
                email: email.clone(),
                sub: String::new(),
                access_token: String::new(),
                id_token: String::new(),
            });
            let sub = cognito::sub_of(c, &self.pool, &email)
                .await
                .map_err(|e| e.to_string())?;
            let tokens = cognito::sign_in(c, &self.pool, &email, &password)
                .await
                .map_err(|e| format!("signing in as {email}: {e}"))?;
            if let Some(u) = self.users.last_mut() {
                u.sub = sub;
                u.access_token = tokens.access_token;
                u.id_token = tokens.id_token;
            }
        }
        Ok(format!(
            "{} users added to pool {} and signed in with SRP",
            self.users.len(),
            self.pool.id
        ))
    }

    /// The quota race, as a third user of its own, who is removed with all they own after it.
    async fn quota(&mut self) -> Result<String, String> {
        let quota: u32 = self
            .outputs
            .get(stack::app::outputs::UPLOADS_PER_DAY)
            .and_then(|q| q.parse().ok())
            .ok_or("the stack has no UploadsPerUserPerDay output: deploy it again")?;
        let email = format!(
            "smoke-{}-{}-quota@example.com",
            self.cfg.stage.as_str(),
            std::process::id()
        );
        let password = throwaway_password()?;
        let c = &self.clients.cognito;
        cognito::add_user(c, &self.pool, &email, &password)
            .await
            .map_err(|e| format!("adding {email}: {e}"))?;
        let raced = self.race_as(&email, &password, quota).await;
        let users = StageUsers::new(
            self.clients.clone(),
            self.identity.clone(),
            self.stage.clone(),
        );
        let removed = users.remove(&email, &|_: &str| {}).await;
        let (raced, stored) = raced?;
        let removed = removed.map_err(|e| format!("removing {email}: {e}"))?;
        if removed.object_versions != raced.accepted.len() {
            return Err(format!(
                "{} object versions were removed with the quota user, not the {} accepted",
                removed.object_versions,
                raced.accepted.len()
            ));
        }
        Ok(format!(
            "quota {quota}: {} presigned, then {} of {} concurrent uploads stored and {} refused with 429 (Retry-After {} s), {stored} objects under the user's prefix; the user and their {} items removed",
            raced.filled,
            raced.accepted.len(),
            quota::RACERS,
            raced.refused.len(),
            raced.refused.first().copied().unwrap_or_default(),
            removed.items
        ))
    }

    /// Signs `email` in and races; what the race showed and the objects under their prefix.
    async fn race_as(
        &self,
        email: &str,
        password: &str,
        quota: u32,
    ) -> Result<(quota::Raced, usize), String> {
        let c = &self.clients.cognito;
        let tokens = cognito::sign_in(c, &self.pool, email, password)
            .await
            .map_err(|e| format!("signing in as {email}: {e}"))?;
        let sub = cognito::sub_of(c, &self.pool, email)
            .await
            .map_err(|e| e.to_string())?;
        let authorization = format!("Bearer {}", tokens.access_token);
        let racer = quota::Racer {
            http: &self.http,
            api: &self.api,
            authorization: &authorization,
            image: &self.image,
            content_type: content_type(&self.image),
        };
        let raced = racer.race(quota).await?;
        racer.settle(&raced.accepted, self.cfg.timeout).await?;
        let prefix = format!("{}{sub}/", stack::app::UPLOAD_PREFIX);
        let stored = count_objects(&self.clients.s3, &self.bucket, &prefix).await?;
        if stored != raced.accepted.len() {
            return Err(format!(
                "{stored} objects under {prefix} after {} uploads were accepted: a refused upload was stored",
                raced.accepted.len()
            ));
        }
        Ok((raced, stored))
    }

    /// Every signed-in route refuses a request without a valid access token, before any
    /// handler runs; the page needs none.
    async fn unauthorized(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        let first = self
            .users
            .first()
            .ok_or("not run: the sign-in check failed")?;
        let edited = edit_payload(&first.access_token)?;
        let resigned = resign_with_another_key(&first.access_token)?;
        let id_token = format!("Bearer {}", first.id_token);
        let tokens: [(&str, Option<&str>); 6] = [
            ("no token", None),
            ("garbage", Some("Bearer not.a.token")),
            ("alg none", Some(ALG_NONE)),
            ("an edited payload", Some(&edited)),
            ("another key under the pool's kid", Some(&resigned)),
            ("an ID token", Some(&id_token)),
        ];
        let paths = [
            format!("/metadata/{id}"),
            "/metadata".to_string(),
            "/labels".to_string(),
            format!("/images/{id}"),
        ];
        let mut refused = 0;
        for (what, token) in tokens {
            for path in &paths {
                let a = self.get_with(path, token).await?;
                // An ID token is well signed but lacks the route's scope: 403 on AWS.
                if !matches!(a.status, 401 | 403) {
                    return Err(format!(
                        "GET {path} with {what} answered {}: {}",
                        a.status,
                        clip(&a.text)
                    ));
                }
                refused += 1;
            }
        }
        // A DELETE with a forged token deletes nothing.
        let a = self.delete_as(&format!("/images/{id}"), &edited).await?;
        if !matches!(a.status, 401 | 403) {
            return Err(format!("DELETE with an edited token answered {}", a.status));
        }
        refused += 1;
        let page = self.get_with("/", None).await?;
        if page.status != 200 {
            return Err(format!("GET / without a token answered {}", page.status));
        }
        Ok(format!(
            "{refused} requests with no, garbage, alg:none, edited, re-signed (another key, the pool's kid) or ID tokens refused; GET / open"
        ))
    }

    /// The second user cannot see, find or read the first user's image.
    async fn other_user(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        let other = self
            .users
            .get(1)
            .map(|u| format!("Bearer {}", u.access_token))
            .ok_or("not run: the sign-in check failed")?;
        for path in [
            format!("/metadata/{id}"),
            format!("/images/{id}"),
            format!("/images/{id}/thumbnail"),
        ] {
            let a = self.get_with(&path, Some(&other)).await?;
            if a.status != 404 {
                return Err(format!(
                    "the other user's GET {path} answered {}, not 404: {}",
                    a.status,
                    clip(&a.text)
                ));
            }
        }
        let a = self.delete_as(&format!("/images/{id}"), &other).await?;
        if a.status != 404 {
            return Err(format!(
                "the other user's DELETE /images/{id} answered {}, not 404",
                a.status
            ));
        }
        let still = self.get(&format!("/metadata/{id}")).await?;
        if still.status != 200 {
            return Err(format!(
                "after the other user's DELETE, the owner's GET answered {}",
                still.status
            ));
        }
        let listing: Page = self
            .get_with("/metadata?limit=100", Some(&other))
            .await?
            .expect("GET /metadata", 200)?;
        if listing.items.iter().any(|i| i.image_id == id) {
            return Err("the other user's listing shows the image".into());
        }
        if let Some(label) = self.labels.first().cloned() {
            let path = format!("/metadata?label={}", query_value(&label));
            let found: Page = self
                .get_with(&path, Some(&other))
                .await?
                .expect("GET /metadata?label=", 200)?;
            if found.items.iter().any(|i| i.image_id == id) {
                return Err(format!(
                    "the other user's search for {label} finds the image"
                ));
            }
            let counts: LabelCounts = self
                .get_with("/labels", Some(&other))
                .await?
                .expect("GET /labels", 200)?;
            if counts
                .labels
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&label))
            {
                return Err(format!("the other user's label counts include {label}"));
            }
        }
        Ok(format!(
            "image {id}: 404 to the other user for metadata, bytes, thumbnail and DELETE (which changed nothing); absent from their listing, search and counts"
        ))
    }

    fn uploaded(&self) -> Result<String, String> {
        self.image_id
            .clone()
            .ok_or_else(|| "not run: the upload check failed".to_string())
    }

    async fn upload(&mut self) -> Result<String, String> {
        let image = self.image.clone();
        let size = image.len();
        let answer = self.post("/upload", content_type(&image), image).await?;
        let up: Uploaded = answer.expect("POST /upload", 201)?;
        self.image_id = Some(up.image_id.clone());
        // Visible at once: processing (or, on a fast day, already labeled).
        let now = self.status_of(&up.image_id).await?;
        if !matches!(now, ImageStatus::Processing | ImageStatus::Labeled) {
            return Err(format!(
                "right after the upload GET /metadata/{} says {}, not processing",
                up.image_id,
                now.as_str()
            ));
        }
        Ok(format!(
            "201, image_id {}, {size} bytes; at once {}",
            up.image_id,
            now.as_str()
        ))
    }

    /// `GET /metadata/{id}`'s status; a 404 is an error, since the id was accepted.
    async fn status_of(&mut self, id: &str) -> Result<ImageStatus, String> {
        let m: ImageMetadata = self
            .get(&format!("/metadata/{id}"))
            .await?
            .expect("GET /metadata/{id}", 200)?;
        Ok(m.status)
    }

    async fn labels(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        let l = self.wait_for_labels(&id).await?;
        self.labels = l.clone();
        Ok(if l.is_empty() {
            "labeled (no label reached the confidence threshold)".to_string()
        } else {
            format!("labeled: {}", l.join(", "))
        })
    }

    async fn listing(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        match self.find_in_pages("/metadata?limit=100", &id).await? {
            Found::OnPage(n) => Ok(format!("found on page {n}")),
            Found::NotIn(n) => Err(format!("not in {n} pages of GET /metadata")),
        }
    }

    /// The uploaded image under its first label, searched in upper case; the label's count;
    /// and the search at a confidence above the label's, which must leave the image out.
    async fn label_search(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        let m: ImageMetadata = self
            .get(&format!("/metadata/{id}"))
            .await?
            .expect("GET /metadata/{id}", 200)?;
        let Some(label) = m
            .labels
            .iter()
            .max_by(|a, b| a.confidence.total_cmp(&b.confidence))
        else {
            return Ok("not run: the image has no labels to search by".to_string());
        };
        let name = label.name.clone();
        let query = query_value(&name.to_uppercase());
        let found = self
            .find_in_pages(&format!("/metadata?label={query}&limit=100"), &id)
            .await?;
        if let Found::NotIn(_) = found {
            return Err(format!(
                "GET /metadata?label={query} does not list image {id}"
            ));
        }
        let counts: LabelCounts = self.get("/labels").await?.expect("GET /labels", 200)?;
        let count = counts
            .labels
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(&name))
            .map(|c| c.count)
            .ok_or_else(|| format!("GET /labels does not count {name}"))?;
        let above = label.confidence.floor() as u16 + 1;
        if above <= 100 {
            let path = format!("/metadata?label={query}&limit=100&min_confidence={above}");
            if let Found::OnPage(_) = self.find_in_pages(&path, &id).await? {
                return Err(format!(
                    "GET {path} lists image {id}, whose {name} is {:.1} %",
                    label.confidence
                ));
            }
        }
        Ok(format!(
            "found under label={query}; GET /labels counts {count} {name}; not at min_confidence={above}"
        ))
    }

    /// A GET whose body is bytes: the status, the content type and the body.
    async fn get_bytes(&self, path: &str) -> Result<(u16, String, Vec<u8>), String> {
        let resp = self.send_get(path).await?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {path}: reading the body: {e}"))?;
        Ok((status, content_type, body.to_vec()))
    }

    async fn images(&mut self) -> Result<String, String> {
        let id = self.uploaded()?;
        let (status, content_type, body) = self.get_bytes(&format!("/images/{id}")).await?;
        if status != 200 || body != self.image {
            return Err(format!(
                "GET /images/{id} answered {status} ({content_type}, {} bytes), not the {} uploaded bytes",
                body.len(),
                self.image.len()
            ));
        }
        let path = format!("/images/{id}/thumbnail");
        let (status, content_type, made) = self.get_bytes(&path).await?;
        if status != 200 || content_type != "image/jpeg" || !made.starts_with(&[0xFF, 0xD8, 0xFF]) {
            return Err(format!(
                "GET {path} answered {status} ({content_type}, {} bytes), not a JPEG: {}",
                made.len(),
                clip(&String::from_utf8_lossy(&made))
            ));
        }
        let (_, _, cached) = self.get_bytes(&path).await?;
        if cached != made {
            return Err(format!("GET {path} answered other bytes the second time"));
        }
        Ok(format!(
            "the original as uploaded ({} bytes) and a {} byte JPEG thumbnail, the same from the cache",
            body.len(),
            made.len()
        ))
    }

    /// Whether the pages of a search list `id` (at most 1000 pages).
    async fn find_in_pages(&mut self, first: &str, id: &str) -> Result<Found, String> {
        let mut path = first.to_string();
        for n in 1..=1000 {
            let page: Page = self
                .get(&path)
                .await?
                .expect(&format!("GET {first}"), 200)?;
            if page.items.iter().any(|i| i.image_id == id) {
                return Ok(Found::OnPage(n));
            }
            match page.next_token {
                Some(t) => path = format!("{first}&next_token={t}"),
                None => return Ok(Found::NotIn(n)),
            }
        }
        Ok(Found::NotIn(1000))
    }

    /// Asks `POST /uploads` for a presigned PUT, sends the image with exactly the headers it
    /// names, and waits for the labels.
    /// `POST /uploads` for `body` claimed as `content_type`, then the PUT to the URL it hands
    /// out; the id and a repeatable copy of the PUT.
    async fn presigned_put(
        &mut self,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(String, Option<reqwest::RequestBuilder>), String> {
        let ask = PresignRequest {
            content_type: content_type.to_string(),
            size_bytes: i64::try_from(body.len()).unwrap_or(i64::MAX),
        };
        let ask = serde_json::to_vec(&ask).map_err(|e| e.to_string())?;
        let answer = self.post("/uploads", "application/json", ask).await?;
        // The one response that hands out an S3 URL by design: not part of the no-S3-URL check.
        self.bodies.pop();
        let presigned: PresignedUpload = answer.expect("POST /uploads", 201)?;
        let before = self.status_of(&presigned.image_id).await?;
        if before != ImageStatus::AwaitingUpload {
            return Err(format!(
                "before its PUT GET /metadata/{} says {}, not awaiting_upload",
                presigned.image_id,
                before.as_str()
            ));
        }
        let mut put = self.http.put(&presigned.upload.url).body(body);
        for (k, v) in &presigned.upload.headers {
            put = put.header(k, v);
        }
        let again = put.try_clone();
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
        Ok((presigned.image_id, again))
    }

    async fn presigned_upload(&mut self) -> Result<String, String> {
        let (id, again) = self
            .presigned_put(content_type(&self.image), self.image.clone())
            .await?;
        self.presigned_id = Some(id.clone());
        // The same URL again must not overwrite what was uploaded.
        let again = again
            .ok_or("the PUT cannot be repeated")?
            .send()
            .await
            .map_err(|e| format!("second PUT to the presigned URL: {e}"))?;
        if again.status().as_u16() != 412 {
            return Err(format!(
                "a second PUT to the presigned URL answered {}, not 412: it can overwrite",
                again.status().as_u16()
            ));
        }
        let l = self.wait_for_labels(&id).await?;
        Ok(format!(
            "image {id} awaiting_upload until its presigned PUT (a second PUT is refused with 412), then labeled ({} labels)",
            l.len()
        ))
    }

    /// A DELETE as the first user: the status and the body.
    async fn delete_as(&mut self, path: &str, authorization: &str) -> Result<Answer, String> {
        let resp = self
            .http
            .delete(format!("{}{path}", self.api))
            .header("authorization", authorization)
            .send()
            .await
            .map_err(|e| format!("DELETE {path}: {e}"))?;
        self.read(resp, &format!("DELETE {path}")).await
    }

    /// How many images `GET /labels` counts under `name`.
    async fn count_of(&mut self, name: &str) -> Result<u64, String> {
        let counts: LabelCounts = self.get("/labels").await?.expect("GET /labels", 200)?;
        Ok(counts
            .labels
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
            .map_or(0, |c| c.count))
    }

    async fn delete(&mut self) -> Result<String, String> {
        let id = self
            .presigned_id
            .clone()
            .ok_or("not run: the presigned upload failed")?;
        let m: ImageMetadata = self
            .get(&format!("/metadata/{id}"))
            .await?
            .expect("GET /metadata/{id}", 200)?;
        let label = m.labels.first().map(|l| l.name.clone());
        let before = match &label {
            Some(l) => self.count_of(l).await?,
            None => 0,
        };
        let path = format!("/images/{id}");
        self.deleted.push(id.clone());
        for attempt in ["DELETE", "a second DELETE"] {
            let a = self.delete_as(&path, &self.bearer()).await?;
            if a.status != 204 {
                return Err(format!(
                    "{attempt} answered {}: {}",
                    a.status,
                    clip(&a.text)
                ));
            }
        }
        for read in [format!("/metadata/{id}"), path.clone()] {
            let a = self.get(&read).await?;
            if a.status != 404 {
                return Err(format!(
                    "after the DELETE, GET {read} answered {}",
                    a.status
                ));
            }
        }
        if let Found::OnPage(_) = self.find_in_pages("/metadata?limit=100", &id).await? {
            return Err("after the DELETE the listing still shows the image".into());
        }
        let mut counted = String::new();
        if let Some(l) = &label {
            let after = self.count_of(l).await?;
            if after + 1 != before {
                return Err(format!(
                    "GET /labels counted {before} {l} before the DELETE, {after} after"
                ));
            }
            let search = format!("/metadata?label={}&limit=100", query_value(l));
            if let Found::OnPage(_) = self.find_in_pages(&search, &id).await? {
                return Err(format!("after the DELETE, GET {search} finds the image"));
            }
            counted = format!("; {l} counted {before} then {after}");
        }
        self.no_versions_left(&id).await?;
        Ok(format!(
            "image {id}: 204 twice, then 404 to its reads, gone from the listing and search, no object version left{counted}"
        ))
    }

    /// None of the first user's image `id` is left in the bucket: no version, no delete marker.
    async fn no_versions_left(&self, id: &str) -> Result<(), String> {
        let key = format!("{}{}/{id}", stack::app::UPLOAD_PREFIX, self.owner());
        let versions = self
            .clients
            .s3
            .list_object_versions()
            .bucket(&self.bucket)
            .prefix(&key)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let left = versions.versions().len() + versions.delete_markers().len();
        if left > 0 {
            return Err(format!("{left} versions of {key} left after the DELETE"));
        }
        Ok(())
    }

    /// Every label's count, by name.
    async fn all_counts(&mut self) -> Result<BTreeMap<String, u64>, String> {
        let counts: LabelCounts = self.get("/labels").await?.expect("GET /labels", 200)?;
        Ok(counts
            .labels
            .into_iter()
            .map(|c| (c.name.to_lowercase(), c.count))
            .collect())
    }

    async fn delete_while_processing(&mut self) -> Result<String, String> {
        let before = self.all_counts().await?;
        let image = self.image.clone();
        let up: Uploaded = self
            .post("/upload", content_type(&image), image)
            .await?
            .expect("POST /upload", 201)?;
        let id = up.image_id;
        let path = format!("/images/{id}");
        self.deleted.push(id.clone());
        let a = self.delete_as(&path, &self.bearer()).await?;
        if a.status != 204 {
            return Err(format!("DELETE answered {}: {}", a.status, clip(&a.text)));
        }
        let start = Instant::now();
        let window = RACE_WINDOW.min(self.cfg.timeout);
        while start.elapsed() < window {
            let a = self.get(&format!("/metadata/{id}")).await?;
            if a.status != 404 {
                return Err(format!(
                    "{} ms after the DELETE, GET /metadata/{id} answered {}: {}",
                    start.elapsed().as_millis(),
                    a.status,
                    clip(&a.text)
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Found::OnPage(_) = self.find_in_pages("/metadata?limit=100", &id).await? {
            return Err("the listing shows the deleted image".into());
        }
        let after = self.all_counts().await?;
        if after != before {
            return Err(format!(
                "the label counts changed: {before:?} before, {after:?} after"
            ));
        }
        self.no_versions_left(&id).await?;
        Ok(format!(
            "image {id} deleted at once: 404 for {} ms after, not listed, no label count changed, no object version left",
            window.as_millis()
        ))
    }

    async fn gallery(&mut self) -> Result<String, String> {
        let resp = self
            .http
            .get(format!("{}/", self.api))
            .send()
            .await
            .map_err(|e| format!("GET /: {e}"))?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let (content_type, csp) = (header("content-type"), header("content-security-policy"));
        let answer = self.read(resp, "GET /").await?;
        if answer.status != 200 || !content_type.starts_with("text/html") {
            return Err(format!(
                "expected 200 text/html, got {} {content_type}: {}",
                answer.status,
                clip(&answer.text)
            ));
        }
        check_page(&answer.text, &csp)?;
        Ok(format!(
            "{} bytes of HTML; its inline script and style are the ones the policy names",
            answer.text.len()
        ))
    }

    async fn bad_upload(&mut self) -> Result<String, String> {
        let before =
            count_objects(&self.clients.s3, &self.bucket, stack::app::UPLOAD_PREFIX).await?;
        let answer = self
            .post("/upload", "image/jpeg", b"this is not an image".to_vec())
            .await?;
        let error = answer
            .error()
            .filter(|_| (400..500).contains(&answer.status))
            .ok_or_else(|| {
                format!(
                    "expected a 4xx JSON error, got {}: {}",
                    answer.status,
                    clip(&answer.text)
                )
            })?;
        let after =
            count_objects(&self.clients.s3, &self.bucket, stack::app::UPLOAD_PREFIX).await?;
        if after != before {
            return Err(format!(
                "rejected with {}, but uploads went from {before} to {after} objects",
                answer.status
            ));
        }
        Ok(format!(
            "{} {}; nothing stored",
            answer.status, error.error.code
        ))
    }

    async fn presigned_non_image(&mut self) -> Result<String, String> {
        const NOT_AN_IMAGE: &[u8] = b"%PDF-1.7\n% a document, not an image\n%%EOF\n";
        let (id, _) = self
            .presigned_put("image/png", NOT_AN_IMAGE.to_vec())
            .await?;
        self.rejected_id = Some(id.clone());
        let (m, text) = self.wait_for_final(&id).await?;
        if m.status != ImageStatus::Failed
            || m.failure_reason != Some(FailureReason::UnsupportedImage)
            || m.content_type.as_deref() != Some("application/octet-stream")
        {
            return Err(format!(
                "expected failed, unsupported_image, application/octet-stream: {}",
                clip(&text)
            ));
        }
        let key = format!("{}{}/{id}", stack::app::UPLOAD_PREFIX, self.owner());
        let tags = self
            .clients
            .s3
            .get_object_tagging()
            .bucket(&self.bucket)
            .key(&key)
            .expected_bucket_owner(&self.identity.account)
            .send()
            .await
            .map_err(|e| format!("GetObjectTagging of {key}: {}", chain(&e)))?;
        let (k, v) = stack::app::REJECTED_TAG;
        if !tags
            .tag_set()
            .iter()
            .any(|t| t.key() == k && t.value() == v)
        {
            return Err(format!(
                "the rejected object is not tagged {k}={v} for the lifecycle to expire it"
            ));
        }
        Ok(format!(
            "image {id} failed with unsupported_image; its object is tagged {k}={v}"
        ))
    }

    fn no_s3_urls(&self) -> Result<String, String> {
        let leaks: Vec<String> = self
            .bodies
            .iter()
            .filter(|b| {
                b.contains(&self.bucket)
                    || b.contains("s3.amazonaws.com")
                    || b.contains("X-Amz-")
                    || b.contains(stack::app::UPLOAD_PREFIX)
                    || b.contains("s3://")
            })
            .map(|b| clip(b))
            .collect();
        if leaks.is_empty() {
            Ok(format!("{} responses checked", self.bodies.len()))
        } else {
            Err(format!("responses mention S3: {}", leaks.join(" | ")))
        }
    }

    async fn iam_matrix(&mut self) -> Result<String, String> {
        let bindings = Bindings {
            partition: self.identity.partition.clone(),
            region: self.identity.region.clone(),
            account: self.identity.account.clone(),
            refs: BTreeMap::from([(
                stack::app::STAGE_PARAM.to_string(),
                self.cfg.stage.as_str().to_string(),
            )]),
        };
        let functions = check_matrix(&self.clients.iam, self.outputs, &bindings).await?;
        let boot = crate::ops::bootstrap::read(&self.clients.cfn, &self.identity, &self.cfg.target)
            .await
            .map_err(|e| e.to_string())?;
        let escalation =
            check_escalation(&self.clients.iam, &self.identity, &boot, &self.cfg.stage).await?;
        Ok(format!("{functions}; {escalation}"))
    }

    async fn dead_letters(&mut self) -> Result<String, String> {
        match queue_depth(&self.clients.sqs, &self.queue).await? {
            0 => Ok("empty".to_string()),
            n => Err(format!(
                "{n} events gave up on are waiting in the dead-letter queue {}",
                self.queue
            )),
        }
    }

    /// Polls `GET /metadata/{id}` until the image is labeled (its label names) or failed.
    async fn wait_for_labels(&mut self, id: &str) -> Result<Vec<String>, String> {
        // The default photograph has content every label model recognises; a user's image
        // may legitimately get no label above the confidence threshold.
        let need_labels = self.cfg.image.is_none();
        let (m, text) = self.wait_for_final(id).await?;
        match m.status {
            ImageStatus::Labeled => {
                let names: Vec<String> = m.labels.into_iter().map(|l| l.name).collect();
                if names.is_empty() && need_labels {
                    return Err(format!("labeled with no labels: {text}"));
                }
                Ok(names)
            }
            _ => Err(format!("the pipeline recorded a failure: {text}")),
        }
    }

    /// Polls `GET /metadata/{id}` until the image is labeled or failed: the metadata and the
    /// answer's text.
    async fn wait_for_final(&mut self, id: &str) -> Result<(ImageMetadata, String), String> {
        let timeout = self.cfg.timeout;
        let start = Instant::now();
        loop {
            let last = match self.get(&format!("/metadata/{id}")).await {
                Ok(a) if a.status == 200 => {
                    let m: ImageMetadata = a.expect("GET /metadata/{id}", 200)?;
                    match m.status {
                        ImageStatus::Labeled | ImageStatus::Failed => return Ok((m, a.text)),
                        other => format!("200 {}", other.as_str()),
                    }
                }
                // The id was accepted: it is listed from the start, never 404.
                Ok(a) if a.status == 404 => {
                    return Err(format!("404 for an accepted image: {}", clip(&a.text)));
                }
                Ok(a) => return Err(format!("unexpected {}: {}", a.status, clip(&a.text))),
                Err(e) => e,
            };
            if start.elapsed() >= timeout {
                return Err(format!(
                    "not processed after {} s; last answer: {last}",
                    timeout.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes an image's entries from the label index and counts its labels down, as the
    /// process function indexed them (docs/data-model.md).
    async fn unindex(&self, table: &str, labels_table: &str, id: &str) -> Result<(), String> {
        use api_types::index;
        use aws_sdk_dynamodb::types::AttributeValue;
        let got = self
            .clients
            .dynamodb
            .get_item()
            .table_name(table)
            .key(index::OWNER, AttributeValue::S(self.owner()))
            .key(index::IMAGE_ID, AttributeValue::S(id.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| chain(&e))?;
        let Some(item) = got.item() else {
            return Ok(());
        };
        let uploaded_at = item
            .get("uploaded_at")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .unwrap_or_default();
        let mut done = std::collections::BTreeSet::new();
        for l in item
            .get("labels")
            .and_then(|v| v.as_l().ok())
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_m().ok())
        {
            let Some(key) = l
                .get("name")
                .and_then(|v| v.as_s().ok())
                .and_then(|n| index::normalize(n))
            else {
                continue;
            };
            // The process function indexed each name once, at its highest confidence.
            if !done.insert(key.clone()) {
                continue;
            }
            let deleted = self
                .clients
                .dynamodb
                .delete_item()
                .table_name(labels_table)
                .key(
                    index::PARTITION_KEY,
                    AttributeValue::S(index::label_partition(&self.owner(), &key)),
                )
                .key(
                    index::SORT_KEY,
                    AttributeValue::S(index::entry_sort_key(&uploaded_at, id)),
                )
                .return_values(aws_sdk_dynamodb::types::ReturnValue::AllOld)
                .send()
                .await
                .map_err(|e| chain(&e))?;
            // Count down the bucket the entry was counted in, and only if it was there.
            let Some(indexed) = deleted
                .attributes()
                .and_then(|a| a.get(index::CONFIDENCE))
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse::<f64>().ok())
            else {
                continue;
            };
            self.clients
                .dynamodb
                .update_item()
                .table_name(labels_table)
                .key(
                    index::PARTITION_KEY,
                    AttributeValue::S(index::counts_partition(&self.owner())),
                )
                .key(index::SORT_KEY, AttributeValue::S(key))
                .update_expression("ADD #count :minus")
                .expression_attribute_names("#count", index::count_attribute(indexed))
                .expression_attribute_values(":minus", AttributeValue::N("-1".into()))
                .send()
                .await
                .map_err(|e| chain(&e))?;
        }
        Ok(())
    }

    /// Removes the throwaway users, and what the checks uploaded (object versions and items)
    /// unless asked to keep it; whether everything went.
    async fn clean_up(&self, table: &str, labels_table: &str, progress: &dyn Progress) -> bool {
        let mut all = true;
        // With --keep, the first user stays with their images.
        let skip = usize::from(self.cfg.keep);
        for u in self.users.iter().skip(skip) {
            if let Err(e) = cognito::remove_user(&self.clients.cognito, &self.pool, &u.email).await
            {
                all = false;
                progress.step(&format!("could not remove the user {}: {e}", u.email));
            }
        }
        if self.users.len() > skip {
            progress.step(&format!(
                "removed {} throwaway user(s)",
                self.users.len() - skip
            ));
        }
        all && self.remove_images(table, labels_table, progress).await
    }

    async fn remove_images(
        &self,
        table: &str,
        labels_table: &str,
        progress: &dyn Progress,
    ) -> bool {
        let ids: Vec<&String> = self
            .image_id
            .iter()
            .chain(&self.presigned_id)
            .chain(&self.rejected_id)
            .collect();
        if ids.is_empty() || self.cfg.keep {
            return false;
        }
        let mut all = true;
        for id in ids {
            if let Err(e) = self.unindex(table, labels_table, id).await {
                all = false;
                progress.step(&format!(
                    "could not remove image {id} from the label index: {e}"
                ));
            }
            let owner = self.owner();
            let thumbnail =
                api_types::index::thumbnail_key(stack::app::THUMBNAIL_PREFIX, &owner, id);
            if let Err(e) = delete_object_versions(&self.clients.s3, &self.bucket, &thumbnail).await
            {
                all = false;
                progress.step(&format!("could not remove the thumbnail {thumbnail}: {e}"));
            }
            let key = format!("{}{owner}/{id}", stack::app::UPLOAD_PREFIX);
            let objects = delete_object_versions(&self.clients.s3, &self.bucket, &key).await;
            let item = self
                .clients
                .dynamodb
                .delete_item()
                .table_name(table)
                .key(
                    api_types::index::OWNER,
                    aws_sdk_dynamodb::types::AttributeValue::S(owner.clone()),
                )
                .key(
                    api_types::index::IMAGE_ID,
                    aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
                )
                .send()
                .await;
            match (objects, item) {
                (Ok(()), Ok(_)) => progress.step(&format!(
                    "removed image {id} (object, item and label index entries)"
                )),
                (Err(e), _) => {
                    all = false;
                    progress.step(&format!("could not remove the object {key}: {e}"));
                }
                (_, Err(e)) => {
                    all = false;
                    progress.step(&format!("could not remove the item {id}: {}", chain(&e)));
                }
            }
        }
        all
    }
}

/// How long an image deleted during its processing is watched for coming back: well past the
/// S3 event and the process function's run.
const RACE_WINDOW: Duration = Duration::from_secs(10);

/// An unsigned token (`alg: none`) claiming to be someone.
const ALG_NONE: &str = "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJzb21lb25lIiwidG9rZW5fdXNlIjoiYWNjZXNzIiwic2NvcGUiOiJhd3MuY29nbml0by5zaWduaW4udXNlci5hZG1pbiJ9.";

/// `token` with its payload's `sub` changed and its signature kept: a forgery.
fn edit_payload(token: &str) -> Result<String, String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("the access token is not a JWT".into());
    };
    let mut claims: serde_json::Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the access token's payload is not JSON")?;
    claims["sub"] = "00000000-0000-4000-8000-000000000000".into();
    let edited = URL_SAFE_NO_PAD.encode(claims.to_string());
    Ok(format!("Bearer {header}.{edited}.{signature}"))
}

/// A public RSA key that is no pool's (see `assets/ATTRIBUTION.md`).
const FORGER_KEY: &[u8] = include_bytes!("../../assets/forger-rsa2048.pk8");

/// `token` re-signed with RS256 by [`FORGER_KEY`], its header (and so the pool's `kid`) kept:
/// a forgery that names a real key of the pool.
fn resign_with_another_key(token: &str) -> Result<String, String> {
    resign(token, FORGER_KEY, None).map_err(|e| format!("the forger's key: {e}"))
}

/// `Bearer` and `token` signed again with RS256 by the PKCS#8 key `pkcs8`: its header kept,
/// its claims as `edit` leaves them (the payload's bytes kept when there is no edit).
pub fn resign(
    token: &str,
    pkcs8: &[u8],
    edit: Option<&dyn Fn(&mut serde_json::Value)>,
) -> Result<String, String> {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signed, _) = token.rsplit_once('.').ok_or("the token is not a JWT")?;
    let signed = match (edit, signed.split_once('.')) {
        (None, _) => signed.to_string(),
        (Some(edit), Some((header, payload))) => {
            let mut claims: serde_json::Value = URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("the token's payload is not JSON")?;
            edit(&mut claims);
            format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()))
        }
        (Some(_), None) => return Err("the token is not a JWT".into()),
    };
    let key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| e.to_string())?;
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signed.as_bytes(),
        &mut signature,
    )
    .map_err(|e| format!("signing: {e}"))?;
    Ok(format!(
        "Bearer {signed}.{}",
        URL_SAFE_NO_PAD.encode(signature)
    ))
}

/// A password the pool's policy accepts, random, never shown.
fn throwaway_password() -> Result<String, String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| "no randomness for a password".to_string())?;
    Ok(format!("Smoke-{}-Aa1", hex::encode(bytes)))
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

/// Runs every check in [`CheckName::ALL`] against the deployed stack, then removes what it
/// uploaded. `progress` hears each check's result as it finishes.
pub async fn smoke_test(
    cfg: &SmokeConfig,
    progress: &dyn SmokeProgress,
) -> Result<SmokeReport, SmokeError> {
    let start = Instant::now();
    let stack_name = cfg.stage.stack_name();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let stage = stage::read(&clients.cfn, &cfg.target, &cfg.stage).await?;
    let api = stage.api_url.clone();
    let (table, labels_table) = (stage.table.clone(), stage.labels_table.clone());
    let mut run = Run {
        cfg,
        http: aws::http_client(&cfg.target, Duration::from_secs(35)).map_err(SmokeError::Http)?,
        clients,
        identity,
        api: api.clone(),
        outputs: stage.outputs.values(),
        stage: &stage,
        bucket: stage.bucket.clone(),
        queue: stage.dead_letter_queue_url.clone(),
        image: cfg.image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_vec()),
        bodies: Vec::new(),
        image_id: None,
        presigned_id: None,
        rejected_id: None,
        deleted: Vec::new(),
        labels: Vec::new(),
        pool: stage.pool.clone(),
        users: Vec::new(),
    };
    let mut checks = Vec::new();
    for name in CheckName::ALL {
        let t = Instant::now();
        let r = run.check(name).await;
        let c = CheckResult {
            name,
            passed: r.is_ok(),
            elapsed_ms: elapsed_ms(t),
            detail: r.unwrap_or_else(|e| e),
        };
        progress.check(&c);
        checks.push(c);
    }
    let cleaned_up = run.clean_up(&table, &labels_table, progress).await;
    Ok(SmokeReport {
        stack: stack_name,
        target: cfg.target.describe(),
        api_url: api,
        passed: checks.iter().all(|c| c.passed),
        image_id: run.image_id,
        owner: run.users.first().map(|u| u.sub.clone()),
        kept_user: run
            .users
            .first()
            .filter(|_| cfg.keep)
            .map(|u| u.email.clone()),
        deleted: run.deleted,
        labels: run.labels,
        checks,
        cleaned_up,
        elapsed_ms: elapsed_ms(start),
    })
}

/// The objects under `prefix` (their current versions).
async fn count_objects(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    prefix: &str,
) -> Result<usize, String> {
    let mut n = 0;
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| format!("listing {bucket}: {}", chain(&e)))?;
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
        .map_err(|e| chain(&e))?;
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
            .map_err(|e| chain(&e))?;
    }
    Ok(())
}

/// The IAM ARN the simulator takes for a caller: an IAM user as it is, a session of one of
/// the bootstrap's CI roles as that role. `None` for anyone else (an administrator's role,
/// the account's root), whose escalation paths are not this tool's to close.
pub fn simulatable(caller_arn: &str) -> Option<String> {
    let (head, resource) = caller_arn.split_once(":sts::").map_or_else(
        || (None, caller_arn),
        |(partition, rest)| (Some(partition), rest),
    );
    match head {
        None => caller_arn
            .split(':')
            .nth(5)
            .is_some_and(|r| r.starts_with("user/"))
            .then(|| caller_arn.to_string()),
        Some(partition) => {
            let (account, rest) = resource.split_once(':')?;
            let role = rest.strip_prefix("assumed-role/")?.split('/').next()?;
            role.starts_with(&format!("{}Ci-", stack::app::bootstrap::PREFIX))
                .then(|| format!("{partition}:iam::{account}:role/{role}"))
        }
    }
}

/// Asks IAM's simulator about each escalation check as `principal` (with each check's
/// condition context); the checks whose decision is not the one required.
pub async fn simulate_escalation(
    iam: &aws_sdk_iam::Client,
    principal: &str,
    checks: &[&crate::ops::permissions::EscalationCheck],
) -> Result<Vec<String>, String> {
    use aws_sdk_iam::types::{ContextEntry, ContextKeyTypeEnum};
    use policies::Decision;
    let mut wrong = Vec::new();
    for c in checks {
        let entries: Vec<ContextEntry> = c
            .context
            .entries()
            .map(|(k, v)| {
                ContextEntry::builder()
                    .context_key_name(k)
                    .context_key_type(ContextKeyTypeEnum::String)
                    .set_context_key_values(Some(v.to_vec()))
                    .build()
            })
            .collect();
        let out = iam
            .simulate_principal_policy()
            .policy_source_arn(principal)
            .action_names(c.action)
            .resource_arns(&c.resource)
            .set_context_entries((!entries.is_empty()).then_some(entries))
            .send()
            .await
            .map_err(|e| format!("SimulatePrincipalPolicy for {principal}: {}", chain(&e)))?;
        let decision = match out.evaluation_results().first().map(|r| r.eval_decision()) {
            Some(PolicyEvaluationDecisionType::Allowed) => Decision::Allowed,
            Some(PolicyEvaluationDecisionType::ExplicitDeny) => Decision::ExplicitDeny,
            _ => Decision::ImplicitDeny,
        };
        if !c.holds(decision) {
            wrong.push(format!(
                "{principal} may {} ({} on {}): IAM says {decision:?}, must be {:?}",
                c.what, c.action, c.resource, c.expect
            ));
        }
    }
    Ok(wrong)
}

/// The escalation paths of the execution role this stage deploys with, and of the caller
/// when it is a deploying identity of this tool (an IAM user, or a CI role of the bootstrap),
/// each asked of IAM's simulator.
async fn check_escalation(
    iam: &aws_sdk_iam::Client,
    identity: &Identity,
    boot: &crate::ops::bootstrap::Bootstrap,
    stage: &Stage,
) -> Result<String, String> {
    use crate::ops::permissions::{Principal, escalation_checks};
    use stack::app::bootstrap::Scope;
    let scope = boot.scope_for(stage);
    let stages = boot.stages(scope);
    // A stage the preview scope does not cover, to show it cannot be reached.
    let outside = (scope == Scope::Preview).then(|| {
        ["prod", "release", "main"]
            .into_iter()
            .find(|s| Stage::parse(s).is_ok_and(|s| !stages.matches(&s)))
            .unwrap_or("prod")
    });
    let checks = escalation_checks(
        &identity.account,
        &identity.region,
        &stages,
        scope,
        &stages,
        outside,
    );
    let role = boot
        .execution_roles
        .get(&scope)
        .ok_or_else(|| format!("the bootstrap stack has no {scope} execution role"))?;
    let exec: Vec<_> = checks
        .iter()
        .filter(|c| c.principal == Principal::Execution)
        .collect();
    let mut wrong = simulate_escalation(iam, role, &exec).await?;
    let caller = simulatable(&identity.arn);
    // The caller's stages are its own policy's business: only the checks every deploying
    // identity of this stage must meet.
    let own: Vec<_> = checks
        .iter()
        .filter(|c| c.principal == Principal::Deployer && !c.other_stage)
        .collect();
    if let Some(caller) = &caller {
        wrong.extend(simulate_escalation(iam, caller, &own).await?);
    }
    if !wrong.is_empty() {
        return Err(format!(
            "{} escalation paths open:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        ));
    }
    Ok(match caller {
        Some(c) => format!(
            "{} escalation paths closed for the {scope} execution role and {} for {c}",
            exec.len(),
            own.len()
        ),
        None => format!(
            "{} escalation paths closed for the {scope} execution role (the caller {} is not a deploying identity of this tool; not checked)",
            exec.len(),
            identity.arn
        ),
    })
}

/// Checks every row of every function's allow/deny matrix against its deployed role with
/// `SimulatePrincipalPolicy`, one call per (role, resource) with all its actions.
async fn check_matrix(
    iam: &aws_sdk_iam::Client,
    outputs: &BTreeMap<String, String>,
    bindings: &Bindings,
) -> Result<String, String> {
    let app = App::image_pipeline();
    let roles = app.roles();
    let all = app.accesses();
    let mut rows = 0;
    let mut wrong = Vec::new();
    for (key, access) in &roles {
        let role = outputs
            .get(key)
            .ok_or_else(|| format!("the stack has no output {key}"))?;
        let mut by_resource: BTreeMap<String, Vec<(String, Expect)>> = BTreeMap::new();
        for check in matrix(access, &all) {
            let resource = check
                .request
                .resource
                .resolve(bindings)
                .map_err(|e| format!("{}: {e}", access.name))?;
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
                .map_err(|e| format!("SimulatePrincipalPolicy for {role}: {}", chain(&e)))?;
            for (action, expect) in &actions {
                rows += 1;
                let decision = out
                    .evaluation_results()
                    .iter()
                    .find(|r| r.eval_action_name() == action)
                    .map(|r| r.eval_decision().clone());
                let allowed = decision == Some(PolicyEvaluationDecisionType::Allowed);
                let ok = match expect {
                    Expect::Allow => allowed,
                    Expect::Deny => decision.is_some() && !allowed,
                };
                if !ok {
                    wrong.push(format!(
                        "{}: {action} on {resource} expected {expect:?}, IAM says {}",
                        access.name,
                        decision.as_ref().map_or("nothing", |d| d.as_str())
                    ));
                }
            }
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "{rows} decisions as expected across {} roles",
            roles.len()
        ))
    } else {
        Err(format!(
            "{} of {rows} decisions wrong:\n  {}",
            wrong.len(),
            wrong.join("\n  ")
        ))
    }
}

/// `value` percent-encoded for a query string: every byte but the unreserved ones.
fn query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The gallery page holds nothing from elsewhere, and its Content-Security-Policy allows no
/// script or style but the page's own (by SHA-256), nothing by default, and no framing.
pub fn check_page(html: &str, csp: &str) -> Result<(), String> {
    use base64::Engine;
    use sha2::Digest;
    let directive = |name: &str| -> Vec<String> {
        csp.split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix(name).filter(|r| r.starts_with(' ')))
            .map(|r| r.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let inline = |tag: &str| -> Result<&str, String> {
        let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
        if html.matches(&open).count() != 1 {
            return Err(format!("expected one <{tag}> in the page"));
        }
        let start = html.find(&open).map(|i| i + open.len()).unwrap_or_default();
        let end = html[start..]
            .find(&close)
            .ok_or_else(|| format!("<{tag}> is not closed"))?;
        Ok(&html[start..start + end])
    };
    let hash = |text: &str| {
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text))
        )
    };
    if csp.is_empty() {
        return Err("no Content-Security-Policy header".into());
    }
    for (name, want) in [
        ("default-src", "'none'".to_string()),
        ("script-src", hash(inline("script")?)),
        ("style-src", hash(inline("style")?)),
        ("frame-ancestors", "'none'".to_string()),
    ] {
        if directive(name) != [want.clone()] {
            return Err(format!("{name} is not {want}: {csp}"));
        }
    }
    // The one address the page holds is where it signs in, which connect-src names exactly.
    const ENDPOINT: &str = "data-cognito-endpoint=\"";
    let endpoint = html
        .split_once(ENDPOINT)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(e, _)| e)
        .ok_or("the page names no sign-in endpoint")?;
    if !directive("connect-src").iter().any(|c| c == endpoint) {
        return Err(format!(
            "connect-src does not name the sign-in endpoint {endpoint}: {csp}"
        ));
    }
    let html = html.replacen(&format!("{ENDPOINT}{endpoint}\""), "", 1);
    if let Some(outside) = ["http://", "https://", "<link", "@import", " src="]
        .into_iter()
        .find(|o| html.contains(o))
    {
        return Err(format!(
            "the page refers to something elsewhere ({outside})"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod page_tests {
    use super::check_page;

    const PAGE: &str = "<html><style>p{}</style><body data-cognito-endpoint=\"https://cognito-idp.eu-west-1.amazonaws.com\"><p>hi</p><script>go()</script></body></html>";
    fn csp(script: &str, style: &str) -> String {
        format!(
            "default-src 'none'; script-src {script}; style-src {style}; connect-src 'self' https://cognito-idp.eu-west-1.amazonaws.com; frame-ancestors 'none'"
        )
    }
    fn hash(text: &str) -> String {
        use base64::Engine;
        use sha2::Digest;
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(text))
        )
    }

    #[test]
    fn the_page_check_can_fail() {
        let good = csp(&hash("go()"), &hash("p{}"));
        assert_eq!(check_page(PAGE, &good), Ok(()));
        assert!(check_page(PAGE, "").is_err(), "no policy");
        assert!(
            check_page(PAGE, &csp(&hash("other()"), &hash("p{}"))).is_err(),
            "another script's hash"
        );
        assert!(
            check_page(PAGE, &csp("'unsafe-inline'", &hash("p{}"))).is_err(),
            "inline scripts at large"
        );
        assert!(
            check_page(PAGE, &good.replace("default-src 'none'", "default-src *")).is_err(),
            "anything by default"
        );
        let outside = PAGE.replace("<p>hi</p>", "<img src=\"https://cdn.example/x.png\">");
        assert!(check_page(&outside, &good).is_err(), "an outside image");
        let elsewhere = good.replace(" https://cognito-idp.eu-west-1.amazonaws.com", "");
        assert!(
            check_page(PAGE, &elsewhere).is_err(),
            "sign-in at an endpoint the policy does not name"
        );
        let nowhere = PAGE.replace("data-cognito-endpoint", "data-x");
        assert!(check_page(&nowhere, &good).is_err(), "no sign-in endpoint");
    }
}

#[cfg(test)]
mod query_tests {
    use super::query_value;

    #[test]
    fn labels_are_percent_encoded_in_queries() {
        assert_eq!(query_value("CAT"), "CAT");
        assert_eq!(query_value("BIG CAT"), "BIG%20CAT");
        assert_eq!(query_value("A&B=C/é"), "A%26B%3DC%2F%C3%A9");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_resigned_token_keeps_the_header_and_carries_a_valid_signature_of_another_key() {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = URL_SAFE_NO_PAD.encode(r#"{"kid":"pool-key-1","alg":"RS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"someone","token_use":"access"}"#);
        let token = format!("{header}.{payload}.c2lnbmF0dXJl");
        let resigned = resign_with_another_key(&token).unwrap();
        let jwt = resigned.strip_prefix("Bearer ").unwrap();
        let (signed, signature) = jwt.rsplit_once('.').unwrap();
        assert_eq!(signed, format!("{header}.{payload}"));
        assert_ne!(signature, "c2lnbmF0dXJl");
        let key = ring::signature::RsaKeyPair::from_pkcs8(FORGER_KEY).unwrap();
        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            key.public().as_ref(),
        );
        public
            .verify(
                signed.as_bytes(),
                &URL_SAFE_NO_PAD.decode(signature).unwrap(),
            )
            .unwrap();
    }
}
