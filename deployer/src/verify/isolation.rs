//! The mutation check of per-user isolation, under enforcement: a handler changed to read
//! another user's key is refused by IAM, not only by its own code.
//!
//! The check acts as the metadata function does (DynamoDB) and as the images function does
//! (S3): a session of the function's execution role, then a session of its user role narrowed
//! to user A by the session policy the handlers build (`handler_shared::scope::Reach`). With
//! that session it makes the function's reads, once as written (A's keys) and once mutated
//! (B's keys). A's are read; B's are `AccessDenied`. Two controls show the refusal comes from
//! the session policy: the user role without a session policy reads B's item and B's object,
//! and the execution role alone reads nothing at all.

use aws_credential_types::Credentials;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use handler_shared::Owner;
use handler_shared::scope::Reach;
use stack::App;

use crate::cloud::aws::{self, LocalCredentials};
use crate::cloud::stage::Deployed;
use crate::local::emulator::LocalConfig;
use crate::verify::local_iam::LocalIamError;

/// Two made-up users: the session's (A) and the one a mutated handler reaches for (B).
pub const USER_A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
pub const USER_B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
const IMAGE: &str = "0c0c0c0c-0000-4000-8000-00000000000c";

/// What the check saw: each read and whether IAM allowed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsolationProof {
    pub rows: Vec<(String, bool)>,
}

fn fail(reason: String) -> LocalIamError {
    LocalIamError::Enforcement(reason)
}

fn owner(s: &str) -> Result<Owner, LocalIamError> {
    Owner::parse(s).ok_or_else(|| fail(format!("{s} is not an owner")))
}

/// `AssumeRole` of `role` with `sts`, narrowed by `policy` when given.
async fn assume(
    sts: &aws_sdk_sts::Client,
    role: &str,
    session: &str,
    policy: Option<String>,
) -> Result<Credentials, LocalIamError> {
    let out = sts
        .assume_role()
        .role_arn(role)
        .role_session_name(session)
        .set_policy(policy)
        .send()
        .await
        .map_err(|e| {
            fail(format!(
                "AssumeRole of {role}: {}",
                crate::cloud::error::chain(&e)
            ))
        })?;
    let c = out
        .credentials()
        .ok_or_else(|| fail(format!("AssumeRole of {role} returned no credentials")))?;
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_string()),
        None,
        "isolation-check",
    ))
}

/// A read the metadata or images function makes, for `owner`'s key, in session `c`:
/// `Ok(true)` when IAM allowed it (a missing key's 404 included), `Ok(false)` on
/// `AccessDenied`, an error on anything else.
async fn read(
    session: &Session,
    d: &Deployed,
    what: Read,
    owner: &str,
) -> Result<bool, LocalIamError> {
    let s = |v: &str| AttributeValue::S(v.to_string());
    let db = &session.db;
    let result = match what {
        Read::Item => db
            .get_item()
            .table_name(&d.table)
            .key(api_types::index::OWNER, s(owner))
            .key(api_types::index::IMAGE_ID, s(IMAGE))
            .send()
            .await
            .map(|_| ())
            .map_err(refusal),
        Read::Listing => db
            .query()
            .table_name(&d.table)
            .index_name(api_types::index::LISTING_INDEX)
            .key_condition_expression("#o = :o")
            .expression_attribute_names("#o", api_types::index::OWNER)
            .expression_attribute_values(":o", s(owner))
            .send()
            .await
            .map(|_| ())
            .map_err(refusal),
        Read::Counts => db
            .query()
            .table_name(&d.labels_table)
            .key_condition_expression("#pk = :pk")
            .expression_attribute_names("#pk", api_types::index::PARTITION_KEY)
            .expression_attribute_values(":pk", s(&api_types::index::counts_partition(owner)))
            .send()
            .await
            .map(|_| ())
            .map_err(refusal),
        Read::Object => match session
            .s3
            .get_object()
            .bucket(&d.bucket)
            .key(format!("{UPLOADS}{owner}/{IMAGE}"))
            .send()
            .await
        {
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => Ok(()),
            other => other.map(|_| ()).map_err(refusal),
        },
        Read::ObjectListing => session
            .s3
            .list_objects_v2()
            .bucket(&d.bucket)
            .prefix(format!("{UPLOADS}{owner}/"))
            .send()
            .await
            .map(|_| ())
            .map_err(refusal),
    };
    match result {
        Ok(()) => Ok(true),
        Err(None) => Ok(false),
        Err(Some(reason)) => Err(fail(format!("{what:?} of {owner}: {reason}"))),
    }
}

/// `None` for IAM's refusal (DynamoDB's `AccessDeniedException`, S3's `AccessDenied`), the
/// error in words for anything else.
fn refusal<E>(e: aws_sdk_dynamodb::error::SdkError<E>) -> Option<String>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e.code() {
        Some("AccessDeniedException" | "AccessDenied") => None,
        _ => Some(crate::cloud::error::chain(&e)),
    }
}

/// The uploads' prefix, as the stack sets it.
const UPLOADS: &str = stack::app::UPLOAD_PREFIX;

#[derive(Debug, Clone, Copy)]
enum Read {
    /// The metadata function's: one item, the listing, the label counts.
    Item,
    Listing,
    Counts,
    /// The images function's: one original, and (what a handler listing a user's images by
    /// key would make) a listing of the user's prefix.
    Object,
    ObjectListing,
}

/// One session's clients.
struct Session {
    db: aws_sdk_dynamodb::Client,
    s3: aws_sdk_s3::Client,
}

/// A function as the checks act it out: the emulator root's clients, the function's
/// execution role and its user role in the deployed stage, and the reach its sessions are
/// narrowed within (as the handler builds it).
struct AsFunction {
    name: &'static str,
    root: aws::Clients,
    exec_role: String,
    user_role: String,
    reach: Reach,
}

impl AsFunction {
    async fn new(
        cfg: &LocalConfig,
        d: &Deployed,
        name: &'static str,
    ) -> Result<Self, LocalIamError> {
        let target = cfg.target(LocalCredentials::root())?;
        let (root, _) = aws::connect(&target).await?;
        let app = App::image_pipeline();
        let f = app
            .function(name)
            .ok_or_else(|| LocalIamError::NoFunction(name.into()))?;
        let reach = match name {
            "images" => Reach::objects_and_items(
                &d.bucket,
                &[UPLOADS, stack::app::THUMBNAIL_PREFIX],
                &[&d.table],
            ),
            _ => Reach::items(&[&d.table, &d.labels_table]),
        };
        Ok(Self {
            name,
            root,
            exec_role: d.outputs.need(&f.role_arn_output())?,
            user_role: d.outputs.need(&f.user_role_arn_output())?,
            reach,
        })
    }

    /// The clients of a session, made once as the handlers make them.
    fn session(&self, c: Credentials) -> Session {
        let s3 = self
            .root
            .s3
            .config()
            .to_builder()
            .credentials_provider(c.clone());
        let db = self
            .root
            .dynamodb
            .config()
            .to_builder()
            .credentials_provider(c);
        Session {
            s3: aws_sdk_s3::Client::from_conf(s3.build()),
            db: aws_sdk_dynamodb::Client::from_conf(db.build()),
        }
    }

    fn sts(&self, c: Credentials) -> aws_sdk_sts::Client {
        let conf = self.root.sts.config().to_builder().credentials_provider(c);
        aws_sdk_sts::Client::from_conf(conf.build())
    }

    /// The function: a session of its execution role, and its STS client.
    async fn function(&self) -> Result<(Session, aws_sdk_sts::Client), LocalIamError> {
        let c = assume(&self.root.sts, &self.exec_role, self.name, None).await?;
        Ok((self.session(c.clone()), self.sts(c)))
    }

    /// A session of the user role from `fn_sts`: narrowed to `user` as the handlers narrow
    /// it, or not at all.
    async fn user(
        &self,
        fn_sts: &aws_sdk_sts::Client,
        session: &str,
        user: Option<&str>,
    ) -> Result<Session, LocalIamError> {
        let policy = match user {
            Some(u) => Some(self.reach.session_policy("aws", &owner(u)?).to_string()),
            None => None,
        };
        Ok(self.session(assume(fn_sts, &self.user_role, session, policy).await?))
    }
}

/// Runs the check against the deployed stage `d` (see the module's documentation).
pub async fn prove_user_isolation(
    cfg: &LocalConfig,
    d: &Deployed,
) -> Result<IsolationProof, LocalIamError> {
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for (function, reads) in [
        ("metadata", &[Read::Item, Read::Listing, Read::Counts][..]),
        ("images", &[Read::Object, Read::ObjectListing][..]),
    ] {
        let f = AsFunction::new(cfg, d, function).await?;
        let (fn_creds, fn_sts) = f.function().await?;
        let as_a = f.user(&fn_sts, USER_A, Some(USER_A)).await?;
        let unnarrowed = f.user(&fn_sts, "unnarrowed", None).await?;
        for &what in reads {
            for (who, c, owner, expect) in [
                ("A's session", &as_a, USER_A, true),
                ("A's session, mutated", &as_a, USER_B, false),
                ("the execution role", &fn_creds, USER_A, false),
                // Control: the same role without the session policy reads B's keys, so the
                // refusal above is the session policy's doing.
                ("the role, unnarrowed", &unnarrowed, USER_B, true),
            ] {
                let allowed = read(c, d, what, owner).await?;
                let row = format!("{function}: {what:?} of {owner} as {who}");
                if allowed != expect {
                    wrong.push(format!("{row}: allowed {allowed}, expected {expect}"));
                }
                rows.push((row, allowed));
            }
        }
    }
    if wrong.is_empty() {
        Ok(IsolationProof { rows })
    } else {
        Err(fail(format!(
            "per-user isolation is not enforced by IAM: {}",
            wrong.join("; ")
        )))
    }
}

/// Latencies, in milliseconds, of the metadata function's listing query (one user's newest
/// images): as the handler made it before sessions were scoped (one session for every user),
/// as the first request of a user makes it (`AssumeRole` of the user role with the session policy, then
/// the query), and as every later request of that user makes it (the cached session's client).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionLatency {
    pub execution_role_ms: Vec<f64>,
    pub cold_ms: Vec<f64>,
    pub warm_ms: Vec<f64>,
}

/// Measures [`SessionLatency`] against the deployed stage `d`, `samples` of each; cold
/// samples each take a session for another made-up user.
pub async fn session_latency(
    cfg: &LocalConfig,
    d: &Deployed,
    samples: usize,
) -> Result<SessionLatency, LocalIamError> {
    let f = AsFunction::new(cfg, d, "metadata").await?;
    let (_, fn_sts) = f.function().await?;
    let mut out = SessionLatency::default();
    // As before sessions were scoped: one session that may read every user's items, as the
    // execution role could (the user role without a session policy holds exactly that).
    let fn_db = f.user(&fn_sts, "baseline", None).await?;
    let ms = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1000.0;
    let warm = f.user(&fn_sts, USER_A, Some(USER_A)).await?;
    for _ in 0..samples {
        let t = std::time::Instant::now();
        read(&fn_db, d, Read::Listing, USER_A).await?;
        out.execution_role_ms.push(ms(t));
        let t = std::time::Instant::now();
        read(&warm, d, Read::Listing, USER_A).await?;
        out.warm_ms.push(ms(t));
    }
    for i in 0..samples {
        let sub = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
        let t = std::time::Instant::now();
        let session = f.user(&fn_sts, &sub, Some(&sub)).await?;
        read(&session, d, Read::Listing, &sub).await?;
        out.cold_ms.push(ms(t));
    }
    Ok(out)
}
