//! Deployer logic against mocked AWS clients: every stack state a deploy can meet, the two
//! "no changes" answers, a failed create, throttling, a bucket full of versions, and the
//! credential and region mistakes users make.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_cloudformation::Client as Cfn;
use aws_sdk_cloudformation::operation::describe_stacks::{
    DescribeStacksError, DescribeStacksOutput,
};
use aws_sdk_cloudformation::types::{
    ChangeSetStatus, ChangeSetSummary, ExecutionStatus, ResourceStatus, Stack, StackEvent,
    StackStatus,
};
use aws_smithy_mocks::{Rule, RuleMode, mock, mock_client};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::error::ErrorMetadata;
use aws_smithy_types::retry::RetryConfig;
use deployer::cloud::aws::{AwsError, Target, whoami};
use deployer::cloud::cfn::StackProgress;
use deployer::cloud::cfn::{
    self, CfnError, ChangeSetRequest, Planned, Prepared, StackEvent as Event, StackOps,
};
use deployer::progress::Progress;

const STACK: &str = "image-pipeline-dev";
const FAST: Duration = Duration::from_millis(1);

fn retries() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(4)
        .with_initial_backoff(Duration::from_millis(1))
}

fn cfn_client(rules: &[&Rule]) -> Cfn {
    mock_client!(aws_sdk_cloudformation, RuleMode::MatchAny, rules, |c| c
        .retry_config(retries()))
}

fn stack(status: StackStatus) -> DescribeStacksOutput {
    DescribeStacksOutput::builder()
        .stacks(
            Stack::builder()
                .stack_name(STACK)
                .stack_id(
                    "arn:aws:cloudformation:eu-west-1:123456789012:stack/image-pipeline-dev/1",
                )
                .stack_status(status)
                .creation_time(aws_smithy_types::DateTime::from_secs(0))
                .build(),
        )
        .build()
}

fn missing() -> DescribeStacksError {
    DescribeStacksError::generic(
        ErrorMetadata::builder()
            .code("ValidationError")
            .message("Stack with id image-pipeline-dev does not exist")
            .build(),
    )
}

fn no_events() -> Rule {
    mock!(Cfn::describe_stack_events).then_output(|| {
        aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput::builder().build()
    })
}

fn no_change_sets() -> Rule {
    mock!(Cfn::list_change_sets).then_output(|| {
        aws_sdk_cloudformation::operation::list_change_sets::ListChangeSetsOutput::builder().build()
    })
}

/// Records what the deployer told the user.
#[derive(Default)]
struct Said(Mutex<Vec<String>>);

impl Progress for Said {
    fn step(&self, m: &str) {
        self.0.lock().unwrap().push(m.to_string());
    }
}

impl StackProgress for Said {
    fn event(&self, e: &Event, _: usize) {
        self.0
            .lock()
            .unwrap()
            .push(format!("{} {}", e.logical_id, e.status));
    }
}

fn ops<'a>(cfn: &'a Cfn, said: &'a Said) -> StackOps<'a> {
    StackOps {
        cfn,
        name: STACK,
        poll: FAST,
        progress: said,
        role_arn: None,
    }
}

impl Said {
    fn all(&self) -> String {
        self.0.lock().unwrap().join("\n")
    }
}

async fn prepare(client: &Cfn, said: &Said, wait: Duration) -> Result<Prepared, CfnError> {
    ops(client, said).prepare(wait).await
}

#[tokio::test]
async fn a_missing_stack_is_created() {
    let d = mock!(Cfn::describe_stacks).then_error(missing);
    let c = cfn_client(&[&d]);
    assert_eq!(
        prepare(&c, &Said::default(), FAST).await.unwrap(),
        Prepared::Create
    );
}

#[tokio::test]
async fn a_complete_stack_is_updated_and_leftover_change_sets_left_alone() {
    let d = mock!(Cfn::describe_stacks).then_output(|| stack(StackStatus::UpdateComplete));
    let list = mock!(Cfn::list_change_sets).then_output(|| {
        aws_sdk_cloudformation::operation::list_change_sets::ListChangeSetsOutput::builder()
            .summaries(
                ChangeSetSummary::builder()
                    .change_set_name("image-pipeline-1700000000000")
                    .execution_status(ExecutionStatus::Available)
                    .status(ChangeSetStatus::CreateComplete)
                    .build(),
            )
            .summaries(
                ChangeSetSummary::builder()
                    .change_set_name("someone-elses")
                    .execution_status(ExecutionStatus::Available)
                    .build(),
            )
            .build()
    });
    let del = mock!(Cfn::delete_change_set)
        .match_requests(|r| r.change_set_name() == Some("image-pipeline-1700000000000"))
        .then_output(|| {
            aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput::builder()
                .build()
        });
    let c = cfn_client(&[&d, &list, &del]);
    let said = Said::default();
    assert_eq!(prepare(&c, &said, FAST).await.unwrap(), Prepared::Update);
    assert_eq!(
        del.num_calls(),
        0,
        "another run may be about to execute it: only what this run made is deleted"
    );
    assert!(
        said.all().contains("left by an earlier run"),
        "{}",
        said.all()
    );
}

#[tokio::test]
async fn rollback_complete_is_deleted_then_created_saying_so() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::RollbackComplete))
        .output(|| stack(StackStatus::DeleteInProgress))
        .output(|| stack(StackStatus::DeleteComplete))
        .build();
    let res = mock!(Cfn::describe_stack_resources).then_output(|| {
        aws_sdk_cloudformation::operation::describe_stack_resources::DescribeStackResourcesOutput::builder().build()
    });
    let del = mock!(Cfn::delete_stack).then_output(|| {
        aws_sdk_cloudformation::operation::delete_stack::DeleteStackOutput::builder().build()
    });
    let ev = no_events();
    let c = cfn_client(&[&d, &res, &del, &ev]);
    let said = Said::default();
    assert_eq!(
        prepare(&c, &said, Duration::from_secs(5)).await.unwrap(),
        Prepared::Create
    );
    assert_eq!(del.num_calls(), 1);
    assert!(
        said.all()
            .contains("ROLLBACK_COMPLETE (its creation failed earlier); deleting it"),
        "{}",
        said.all()
    );
}

#[tokio::test]
async fn update_rollback_failed_continues_the_rollback() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::UpdateRollbackFailed))
        .output(|| stack(StackStatus::UpdateRollbackCompleteCleanupInProgress))
        .output(|| stack(StackStatus::UpdateRollbackComplete))
        .build();
    let cont = mock!(Cfn::continue_update_rollback).then_output(|| {
        aws_sdk_cloudformation::operation::continue_update_rollback::ContinueUpdateRollbackOutput::builder().build()
    });
    let list = no_change_sets();
    let c = cfn_client(&[&d, &cont, &list]);
    let said = Said::default();
    assert_eq!(
        prepare(&c, &said, Duration::from_secs(5)).await.unwrap(),
        Prepared::Update
    );
    assert_eq!(cont.num_calls(), 1);
    assert!(
        said.all().contains("continuing the rollback"),
        "{}",
        said.all()
    );
}

#[tokio::test]
async fn another_deploy_in_progress_is_waited_for() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::UpdateInProgress))
        .times(3)
        .output(|| stack(StackStatus::UpdateComplete))
        .build();
    let list = no_change_sets();
    let c = cfn_client(&[&d, &list]);
    let said = Said::default();
    assert_eq!(
        prepare(&c, &said, Duration::from_secs(5)).await.unwrap(),
        Prepared::Update
    );
    assert!(
        said.all()
            .contains("another deployment is running; waiting"),
        "{}",
        said.all()
    );
}

#[tokio::test]
async fn another_deploy_that_does_not_finish_is_refused_clearly() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .output(|| stack(StackStatus::UpdateInProgress))
        .repeatedly()
        .build();
    let c = cfn_client(&[&d]);
    let err = prepare(&c, &Said::default(), Duration::from_millis(20))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, CfnError::Busy { .. }), "{msg}");
    assert!(
        msg.contains("UPDATE_IN_PROGRESS: another deployment is running"),
        "{msg}"
    );
}

#[tokio::test]
async fn review_in_progress_is_created_again() {
    let d = mock!(Cfn::describe_stacks).then_output(|| stack(StackStatus::ReviewInProgress));
    let list = no_change_sets();
    let c = cfn_client(&[&d, &list]);
    assert_eq!(
        prepare(&c, &Said::default(), FAST).await.unwrap(),
        Prepared::Create
    );
}

#[tokio::test]
async fn delete_failed_is_refused_with_the_fix() {
    let d = mock!(Cfn::describe_stacks).then_output(|| stack(StackStatus::DeleteFailed));
    let c = cfn_client(&[&d]);
    let err = prepare(&c, &Said::default(), FAST).await.unwrap_err();
    assert!(err.to_string().contains("DELETE_FAILED"), "{err}");
    assert!(err.to_string().contains("cargo xtask teardown"), "{err}");
}

fn request(kind: Prepared) -> ChangeSetRequest {
    ChangeSetRequest {
        kind,
        template_url: None,
        template_body: "{}".into(),
        parameters: Default::default(),
        tags: Default::default(),
        imports: Vec::new(),
        rollback: None,
        revert_drift: false,
    }
}

async fn empty_change_set(reason: &'static str) {
    let create = mock!(Cfn::create_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput::builder()
            .id("cs")
            .stack_id("stack")
            .build()
    });
    let describe = mock!(Cfn::describe_change_set).then_output(move || {
        aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::Failed)
            .status_reason(reason)
            .build()
    });
    let del = mock!(Cfn::delete_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput::builder()
            .build()
    });
    let c = cfn_client(&[&create, &describe, &del]);
    let planned = ops(&c, &Said::default())
        .create_change_set(&request(Prepared::Update), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(planned, Planned::NoChanges, "{reason}");
    assert_eq!(del.num_calls(), 1, "the empty change set is deleted");
}

#[tokio::test]
async fn both_empty_change_set_messages_mean_no_changes() {
    empty_change_set(
        "The submitted information didn't contain changes. Submit different information to create a change set.",
    )
    .await;
    empty_change_set("No updates are to be performed.").await;
}

#[tokio::test]
async fn any_other_failed_change_set_is_an_error_with_the_reason() {
    let create = mock!(Cfn::create_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput::builder()
            .build()
    });
    let describe = mock!(Cfn::describe_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput::builder()
            .status(ChangeSetStatus::Failed)
            .status_reason("Template format error: Unresolved resource dependencies [Nope]")
            .build()
    });
    let del = mock!(Cfn::delete_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::delete_change_set::DeleteChangeSetOutput::builder()
            .build()
    });
    let c = cfn_client(&[&create, &describe, &del]);
    let err = ops(&c, &Said::default())
        .create_change_set(&request(Prepared::Create), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Unresolved resource dependencies"),
        "{err}"
    );
}

fn event(id: &str, logical: &str, kind: &str, status: ResourceStatus, reason: &str) -> StackEvent {
    StackEvent::builder()
        .event_id(id)
        .stack_id("stack")
        .stack_name(STACK)
        .logical_resource_id(logical)
        .resource_type(kind)
        .resource_status(status)
        .resource_status_reason(reason)
        .timestamp(aws_smithy_types::DateTime::from_secs(1))
        .build()
}

/// Executes a change set against a stack that goes from `running` to `end`, whose events are
/// `events` (newest first, as CloudFormation lists them), its progress told to `said`; the
/// error it ends with.
async fn execute_ending_in(
    said: &Said,
    running: StackStatus,
    end: StackStatus,
    events: Vec<StackEvent>,
) -> CfnError {
    let exec = mock!(Cfn::execute_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput::builder()
            .build()
    });
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .output(move || stack(running.clone()))
        .output(move || stack(end.clone()))
        .repeatedly()
        .build();
    let ev = mock!(Cfn::describe_stack_events).then_output(move || {
        aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput::builder()
            .set_stack_events(Some(events.clone()))
            .build()
    });
    let c = cfn_client(&[&exec, &d, &ev]);
    ops(&c, said)
        .execute("image-pipeline-1", ("", ""), 20, Duration::from_secs(5))
        .await
        .unwrap_err()
}

/// An update rolled back by a trigger's alarm has no failed resource: the stack's own
/// rollback event says why, and the error says it.
#[tokio::test]
async fn an_update_rolled_back_by_an_alarm_says_which() {
    let why = "Rollback trigger arn:aws:cloudwatch:eu-west-1:123456789012:alarm:image-pipeline-prod-process-errors is in ALARM";
    let stack_type = "AWS::CloudFormation::Stack";
    let err = execute_ending_in(
        &Said::default(),
        StackStatus::UpdateInProgress,
        StackStatus::UpdateRollbackComplete,
        vec![
            event(
                "4",
                STACK,
                stack_type,
                ResourceStatus::UpdateRollbackComplete,
                "",
            ),
            event(
                "3",
                STACK,
                stack_type,
                ResourceStatus::UpdateRollbackInProgress,
                why,
            ),
            event(
                "2",
                "ProcessFunction",
                "AWS::Lambda::Function",
                ResourceStatus::UpdateComplete,
                "",
            ),
            event(
                "1",
                STACK,
                stack_type,
                ResourceStatus::UpdateInProgress,
                "User Initiated",
            ),
        ],
    )
    .await;
    let msg = err.to_string();
    assert!(msg.contains("ended in UPDATE_ROLLBACK_COMPLETE"), "{msg}");
    assert!(msg.contains(why), "{msg}");
    assert!(!msg.contains("reported no failed resource"), "{msg}");
}

#[tokio::test]
async fn a_failed_create_names_each_failed_resource_and_why() {
    let said = Said::default();
    let err = execute_ending_in(
        &said,
        StackStatus::CreateInProgress,
        StackStatus::RollbackComplete,
        vec![
            event(
                "5",
                STACK,
                "AWS::CloudFormation::Stack",
                ResourceStatus::RollbackComplete,
                "",
            ),
            event(
                "4",
                "ImagesTable",
                "AWS::DynamoDB::Table",
                ResourceStatus::CreateFailed,
                "Resource creation cancelled",
            ),
            event(
                "3",
                "UploadsBucket",
                "AWS::S3::Bucket",
                ResourceStatus::CreateFailed,
                "image-pipeline-dev-123-eu-west-1 already exists",
            ),
            event(
                "2",
                "UploadsBucket",
                "AWS::S3::Bucket",
                ResourceStatus::CreateInProgress,
                "",
            ),
            event(
                "1",
                "ProcessFailureQueue",
                "AWS::SQS::Queue",
                ResourceStatus::CreateComplete,
                "",
            ),
        ],
    )
    .await;
    let msg = err.to_string();
    match &err {
        CfnError::Failed {
            status, failures, ..
        } => {
            assert_eq!(*status, StackStatus::RollbackComplete);
            assert_eq!(
                failures.len(),
                1,
                "the cancellation is not a cause: {failures:?}"
            );
            assert_eq!(failures[0].logical_id, "UploadsBucket");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(msg.contains("ended in ROLLBACK_COMPLETE"), "{msg}");
    assert!(msg.contains("UploadsBucket (AWS::S3::Bucket) CREATE_FAILED: image-pipeline-dev-123-eu-west-1 already exists"), "{msg}");
    // Events were shown oldest first, each once.
    let lines = said.all();
    let queue = lines.find("ProcessFailureQueue CREATE_COMPLETE").unwrap();
    let bucket = lines.find("UploadsBucket CREATE_FAILED").unwrap();
    assert!(queue < bucket, "{lines}");
    assert_eq!(
        lines.matches("UploadsBucket CREATE_FAILED").count(),
        1,
        "{lines}"
    );
}

fn throttled() -> HttpResponse {
    HttpResponse::new(
        StatusCode::try_from(400).unwrap(),
        SdkBody::from(
            r#"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error><RequestId>1</RequestId></ErrorResponse>"#,
        ),
    )
}

#[tokio::test]
async fn throttled_cloudformation_calls_are_retried() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .http_response(throttled)
        .times(2)
        .output(|| stack(StackStatus::CreateComplete))
        .build();
    let c = cfn_client(&[&d]);
    let info = cfn::describe(&c, STACK).await.unwrap().unwrap();
    assert_eq!(info.status, StackStatus::CreateComplete);
    assert_eq!(d.num_calls(), 3);
}

#[tokio::test]
async fn throttling_that_never_ends_is_an_error_not_a_panic() {
    let d = mock!(Cfn::describe_stacks)
        .sequence()
        .http_response(throttled)
        .repeatedly()
        .build();
    let c = cfn_client(&[&d]);
    let err = cfn::describe(&c, STACK).await.unwrap_err();
    assert!(err.to_string().contains("Throttling"), "{err}");
    assert_eq!(d.num_calls(), 4);
}

/// A bucket with 2,500 versions and 300 delete markers, as S3 would list it (1,000 per page).
#[tokio::test]
async fn emptying_a_bucket_deletes_every_version_and_marker_in_batches() {
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::types::{DeleteMarkerEntry, ObjectVersion};

    #[derive(Clone)]
    enum Entry {
        Version(String, String),
        Marker(String, String),
    }
    let mut all = Vec::new();
    for i in 0..2500 {
        all.push(Entry::Version(
            format!("uploads/{}", i % 900),
            format!("v{i}"),
        ));
    }
    for i in 0..300 {
        all.push(Entry::Marker(format!("uploads/{i}"), format!("m{i}")));
    }
    let store = Arc::new(Mutex::new(all));
    let batches = Arc::new(Mutex::new(Vec::new()));

    let s = store.clone();
    let list = mock!(aws_sdk_s3::Client::list_object_versions).then_compute_output(move |_| {
        let page: Vec<Entry> = s.lock().unwrap().iter().take(1000).cloned().collect();
        let mut out = ListObjectVersionsOutput::builder();
        for e in page {
            out = match e {
                Entry::Version(k, v) => {
                    out.versions(ObjectVersion::builder().key(k).version_id(v).build())
                }
                Entry::Marker(k, v) => {
                    out.delete_markers(DeleteMarkerEntry::builder().key(k).version_id(v).build())
                }
            };
        }
        out.build()
    });
    let (s, b) = (store.clone(), batches.clone());
    let delete = mock!(aws_sdk_s3::Client::delete_objects).then_compute_output(move |req| {
        let gone: Vec<(String, Option<String>)> = req
            .delete()
            .map(|d| {
                d.objects()
                    .iter()
                    .map(|o| (o.key().to_string(), o.version_id().map(str::to_string)))
                    .collect()
            })
            .unwrap_or_default();
        b.lock().unwrap().push(gone.len());
        s.lock().unwrap().retain(|e| {
            let (k, v) = match e {
                Entry::Version(k, v) | Entry::Marker(k, v) => (k, v),
            };
            !gone
                .iter()
                .any(|(gk, gv)| gk == k && gv.as_deref() == Some(v.as_str()))
        });
        DeleteObjectsOutput::builder().build()
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete]);
    let n = deployer::cloud::assets::empty_bucket(&s3, "image-pipeline-dev-123-eu-west-1", "123")
        .await
        .unwrap();
    assert_eq!(n, 2800);
    assert!(store.lock().unwrap().is_empty());
    let sizes = batches.lock().unwrap().clone();
    assert!(sizes.iter().all(|&n| n <= 1000), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 2800);
}

#[tokio::test]
async fn objects_s3_refuses_to_delete_fail_the_teardown() {
    use aws_sdk_s3::operation::delete_objects::DeleteObjectsOutput;
    use aws_sdk_s3::operation::list_object_versions::ListObjectVersionsOutput;
    use aws_sdk_s3::types::{Error as S3Error, ObjectVersion};
    let list = mock!(aws_sdk_s3::Client::list_object_versions).then_output(|| {
        ListObjectVersionsOutput::builder()
            .versions(
                ObjectVersion::builder()
                    .key("uploads/a")
                    .version_id("1")
                    .build(),
            )
            .build()
    });
    let delete = mock!(aws_sdk_s3::Client::delete_objects).then_output(|| {
        DeleteObjectsOutput::builder()
            .errors(
                S3Error::builder()
                    .key("uploads/a")
                    .code("AccessDenied")
                    .message("Access Denied")
                    .build(),
            )
            .build()
    });
    let s3 = mock_client!(aws_sdk_s3, RuleMode::MatchAny, [&list, &delete]);
    let err = deployer::cloud::assets::empty_bucket(&s3, "b", "123")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("uploads/a (Access Denied)"),
        "{err}"
    );
}

fn aws() -> Target {
    Target::Aws {
        region: "eu-west-1".into(),
        profile: None,
    }
}

#[tokio::test]
async fn expired_credentials_are_a_clear_error() {
    let r = mock!(aws_sdk_sts::Client::get_caller_identity).then_error(|| {
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError::generic(
            ErrorMetadata::builder()
                .code("ExpiredToken")
                .message("The security token included in the request is expired")
                .build(),
        )
    });
    let sts = mock_client!(aws_sdk_sts, [&r]);
    let err = whoami(&sts, &aws(), "eu-west-1").await.unwrap_err();
    assert!(matches!(err, AwsError::ExpiredCredentials { .. }), "{err}");
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn missing_credentials_are_a_clear_error() {
    // A real client whose credential chain finds nothing: no request is ever sent.
    let conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("eu-west-1"))
        .build();
    let sts = aws_sdk_sts::Client::from_conf(conf);
    let err = whoami(&sts, &aws(), "eu-west-1").await.unwrap_err();
    assert!(matches!(err, AwsError::NoCredentials { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no AWS credentials found"),
        "{err}"
    );
}

/// A credential chain that finds nothing, as the SDK's default chain does on a machine with no
/// credentials (it ends in the instance-metadata step, which fails).
#[derive(Debug)]
struct NoCredentialsAnywhere;

impl aws_credential_types::provider::ProvideCredentials for NoCredentialsAnywhere {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::provider_error(
                "failed to load IMDS session token: request forbidden",
            ),
        ))
    }
}

fn sts_at(
    endpoint: &str,
    credentials: Option<aws_sdk_sts::config::SharedCredentialsProvider>,
) -> aws_sdk_sts::Client {
    let mut conf = aws_sdk_sts::Config::builder()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("eu-west-1"))
        .endpoint_url(endpoint)
        .retry_config(aws_sdk_sts::config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_sdk_sts::config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(5))
                .build(),
        );
    conf = match credentials {
        Some(c) => conf.credentials_provider(c),
        None => conf.credentials_provider(aws_sdk_sts::config::Credentials::new(
            "AKIDEXAMPLE",
            "secret",
            None,
            None,
            "test",
        )),
    };
    aws_sdk_sts::Client::from_conf(conf.build())
}

/// Each way of failing to learn who is calling is one line saying what is wrong and what to
/// do; the SDK's chain (a thousand characters of nested debug output) is kept for `--verbose`.
#[tokio::test]
async fn identity_failures_are_one_line_each() {
    // A chain that finds no credentials anywhere.
    let none = sts_at(
        "https://127.0.0.1:9",
        Some(aws_sdk_sts::config::SharedCredentialsProvider::new(
            NoCredentialsAnywhere,
        )),
    );
    let no_creds = whoami(&none, &aws(), "eu-west-1").await.unwrap_err();
    // Nothing listens on the port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let refused = whoami(
        &sts_at(&format!("http://127.0.0.1:{port}"), None),
        &aws(),
        "eu-west-1",
    )
    .await
    .unwrap_err();
    // A host name that cannot resolve, as for a region that does not exist.
    let nowhere = whoami(
        &sts_at("https://sts.xx-nowhere-1.amazonaws.invalid", None),
        &aws(),
        "xx-nowhere-1",
    )
    .await
    .unwrap_err();
    // Credentials the service rejects.
    let r = mock!(aws_sdk_sts::Client::get_caller_identity).then_error(|| {
        aws_sdk_sts::operation::get_caller_identity::GetCallerIdentityError::generic(
            ErrorMetadata::builder()
                .code("InvalidClientTokenId")
                .message("The security token included in the request is invalid.")
                .build(),
        )
    });
    let rejected = whoami(&mock_client!(aws_sdk_sts, [&r]), &aws(), "eu-west-1")
        .await
        .unwrap_err();
    let cases = [
        (&no_creds, "no AWS credentials found"),
        (&refused, "cannot reach STS at AWS eu-west-1"),
        (&nowhere, "cannot reach STS at AWS eu-west-1"),
        (
            &rejected,
            "the AWS credentials were rejected (The security token included in the request is invalid.)",
        ),
    ];
    for (err, says) in cases {
        let line = err.to_string();
        assert!(line.starts_with(says), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        assert!(!line.contains("DispatchFailure"), "no debug dump: {line}");
        assert!(line.len() < 400, "{} characters: {line}", line.len());
    }
    assert!(
        matches!(no_creds, AwsError::NoCredentials { .. }),
        "{no_creds:?}"
    );
    assert!(
        refused.to_string().contains("check the network"),
        "{refused}"
    );
    assert!(
        matches!(nowhere, AwsError::Unreachable { .. }),
        "{nowhere:?}"
    );
    // The whole chain is still there for --verbose.
    match &no_creds {
        AwsError::NoCredentials { detail } => assert!(detail.contains("IMDS"), "{detail}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_region_is_refused_before_any_call() {
    for (region, expect) in [
        ("", "is not an AWS region code"),
        ("Ireland", "is not an AWS region code"),
        ("eu-west", "is not an AWS region code"),
    ] {
        let target = Target::Aws {
            region: region.into(),
            profile: None,
        };
        let err = deployer::cloud::aws::sdk_config(&target)
            .await
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains(expect), "{region}: {err}");
    }
    // A well-formed region this code has never heard of is the service's to refuse.
    let newer = Target::Aws {
        region: "mars-north-1".into(),
        profile: None,
    };
    assert!(deployer::cloud::aws::sdk_config(&newer).await.is_ok());
}

#[tokio::test]
async fn a_stack_under_review_counts_as_settled() {
    // It waits for a change set to be executed: nothing will move it, so waiting would last
    // until the timeout (teardown of a stack whose first deploy stopped there).
    let d = mock!(Cfn::describe_stacks).then_output(|| stack(StackStatus::ReviewInProgress));
    let c = cfn_client(&[&d]);
    let info = ops(&c, &Said::default())
        .wait_settled(Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(info.map(|i| i.status), Some(StackStatus::ReviewInProgress));
}

#[tokio::test]
async fn a_stack_refused_before_any_resource_says_why() {
    let exec = mock!(Cfn::execute_change_set).then_output(|| {
        aws_sdk_cloudformation::operation::execute_change_set::ExecuteChangeSetOutput::builder()
            .build()
    });
    let d = mock!(Cfn::describe_stacks).then_output(|| stack(StackStatus::RollbackComplete));
    let ev = mock!(Cfn::describe_stack_events).then_output(|| {
        aws_sdk_cloudformation::operation::describe_stack_events::DescribeStackEventsOutput::builder()
            .stack_events(event("2", STACK, "AWS::CloudFormation::Stack", ResourceStatus::CreateFailed, "Validation failed with 1 error(s)"))
            .build()
    });
    let c = cfn_client(&[&exec, &d, &ev]);
    let err = ops(&c, &Said::default())
        .execute("image-pipeline-1", ("", ""), 20, Duration::from_secs(5))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("CREATE_FAILED: Validation failed"), "{msg}");
    assert!(!msg.contains("reported no failed resource"), "{msg}");
}

mod labels_quota {
    use super::*;
    use aws_sdk_servicequotas::Client as Quotas;
    use aws_sdk_servicequotas::operation::list_aws_default_service_quotas::ListAwsDefaultServiceQuotasOutput;
    use aws_sdk_servicequotas::operation::list_service_quotas::{
        ListServiceQuotasError, ListServiceQuotasOutput,
    };
    use aws_sdk_servicequotas::types::ServiceQuota;
    use deployer::cloud::quotas::{QuotaSource, detect_labels_quota};

    const DETECT_LABELS: &str = "Transactions per second per account for the Amazon Rekognition Image operation DetectLabels";

    fn quota(name: &str, value: f64) -> ServiceQuota {
        ServiceQuota::builder()
            .service_code("rekognition")
            .quota_code("L-0000")
            .quota_name(name)
            .value(value)
            .build()
    }

    fn client(rules: &[&Rule]) -> Quotas {
        mock_client!(aws_sdk_servicequotas, RuleMode::MatchAny, rules)
    }

    fn run(c: &Quotas) -> Result<Option<(f64, QuotaSource)>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(detect_labels_quota(c))
            .map(|found| found.map(|(f, source)| (f.value, source)))
    }

    #[test]
    fn the_applied_value_wins_over_the_default() {
        let applied = mock!(Quotas::list_service_quotas)
            .match_requests(|r| r.service_code() == Some("rekognition"))
            .then_output(|| {
                ListServiceQuotasOutput::builder()
                    .quotas(quota("Transactions per second for DetectFaces", 50.0))
                    .quotas(quota(DETECT_LABELS, 20.0))
                    .build()
            });
        let defaults = mock!(Quotas::list_aws_default_service_quotas).then_output(|| {
            ListAwsDefaultServiceQuotasOutput::builder()
                .quotas(quota(DETECT_LABELS, 5.0))
                .build()
        });
        let c = client(&[&applied, &defaults]);
        assert_eq!(run(&c), Ok(Some((20.0, QuotaSource::Applied))));
        assert_eq!(defaults.num_calls(), 0);
    }

    #[test]
    fn without_an_applied_value_the_region_s_default_is_used() {
        let applied = mock!(Quotas::list_service_quotas)
            .then_output(|| ListServiceQuotasOutput::builder().build());
        let defaults = mock!(Quotas::list_aws_default_service_quotas).then_output(|| {
            ListAwsDefaultServiceQuotasOutput::builder()
                .quotas(quota(DETECT_LABELS, 5.0))
                .build()
        });
        let c = client(&[&applied, &defaults]);
        assert_eq!(run(&c), Ok(Some((5.0, QuotaSource::AwsDefault))));
    }

    #[test]
    fn a_refusal_names_the_call_that_was_refused() {
        let refused = mock!(Quotas::list_service_quotas).then_error(|| {
            ListServiceQuotasError::generic(
                ErrorMetadata::builder()
                    .code("AccessDeniedException")
                    .message("not authorized to perform: servicequotas:ListServiceQuotas")
                    .build(),
            )
        });
        let c = client(&[&refused]);
        let e = run(&c).unwrap_err();
        assert!(
            e.starts_with("servicequotas:ListServiceQuotas: ") && e.contains("AccessDenied"),
            "{e}"
        );
    }
}

/// `deploy` asks CloudFormation to roll an update back when one of the stage's alarms goes
/// into ALARM while it runs or for the monitoring time after it.
mod rollback {
    use super::*;
    use aws_sdk_cloudformation::operation::create_change_set::CreateChangeSetOutput;
    use aws_sdk_cloudformation::operation::describe_change_set::DescribeChangeSetOutput;
    use aws_sdk_cloudwatch::Client as CloudWatch;
    use aws_sdk_cloudwatch::operation::describe_alarms::DescribeAlarmsOutput;
    use aws_sdk_cloudwatch::types::MetricAlarm;
    use deployer::cloud::cfn::RollbackTriggers;
    use deployer::ops::deploy::{default_rollback_minutes, rollback_triggers};

    const ARN: &str = "arn:aws:cloudwatch:eu-west-1:123456789012:alarm:image-pipeline-prod-";

    fn alarm(short: &str) -> MetricAlarm {
        MetricAlarm::builder()
            .alarm_name(format!("image-pipeline-prod-{short}"))
            .alarm_arn(format!("{ARN}{short}"))
            .build()
    }

    fn triggers(out: DescribeAlarmsOutput, minutes: u32) -> (RollbackTriggers, Vec<String>) {
        let names: Vec<String> = stack::app::alarms::ALL
            .iter()
            .map(|a| format!("image-pipeline-prod-{a}"))
            .collect();
        let describe = mock!(CloudWatch::describe_alarms)
            .match_requests(move |r| r.alarm_names() == names.as_slice())
            .then_output(move || out.clone());
        let c: CloudWatch = mock_client!(aws_sdk_cloudwatch, RuleMode::MatchAny, &[&describe]);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stage = stack::Stage::parse("prod").unwrap();
        let mut notes = Vec::new();
        let found = rt
            .block_on(rollback_triggers(&c, &stage, minutes, &mut notes))
            .unwrap();
        assert_eq!(describe.num_calls(), usize::from(minutes > 0));
        (found, notes)
    }

    #[test]
    fn the_stage_s_alarms_become_the_triggers() {
        let out = DescribeAlarmsOutput::builder()
            .metric_alarms(alarm("process-errors"))
            .metric_alarms(alarm("dead-letters"))
            .build();
        let (found, notes) = triggers(out, 10);
        assert_eq!(
            found,
            RollbackTriggers {
                alarm_arns: vec![format!("{ARN}dead-letters"), format!("{ARN}process-errors")],
                minutes: 10,
            }
        );
        assert!(notes.is_empty(), "{notes:?}");
    }

    #[test]
    fn no_alarm_yet_means_no_trigger_and_a_note() {
        let (found, notes) = triggers(DescribeAlarmsOutput::builder().build(), 10);
        assert_eq!(found, RollbackTriggers::none());
        assert!(notes[0].contains("no alarms yet"), "{notes:?}");
    }

    #[test]
    fn zero_minutes_asks_nothing() {
        let (found, _) = triggers(DescribeAlarmsOutput::builder().build(), 0);
        assert_eq!(found, RollbackTriggers::none());
    }

    #[test]
    fn prod_is_watched_by_default_and_the_others_are_not() {
        let stage = |s: &str| stack::Stage::parse(s).unwrap();
        assert_eq!(default_rollback_minutes(&stage("prod")), 10);
        assert_eq!(default_rollback_minutes(&stage("dev")), 0);
        assert_eq!(default_rollback_minutes(&stage("pr-42")), 0);
    }

    /// The request CreateChangeSet gets: each alarm as an `AWS::CloudWatch::Alarm` trigger,
    /// and the monitoring time; no triggers are sent as an empty list (which clears those an
    /// earlier update set); only a request without any sends no configuration.
    async fn create_with(rollback: Option<RollbackTriggers>) -> usize {
        let want = rollback.clone();
        let create = mock!(Cfn::create_change_set)
            .match_requests(move |r| match (&want, r.rollback_configuration()) {
                (None, None) => true,
                (Some(w), Some(rc)) => {
                    let arns: Vec<&str> = rc
                        .rollback_triggers()
                        .iter()
                        .filter(|t| t.r#type() == Some("AWS::CloudWatch::Alarm"))
                        .filter_map(|t| t.arn())
                        .collect();
                    rc.rollback_triggers.is_some()
                        && rc.monitoring_time_in_minutes() == i32::try_from(w.minutes).ok()
                        && arns == w.alarm_arns.iter().map(String::as_str).collect::<Vec<_>>()
                }
                _ => false,
            })
            .then_output(|| {
                CreateChangeSetOutput::builder()
                    .id("cs")
                    .stack_id("stack")
                    .build()
            });
        let describe = mock!(Cfn::describe_change_set).then_output(|| {
            DescribeChangeSetOutput::builder()
                .status(ChangeSetStatus::CreateComplete)
                .build()
        });
        let c = cfn_client(&[&create, &describe]);
        let mut req = request(Prepared::Update);
        req.rollback = rollback;
        ops(&c, &Said::default())
            .create_change_set(&req, Duration::from_secs(5))
            .await
            .unwrap();
        create.num_calls()
    }

    #[tokio::test]
    async fn the_change_set_carries_the_triggers_and_the_monitoring_time() {
        let triggers = RollbackTriggers {
            alarm_arns: vec![format!("{ARN}dead-letters"), format!("{ARN}process-errors")],
            minutes: 10,
        };
        assert_eq!(create_with(Some(triggers)).await, 1);
        assert_eq!(create_with(Some(RollbackTriggers::none())).await, 1);
        assert_eq!(create_with(None).await, 1);
    }
}
