//! The smoke test's quota race: a user brought to within [`LEFT`] uploads of their daily quota
//! sends [`RACERS`] uploads at once. Exactly [`LEFT`] are accepted; the rest get 429 with
//! `Retry-After` and the API's JSON error, and store nothing.

use std::time::Duration;

use futures_util::future::join_all;

/// Uploads left to the user when the race starts.
pub const LEFT: u32 = 5;
/// Uploads sent at once.
pub const RACERS: usize = 20;
/// Presigned requests in flight while the user's day is filled.
const FILL_CONCURRENCY: usize = 8;
/// The API's error code for an upload over the quota.
pub const QUOTA_CODE: &str = "upload_quota_exceeded";

/// Who races, where, with what.
pub struct Racer<'a> {
    pub http: &'a reqwest::Client,
    pub api: &'a str,
    /// `Bearer …` of the racing user.
    pub authorization: &'a str,
    pub image: &'a [u8],
    pub content_type: &'a str,
}

impl std::fmt::Debug for Racer<'_> {
    // The token and the image stay out of any output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Racer")
            .field("api", &self.api)
            .field("content_type", &self.content_type)
            .finish_non_exhaustive()
    }
}

/// What the race showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raced {
    /// Presigned uploads that filled the day.
    pub filled: u32,
    /// Ids of the uploads accepted in the race.
    pub accepted: Vec<String>,
    /// Uploads refused with 429, and the `Retry-After` each gave.
    pub refused: Vec<u64>,
}

/// One answer: status, `Retry-After` and body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Racer<'_> {
    async fn send(&self, presign: bool) -> Result<Answer, String> {
        let (path, content_type, body) = if presign {
            let ask = format!(
                r#"{{"content_type": "{}", "size_bytes": {}}}"#,
                self.content_type,
                self.image.len()
            );
            ("/uploads", "application/json", ask.into_bytes())
        } else {
            ("/upload", self.content_type, self.image.to_vec())
        };
        let resp = self
            .http
            .post(format!("{}{path}", self.api))
            .header("authorization", self.authorization)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {path}: {e}"))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = resp
            .text()
            .await
            .map_err(|e| format!("POST {path}: reading the body: {e}"))?;
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// One presigned upload that counts, retried while the API's own throttling (a 429
    /// without the quota's error) refuses it.
    async fn presign_one(&self) -> Result<(), String> {
        for _ in 0..50 {
            let a = self.send(true).await?;
            match a.status {
                201 => return Ok(()),
                429 if !a.body.contains(QUOTA_CODE) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                s => {
                    return Err(format!(
                        "POST /uploads answered {s} while filling: {}",
                        a.body
                    ));
                }
            }
        }
        Err("POST /uploads stayed throttled by the API while filling".into())
    }

    /// Fills the user's day up to `n` presigned uploads, a few at a time.
    async fn fill(&self, n: u32) -> Result<(), String> {
        let mut left = n;
        while left > 0 {
            let batch = left.min(FILL_CONCURRENCY as u32);
            let sent = (0..batch).map(|_| self.presign_one());
            for r in join_all(sent).await {
                r?;
            }
            left -= batch;
        }
        Ok(())
    }

    /// Fills the day to [`LEFT`] short of `quota`, then races.
    pub async fn race(&self, quota: u32) -> Result<Raced, String> {
        let filled = quota.saturating_sub(LEFT);
        self.fill(filled).await?;
        // Room in the API's own burst allowance, so only the quota refuses.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let answers = join_all((0..RACERS).map(|_| self.send(false))).await;
        let mut raced = Raced {
            filled,
            accepted: Vec::new(),
            refused: Vec::new(),
        };
        for a in answers {
            let a = a?;
            match a.status {
                201 => raced.accepted.push(image_id(&a.body)?),
                429 => raced.refused.push(refusal(&a)?),
                s => return Err(format!("an upload in the race answered {s}: {}", a.body)),
            }
        }
        let expected = quota.min(LEFT) as usize;
        if raced.accepted.len() != expected {
            return Err(format!(
                "{} of {RACERS} concurrent uploads were accepted with {expected} left of a quota of {quota}",
                raced.accepted.len()
            ));
        }
        let after = self.send(true).await?;
        if after.status != 429 {
            return Err(format!(
                "a presigned upload after the race answered {}, not 429: {}",
                after.status, after.body
            ));
        }
        refusal(&after)?;
        Ok(raced)
    }
}

impl Racer<'_> {
    /// Waits until each of `ids` is labeled or failed, so that removing the user afterwards
    /// does not race the process function.
    pub async fn settle(&self, ids: &[String], timeout: Duration) -> Result<(), String> {
        let start = std::time::Instant::now();
        for id in ids {
            loop {
                let resp = self
                    .http
                    .get(format!("{}/metadata/{id}", self.api))
                    .header("authorization", self.authorization)
                    .send()
                    .await
                    .map_err(|e| format!("GET /metadata/{id}: {e}"))?;
                let status = resp.status().as_u16();
                let body = resp.text().await.unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                match (status, v["status"].as_str()) {
                    (200, Some("labeled" | "failed")) => break,
                    (200, _) => {}
                    _ => return Err(format!("GET /metadata/{id} answered {status}: {body}")),
                }
                if start.elapsed() >= timeout {
                    return Err(format!(
                        "image {id} of the race not processed in time: {body}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Ok(())
    }
}

/// The quota's refusal: its JSON error and a `Retry-After` within a day; the seconds.
fn refusal(a: &Answer) -> Result<u64, String> {
    let v: serde_json::Value = serde_json::from_str(&a.body)
        .map_err(|e| format!("a 429 that is not JSON ({e}): {}", a.body))?;
    if v["error"]["code"] != QUOTA_CODE {
        return Err(format!(
            "a 429 without the error `{QUOTA_CODE}`: {}",
            a.body
        ));
    }
    let seconds = a
        .retry_after
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|s| (1..=86_400).contains(s))
        .ok_or_else(|| {
            format!(
                "a 429 whose Retry-After is {:?}, not seconds within a day",
                a.retry_after
            )
        })?;
    Ok(seconds)
}

fn image_id(body: &str) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("a 201 that is not JSON ({e}): {body}"))?;
    v["image_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("a 201 without an image_id: {body}"))
}
