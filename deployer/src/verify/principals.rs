//! The local environment authorizes principals other than the functions' roles as AWS does:
//! an IAM user whose policy names its resources through policy variables, and the same user
//! calling the local DetectLabels. Both failed on MiniStack 1.5.33 as installed: a variable
//! other than `${aws:username}` in `Resource` was compared as text (the user was refused its
//! own item), and the label service could not authenticate an IAM user's key at all
//! (`UnrecognizedClientException`). See `local::fidelity`.
//!
//! Two throwaway users of the emulator: one whose policy reads the images table named by its
//! own tag (`${aws:PrincipalTag/…}` in `Resource`), only items whose partition key is its own
//! id (`${aws:userid}` in a `dynamodb:LeadingKeys` condition), and may detect labels; one that
//! may only read. Each is removed at the end.

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;

use crate::cloud::aws::{self, LocalCredentials, Target};
use crate::cloud::stage::Deployed;
use crate::local::emulator::LocalConfig;
use crate::verify::local_iam::{LocalIamError, delete_user, root, user_with_json_policy};

/// The tag whose value names the table the user may read.
const TABLE_TAG: &str = "image-pipeline-table";
/// The image the label check sends, as bytes.
const IMAGE: &[u8] = include_bytes!("../../assets/smoke-test.png");

/// What the check saw: each request and whether it was allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalsProof {
    pub rows: Vec<(String, bool)>,
    /// The labels DetectLabels gave the IAM user.
    pub labels: Vec<String>,
}

impl std::fmt::Display for PrincipalsProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "an IAM user's policy variables and DetectLabels are authorized as on AWS: {} requests checked; labels {}",
            self.rows.len(),
            self.labels.join(", ")
        )
    }
}

fn fail(reason: String) -> LocalIamError {
    LocalIamError::Enforcement(reason)
}

/// Runs the check against the deployed stage `d` (see the module's documentation).
pub async fn prove_principals(
    cfg: &LocalConfig,
    d: &Deployed,
) -> Result<PrincipalsProof, LocalIamError> {
    let (iam, _) = root(cfg).await?;
    let (reader, labeler) = ("fidelity-reader", "fidelity-labeler");
    let result = check(cfg, d, &iam, (reader, labeler)).await;
    for name in [reader, labeler] {
        delete_user(&iam, name).await?;
    }
    result
}

async fn check(
    cfg: &LocalConfig,
    d: &Deployed,
    iam: &aws_sdk_iam::Client,
    (reader, labeler): (&str, &str),
) -> Result<PrincipalsProof, LocalIamError> {
    let read = json!({
        "Sid": "OwnItemsOfTheTaggedTable",
        "Effect": "Allow",
        "Action": "dynamodb:GetItem",
        "Resource": format!("arn:aws:dynamodb:*:*:table/${{aws:PrincipalTag/{TABLE_TAG}}}"),
        "Condition": {"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["${aws:userid}"]}},
    });
    let labels = json!({
        "Sid": "Labels",
        "Effect": "Allow",
        "Action": "rekognition:DetectLabels",
        "Resource": "*",
    });
    let policy = |s: Vec<serde_json::Value>| json!({"Version": "2012-10-17", "Statement": s});
    let labeler_key =
        user_with_json_policy(iam, labeler, &policy(vec![read.clone(), labels])).await?;
    let reader_key = user_with_json_policy(iam, reader, &policy(vec![read])).await?;
    let user_id = tag_user(iam, labeler, &d.table).await?;
    let target = cfg.target(labeler_key.clone())?;
    let (clients, _) = aws::connect(&target).await?;
    let mut rows = Vec::new();
    let mut wrong = Vec::new();
    for (what, table, owner, expect) in [
        ("its own item", &d.table, user_id.as_str(), true),
        ("another's item", &d.table, "someone-else", false),
        (
            "an item of an untagged table",
            &d.labels_table,
            user_id.as_str(),
            false,
        ),
    ] {
        let allowed = get_item(&clients.dynamodb, table, owner).await?;
        let row = format!("GetItem of {what}");
        if allowed != expect {
            wrong.push(format!("{row}: allowed {allowed}, expected {expect}"));
        }
        rows.push((row, allowed));
    }
    let found = detect(cfg, &target, labeler_key).await?;
    let labels = match &found {
        Ok(labels) if !labels.is_empty() => labels.clone(),
        other => {
            wrong.push(format!("DetectLabels as an IAM user allowed it: {other:?}"));
            Vec::new()
        }
    };
    rows.push(("DetectLabels, allowed".into(), found.is_ok()));
    let refused = detect(cfg, &cfg.target(reader_key.clone())?, reader_key).await?;
    match &refused {
        Err(code) if code == "AccessDeniedException" => {}
        other => wrong.push(format!(
            "DetectLabels as an IAM user without the permission: {other:?}, expected AccessDeniedException"
        )),
    }
    rows.push(("DetectLabels, not allowed".into(), refused.is_ok()));
    if wrong.is_empty() {
        Ok(PrincipalsProof { rows, labels })
    } else {
        Err(fail(format!(
            "the local environment does not authorize an IAM user as AWS would: {}",
            wrong.join("; ")
        )))
    }
}

/// Tags user `name` with the table it may read; its user id.
async fn tag_user(
    iam: &aws_sdk_iam::Client,
    name: &str,
    table: &str,
) -> Result<String, LocalIamError> {
    let tag = aws_sdk_iam::types::Tag::builder()
        .key(TABLE_TAG)
        .value(table)
        .build()
        .map_err(|e| fail(format!("a tag: {e}")))?;
    iam.tag_user()
        .user_name(name)
        .tags(tag)
        .send()
        .await
        .map_err(|e| fail(format!("TagUser: {}", crate::cloud::error::chain(&e))))?;
    let user = iam
        .get_user()
        .user_name(name)
        .send()
        .await
        .map_err(|e| fail(format!("GetUser: {}", crate::cloud::error::chain(&e))))?;
    user.user()
        .map(|u| u.user_id().to_string())
        .ok_or_else(|| fail(format!("GetUser of {name} returned no user")))
}

/// A GetItem of `owner`'s partition in `table`: whether IAM allowed it.
async fn get_item(
    db: &aws_sdk_dynamodb::Client,
    table: &str,
    owner: &str,
) -> Result<bool, LocalIamError> {
    let (pk, sk) = if table.ends_with("-labels") {
        (api_types::index::PARTITION_KEY, api_types::index::SORT_KEY)
    } else {
        (api_types::index::OWNER, api_types::index::IMAGE_ID)
    };
    let result = db
        .get_item()
        .table_name(table)
        .key(pk, AttributeValue::S(owner.to_string()))
        .key(sk, AttributeValue::S("none".into()))
        .send()
        .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("AccessDeniedException") => Ok(false),
        Err(e) => Err(fail(format!(
            "GetItem of {owner} in {table}: {}",
            crate::cloud::error::chain(&e)
        ))),
    }
}

/// DetectLabels of the smoke-test image at the local label service, signed with `key`: the
/// label names, or the error code.
async fn detect(
    cfg: &LocalConfig,
    target: &Target,
    key: LocalCredentials,
) -> Result<Result<Vec<String>, String>, LocalIamError> {
    let sdk = aws::sdk_config(target).await?;
    let conf = aws_sdk_rekognition::config::Builder::from(&sdk)
        .endpoint_url(cfg.labels_endpoint())
        .credentials_provider(aws_credential_types::Credentials::new(
            key.access_key_id,
            key.secret_access_key,
            None,
            None,
            "fidelity-check",
        ))
        .build();
    let image = aws_sdk_rekognition::types::Image::builder()
        .bytes(aws_sdk_rekognition::primitives::Blob::new(IMAGE))
        .build();
    let out = aws_sdk_rekognition::Client::from_conf(conf)
        .detect_labels()
        .image(image)
        .max_labels(3)
        .send()
        .await;
    match out {
        Ok(o) => Ok(Ok(o
            .labels()
            .iter()
            .filter_map(|l| l.name().map(str::to_string))
            .collect())),
        Err(e) => match aws_sdk_rekognition::error::ProvideErrorMetadata::code(&e) {
            Some(code) => Ok(Err(code.to_string())),
            None => Err(fail(format!(
                "DetectLabels: {}",
                crate::cloud::error::chain(&e)
            ))),
        },
    }
}
