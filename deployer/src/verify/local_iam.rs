//! The local environment's IAM, used as its root by the end-to-end test: an IAM user whose
//! only policy is the deploying identity's (so deploy, smoke-test and teardown run with least
//! privilege, not as root), taking one action away from a deployed function's role (so a
//! test can show enforcement failing the pipeline as AWS would), an assets bucket as an earlier
//! version left it (for the bootstrap's import), a role's trust policy, the deploying user's
//! escalation paths asked of the simulator, and a pass of an execution role as that user.

use serde_json::Value;
use stack::App;
use stack::app::Names;
use thiserror::Error;

use crate::cloud::aws::{self, Identity, LocalCredentials, Target};
use crate::cloud::stage::{Deployed, StageError};
use crate::local::emulator::LocalConfig;

#[derive(Debug, Error)]
pub enum LocalIamError {
    #[error(transparent)]
    Aws(#[from] aws::AwsError),
    #[error(transparent)]
    Tls(#[from] crate::local::tls::TlsError),
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error("IAM {operation} failed: {reason}")]
    Call {
        operation: &'static str,
        reason: String,
    },
    #[error("the app has no function {0}")]
    NoFunction(String),
    #[error("cannot render the policy of {function}: {reason}")]
    Policy { function: String, reason: String },
    #[error("enforcement not shown: {0}")]
    Enforcement(String),
}

fn call<E: std::error::Error + 'static>(operation: &'static str) -> impl Fn(E) -> LocalIamError {
    move |e| LocalIamError::Call {
        operation,
        reason: crate::cloud::error::chain(&e),
    }
}

/// The emulator's root: IAM client and identity.
pub async fn root(cfg: &LocalConfig) -> Result<(aws_sdk_iam::Client, Identity), LocalIamError> {
    let (_, clients, identity) = as_root(cfg).await?;
    Ok((clients.iam, identity))
}

/// The emulator's root: its target, clients and identity.
async fn as_root(cfg: &LocalConfig) -> Result<(Target, aws::Clients, Identity), LocalIamError> {
    let target = cfg.target(LocalCredentials::root())?;
    let (clients, identity) = aws::connect(&target).await?;
    Ok((target, clients, identity))
}

/// Creates the IAM user `name` (replacing one of that name) with `policy` as its only
/// permissions, and returns a new access key of it.
pub async fn user_with_policy(
    iam: &aws_sdk_iam::Client,
    name: &str,
    policy: &policies::PolicyDocument<String>,
) -> Result<LocalCredentials, LocalIamError> {
    let policy = serde_json::to_value(policy).unwrap_or_default();
    user_with_json_policy(iam, name, &policy).await
}

/// [`user_with_policy`] with a policy written as JSON (conditions, policy variables).
pub async fn user_with_json_policy(
    iam: &aws_sdk_iam::Client,
    name: &str,
    policy: &Value,
) -> Result<LocalCredentials, LocalIamError> {
    delete_user(iam, name).await?;
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .map_err(call("CreateUser"))?;
    iam.put_user_policy()
        .user_name(name)
        .policy_name("deployer")
        .policy_document(policy.to_string())
        .send()
        .await
        .map_err(call("PutUserPolicy"))?;
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .map_err(call("CreateAccessKey"))?;
    let key = key.access_key().ok_or_else(|| LocalIamError::Call {
        operation: "CreateAccessKey",
        reason: "no key returned".into(),
    })?;
    Ok(LocalCredentials {
        access_key_id: key.access_key_id().to_string(),
        secret_access_key: key.secret_access_key().to_string(),
    })
}

/// Deletes the user `name` with its keys and inline policies; nothing to do is fine.
pub async fn delete_user(iam: &aws_sdk_iam::Client, name: &str) -> Result<(), LocalIamError> {
    match iam.get_user().user_name(name).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_no_such_entity_exception()) =>
        {
            return Ok(());
        }
        Err(e) => return Err(call("GetUser")(e)),
    }
    let keys = iam
        .list_access_keys()
        .user_name(name)
        .send()
        .await
        .map_err(call("ListAccessKeys"))?;
    for k in keys.access_key_metadata() {
        if let Some(id) = k.access_key_id() {
            iam.delete_access_key()
                .user_name(name)
                .access_key_id(id)
                .send()
                .await
                .map_err(call("DeleteAccessKey"))?;
        }
    }
    let policies = iam
        .list_user_policies()
        .user_name(name)
        .send()
        .await
        .map_err(call("ListUserPolicies"))?;
    for p in policies.policy_names() {
        iam.delete_user_policy()
            .user_name(name)
            .policy_name(p)
            .send()
            .await
            .map_err(call("DeleteUserPolicy"))?;
    }
    iam.delete_user()
        .user_name(name)
        .send()
        .await
        .map_err(call("DeleteUser"))?;
    Ok(())
}

/// Replaces the inline policy of the deployed role (`role_arn`) that makes `function`'s
/// requests (a scoped function's user role, or its execution role) with the app model's
/// policy for `stage` minus `action`: the role then lacks exactly that permission.
pub async fn revoke_action(
    iam: &aws_sdk_iam::Client,
    identity: &Identity,
    stage: &str,
    function: &str,
    role_arn: &str,
    action: &str,
) -> Result<(), LocalIamError> {
    let app = App::image_pipeline();
    let spec = app
        .function(function)
        .ok_or_else(|| LocalIamError::NoFunction(function.to_string()))?;
    let bindings = policies::Bindings {
        partition: identity.partition.clone(),
        region: identity.region.clone(),
        account: identity.account.clone(),
        refs: [(stack::app::STAGE_PARAM.to_string(), stage.to_string())].into(),
    };
    let bad = |reason: String| LocalIamError::Policy {
        function: function.to_string(),
        reason,
    };
    let (policy, policy_name) = match spec.user_access() {
        Some(user) => (user.policy(), spec.user_policy_name()),
        None => (spec.policy(&Names), spec.policy_name()),
    };
    let doc = policy.resolve(&bindings).map_err(|e| bad(e.to_string()))?;
    let mut doc = serde_json::to_value(&doc).map_err(|e| bad(e.to_string()))?;
    let mut removed = false;
    if let Some(statements) = doc["Statement"].as_array_mut() {
        for s in statements.iter_mut() {
            if let Some(actions) = s["Action"].as_array_mut() {
                let before = actions.len();
                actions.retain(|a| a != action);
                removed |= actions.len() != before;
            }
        }
        statements.retain(|s| s["Action"].as_array().is_none_or(|a| !a.is_empty()));
    }
    if !removed {
        return Err(bad(format!("its policy does not grant {action}")));
    }
    let role = role_arn.rsplit('/').next().unwrap_or(role_arn);
    iam.put_role_policy()
        .role_name(role)
        .policy_name(policy_name)
        .policy_document(doc.to_string())
        .send()
        .await
        .map_err(call("PutRolePolicy"))?;
    Ok(())
}

/// What the enforcement proof saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcementProof {
    pub action: String,
    pub image_id: String,
    pub waited_ms: u64,
    /// The function's error as its back-off logged it.
    pub error: String,
}

impl std::fmt::Display for EnforcementProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "without {} the process function held image {} back in the work queue after {} ms: {}",
            self.action, self.image_id, self.waited_ms, self.error
        )
    }
}

/// A token of another pool: signed, unexpired and an access token, but issued by a pool that
/// is not the stage's. Makes that pool (as root), signs a user of it in, sends the token to the
/// stage's API on a read and an upload, and expects 401 for both, then deletes the pool.
pub async fn other_pool_refused(
    cfg: &LocalConfig,
    stage: &Deployed,
) -> Result<String, LocalIamError> {
    use crate::cloud::cognito;
    let fail = LocalIamError::Enforcement;
    let (target, clients, _) = as_root(cfg).await?;
    let c = &clients.cognito;
    let pool = cognito::create_pool(c, "image-pipeline-e2e-other-pool")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let http = aws::http_client(&target, std::time::Duration::from_secs(35)).map_err(fail)?;
    let answered = other_pool_answers(&http, c, &pool, &stage.api_url).await;
    let deleted = cognito::delete_pool(c, &pool).await;
    let answers = answered?;
    deleted.map_err(|e| fail(e.to_string()))?;
    if answers.iter().any(|(_, s)| *s != 401) {
        return Err(fail(format!(
            "a token of another pool was not refused with 401: {answers:?}"
        )));
    }
    Ok(format!(
        "a signed access token of another pool ({}) got 401 on {}",
        pool.id,
        answers
            .iter()
            .map(|(r, _)| r.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    ))
}

/// Signs a user of `pool` in and sends their token to two routes of `api`: each route and
/// its status.
async fn other_pool_answers(
    http: &reqwest::Client,
    c: &aws_sdk_cognitoidentityprovider::Client,
    pool: &crate::cloud::cognito::Pool,
    api: &str,
) -> Result<Vec<(String, u16)>, LocalIamError> {
    use crate::cloud::cognito;
    let fail = LocalIamError::Enforcement;
    let (email, password) = ("other-pool@example.com", "Other-Pool-Pass1");
    cognito::add_user(c, pool, email, password)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let tokens = cognito::sign_in(c, pool, email, password)
        .await
        .map_err(|e| fail(format!("signing in to the other pool: {e}")))?;
    let auth = format!("Bearer {}", tokens.access_token);
    let mut answers = Vec::new();
    for (method, path) in [("GET", "/metadata"), ("POST", "/upload")] {
        let req = match method {
            "GET" => http.get(format!("{api}{path}")),
            _ => http
                .post(format!("{api}{path}"))
                .header("content-type", "image/png")
                .body(crate::verify::smoke::DEFAULT_IMAGE.to_vec()),
        };
        let resp = req
            .header("authorization", &auth)
            .send()
            .await
            .map_err(|e| fail(format!("{method} {path}: {e}")))?;
        answers.push((format!("{method} {path}"), resp.status().as_u16()));
    }
    Ok(answers)
}

/// An expired access token of the stage's own pool, signed with the pool's own key, gets 401;
/// the same token re-signed with its expiry untouched gets 200, so the refusal is the expiry's.
/// The local environment only: the key is read where the emulator keeps it
/// (`state/cognito-pool-keys/{pool}-access.pem`), which no AWS account would show.
pub async fn expired_token_refused(
    cfg: &LocalConfig,
    stage: &Deployed,
) -> Result<String, LocalIamError> {
    use crate::cloud::cognito;
    let fail = LocalIamError::Enforcement;
    let (target, clients, _) = as_root(cfg).await?;
    let c = &clients.cognito;
    let pool = &stage.pool;
    let key_file = cfg
        .dir
        .join("state")
        .join("cognito-pool-keys")
        .join(format!("{}-access.pem", pool.id));
    let key = pkcs8_of_pem(&key_file).map_err(fail)?;
    let (email, password) = ("expiry@example.com", "Expiry-Check-Pass1");
    cognito::add_user(c, pool, email, password)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let answers = match cognito::sign_in(c, pool, email, password).await {
        Ok(t) => expiry_answers(&target, &stage.api_url, &t.access_token, &key).await,
        Err(e) => Err(fail(format!("signing in: {e}"))),
    };
    let removed = cognito::remove_user(c, pool, email).await;
    let answers = answers?;
    removed.map_err(|e| fail(e.to_string()))?;
    if answers != [200, 401] {
        return Err(fail(format!(
            "GET /metadata answered {} to a token re-signed with the pool's key and {} to the same token expired a minute ago; expected 200 and 401",
            answers[0], answers[1]
        )));
    }
    Ok("an access token of the stage's pool, signed with its key but expired a minute ago, got 401 (re-signed unexpired: 200)".into())
}

/// `GET /metadata` with `token` re-signed by `key` as it is, then expired a minute ago: the
/// two statuses.
async fn expiry_answers(
    target: &Target,
    api: &str,
    token: &str,
    key: &[u8],
) -> Result<Vec<u16>, LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let http = aws::http_client(target, std::time::Duration::from_secs(35)).map_err(fail)?;
    let now = chrono::Utc::now().timestamp();
    let expire = |claims: &mut Value| {
        claims["exp"] = (now - 60).into();
        claims["iat"] = (now - 960).into();
        claims["auth_time"] = (now - 960).into();
    };
    let kept = crate::verify::smoke::resign(token, key, None).map_err(fail)?;
    let expired = crate::verify::smoke::resign(token, key, Some(&expire)).map_err(fail)?;
    let mut answers = Vec::new();
    for auth in [&kept, &expired] {
        let resp = http
            .get(format!("{api}/metadata"))
            .header("authorization", auth.as_str())
            .send()
            .await
            .map_err(|e| fail(format!("GET /metadata: {e}")))?;
        answers.push(resp.status().as_u16());
    }
    Ok(answers)
}

/// The DER of a PKCS#8 PEM file.
fn pkcs8_of_pem(path: &std::path::Path) -> Result<Vec<u8>, String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| format!("{}: not PEM: {e}", path.display()))
}

/// The action the proof takes away from the process role: the read of the uploaded version.
pub const REVOKED_ACTION: &str = "s3:GetObjectVersion";

/// Takes [`REVOKED_ACTION`] away from the deployed process user role of `stage` (whose
/// sessions read each upload as its owner), uploads the
/// smoke-test image, and expects what AWS would do: no labels, and the process function holding
/// the work queue's record back with an error naming the action (its log says so). With enforcement off the image would be labeled
/// and this fails. Leaves the role without the action: tear the stage down afterwards.
pub async fn prove_enforcement(
    cfg: &LocalConfig,
    stage: &str,
    outputs: &Deployed,
) -> Result<EnforcementProof, LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let target = cfg.target(LocalCredentials::root())?;
    let (clients, identity) = aws::connect(&target).await?;
    let app = App::image_pipeline();
    let process = app
        .function("process")
        .ok_or_else(|| LocalIamError::NoFunction("process".into()))?;
    let role = outputs.outputs.need(&process.user_role_arn_output())?;
    let stage_name = stack::Stage::parse(stage).map_err(|e| fail(format!("stage {stage}: {e}")))?;
    let groups =
        crate::observe::logs::log_groups(&clients.cfn, &stage_name, &["process".to_string()])
            .await
            .map_err(|e| fail(e.to_string()))?;
    let api = outputs.api_url.clone();
    revoke_action(
        &clients.iam,
        &identity,
        stage,
        "process",
        &role,
        REVOKED_ACTION,
    )
    .await?;

    let http = aws::http_client(&target, std::time::Duration::from_secs(35)).map_err(fail)?;
    // The API needs a signed-in user: a throwaway one, removed at the end.
    let (email, password) = (
        format!("enforcement-{stage}@example.com"),
        "Enforcement-Pass1",
    );
    let pool = &outputs.pool;
    crate::cloud::cognito::add_user(&clients.cognito, pool, &email, password)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let signed_in = crate::cloud::cognito::sign_in(&clients.cognito, pool, &email, password).await;
    let result = match signed_in {
        Ok(t) => {
            let auth = format!("Bearer {}", t.access_token);
            prove_with(&http, (&api, &auth), &clients.logs, &groups).await
        }
        Err(e) => Err(fail(e.to_string())),
    };
    let _ = crate::cloud::cognito::remove_user(&clients.cognito, pool, &email).await;
    let (image_id, error, start) = result?;
    Ok(EnforcementProof {
        action: REVOKED_ACTION.into(),
        image_id,
        waited_ms: crate::util::elapsed_ms(start),
        error,
    })
}

/// An upload as `auth`, the process function's back-off of it naming the revoked action, and
/// its item still `processing`: the image id, the error and when the wait began.
async fn prove_with(
    http: &reqwest::Client,
    (api, auth): (&str, &str),
    logs: &aws_sdk_cloudwatchlogs::Client,
    groups: &[(String, String)],
) -> Result<(String, String, std::time::Instant), LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let since = crate::observe::logs::now_ms() - 60_000;
    let image_id = upload(http, api, auth).await?;
    let start = std::time::Instant::now();
    let error = backed_off(logs, groups, since, &image_id).await?;
    if !error.contains(REVOKED_ACTION) {
        return Err(fail(format!(
            "the back-off does not name {REVOKED_ACTION}: {error}"
        )));
    }
    still_processing(http, api, auth, &image_id).await?;
    Ok((image_id, error, start))
}

/// Uploads the smoke-test image: its id.
async fn upload(http: &reqwest::Client, api: &str, auth: &str) -> Result<String, LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let resp = http
        .post(format!("{api}/upload"))
        .header("authorization", auth)
        .header("content-type", "image/png")
        .body(crate::verify::smoke::DEFAULT_IMAGE.to_vec())
        .send()
        .await
        .map_err(|e| fail(format!("POST /upload: {e}")))?;
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| fail(format!("POST /upload: {e}")))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    match (status, body["image_id"].as_str()) {
        (201, Some(id)) => Ok(id.to_string()),
        _ => Err(fail(format!("POST /upload answered {status}: {body}"))),
    }
}

/// The error of the process function's first back-off of `image_id` (its log line
/// `record backed off`), waiting up to 90 s for it.
async fn backed_off(
    logs: &aws_sdk_cloudwatchlogs::Client,
    groups: &[(String, String)],
    since: i64,
    image_id: &str,
) -> Result<String, LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let start = std::time::Instant::now();
    loop {
        let events = crate::observe::logs::fetch(logs, groups, since)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let found = events
            .iter()
            .find(|e| e.message.contains(image_id) && e.message.contains("record backed off"));
        if let Some(e) = found {
            return Ok(e
                .field("error")
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| e.message.clone()));
        }
        if start.elapsed() > std::time::Duration::from_secs(90) {
            return Err(fail(format!(
                "the process function did not back off image {image_id} within 90 s: was the upload processed despite the missing {REVOKED_ACTION}?"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// Nothing was labeled while the read was denied: the image is still `processing`.
async fn still_processing(
    http: &reqwest::Client,
    api: &str,
    auth: &str,
    image_id: &str,
) -> Result<(), LocalIamError> {
    let fail = LocalIamError::Enforcement;
    let resp = http
        .get(format!("{api}/metadata/{image_id}"))
        .header("authorization", auth)
        .send()
        .await
        .map_err(|e| fail(format!("GET /metadata: {e}")))?;
    let code = resp.status().as_u16();
    let text = resp
        .text()
        .await
        .map_err(|e| fail(format!("GET /metadata: {e}")))?;
    let status = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string));
    if code != 200 || status.as_deref() != Some("processing") {
        return Err(fail(format!(
            "image {image_id} should still be processing, since its object could not be read; GET /metadata answered {code}: {text}"
        )));
    }
    Ok(())
}

/// An assets bucket as an earlier version of this tool left it: made outside any stack,
/// holding one artifact. Returns the bucket and the artifact's key. For the end-to-end test of
/// the bootstrap's import.
pub async fn legacy_assets_bucket(cfg: &LocalConfig) -> Result<(String, String), LocalIamError> {
    let (clients, identity) = aws::connect(&root_target(cfg)?).await?;
    let bucket = stack::app::assets_bucket_name(&identity.account, &identity.region);
    let key = "lambda/x86_64/upload/legacy.zip".to_string();
    clients
        .s3
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .map_err(call("s3:CreateBucket"))?;
    clients
        .s3
        .put_object()
        .bucket(&bucket)
        .key(&key)
        .body(aws_sdk_s3::primitives::ByteStream::from_static(
            b"PK legacy",
        ))
        .send()
        .await
        .map_err(call("s3:PutObject"))?;
    Ok((bucket, key))
}

/// Whether `key` is still in `bucket`, asked as the emulator's root.
pub async fn object_exists(
    cfg: &LocalConfig,
    bucket: &str,
    key: &str,
) -> Result<bool, LocalIamError> {
    let (clients, _) = aws::connect(&root_target(cfg)?).await?;
    Ok(clients
        .s3
        .head_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .is_ok())
}

fn root_target(cfg: &LocalConfig) -> Result<Target, LocalIamError> {
    Ok(cfg.target(LocalCredentials::root())?)
}

/// The trust policy of the role `arn`, as IAM returns it (URL-decoded JSON).
pub async fn trust_policy(cfg: &LocalConfig, arn: &str) -> Result<Value, LocalIamError> {
    let (clients, _) = aws::connect(&root_target(cfg)?).await?;
    let name = arn.rsplit('/').next().unwrap_or(arn);
    let role = clients
        .iam
        .get_role()
        .role_name(name)
        .send()
        .await
        .map_err(call("GetRole"))?;
    let doc = role
        .role()
        .and_then(|r| r.assume_role_policy_document())
        .unwrap_or_default();
    let decoded = percent_decode(doc);
    serde_json::from_str(&decoded).map_err(|e| LocalIamError::Call {
        operation: "GetRole",
        reason: format!("the trust policy is not JSON: {e}: {decoded}"),
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The deploying identity's escalation paths, other stages included, asked of IAM's
/// simulator as the emulator's root (who may simulate anyone): the ones left open.
pub async fn open_escalation_paths(
    cfg: &LocalConfig,
    user_arn: &str,
    stages: &stack::app::StagePattern,
    outside: &str,
) -> Result<(usize, Vec<String>), LocalIamError> {
    use crate::ops::permissions::{Principal, escalation_checks};
    use stack::app::bootstrap::Scope;
    let (clients, identity) = aws::connect(&root_target(cfg)?).await?;
    let checks = escalation_checks(
        &identity.account,
        &identity.region,
        stages,
        Scope::Preview,
        stages,
        Some(outside),
    );
    let mine: Vec<_> = checks
        .iter()
        .filter(|c| c.principal == Principal::Deployer)
        .collect();
    let wrong = crate::verify::smoke::simulate_escalation(&clients.iam, user_arn, &mine)
        .await
        .map_err(LocalIamError::Enforcement)?;
    Ok((mine.len(), wrong))
}

/// Asks CloudFormation, as the local IAM user `user`, to deploy `stack` with `role_arn`; the
/// error it gives (`None` if it accepted).
pub async fn try_pass_role(
    cfg: &LocalConfig,
    user: &LocalCredentials,
    stack: &str,
    role_arn: &str,
) -> Result<Option<String>, LocalIamError> {
    let target = cfg.target(user.clone())?;
    let (clients, _) = aws::connect(&target).await?;
    let out = clients
        .cfn
        .create_change_set()
        .stack_name(stack)
        .change_set_name("image-pipeline-passrole-probe")
        .change_set_type(aws_sdk_cloudformation::types::ChangeSetType::Create)
        .template_body(r#"{"Resources":{"Q":{"Type":"AWS::SQS::Queue"}}}"#)
        .role_arn(role_arn)
        .send()
        .await;
    Ok(match out {
        Ok(_) => None,
        Err(e) => Some(crate::cloud::error::chain(&e)),
    })
}
