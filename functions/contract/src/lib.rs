//! Test support for the handler/policy contract: an SDK interceptor that records every
//! operation a client performs, and the IAM request (action and resource ARN) each implies.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_types::config_bag::ConfigBag;

/// An IAM request: what the policy must allow for the operation to succeed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct IamRequest {
    /// The SDK operation that implied it (`S3.HeadObject`).
    pub operation: String,
    pub action: String,
    pub resource: String,
}

/// Where ARNs are built: the example deployment the tests use.
#[derive(Debug, Clone)]
pub struct ArnContext {
    pub partition: String,
    pub region: String,
    pub account: String,
}

impl From<&policies::Bindings> for ArnContext {
    fn from(b: &policies::Bindings) -> Self {
        Self {
            partition: b.partition.clone(),
            region: b.region.clone(),
            account: b.account.clone(),
        }
    }
}

/// Records the IAM requests of every operation sent through the clients it is attached to.
#[derive(Debug, Clone)]
pub struct Recorder {
    arns: ArnContext,
    seen: Arc<Mutex<Vec<IamRequest>>>,
}

impl Recorder {
    pub fn new(arns: ArnContext) -> Self {
        Self {
            arns,
            seen: Arc::default(),
        }
    }

    pub fn requests(&self) -> Vec<IamRequest> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn object_arn(&self, bucket: Option<&str>, key: Option<&str>) -> String {
        format!(
            "arn:{}:s3:::{}/{}",
            self.arns.partition,
            bucket.unwrap_or("?"),
            key.unwrap_or("?")
        )
    }

    fn table_arn(&self, table: Option<&str>) -> String {
        format!(
            "arn:{}:dynamodb:{}:{}:table/{}",
            self.arns.partition,
            self.arns.region,
            self.arns.account,
            table.unwrap_or("?")
        )
    }

    /// The IAM requests one operation needs. Unknown operations are recorded with an
    /// action nobody is granted, so the contract fails until this table learns them.
    fn iam(
        &self,
        service: &str,
        op: &str,
        input: &aws_smithy_runtime_api::client::interceptors::context::Input,
    ) -> Vec<(String, String)> {
        use aws_sdk_dynamodb::operation as ddb;
        use aws_sdk_rekognition::operation as rek;
        use aws_sdk_s3::operation as s3;
        if let Some(i) = input.downcast_ref::<s3::put_object::PutObjectInput>() {
            return vec![("s3:PutObject".into(), self.object_arn(i.bucket(), i.key()))];
        }
        // HeadObject is authorised by s3:GetObject.
        if let Some(i) = input.downcast_ref::<s3::head_object::HeadObjectInput>() {
            return vec![("s3:GetObject".into(), self.object_arn(i.bucket(), i.key()))];
        }
        if let Some(i) = input.downcast_ref::<s3::get_object::GetObjectInput>() {
            return vec![("s3:GetObject".into(), self.object_arn(i.bucket(), i.key()))];
        }
        if let Some(i) = input.downcast_ref::<ddb::put_item::PutItemInput>() {
            return vec![("dynamodb:PutItem".into(), self.table_arn(i.table_name()))];
        }
        if let Some(i) = input.downcast_ref::<ddb::get_item::GetItemInput>() {
            return vec![("dynamodb:GetItem".into(), self.table_arn(i.table_name()))];
        }
        if let Some(i) = input.downcast_ref::<ddb::scan::ScanInput>() {
            return vec![("dynamodb:Scan".into(), self.table_arn(i.table_name()))];
        }
        if let Some(i) = input.downcast_ref::<rek::detect_labels::DetectLabelsInput>() {
            let mut out = vec![("rekognition:DetectLabels".into(), "*".into())];
            // Rekognition reads an S3Object with the caller's own permissions.
            if let Some(o) = i.image().and_then(|img| img.s3_object()) {
                out.push(("s3:GetObject".into(), self.object_arn(o.bucket(), o.name())));
            }
            return out;
        }
        vec![(format!("unmapped:{service}.{op}"), "*".into())]
    }
}

impl Intercept for Recorder {
    fn name(&self) -> &'static str {
        "IamRequestRecorder"
    }

    fn read_before_execution(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let (service, op) = cfg
            .load::<Metadata>()
            .map(|m| (m.service().to_string(), m.name().to_string()))
            .unwrap_or_default();
        let operation = format!("{service}.{op}");
        let requests = self.iam(&service, &op, context.input());
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(requests.into_iter().map(|(action, resource)| IamRequest {
                operation: operation.clone(),
                action,
                resource,
            }));
        }
        Ok(())
    }
}
