//! The contract between handlers and the stack: each handler, configured from exactly the
//! environment the app model gives it, performs only requests its own synthesized policy
//! allows, and at least one request of each kind it declares.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_lambda_events::apigw::ApiGatewayV2httpRequest;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use base64::Engine;
use handler_contract::{IamRequest, Recorder};
use lambda_runtime::{Context, LambdaEvent};
use policies::{Bindings, evaluate};
use stack::App;

fn bindings() -> Bindings {
    Bindings::example("dev")
}

/// The function's environment as one deployment gives it, as a `Vars` lookup.
fn env_of(function: &str) -> impl Fn(&str) -> Option<String> {
    let app = App::image_pipeline();
    let f = app
        .function(function)
        .unwrap_or_else(|| panic!("no function {function}"));
    let env = f.resolved_env(&bindings()).unwrap();
    let scoped = f.scoped;
    let b = bindings();
    let queue = app.names.work_queue().resolve(&b).unwrap();
    let queue_url = format!(
        "https://sqs.{}.amazonaws.com/{}/{queue}",
        b.region, b.account
    );
    let interval = stack::Pacing::from_quota(stack::Pacing::DEFAULT_QUOTA_TPS).interval_ms;
    // Known once deployed: the role a scoped function's user sessions are sessions of, the
    // work queue's URL, the pace the deployer derives.
    move |k: &str| match k {
        "USER_ROLE_ARN" if scoped => Some(handler_shared::scope::testing::ROLE_ARN.to_string()),
        "WORK_QUEUE_URL" => Some(queue_url.clone()),
        "LABELS_INTERVAL_MS" => Some(interval.to_string()),
        _ => env
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone()),
    }
}

/// An STS that gives every user a session.
fn sts() -> aws_sdk_sts::Client {
    handler_shared::scope::testing::sts(&[&handler_shared::scope::testing::assume_role(|_| true)])
}

/// Every recorded request must be allowed by the synthesized policy of the role that makes it
/// (a scoped function's user role, whose sessions make its requests, or its execution role),
/// and every declared access must have been exercised.
fn check(function: &str, recorded: &[IamRequest]) {
    assert!(
        !recorded.is_empty(),
        "{function} performed no AWS operation"
    );
    let app = App::image_pipeline();
    let f = app.function(function).unwrap();
    let doc = match f.user_access() {
        Some(user) => user.policy().resolve(&bindings()).unwrap(),
        None => f.policy(&app.names).resolve(&bindings()).unwrap(),
    };
    for r in recorded {
        let d = evaluate(&doc, &r.action, &r.resource);
        assert!(
            d.is_allowed(),
            "{function}: {} needs {} on {}, which its policy does not allow ({d:?})",
            r.operation,
            r.action,
            r.resource
        );
    }
    for access in &f.touches {
        for action in access.actions() {
            assert!(
                recorded.iter().any(|r| r.action == action.as_str()),
                "{function} declares {action} but never used it: the declaration is broader than the code"
            );
        }
    }
}

fn photo(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../../fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn upload_stays_within_its_policy() {
    let rec = Recorder::new((&bindings()).into());
    let put = mock!(aws_sdk_s3::Client::put_object)
        .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&put], |c| c
        .interceptor(rec.clone()));
    let record = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let count = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
    });
    let ddb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&record, &count],
        |c| c.interceptor(rec.clone())
    );
    let ctx = upload_function::Ctx::from_env(sts(), s3, ddb, &env_of("upload")).unwrap();

    let mut direct: serde_json::Value =
        serde_json::from_str(include_str!("../../upload/tests/data/post-upload.json")).unwrap();
    direct["body"] = base64::engine::general_purpose::STANDARD
        .encode(photo("rocket.jpg"))
        .into();
    let resp = upload_function::handler(
        &ctx,
        LambdaEvent::new(serde_json::from_value(direct).unwrap(), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 201);
    let presign =
        serde_json::from_str(include_str!("../../upload/tests/data/post-uploads.json")).unwrap();
    let resp = upload_function::handler(&ctx, LambdaEvent::new(presign, Context::default()))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 201);

    let recorded = rec.requests();
    let actions: Vec<&str> = recorded.iter().map(|r| r.action.as_str()).collect();
    // Each counted against the user's day first; the stored image and its `processing` item;
    // the presigned PUT (authorised as the function when it is used) and its `awaiting_upload`
    // item.
    assert_eq!(
        actions,
        [
            "dynamodb:UpdateItem",
            "s3:PutObject",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "s3:PutObject",
            "dynamodb:PutItem"
        ],
        "{recorded:?}"
    );
    check("upload", &recorded);
}

/// Checks each request against the synthesized policy of the role that makes it.
fn check_against(
    function: &str,
    role: &str,
    doc: &policies::PolicyDocument<String>,
    recorded: &[IamRequest],
) {
    for r in recorded {
        let d = evaluate(doc, &r.action, &r.resource);
        assert!(
            d.is_allowed(),
            "{function} ({role}): {} needs {} on {}, which its policy does not allow ({d:?})",
            r.operation,
            r.action,
            r.resource
        );
    }
}

/// What one run of the process function asked for: as the image's owner (S3, Rekognition,
/// DynamoDB) and as itself (the work queue).
struct ProcessRun {
    as_owner: Vec<IamRequest>,
    as_itself: Vec<IamRequest>,
    backed_off: usize,
}

/// Runs the process function on one work queue record whose S3 event is about `object`
/// (DetectLabels throttled if `throttle`), recording every IAM request its SDK calls imply.
async fn run_process(object: &'static [u8], throttle: bool) -> ProcessRun {
    let rec = Recorder::new((&bindings()).into());
    let own = Recorder::new((&bindings()).into());
    let get = mock!(aws_sdk_s3::Client::get_object).then_output(move || {
        let end = object.len().min(64 * 1024);
        aws_sdk_s3::operation::get_object::GetObjectOutput::builder()
            .content_range(format!("bytes 0-{}/{}", end - 1, object.len()))
            .body(aws_sdk_s3::primitives::ByteStream::from_static(
                &object[..end],
            ))
            .build()
    });
    let tag = mock!(aws_sdk_s3::Client::put_object_tagging).then_output(|| {
        aws_sdk_s3::operation::put_object_tagging::PutObjectTaggingOutput::builder().build()
    });
    let labels = if throttle {
        mock!(aws_sdk_rekognition::Client::detect_labels).then_error(|| {
            aws_sdk_rekognition::operation::detect_labels::DetectLabelsError::ThrottlingException(
                aws_sdk_rekognition::types::error::ThrottlingException::builder().build(),
            )
        })
    } else {
        mock!(aws_sdk_rekognition::Client::detect_labels).then_output(|| {
            aws_sdk_rekognition::operation::detect_labels::DetectLabelsOutput::builder()
                .labels(
                    aws_sdk_rekognition::types::Label::builder()
                        .name("Cat")
                        .confidence(91.6)
                        .build(),
                )
                .build()
        })
    };
    let put = mock!(aws_sdk_dynamodb::Client::put_item)
        .then_output(|| aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build());
    let tx = mock!(aws_sdk_dynamodb::Client::transact_write_items).then_output(|| {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput::builder()
            .build()
    });
    let hold = mock!(aws_sdk_sqs::Client::change_message_visibility).then_output(|| {
        aws_sdk_sqs::operation::change_message_visibility::ChangeMessageVisibilityOutput::builder()
            .build()
    });
    let vars = env_of("process");
    let clients = process_function::OwnClients {
        sts: sts(),
        s3: mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&get, &tag], |c| c
            .interceptor(rec.clone())),
        rekognition: mock_client!(aws_sdk_rekognition, RuleMode::MatchAny, [&labels], |c| c
            .interceptor(rec.clone())),
        dynamodb: mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&put, &tx], |c| c
            .interceptor(rec.clone())),
        sqs: mock_client!(aws_sdk_sqs, RuleMode::MatchAny, [&hold], |c| c
            .interceptor(own.clone())),
    };
    let ctx = process_function::Ctx::from_env(clients, &vars).unwrap();
    // The event names the bucket the stack really creates.
    let bucket = App::image_pipeline()
        .names
        .bucket()
        .resolve(&bindings())
        .unwrap();
    let mut ev: serde_json::Value =
        serde_json::from_str(include_str!("../../process/tests/data/s3-put.json")).unwrap();
    ev["Records"][0]["s3"]["bucket"]["name"] = bucket.into();
    let batch = serde_json::json!({"Records": [{
        "messageId": "m1",
        "receiptHandle": "r1",
        "body": ev.to_string(),
        "attributes": {"ApproximateReceiveCount": "1"},
        "eventSource": "aws:sqs"
    }]});
    // A minute to run, as the function has.
    let mut context = Context::default();
    context.deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64 + 60_000)
        .unwrap_or(u64::MAX);
    let answer = process_function::queue::handler(
        &ctx,
        LambdaEvent::new(serde_json::from_value(batch).unwrap(), context),
    )
    .await
    .unwrap();
    ProcessRun {
        as_owner: rec.requests(),
        as_itself: own.requests(),
        backed_off: answer.batch_item_failures.len(),
    }
}

/// An image is labeled; a non-image (what a presigned URL can store) is tagged and failed;
/// a throttled one is held back in the work queue. Together they use every action the
/// process function declares, and nothing else: as the owner within the user role's
/// policy, as itself within the execution role's.
#[tokio::test]
async fn process_stays_within_its_policy() {
    let labeled = run_process(
        include_bytes!("../../../fixtures/images/chelsea.png"),
        false,
    )
    .await;
    assert_eq!(labeled.backed_off, 0);
    assert!(labeled.as_itself.is_empty(), "{:?}", labeled.as_itself);
    let actions: Vec<&str> = labeled.as_owner.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "s3:GetObjectVersion",
            "s3:ListBucket",
            // `awaiting_upload` to `processing`, when a presigned upload arrives.
            "dynamodb:PutItem",
            "rekognition:DetectLabels",
            "s3:GetObjectVersion",
            // One transaction: the item, the label's entry and its count.
            "dynamodb:PutItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem"
        ]
    );
    let rejected = run_process(b"%PDF-1.7 not an image", false).await;
    assert_eq!(rejected.backed_off, 0);
    let actions: Vec<&str> = rejected
        .as_owner
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(
        actions,
        [
            "s3:GetObjectVersion",
            "s3:ListBucket",
            "s3:PutObjectVersionTagging",
            "dynamodb:PutItem"
        ]
    );
    let throttled = run_process(include_bytes!("../../../fixtures/images/chelsea.png"), true).await;
    assert_eq!(throttled.backed_off, 1);
    let actions: Vec<&str> = throttled
        .as_itself
        .iter()
        .map(|r| r.action.as_str())
        .collect();
    assert_eq!(actions, ["sqs:ChangeMessageVisibility"]);

    let mut recorded = labeled.as_owner;
    recorded.extend(rejected.as_owner);
    check("process", &recorded);
    let app = App::image_pipeline();
    let own = app
        .function("process")
        .unwrap()
        .policy(&app.names)
        .resolve(&bindings())
        .unwrap();
    check_against("process", "execution role", &own, &throttled.as_itself);
}

#[tokio::test]
async fn metadata_stays_within_its_policy() {
    let rec = Recorder::new((&bindings()).into());
    let get = mock!(aws_sdk_dynamodb::Client::get_item)
        .then_output(|| aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder().build());
    let scan = mock!(aws_sdk_dynamodb::Client::scan)
        .then_output(|| aws_sdk_dynamodb::operation::scan::ScanOutput::builder().build());
    let query = mock!(aws_sdk_dynamodb::Client::query)
        .then_output(|| aws_sdk_dynamodb::operation::query::QueryOutput::builder().build());
    let ddb = mock_client!(
        aws_sdk_dynamodb,
        RuleMode::MatchAny,
        [&get, &scan, &query],
        |c| c.interceptor(rec.clone())
    );
    let ctx = metadata_function::Ctx::from_env(sts(), ddb, &env_of("metadata")).unwrap();
    let list: serde_json::Value =
        serde_json::from_str(include_str!("../../metadata/tests/data/get-list.json")).unwrap();
    let mut search = list.clone();
    search["queryStringParameters"] = serde_json::json!({"label": "Cat", "min_confidence": "80"});
    let mut labels = list.clone();
    labels["routeKey"] = "GET /labels".into();
    labels["rawPath"] = "/labels".into();
    labels["requestContext"]["http"]["path"] = "/labels".into();
    for ev in [
        serde_json::from_str(include_str!("../../metadata/tests/data/get-item.json")).unwrap(),
        list,
        search,
        labels,
    ] {
        let ev = serde_json::from_value(ev).unwrap();
        let resp = metadata_function::handler(&ctx, LambdaEvent::new(ev, Context::default()))
            .await
            .unwrap();
        assert!(resp.status_code < 500, "{}", resp.status_code);
    }
    let recorded = rec.requests();
    let actions: Vec<&str> = recorded.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "dynamodb:GetItem",
            "dynamodb:Query",
            "dynamodb:Query",
            "dynamodb:Query"
        ],
        "{recorded:?}"
    );
    check("metadata", &recorded);
}

/// The images function over mocked clients that record its requests: a labeled cat whose
/// size the test can change, and no thumbnail cached yet.
fn images_ctx(
    rec: &Recorder,
    size: &std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> images_function::Ctx {
    use aws_smithy_runtime_api::http::{Response, StatusCode};
    use aws_smithy_types::body::SdkBody;
    let cat = photo("chelsea.png");
    let get = {
        let size = size.clone();
        mock!(aws_sdk_dynamodb::Client::get_item).then_output(move || {
            use aws_sdk_dynamodb::types::AttributeValue;
            aws_sdk_dynamodb::operation::get_item::GetItemOutput::builder()
                .item("status", AttributeValue::S("labeled".into()))
                .item("content_type", AttributeValue::S("image/png".into()))
                .item(
                    "size_bytes",
                    AttributeValue::N(size.load(std::sync::atomic::Ordering::SeqCst).to_string()),
                )
                .build()
        })
    };
    let objects = mock!(aws_sdk_s3::Client::get_object).then_http_response(move || {
        // The thumbnail is not cached yet; the original is the cat.
        Response::new(
            StatusCode::try_from(200).unwrap(),
            SdkBody::from(cat.clone()),
        )
    });
    let missing = mock!(aws_sdk_s3::Client::get_object)
        .match_requests(|r| r.key().is_some_and(|k| k.starts_with("thumbnails/")))
        .then_http_response(|| {
            Response::new(
                StatusCode::try_from(404).unwrap(),
                SdkBody::from("<Error><Code>NoSuchKey</Code></Error>"),
            )
        });
    let put = mock!(aws_sdk_s3::Client::put_object)
        .then_output(|| aws_sdk_s3::operation::put_object::PutObjectOutput::builder().build());
    images_function::Ctx::from_env(
        sts(),
        mock_client!(
            aws_sdk_s3,
            RuleMode::MatchAny,
            [&missing, &objects, &put],
            |c| c.interceptor(rec.clone())
        ),
        mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&get], |c| c
            .interceptor(rec.clone())),
        &env_of("images"),
    )
    .unwrap()
}

/// A GET of image `id`, or of its thumbnail with `tail` = `/thumbnail`.
fn image_event(id: &str, tail: &str) -> LambdaEvent<ApiGatewayV2httpRequest> {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../../images/tests/data/get-image.json")).unwrap();
    let route = format!("GET /images/{{id}}{tail}");
    v["routeKey"] = route.clone().into();
    v["requestContext"]["routeKey"] = route.into();
    v["rawPath"] = format!("/images/{id}{tail}").into();
    v["requestContext"]["http"]["path"] = format!("/images/{id}{tail}").into();
    LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default())
}

/// A labeled image and its thumbnail, made and cached; then an original too large for
/// Lambda, presigned.
#[tokio::test]
async fn images_stays_within_its_policy() {
    let rec = Recorder::new((&bindings()).into());
    let size = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
        photo("chelsea.png").len() as u64,
    ));
    let ctx = images_ctx(&rec, &size);
    let id = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
    let event = |tail: &str| image_event(id, tail);
    for tail in ["", "/thumbnail"] {
        let resp = images_function::handler(&ctx, event(tail)).await.unwrap();
        assert_eq!(resp.status_code, 200, "{tail}: {:?}", resp.body);
    }
    size.store(
        images_function::MAX_INLINE_BYTES + 1,
        std::sync::atomic::Ordering::SeqCst,
    );
    let resp = images_function::handler(&ctx, event("")).await.unwrap();
    assert_eq!(resp.status_code, 302);
    let recorded = rec.requests();
    let got: Vec<(&str, String)> = recorded
        .iter()
        .map(|r| {
            let tail = r.resource.rsplit(':').next().unwrap_or_default();
            (
                r.action.as_str(),
                tail.split('/').take(2).collect::<Vec<_>>().join("/"),
            )
        })
        .collect();
    let pairs = |v: &[(&'static str, &str)]| {
        v.iter()
            .map(|(a, r)| (*a, r.to_string()))
            .collect::<Vec<_>>()
    };
    let bucket = "image-pipeline-dev-123456789012-us-east-1";
    assert_eq!(
        got,
        pairs(&[
            // The original.
            ("dynamodb:GetItem", "table/image-pipeline-dev-images"),
            ("s3:GetObject", &format!("{bucket}/uploads")),
            ("s3:ListBucket", bucket),
            // The thumbnail: not cached, made from the original, cached.
            ("dynamodb:GetItem", "table/image-pipeline-dev-images"),
            ("s3:GetObject", &format!("{bucket}/thumbnails")),
            ("s3:ListBucket", bucket),
            ("s3:GetObject", &format!("{bucket}/uploads")),
            ("s3:ListBucket", bucket),
            ("s3:PutObject", &format!("{bucket}/thumbnails")),
            // A large original: presigned, authorised as the function when it is used.
            ("dynamodb:GetItem", "table/image-pipeline-dev-images"),
            ("s3:GetObject", &format!("{bucket}/uploads")),
            ("s3:ListBucket", bucket),
        ]),
        "{recorded:?}"
    );
    check("images", &recorded);
}

#[test]
fn the_checker_rejects_a_request_outside_the_policy() {
    let outside = IamRequest {
        operation: "S3.DeleteObject".into(),
        action: "s3:DeleteObject".into(),
        resource: "arn:aws:s3:::image-pipeline-dev-123456789012-us-east-1/uploads/x".into(),
    };
    let result = std::panic::catch_unwind(|| check("upload", &[outside]));
    assert!(result.is_err());
}

#[test]
fn handlers_read_the_variables_the_stack_sets() {
    use stack::app::env;
    assert_eq!(upload_function::ENV_UPLOAD_BUCKET, env::UPLOAD_BUCKET);
    assert_eq!(upload_function::ENV_UPLOAD_PREFIX, env::UPLOAD_PREFIX);
    assert_eq!(upload_function::ENV_IMAGES_TABLE, env::IMAGES_TABLE);
    assert_eq!(upload_function::ENV_LABELS_TABLE, env::LABELS_TABLE);
    assert_eq!(upload_function::ENV_UPLOADS_PER_DAY, env::UPLOADS_PER_DAY);
    assert_eq!(
        upload_function::DEFAULT_UPLOADS_PER_DAY,
        u64::from(stack::app::DEFAULT_UPLOADS_PER_DAY)
    );
    // The attribute the upload function writes is the one the table's time to live reads.
    assert_eq!(
        upload_function::EXPIRY_ATTRIBUTE,
        stack::app::EXPIRY_ATTRIBUTE
    );
    assert_eq!(process_function::ENV_IMAGES_TABLE, env::IMAGES_TABLE);
    assert_eq!(process_function::ENV_UPLOAD_PREFIX, env::UPLOAD_PREFIX);
    assert_eq!(process_function::ENV_UPLOAD_BUCKET, env::UPLOAD_BUCKET);
    assert_eq!(process_function::ENV_REJECTED_TAG, env::REJECTED_TAG);
    assert_eq!(
        process_function::queue::ENV_WORK_QUEUE_URL,
        env::WORK_QUEUE_URL
    );
    assert_eq!(
        process_function::queue::ENV_MAX_BACKOFF_SECONDS,
        env::MAX_BACKOFF_SECONDS
    );
    assert_eq!(
        process_function::pace::ENV_INTERVAL_MS,
        env::LABELS_INTERVAL_MS
    );
    assert_eq!(metadata_function::ENV_IMAGES_TABLE, env::IMAGES_TABLE);
    assert_eq!(metadata_function::ENV_LABELS_TABLE, env::LABELS_TABLE);
    assert_eq!(images_function::ENV_IMAGES_TABLE, env::IMAGES_TABLE);
    assert_eq!(images_function::ENV_UPLOAD_BUCKET, env::UPLOAD_BUCKET);
    assert_eq!(images_function::ENV_UPLOAD_PREFIX, env::UPLOAD_PREFIX);
    assert_eq!(images_function::ENV_THUMBNAIL_PREFIX, env::THUMBNAIL_PREFIX);
    assert_eq!(process_function::ENV_LABELS_TABLE, env::LABELS_TABLE);
    assert_eq!(web_function::ENV_UPLOAD_BUCKET, env::UPLOAD_BUCKET);
    assert_eq!(web_function::ENV_USER_POOL_ID, env::USER_POOL_ID);
    assert_eq!(
        web_function::ENV_USER_POOL_CLIENT_ID,
        env::USER_POOL_CLIENT_ID
    );
    assert_eq!(delete_function::ENV_IMAGES_TABLE, env::IMAGES_TABLE);
    assert_eq!(delete_function::ENV_LABELS_TABLE, env::LABELS_TABLE);
    assert_eq!(delete_function::ENV_UPLOAD_BUCKET, env::UPLOAD_BUCKET);
    assert_eq!(delete_function::ENV_UPLOAD_PREFIX, env::UPLOAD_PREFIX);
    assert_eq!(delete_function::ENV_THUMBNAIL_PREFIX, env::THUMBNAIL_PREFIX);
    // And a handler refuses to start without them.
    let none = |_: &str| None;
    let s3 = mock_client!(aws_sdk_s3, []);
    let ddb = mock_client!(aws_sdk_dynamodb, []);
    let err = upload_function::Ctx::from_env(sts(), s3, ddb, &none).unwrap_err();
    assert!(err.contains("UPLOAD_BUCKET"), "{err}");
}

/// The web function performs no AWS operation at all, and the page it serves may send a
/// presigned PUT exactly where the upload function presigns it: on AWS and with the local
/// endpoint override alike.
#[tokio::test]
async fn the_page_may_put_where_the_upload_function_presigns() {
    use aws_sdk_s3::config::{Credentials, Region};
    let web = App::image_pipeline();
    assert!(
        web.function("web").unwrap().touches.is_empty(),
        "the web function reads nothing"
    );
    for (region, endpoint) in [
        ("eu-west-1", None),
        ("us-east-1", None),
        ("cn-north-1", None),
        ("eu-west-1", Some("https://127.0.0.1:4566")),
    ] {
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new(region))
            .credentials_provider(Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ));
        if let Some(e) = endpoint {
            config = config.endpoint_url(e);
        }
        let s3 = aws_sdk_s3::Client::from_conf(config.build());
        let record = mock!(aws_sdk_dynamodb::Client::put_item).then_output(|| {
            aws_sdk_dynamodb::operation::put_item::PutItemOutput::builder().build()
        });
        let count = mock!(aws_sdk_dynamodb::Client::update_item).then_output(|| {
            aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder().build()
        });
        let ddb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&record, &count]);
        let ctx = upload_function::Ctx::from_env(sts(), s3, ddb, &env_of("upload")).unwrap();
        let presign =
            serde_json::from_str(include_str!("../../upload/tests/data/post-uploads.json"))
                .unwrap();
        let resp = upload_function::handler(&ctx, LambdaEvent::new(presign, Context::default()))
            .await
            .unwrap();
        assert_eq!(resp.status_code, 201);
        let Some(aws_lambda_events::encodings::Body::Text(text)) = &resp.body else {
            panic!("no body")
        };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let url = v["upload"]["url"].as_str().unwrap();
        let origin: String = {
            let (scheme, rest) = url.split_once("://").unwrap();
            format!("{scheme}://{}", rest.split('/').next().unwrap())
        };

        let env = env_of("web");
        let vars = move |k: &str| match k {
            "AWS_REGION" => Some(region.to_string()),
            "AWS_ENDPOINT_URL" => endpoint.map(str::to_string),
            // Known once the stack is deployed.
            "USER_POOL_ID" => Some("us-east-1_AbC123".to_string()),
            "USER_POOL_CLIENT_ID" => Some("4f8a2c1e9b7d3a5c6e0f1b2d3c".to_string()),
            _ => env(k),
        };
        let page = web_function::Ctx::from_env(&vars).unwrap();
        let connect = page
            .csp
            .split(';')
            .map(str::trim)
            .find_map(|d| d.strip_prefix("connect-src "))
            .unwrap();
        assert!(
            connect.split_whitespace().any(|o| o == origin),
            "{url} is not within connect-src {connect}"
        );
    }
}

/// A labeled image deleted: the tombstone, its label entries and counts, and every version of
/// the original and the thumbnail.
#[tokio::test]
async fn delete_stays_within_its_policy() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let rec = Recorder::new((&bindings()).into());
    let owner = "7d3f0c2e-5b1a-4c8e-9f60-2a4b6c8d0e1f";
    let id = "3f2b8c1e-5d4a-4b6f-9c2d-1a2b3c4d5e6f";
    let old = std::collections::HashMap::from([
        (
            "uploaded_at".to_string(),
            AttributeValue::S("2026-11-26T21:00:00.123Z".into()),
        ),
        (
            "labels".to_string(),
            AttributeValue::L(vec![AttributeValue::M(std::collections::HashMap::from([
                ("name".to_string(), AttributeValue::S("Cat".into())),
            ]))]),
        ),
    ]);
    let update = mock!(aws_sdk_dynamodb::Client::update_item).then_output(move || {
        aws_sdk_dynamodb::operation::update_item::UpdateItemOutput::builder()
            .set_attributes(Some(old.clone()))
            .build()
    });
    let entry = mock!(aws_sdk_dynamodb::Client::delete_item).then_output(|| {
        aws_sdk_dynamodb::operation::delete_item::DeleteItemOutput::builder()
            .attributes("confidence", AttributeValue::N("98.5".into()))
            .build()
    });
    // Each key has one version until it is deleted.
    let deleted = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let list = {
        let deleted = deleted.clone();
        mock!(aws_sdk_s3::Client::list_object_versions).then_compute_response(move |r| {
            let key = r.prefix().unwrap_or_default().to_string();
            let mut out =
                aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput::builder();
            if !deleted.lock().unwrap().contains(&key) {
                out = out.versions(
                    aws_sdk_s3::types::ObjectVersion::builder()
                        .key(key)
                        .version_id("v1")
                        .build(),
                );
            }
            aws_smithy_mocks::MockResponse::Output(out.build())
        })
    };
    let delete = mock!(aws_sdk_s3::Client::delete_object).then_compute_response(move |r| {
        deleted
            .lock()
            .unwrap()
            .push(r.key().unwrap_or_default().to_string());
        aws_smithy_mocks::MockResponse::Output(
            aws_sdk_s3::operation::delete_object::DeleteObjectOutput::builder().build(),
        )
    });
    let ctx = delete_function::Ctx::from_env(
        sts(),
        mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete], |c| c
            .interceptor(rec.clone())),
        mock_client!(
            aws_sdk_dynamodb,
            RuleMode::MatchAny,
            [&update, &entry],
            |c| c.interceptor(rec.clone())
        ),
        &env_of("delete"),
    )
    .unwrap();
    let v = serde_json::json!({
        "version": "2.0",
        "routeKey": "DELETE /images/{id}",
        "rawPath": format!("/images/{id}"),
        "requestContext": {
            "http": {"method": "DELETE", "path": format!("/images/{id}")},
            "routeKey": "DELETE /images/{id}",
            "authorizer": {"jwt": {"claims": {"sub": owner}, "scopes": []}}
        },
        "pathParameters": {"id": id},
        "isBase64Encoded": false
    });
    let resp = delete_function::handler(
        &ctx,
        LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default()),
    )
    .await
    .unwrap();
    assert_eq!(resp.status_code, 204);
    check("delete", &rec.requests());
}
