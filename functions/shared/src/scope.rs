//! Credentials scoped to one user. A handler that reads or writes a user's data does it as a
//! session of its user role (`USER_ROLE_ARN`) whose session policy names that user's object
//! prefixes and, through `dynamodb:LeadingKeys`, that user's partitions. A session can do at
//! most what both the role's policy and the session policy allow, so a handler bug that forgets
//! the owner (another user's key, another user's prefix) is refused by IAM, not only by the
//! handler's own code. Sessions are cached per user while the function is warm.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use serde_json::{Value, json};

use crate::{ApiError, Owner, Vars, required_env};

/// The role a function's user sessions are sessions of.
pub const ENV_USER_ROLE_ARN: &str = "USER_ROLE_ARN";
/// How long a session lasts. A session of a role assumed by a role (role chaining) lasts at
/// most an hour.
pub const SESSION_SECONDS: i32 = 3600;
/// A cached session is replaced once less than this is left of it: more than any presigned
/// URL the functions hand out needs, since a URL signed by a session dies with it.
pub const MIN_REMAINING: Duration = Duration::from_secs(15 * 60);
/// The most users whose sessions one warm instance keeps; beyond it, expired sessions are
/// dropped first, then the whole cache.
pub const MAX_CACHED_USERS: usize = 1024;

/// What one user's session may reach, besides what the role allows: the resources of the
/// stage, narrowed to the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reach {
    /// The uploads bucket and the key prefixes (such as `uploads/`) the function uses in it.
    pub bucket: Option<(String, Vec<String>)>,
    /// The stage's tables: items whose partition key starts with the user's `sub`.
    pub tables: Vec<String>,
    /// `rekognition:DetectLabels`, which names no resource.
    pub detect_labels: bool,
}

impl Reach {
    /// Objects under each of `prefixes` in `bucket`, and items of `tables`.
    pub fn objects_and_items(bucket: &str, prefixes: &[&str], tables: &[&str]) -> Self {
        Self {
            bucket: Some((
                bucket.to_string(),
                prefixes.iter().map(|p| (*p).to_string()).collect(),
            )),
            ..Self::items(tables)
        }
    }

    /// Items of `tables` only.
    pub fn items(tables: &[&str]) -> Self {
        Self {
            tables: tables.iter().map(|t| (*t).to_string()).collect(),
            ..Self::default()
        }
    }

    /// The session policy that narrows a role session to `owner`: objects under each prefix's
    /// `{owner}/`, listings of those prefixes only, and items whose partition key is the
    /// owner's `sub` or starts with `{sub}#`. Actions are left broad on purpose: the role's own
    /// policy decides which of them the function may use at all.
    pub fn session_policy(&self, partition: &str, owner: &Owner) -> Value {
        let mut statements = Vec::new();
        if let Some((bucket, prefixes)) = &self.bucket {
            let objects: Vec<String> = prefixes
                .iter()
                .map(|p| format!("arn:{partition}:s3:::{bucket}/{p}{owner}/*"))
                .collect();
            let listed: Vec<String> = prefixes.iter().map(|p| format!("{p}{owner}/*")).collect();
            statements.push(json!({
                "Sid": "OwnObjects",
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject",
                           "s3:PutObjectVersionTagging", "s3:DeleteObjectVersion"],
                "Resource": objects,
            }));
            statements.push(json!({
                "Sid": "OwnListings",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:ListBucketVersions"],
                "Resource": format!("arn:{partition}:s3:::{bucket}"),
                "Condition": {"StringLike": {"s3:prefix": listed}},
            }));
            // A read of a missing key is answered 404 only to a caller who may list the
            // bucket; such a read carries no `s3:prefix`.
            statements.push(json!({
                "Sid": "MissingKeysAre404",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": format!("arn:{partition}:s3:::{bucket}"),
                "Condition": {"Null": {"s3:prefix": "true"}},
            }));
        }
        if !self.tables.is_empty() {
            let tables: Vec<String> = self
                .tables
                .iter()
                .flat_map(|t| {
                    [
                        format!("arn:{partition}:dynamodb:*:*:table/{t}"),
                        format!("arn:{partition}:dynamodb:*:*:table/{t}/index/*"),
                    ]
                })
                .collect();
            statements.push(json!({
                "Sid": "OwnItems",
                "Effect": "Allow",
                "Action": ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:PutItem",
                           "dynamodb:UpdateItem", "dynamodb:DeleteItem"],
                "Resource": tables,
                "Condition": {"ForAllValues:StringLike": {
                    "dynamodb:LeadingKeys": [owner.as_str(), format!("{owner}#*")]
                }},
            }));
        }
        if self.detect_labels {
            statements.push(json!({
                "Sid": "Labels",
                "Effect": "Allow",
                "Action": "rekognition:DetectLabels",
                "Resource": "*",
            }));
        }
        json!({"Version": "2012-10-17", "Statement": statements})
    }
}

/// One user's S3 and DynamoDB: copies of the function's own clients that sign with that
/// user's session.
#[derive(Debug, Clone)]
pub struct Clients {
    pub s3: aws_sdk_s3::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
}

impl Clients {
    /// What turns a session into a user's clients, for [`UserScope::new`].
    pub fn maker(
        s3: aws_sdk_s3::Client,
        dynamodb: aws_sdk_dynamodb::Client,
    ) -> impl Fn(Credentials) -> Self + Send + Sync + 'static {
        move |creds: Credentials| Self {
            s3: aws_sdk_s3::Client::from_conf(
                s3.config()
                    .to_builder()
                    .credentials_provider(creds.clone())
                    .build(),
            ),
            dynamodb: aws_sdk_dynamodb::Client::from_conf(
                dynamodb
                    .config()
                    .to_builder()
                    .credentials_provider(creds)
                    .build(),
            ),
        }
    }
}

/// Credentials of an assumed session, or why there are none.
pub type Session = Result<Credentials, ApiError>;

struct Cached<C> {
    expires: SystemTime,
    clients: C,
}

/// The sessions of one function's user role, one per user, each turned into the clients the
/// function uses (`make`), and cached while they have [`MIN_REMAINING`] left.
pub struct UserScope<C> {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    reach: Reach,
    make: Box<dyn Fn(Credentials) -> C + Send + Sync>,
    cache: Mutex<HashMap<Owner, Cached<C>>>,
}

impl<C> std::fmt::Debug for UserScope<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserScope")
            .field("role_arn", &self.role_arn)
            .field("reach", &self.reach)
            .finish_non_exhaustive()
    }
}

impl<C: Clone> UserScope<C> {
    pub fn new(
        sts: aws_sdk_sts::Client,
        role_arn: String,
        reach: Reach,
        make: impl Fn(Credentials) -> C + Send + Sync + 'static,
    ) -> Self {
        Self {
            sts,
            role_arn,
            reach,
            make: Box::new(make),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The role from the environment (`USER_ROLE_ARN`).
    pub fn from_env(
        sts: aws_sdk_sts::Client,
        vars: Vars,
        reach: Reach,
        make: impl Fn(Credentials) -> C + Send + Sync + 'static,
    ) -> Result<Self, String> {
        Ok(Self::new(
            sts,
            required_env(vars, ENV_USER_ROLE_ARN)?,
            reach,
            make,
        ))
    }

    /// The session policy `owner`'s sessions get, in the role's partition.
    pub fn session_policy(&self, owner: &Owner) -> Value {
        let partition = self.role_arn.split(':').nth(1).unwrap_or("aws");
        self.reach.session_policy(partition, owner)
    }

    /// The clients of `owner`'s session: cached, or from a new `AssumeRole`.
    pub async fn clients(&self, owner: &Owner) -> Result<C, ApiError> {
        let now = SystemTime::now();
        if let Some(c) = self.cached(owner, now) {
            return Ok(c);
        }
        let creds = self.assume(owner).await?;
        let expires = creds.expiry().unwrap_or(now);
        let clients = (self.make)(creds);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= MAX_CACHED_USERS {
            cache.retain(|_, c| fresh(c.expires, now));
            if cache.len() >= MAX_CACHED_USERS {
                cache.clear();
            }
        }
        cache.insert(
            owner.clone(),
            Cached {
                expires,
                clients: clients.clone(),
            },
        );
        Ok(clients)
    }

    fn cached(&self, owner: &Owner, now: SystemTime) -> Option<C> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(owner)
            .filter(|c| fresh(c.expires, now))
            .map(|c| c.clients.clone())
    }

    /// One `AssumeRole` of the user role, narrowed to `owner` by the session policy; the
    /// session is named after the user, so CloudTrail shows whose data each call touched.
    async fn assume(&self, owner: &Owner) -> Session {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(session_name(owner))
            .policy(self.session_policy(owner).to_string())
            .duration_seconds(SESSION_SECONDS)
            .send()
            .await
            .map_err(|e| {
                tracing::error!(error = %aws_sdk_sts::error::DisplayErrorContext(&e), "AssumeRole of the user role failed");
                ApiError::unavailable("your data could not be reached; try again")
            })?;
        let c = out.credentials().ok_or_else(|| {
            tracing::error!("AssumeRole returned no credentials");
            ApiError::unavailable("your data could not be reached; try again")
        })?;
        let expiry = SystemTime::try_from(*c.expiration()).ok();
        Ok(Credentials::new(
            c.access_key_id(),
            c.secret_access_key(),
            Some(c.session_token().to_string()),
            expiry,
            "user-scope",
        ))
    }
}

fn fresh(expires: SystemTime, now: SystemTime) -> bool {
    expires
        .duration_since(now)
        .is_ok_and(|left| left >= MIN_REMAINING)
}

/// A session name is at most 64 characters of `[\w+=,.@-]`; an owner is letters, digits and
/// `-`, at most 128.
pub fn session_name(owner: &Owner) -> String {
    owner.as_str().chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn owner() -> Owner {
        Owner::parse("7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f").unwrap()
    }

    #[test]
    fn the_session_policy_names_only_the_owner() {
        let reach = Reach {
            bucket: Some(("b".into(), vec!["uploads/".into(), "thumbnails/".into()])),
            tables: vec!["t".into()],
            detect_labels: false,
        };
        let p = reach.session_policy("aws", &owner());
        let s = &p["Statement"];
        assert_eq!(
            s[0]["Resource"],
            json!([
                "arn:aws:s3:::b/uploads/7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f/*",
                "arn:aws:s3:::b/thumbnails/7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f/*"
            ])
        );
        assert_eq!(
            s[3]["Condition"]["ForAllValues:StringLike"]["dynamodb:LeadingKeys"],
            json!([
                "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f",
                "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f#*"
            ])
        );
        // STS refuses a packed session policy over 2048 characters; a JSON one this size is
        // well within it.
        assert!(p.to_string().len() < 2048, "{}", p.to_string().len());
        assert!(!p.to_string().contains("rekognition"));
    }

    #[test]
    fn a_table_only_reach_names_no_bucket() {
        let reach = Reach {
            tables: vec!["t".into()],
            ..Reach::default()
        };
        let p = reach.session_policy("aws", &owner()).to_string();
        assert!(!p.contains("s3:"), "{p}");
    }

    #[test]
    fn sessions_are_kept_while_enough_is_left() {
        let now = SystemTime::now();
        assert!(fresh(now + MIN_REMAINING + Duration::from_secs(1), now));
        assert!(!fresh(now + MIN_REMAINING - Duration::from_secs(1), now));
        assert!(!fresh(now - Duration::from_secs(1), now));
    }
}

/// For the handlers' tests: an STS whose `AssumeRole` answers every call with one session, an
/// hour long, and the rule that counts the calls and can see what each one asked for.
#[cfg(feature = "test-util")]
pub mod testing {
    use aws_sdk_sts::operation::assume_role::{AssumeRoleInput, AssumeRoleOutput};
    use aws_sdk_sts::types::Credentials as StsCredentials;
    use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
    use aws_smithy_types::DateTime;

    /// The role the tests' user scopes assume.
    pub const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/image-pipeline-dev-UserRole-X";

    /// An `AssumeRole` rule, limited to requests `filter` accepts.
    pub fn assume_role(filter: impl Fn(&AssumeRoleInput) -> bool + Send + Sync + 'static) -> Rule {
        mock!(aws_sdk_sts::Client::assume_role)
            .match_requests(filter)
            .then_output(|| {
                let expires = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
                AssumeRoleOutput::builder()
                    .credentials(
                        StsCredentials::builder()
                            .access_key_id("ASIAUSERSESSION")
                            .secret_access_key("secret")
                            .session_token("token")
                            .expiration(DateTime::from(expires))
                            .build()
                            .unwrap_or_else(|e| panic!("test credentials: {e}")),
                    )
                    .build()
            })
    }

    /// A client that answers `rules`.
    pub fn sts(rules: &[&Rule]) -> aws_sdk_sts::Client {
        mock_client!(aws_sdk_sts, RuleMode::MatchAny, rules)
    }

    /// An `AssumeRole` rule that refuses every call with `AccessDenied`.
    pub fn refusing() -> Rule {
        mock!(aws_sdk_sts::Client::assume_role).then_error(|| {
            aws_sdk_sts::operation::assume_role::AssumeRoleError::generic(
                aws_sdk_sts::error::ErrorMetadata::builder()
                    .code("AccessDenied")
                    .build(),
            )
        })
    }

    /// A function's environment: `pairs`, and [`ROLE_ARN`] as its `USER_ROLE_ARN`.
    pub fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .chain([(super::ENV_USER_ROLE_ARN.to_string(), ROLE_ARN.to_string())])
            .collect();
        move |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }
}
