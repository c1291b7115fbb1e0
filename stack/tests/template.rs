//! The synthesized template as a contract: a snapshot of the whole document, and the
//! invariants that must hold whatever else changes.

// Test code: fixtures and mocks are ours, so a panic is the right failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use policies::{Bindings, Expect, PolicyDocument, evaluate, matrix};
use serde_json::{Value, json};
use stack::synth::{Format, render};
use stack::template::sub_variables;
use stack::{App, Architecture, Stage, SynthOptions, synthesize};

fn opts(arch: Architecture) -> SynthOptions {
    SynthOptions {
        stage: Stage::default(),
        architecture: arch,
    }
}

fn template_json(arch: Architecture) -> Value {
    let t = synthesize(&App::image_pipeline(), &opts(arch));
    serde_json::to_value(&t).unwrap_or(Value::Null)
}

fn resources_of_type<'a>(t: &'a Value, ty: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .map(|m| m.iter().filter(|(_, r)| r["Type"] == ty).collect())
        .unwrap_or_default()
}

/// Every string in the document, with the key path that leads to it.
fn strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| strings(x, &format!("{path}[{i}]"), out)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| strings(x, &format!("{path}.{k}"), out)),
        _ => {}
    }
}

#[test]
fn snapshot_arm64_yaml() {
    let s = render(
        &App::image_pipeline(),
        &opts(Architecture::Arm64),
        Format::Yaml,
    )
    .map(|s| s.files[0].1.clone())
    .unwrap_or_else(|e| panic!("{e}"));
    insta::assert_snapshot!("template_arm64", s);
}

#[test]
fn synthesis_is_deterministic_and_formats_agree() {
    let app = App::image_pipeline();
    for arch in Architecture::ALL {
        for format in [Format::Yaml, Format::Json] {
            let a = render(&app, &opts(arch), format).unwrap_or_else(|e| panic!("{e}"));
            let b = render(&App::image_pipeline(), &opts(arch), format)
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(a.files, b.files, "{arch} {format:?}");
        }
        let yaml = render(&app, &opts(arch), Format::Yaml).unwrap_or_else(|e| panic!("{e}"));
        let json = render(&app, &opts(arch), Format::Json).unwrap_or_else(|e| panic!("{e}"));
        let from_yaml: Value = serde_yaml::from_str(&yaml.files[0].1).unwrap_or(Value::Null);
        let from_json: Value = serde_json::from_str(&json.files[0].1).unwrap_or(Value::Null);
        assert_ne!(from_json, Value::Null);
        assert_eq!(from_yaml, from_json, "{arch}");
    }
}

#[test]
fn architecture_is_only_the_parameter_default() {
    let arm = template_json(Architecture::Arm64);
    let x86 = template_json(Architecture::X86_64);
    assert_eq!(arm["Parameters"]["Architecture"]["Default"], "arm64");
    assert_eq!(x86["Parameters"]["Architecture"]["Default"], "x86_64");
    for (_, f) in resources_of_type(&arm, "AWS::Lambda::Function") {
        assert_eq!(
            f["Properties"]["Architectures"],
            serde_json::json!([{"Ref": "Architecture"}])
        );
    }
    let mut a = arm.clone();
    a["Parameters"]["Architecture"]["Default"] = "x86_64".into();
    assert_eq!(a, x86);
}

#[test]
fn every_reference_resolves() {
    let t = synthesize(&App::image_pipeline(), &opts(Architecture::Arm64));
    assert_eq!(t.dangling_references(), Vec::<String>::new());
}

#[test]
fn dangling_references_are_detected() {
    use stack::Expr;
    use stack::resources::{Queue, ResourceProps};
    use stack::template::Resource;
    let mut t = synthesize(&App::image_pipeline(), &opts(Architecture::Arm64));
    let mut bad = Resource::new(ResourceProps::Queue(Queue {
        queue_name: Expr::sub("${Nope}-${AWS::Bogus}-${Stage}-${!Escaped}"),
        message_retention_period: 60,
        sqs_managed_sse_enabled: true,
        visibility_timeout: None,
        redrive_policy: None,
        redrive_allow_policy: None,
    }))
    .depends_on("Missing");
    bad.condition = Some("NoSuchCondition".into());
    t.resources.insert("Bad".into(), bad);
    let found = t.dangling_references();
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(found.iter().any(|f| f.contains("`Nope`")));
    assert!(found.iter().any(|f| f.contains("AWS::Bogus")));
    assert!(found.iter().any(|f| f.contains("Missing")));
    assert!(found.iter().any(|f| f.contains("NoSuchCondition")));
}

#[test]
fn each_function_has_its_own_role() {
    let t = template_json(Architecture::Arm64);
    let functions = resources_of_type(&t, "AWS::Lambda::Function");
    assert_eq!(functions.len(), 6);
    let roles: BTreeSet<String> = functions
        .iter()
        .map(|(_, f)| {
            f["Properties"]["Role"]["Fn::GetAtt"][0]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(roles.len(), functions.len(), "roles shared: {roles:?}");
    for r in &roles {
        assert_eq!(t["Resources"][r]["Type"], "AWS::IAM::Role", "{r}");
    }
    // Every other role is a scoped function's user role, trusted by that function's
    // execution role alone.
    let scoped = App::image_pipeline()
        .functions
        .iter()
        .filter(|f| f.scoped)
        .count();
    assert!(scoped >= 1);
    assert_eq!(
        resources_of_type(&t, "AWS::IAM::Role").len(),
        functions.len() + scoped
    );
    for f in App::image_pipeline().functions.iter().filter(|f| f.scoped) {
        let trust = &t["Resources"][f.user_role_id()]["Properties"]["AssumeRolePolicyDocument"];
        assert_eq!(
            trust["Statement"],
            serde_json::json!([{
                "Effect": "Allow",
                "Principal": {"AWS": {"Fn::GetAtt": [f.role_id(), "Arn"]}},
                "Action": ["sts:AssumeRole"]
            }]),
            "{}",
            f.name
        );
    }
    // No managed policies: every permission is in the role's own inline policy.
    for (id, r) in resources_of_type(&t, "AWS::IAM::Role") {
        assert!(r["Properties"].get("ManagedPolicyArns").is_none(), "{id}");
        assert_eq!(
            r["Properties"]["Policies"].as_array().map(Vec::len),
            Some(1),
            "{id}"
        );
        // Every role carries the bootstrap's boundary: the execution role may create no other.
        assert_eq!(
            r["Properties"]["PermissionsBoundary"],
            serde_json::json!({"Ref": stack::synth::PARAM_PERMISSIONS_BOUNDARY}),
            "{id}"
        );
    }
}

/// Every IAM statement in the template: role policies and the bucket policy.
fn statements(t: &Value) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (id, r) in resources_of_type(t, "AWS::IAM::Role") {
        for p in r["Properties"]["Policies"].as_array().into_iter().flatten() {
            for s in p["PolicyDocument"]["Statement"]
                .as_array()
                .into_iter()
                .flatten()
            {
                out.push((id.clone(), s.clone()));
            }
        }
    }
    for (id, r) in resources_of_type(t, "AWS::S3::BucketPolicy") {
        for s in r["Properties"]["PolicyDocument"]["Statement"]
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push((id.clone(), s.clone()));
        }
    }
    out
}

#[test]
fn resource_star_only_for_detect_labels() {
    let t = template_json(Architecture::Arm64);
    let all = statements(&t);
    assert!(all.len() >= 8);
    let mut star_seen = false;
    for (id, s) in all {
        let star = s["Resource"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r == "*");
        if star {
            star_seen = true;
            assert_eq!(
                s["Action"],
                serde_json::json!(["rekognition:DetectLabels"]),
                "{id}"
            );
            assert_eq!(s["Effect"], "Allow");
        }
        // Service-wide wildcards never appear in an Allow.
        if s["Effect"] == "Allow" {
            for a in s["Action"].as_array().into_iter().flatten() {
                let a = a.as_str().unwrap_or("");
                assert!(!a.contains('*'), "{id}: wildcard action {a}");
            }
        }
    }
    assert!(
        star_seen,
        "DetectLabels must be present (and is the one place for *)"
    );
}

#[test]
fn no_literal_region_account_or_partition() {
    let t = template_json(Architecture::Arm64);
    let mut all = Vec::new();
    strings(&t, "", &mut all);
    let regions = [
        "us-", "eu-", "ap-", "sa-", "ca-", "me-", "af-", "il-", "mx-", "cn-",
    ];
    for (path, s) in &all {
        // Substituted variables are fine; literal text around them is what is checked.
        let mut literal = s.clone();
        for v in sub_variables(s) {
            literal = literal.replace(&format!("${{{v}}}"), "");
        }
        assert!(
            !literal.contains("arn:aws"),
            "{path}: literal partition in {s}"
        );
        let digits: Vec<&str> = literal.split(|c: char| !c.is_ascii_digit()).collect();
        assert!(
            digits.iter().all(|d| d.len() != 12),
            "{path}: account id in {s}"
        );
        for word in literal.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let looks_regional = regions.iter().any(|r| word.starts_with(r))
                && word
                    .rsplit('-')
                    .next()
                    .is_some_and(|n| n.parse::<u32>().is_ok());
            assert!(!looks_regional, "{path}: region {word} in {s}");
        }
        assert!(
            !literal.contains(".amazonaws.com/"),
            "{path}: endpoint in {s}"
        );
    }
    // The checker itself notices each kind of literal.
    let bad = Value::String("arn:aws:s3:::b-123456789012-eu-west-1".into());
    let mut found = Vec::new();
    strings(&bad, "", &mut found);
    assert!(found[0].1.contains("arn:aws") && found[0].1.contains("eu-west-1"));
}

#[test]
fn the_compliance_options_turn_on_kms_and_access_logs_by_condition() {
    let t = template_json(Architecture::Arm64);
    let p = &t["Resources"]["UploadsBucket"]["Properties"];
    // AES-256, or the stage's KMS key (with a Bucket Key) when one is given.
    let sse = &p["BucketEncryption"]["ServerSideEncryptionConfiguration"][0];
    assert_eq!(
        sse["ServerSideEncryptionByDefault"],
        serde_json::json!({
            "SSEAlgorithm": {"Fn::If": ["HasKmsKey", "aws:kms", "AES256"]},
            "KMSMasterKeyID": {"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]}
        })
    );
    assert_eq!(
        sse["BucketKeyEnabled"],
        serde_json::json!({"Fn::If": ["HasKmsKey", true, {"Ref": "AWS::NoValue"}]})
    );
    // Server access logs go to the operator's bucket when one is given.
    assert_eq!(
        p["LoggingConfiguration"]["Fn::If"][1]["DestinationBucketName"],
        serde_json::json!({"Ref": "AccessLogBucket"})
    );
    assert_eq!(
        t["Conditions"]["HasAccessLogBucket"],
        serde_json::json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "AccessLogBucket"}, ""]}]})
    );
    // Every log group is encrypted with the stage's key when one is given.
    let groups = t["Resources"]
        .as_object()
        .map(|r| {
            r.values()
                .filter(|v| v["Type"] == "AWS::Logs::LogGroup")
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(groups.len() > 1);
    for g in groups {
        assert_eq!(
            g["Properties"]["KmsKeyId"],
            serde_json::json!({"Fn::If": ["HasKmsKey", {"Ref": "KmsKeyArn"}, {"Ref": "AWS::NoValue"}]})
        );
    }
}

#[test]
fn uploads_bucket_is_locked_down_and_sends_its_events_to_the_work_queue_without_a_cycle() {
    let t = template_json(Architecture::Arm64);
    let b = &t["Resources"]["UploadsBucket"];
    let p = &b["Properties"];
    for flag in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(p["PublicAccessBlockConfiguration"][flag], true, "{flag}");
    }
    let n = &p["NotificationConfiguration"]["QueueConfigurations"][0];
    assert_eq!(n["Event"], "s3:ObjectCreated:*");
    assert_eq!(
        n["Filter"]["S3Key"]["Rules"][0],
        serde_json::json!({"Name": "prefix", "Value": "uploads/"})
    );
    assert_eq!(
        n["Queue"],
        serde_json::json!({"Fn::GetAtt": ["WorkQueue", "Arn"]})
    );
    assert!(
        p["NotificationConfiguration"]
            .get("LambdaConfigurations")
            .is_none()
    );
    // S3 checks it may send when the notification is set: the bucket waits for the queue
    // policy, whose SourceArn is built from the bucket's deterministic name rather than a
    // reference to the bucket.
    assert_eq!(b["DependsOn"], serde_json::json!(["WorkQueuePolicy"]));
    let qp = &t["Resources"]["WorkQueuePolicy"]["Properties"];
    assert_eq!(qp["Queues"], serde_json::json!([{"Ref": "WorkQueue"}]));
    let allow = &qp["PolicyDocument"]["Statement"][0];
    assert_eq!(allow["Effect"], "Allow");
    assert_eq!(
        allow["Principal"],
        serde_json::json!({"Service": "s3.amazonaws.com"})
    );
    assert_eq!(allow["Action"], serde_json::json!(["sqs:SendMessage"]));
    assert_eq!(
        allow["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Sub"],
        format!(
            "arn:${{AWS::Partition}}:s3:::{}",
            p["BucketName"]["Fn::Sub"].as_str().unwrap_or("?")
        )
    );
    assert_eq!(
        allow["Condition"]["StringEquals"]["aws:SourceAccount"],
        serde_json::json!({"Ref": "AWS::AccountId"})
    );
    assert!(!qp.to_string().contains("\"UploadsBucket\""));
    let deny = &qp["PolicyDocument"]["Statement"][1];
    assert_eq!(deny["Effect"], "Deny");
    assert_eq!(deny["Condition"]["Bool"]["aws:SecureTransport"], "false");
    // No function is invoked by S3 directly any more.
    assert!(
        !t["Resources"]
            .as_object()
            .unwrap()
            .values()
            .any(|r| r["Properties"]["Principal"] == "s3.amazonaws.com")
    );
    // TLS only.
    let pol =
        &t["Resources"]["UploadsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0];
    assert_eq!(pol["Effect"], "Deny");
    assert_eq!(pol["Condition"]["Bool"]["aws:SecureTransport"], "false");
    // The bucket's ARN attribute and its objects under it: the form CT.S3.PR.8 reads.
    assert_eq!(
        pol["Resource"],
        serde_json::json!([
            {"Fn::GetAtt": ["UploadsBucket", "Arn"]},
            {"Fn::Join": ["", [{"Fn::GetAtt": ["UploadsBucket", "Arn"]}, "/*"]]}
        ])
    );
}

#[test]
fn table_work_queue_and_dead_letter_path() {
    let t = template_json(Architecture::Arm64);
    let table = &t["Resources"]["ImagesTable"]["Properties"];
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
    assert_eq!(
        table["KeySchema"],
        serde_json::json!([
            {"AttributeName": "owner", "KeyType": "HASH"},
            {"AttributeName": "image_id", "KeyType": "RANGE"}
        ])
    );
    assert_eq!(
        table["AttributeDefinitions"],
        serde_json::json!([
            {"AttributeName": "owner", "AttributeType": "S"},
            {"AttributeName": "image_id", "AttributeType": "S"},
            {"AttributeName": "uploaded_at", "AttributeType": "S"}
        ])
    );
    // GET /metadata: a user's images newest first, one Query of this index.
    assert_eq!(
        table["GlobalSecondaryIndexes"],
        serde_json::json!([{
            "IndexName": "newest-first",
            "KeySchema": [
                {"AttributeName": "owner", "KeyType": "HASH"},
                {"AttributeName": "uploaded_at", "KeyType": "RANGE"}
            ],
            "Projection": {"ProjectionType": "ALL"}
        }])
    );
    assert_eq!(
        table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"],
        true
    );
    // The work queue: retried for hours before the dead-letter queue, never handed to a
    // second batch while a try can still be running.
    let work = &t["Resources"]["WorkQueue"]["Properties"];
    let timeout = t["Resources"]["ProcessFunction"]["Properties"]["Timeout"]
        .as_u64()
        .unwrap();
    assert!(work["VisibilityTimeout"].as_u64().unwrap() >= 6 * timeout);
    assert_eq!(
        work["RedrivePolicy"],
        serde_json::json!({
            "deadLetterTargetArn": {"Fn::GetAtt": ["WorkDeadLetterQueue", "Arn"]},
            "maxReceiveCount": stack::app::MAX_RECEIVES
        })
    );
    assert_eq!(work["SqsManagedSseEnabled"], true);
    let dead = &t["Resources"]["WorkDeadLetterQueue"]["Properties"];
    assert_eq!(dead["RedriveAllowPolicy"]["redrivePermission"], "byQueue");
    assert_eq!(dead["MessageRetentionPeriod"], 14 * 24 * 3600);
    // The mapping: partial batch failures, at most the stage's concurrency.
    let m = &t["Resources"]["ProcessQueueMapping"]["Properties"];
    assert_eq!(
        m["FunctionName"],
        serde_json::json!({"Ref": "ProcessFunction"})
    );
    assert_eq!(
        m["EventSourceArn"],
        serde_json::json!({"Fn::GetAtt": ["WorkQueue", "Arn"]})
    );
    assert_eq!(
        m["FunctionResponseTypes"],
        serde_json::json!(["ReportBatchItemFailures"])
    );
    assert_eq!(
        m["ScalingConfig"]["MaximumConcurrency"],
        serde_json::json!({"Ref": "ProcessMaximumConcurrency"})
    );
    assert!(
        m["BatchSize"]
            .as_u64()
            .is_some_and(|n| (1..=10).contains(&n))
    );
    assert!(t["Resources"].get("ProcessInvokeConfig").is_none());
}

#[test]
fn functions_logs_timeouts_and_environment() {
    let t = template_json(Architecture::Arm64);
    let app = App::image_pipeline();
    for f in &app.functions {
        let p = &t["Resources"][f.function_id()]["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023");
        assert_eq!(p["Handler"], "bootstrap");
        assert_eq!(p["LoggingConfig"]["LogFormat"], "JSON");
        assert_eq!(
            p["LoggingConfig"]["LogGroup"],
            serde_json::json!({"Ref": f.log_group_id()})
        );
        let lg = &t["Resources"][f.log_group_id()]["Properties"];
        assert_eq!(
            lg["RetentionInDays"],
            serde_json::json!({"Ref": "LogRetentionInDays"})
        );
        assert_eq!(
            p["Code"]["S3Key"],
            serde_json::json!({"Ref": f.code_key_param()})
        );
        if !f.routes.is_empty() {
            assert!(
                p["Timeout"].as_u64().is_some_and(|s| s * 1000 < 29_000),
                "{} timeout",
                f.name
            );
        }
    }
    let env = &t["Resources"]["ProcessFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        env["AWS_ENDPOINT_URL_REKOGNITION"],
        serde_json::json!({"Fn::If": ["HasRekognitionEndpoint", {"Ref": "RekognitionEndpoint"}, {"Ref": "AWS::NoValue"}]})
    );
    // The process function checks each record's bucket against this one; the name is built
    // with Fn::Sub, not a Ref, so the bucket's notification on the function makes no cycle.
    assert_eq!(
        env["UPLOAD_BUCKET"],
        t["Resources"]["UploadsBucket"]["Properties"]["BucketName"]
    );
    assert_eq!(env["REJECTED_TAG"], "image-pipeline-rejected=true");
    let up = &t["Resources"]["UploadFunction"]["Properties"]["Environment"]["Variables"];
    assert_eq!(
        up["UPLOAD_BUCKET"],
        t["Resources"]["UploadsBucket"]["Properties"]["BucketName"]
    );
    assert_eq!(up["UPLOAD_PREFIX"], "uploads/");
}

#[test]
fn http_api_routes_each_go_to_their_function() {
    let t = template_json(Architecture::Arm64);
    let routes: BTreeMap<String, String> = resources_of_type(&t, "AWS::ApiGatewayV2::Route")
        .into_iter()
        .map(|(_, r)| {
            (
                r["Properties"]["RouteKey"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                r["Properties"]["Target"]["Fn::Sub"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        routes,
        BTreeMap::from([
            (
                "GET /".to_string(),
                "integrations/${WebIntegration}".to_string()
            ),
            (
                "DELETE /images/{id}".to_string(),
                "integrations/${DeleteIntegration}".to_string()
            ),
            (
                "GET /images/{id}".to_string(),
                "integrations/${ImagesIntegration}".to_string()
            ),
            (
                "GET /images/{id}/thumbnail".to_string(),
                "integrations/${ImagesIntegration}".to_string()
            ),
            (
                "GET /labels".to_string(),
                "integrations/${MetadataIntegration}".to_string()
            ),
            (
                "GET /metadata".to_string(),
                "integrations/${MetadataIntegration}".to_string()
            ),
            (
                "GET /metadata/{id}".to_string(),
                "integrations/${MetadataIntegration}".to_string()
            ),
            (
                "POST /upload".to_string(),
                "integrations/${UploadIntegration}".to_string()
            ),
            (
                "POST /uploads".to_string(),
                "integrations/${UploadIntegration}".to_string()
            ),
        ])
    );
}

#[test]
fn http_api_stage_auto_deploys_throttles_and_logs_access() {
    let t = template_json(Architecture::Arm64);
    let stage = &t["Resources"]["HttpApiDefaultStage"]["Properties"];
    assert_eq!(stage["StageName"], "$default");
    assert_eq!(stage["AutoDeploy"], true);
    assert!(
        stage["DefaultRouteSettings"]["ThrottlingBurstLimit"]
            .as_u64()
            .is_some()
    );
    assert!(
        stage["DefaultRouteSettings"]["ThrottlingRateLimit"]
            .as_f64()
            .is_some()
    );
    assert_eq!(
        stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0],
        "HttpApiAccessLogGroup"
    );
    let format: Value =
        serde_json::from_str(stage["AccessLogSettings"]["Format"].as_str().unwrap_or(""))
            .unwrap_or(Value::Null);
    assert_eq!(format["requestId"], "$context.requestId");
}

/// Every route but the page needs a user pool access token: the JWT authorizer, whose issuer
/// is the stage's pool and audience its app client, and the scope only access tokens carry.
#[test]
fn every_route_but_the_page_needs_an_access_token() {
    let t = template_json(Architecture::Arm64);
    let mut open = Vec::new();
    for (_, r) in resources_of_type(&t, "AWS::ApiGatewayV2::Route") {
        let p = &r["Properties"];
        let key = p["RouteKey"].as_str().unwrap_or("").to_string();
        if p["AuthorizationType"] == "NONE" {
            open.push(key);
            continue;
        }
        assert_eq!(p["AuthorizationType"], "JWT", "{key}");
        assert_eq!(p["AuthorizerId"]["Ref"], "HttpApiAuthorizer", "{key}");
        assert_eq!(
            p["AuthorizationScopes"],
            serde_json::json!(["aws.cognito.signin.user.admin"]),
            "{key}"
        );
    }
    assert_eq!(open, ["GET /"]);
    let a = &t["Resources"]["HttpApiAuthorizer"]["Properties"];
    assert_eq!(a["AuthorizerType"], "JWT");
    assert_eq!(
        a["IdentitySource"],
        serde_json::json!(["$request.header.Authorization"])
    );
    assert_eq!(
        a["JwtConfiguration"]["Issuer"]["Fn::Sub"],
        "https://cognito-idp.${AWS::Region}.${AWS::URLSuffix}/${UserPool}"
    );
    assert_eq!(
        a["JwtConfiguration"]["Audience"],
        serde_json::json!([{"Ref": "UserPoolClient"}])
    );
    let client = &t["Resources"]["UserPoolClient"]["Properties"];
    assert_eq!(client["GenerateSecret"], false);
    assert_eq!(
        client["ExplicitAuthFlows"],
        serde_json::json!(["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])
    );
    assert_eq!(client["PreventUserExistenceErrors"], "ENABLED");
    assert_eq!(client["AccessTokenValidity"], 15);
    assert_eq!(client["WriteAttributes"], serde_json::json!(["email"]));
    let pool = &t["Resources"]["UserPool"]["Properties"];
    assert!(pool.get("Schema").is_none(), "no custom attribute");
    assert_eq!(
        pool["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"]["Fn::If"][0],
        "SelfSignUpEnabled"
    );
    assert_eq!(t["Parameters"]["SelfSignUp"]["Default"], "false");
}

#[test]
fn http_api_permissions_are_scoped_to_each_route() {
    let t = template_json(Architecture::Arm64);
    let arns: BTreeSet<String> = resources_of_type(&t, "AWS::Lambda::Permission")
        .into_iter()
        .filter(|(_, p)| p["Properties"]["Principal"] == "apigateway.amazonaws.com")
        .map(|(_, p)| {
            p["Properties"]["SourceArn"]["Fn::Sub"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let prefix = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${HttpApi}";
    assert_eq!(
        arns,
        BTreeSet::from([
            // The page, `GET /`: the root path only.
            format!("{prefix}/*/GET/"),
            format!("{prefix}/*/DELETE/images/*"),
            format!("{prefix}/*/GET/images/*"),
            format!("{prefix}/*/GET/images/*/thumbnail"),
            format!("{prefix}/*/GET/labels"),
            format!("{prefix}/*/GET/metadata"),
            format!("{prefix}/*/GET/metadata/*"),
            format!("{prefix}/*/POST/upload"),
            format!("{prefix}/*/POST/uploads"),
        ])
    );
}

#[test]
fn outputs_name_what_the_deployer_needs() {
    let t = template_json(Architecture::Arm64);
    let keys: BTreeSet<&str> = t["Outputs"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    for k in [
        "ApiUrl",
        "UploadsBucketName",
        "ImagesTableName",
        "WorkQueueUrl",
        "DeadLetterQueueUrl",
        "DetectLabelsTps",
        "UploadFunctionName",
        "ProcessFunctionName",
        "MetadataFunctionName",
        "UploadRoleArn",
        "ProcessRoleArn",
        "MetadataRoleArn",
    ] {
        assert!(keys.contains(k), "missing output {k}");
    }
    assert_eq!(
        t["Outputs"]["ApiUrl"]["Value"],
        serde_json::json!({"Fn::GetAtt": ["HttpApi", "ApiEndpoint"]})
    );
}

/// Resolves a `Fn::Sub` body (or a plain string) for one deployment.
fn resolve_sub(v: &Value, b: &Bindings) -> String {
    let body = v
        .get("Fn::Sub")
        .and_then(Value::as_str)
        .or(v.as_str())
        .unwrap_or("");
    let mut out = body
        .replace("${AWS::Partition}", &b.partition)
        .replace("${AWS::Region}", &b.region)
        .replace("${AWS::AccountId}", &b.account);
    for (k, val) in &b.refs {
        out = out.replace(&format!("${{{k}}}"), val);
    }
    assert!(!out.contains("${"), "unresolved: {out}");
    out
}

/// The allow/deny matrix, evaluated against the policies exactly as the template carries them.
#[test]
fn matrix_holds_against_the_policies_in_the_template() {
    let t = template_json(Architecture::Arm64);
    let app = App::image_pipeline();
    let all = app.accesses();
    let b = Bindings::example("dev");
    for f in &app.functions {
        let role = &t["Resources"][f.role_id()]["Properties"]["Policies"][0]["PolicyDocument"];
        let mut doc: PolicyDocument<String> = PolicyDocument::new(vec![]);
        for s in role["Statement"].as_array().into_iter().flatten() {
            doc.statement.push(policies::Statement::allow(
                "x",
                s["Action"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        policies::Action::parse(a.as_str().unwrap_or(""))
                            .unwrap_or_else(|e| panic!("{e}"))
                    })
                    .collect(),
                s["Resource"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| resolve_sub(r, &b))
                    .collect(),
            ));
        }
        let rows = matrix(&f.access(&app.names), &all);
        let allows = rows.iter().filter(|r| r.expect == Expect::Allow).count();
        let denies = rows.iter().filter(|r| r.expect == Expect::Deny).count();
        // At least its own logs (two actions); the web function has nothing more.
        assert!(
            allows >= 2 && denies >= 10,
            "{}: {allows} allows, {denies} denies",
            f.name
        );
        for row in rows {
            let resource = row
                .request
                .resource
                .resolve(&b)
                .unwrap_or_else(|e| panic!("{e}"));
            let d = evaluate(&doc, row.request.action.as_str(), &resource);
            assert!(
                row.expect.holds(d),
                "{}: {} on {resource} should be {:?} ({}), got {d:?}",
                f.name,
                row.request.action,
                row.expect,
                row.why
            );
        }
        assert_eq!(
            policies::violations(&f.access(&app.names), &all, &b),
            Ok(vec![])
        );
    }
}

#[test]
fn other_functions_needs_are_denied() {
    let app = App::image_pipeline();
    let all = app.accesses();
    let b = Bindings::example("dev");
    // The upload function's requests are made by its user role's sessions.
    let upload = app
        .function("upload")
        .and_then(stack::app::FunctionSpec::user_access)
        .unwrap_or_else(|| panic!("upload"));
    let denied: BTreeSet<(String, String)> = matrix(&upload, &all)
        .into_iter()
        .filter(|r| r.expect == Expect::Deny)
        .map(|r| {
            (
                r.request.action.to_string(),
                r.request.resource.resolve(&b).unwrap_or_default(),
            )
        })
        .collect();
    for (a, r) in [
        (
            "s3:GetObject",
            format!(
                "arn:aws:s3:::image-pipeline-dev-123456789012-us-east-1/uploads/{}",
                policies::access::SAMPLE_OBJECT
            ),
        ),
        (
            "s3:DeleteObject",
            format!(
                "arn:aws:s3:::image-pipeline-dev-123456789012-us-east-1/uploads/{}",
                policies::access::SAMPLE_OBJECT
            ),
        ),
        // The early item is a PutItem; nothing else may change an item.
        (
            "dynamodb:UpdateItem",
            "arn:aws:dynamodb:us-east-1:123456789012:table/image-pipeline-dev-images".to_string(),
        ),
        (
            "dynamodb:DeleteItem",
            "arn:aws:dynamodb:us-east-1:123456789012:table/image-pipeline-dev-images".to_string(),
        ),
        (
            "dynamodb:GetItem",
            "arn:aws:dynamodb:us-east-1:123456789012:table/image-pipeline-dev-images".to_string(),
        ),
        ("rekognition:DetectLabels", "*".to_string()),
        (
            "sqs:ReceiveMessage",
            "arn:aws:sqs:us-east-1:123456789012:image-pipeline-dev-work".to_string(),
        ),
        (
            "sqs:ChangeMessageVisibility",
            "arn:aws:sqs:us-east-1:123456789012:image-pipeline-dev-work".to_string(),
        ),
    ] {
        assert!(
            denied.contains(&(a.to_string(), r.clone())),
            "upload should be denied {a} on {r}"
        );
    }
}

#[test]
fn every_checkov_suppression_has_a_reason_and_is_listed_in_the_security_notes() {
    let readme = include_str!("../../docs/threat-model.md");
    let t = synthesize(&App::image_pipeline(), &opts(Architecture::Arm64));
    let mut ids = BTreeSet::new();
    for (id, r) in &t.resources {
        for s in r.metadata.iter().flat_map(|m| &m.checkov.skip) {
            assert!(s.comment.len() > 40, "{id}: {} needs a real reason", s.id);
            ids.insert(s.id.clone());
        }
    }
    assert!(!ids.is_empty());
    for id in ids {
        assert!(
            readme.contains(&format!("| {id} ")),
            "docs/threat-model.md, \"Security notes\", lacks {id}"
        );
    }
}

#[test]
fn three_alarms_watch_the_queues_and_the_process_function_and_notify_as_the_stage_says() {
    let t = template_json(Architecture::Arm64);
    let alarms = resources_of_type(&t, "AWS::CloudWatch::Alarm");
    let watched: Vec<(String, Value)> = alarms
        .iter()
        .map(|(_, a)| {
            let p = &a["Properties"];
            (
                format!(
                    "{}/{}",
                    p["Namespace"].as_str().unwrap_or(""),
                    p["MetricName"].as_str().unwrap_or("")
                ),
                p["Dimensions"][0]["Value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        watched,
        [
            (
                "AWS/SQS/ApproximateNumberOfMessagesVisible".to_string(),
                json!({"Fn::GetAtt": ["WorkDeadLetterQueue", "QueueName"]})
            ),
            (
                "AWS/SQS/ApproximateAgeOfOldestMessage".to_string(),
                json!({"Fn::GetAtt": ["WorkQueue", "QueueName"]})
            ),
            (
                "AWS/Lambda/Errors".to_string(),
                json!({"Ref": "ProcessFunction"})
            ),
        ]
    );
    let oldest = &t["Resources"]["OldestMessageAlarm"]["Properties"];
    assert_eq!(
        oldest["Threshold"],
        json!({"Ref": "OldestMessageAlarmSeconds"})
    );
    // A topic given wins; otherwise the stack's own topic, so an alarm always has an action.
    let notify =
        json!([{"Fn::If": ["AlarmsToTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}]);
    for (_, a) in &alarms {
        assert_eq!(a["Properties"]["AlarmActions"], notify);
        assert_eq!(a["Properties"]["OKActions"], notify);
    }
    // The stack's topic exists unless the operator's is given; an address is subscribed.
    let topic = &t["Resources"]["AlarmTopic"];
    assert_eq!(topic["Condition"], "AlarmsToStackTopic");
    assert_eq!(
        t["Conditions"]["AlarmsToStackTopic"],
        json!({"Fn::Equals": [{"Ref": "AlarmTopicArn"}, ""]})
    );
    assert_eq!(
        topic["Properties"]["Subscription"],
        json!({"Fn::If": ["AlarmsToEmail",
            [{"Endpoint": {"Ref": "AlarmEmail"}, "Protocol": "email"}], {"Ref": "AWS::NoValue"}]})
    );
}
