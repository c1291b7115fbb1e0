//! One typed view of a deployed stage: its stack read once, and the outputs every reader
//! needs by name, with one error for each way a stage can be missing. The smoke test, trace,
//! status, logs, the local IAM helpers, the benchmarks and the end-to-end test all read a
//! stage through here.

use std::collections::BTreeMap;

use aws_sdk_cloudformation::Client;
use stack::Stage;
use stack::app::outputs;
use thiserror::Error;

use crate::cloud::aws::Target;
use crate::cloud::cfn::{self, CfnError, StackInfo, StackStatus};
use crate::cloud::cognito::Pool;

#[derive(Debug, Error)]
pub enum StageError {
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error("stack {stack} does not exist: run `cargo xtask deploy` for this stage first")]
    NoStack { stack: String },
    #[error(
        "stack {stack} is {status}, not a deployed stage: see `cargo xtask status`, and deploy again"
    )]
    NotDeployed { stack: String, status: StackStatus },
    #[error("stack {stack} has no output {output}; was it deployed by this version of the tool?")]
    MissingOutput { stack: String, output: String },
}

/// A stack's outputs by key, with the stack's name for the error when one is missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackOutputs {
    stack: String,
    values: BTreeMap<String, String>,
}

impl StackOutputs {
    pub fn new(stack: impl Into<String>, values: BTreeMap<String, String>) -> Self {
        Self {
            stack: stack.into(),
            values,
        }
    }

    pub fn of(info: &StackInfo) -> Self {
        Self::new(&info.name, info.outputs.clone())
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    /// The output, or [`StageError::MissingOutput`] naming the stack and the key.
    pub fn need(&self, key: &str) -> Result<String, StageError> {
        self.get(key)
            .map(str::to_string)
            .ok_or_else(|| StageError::MissingOutput {
                stack: self.stack.clone(),
                output: key.to_string(),
            })
    }

    pub fn values(&self) -> &BTreeMap<String, String> {
        &self.values
    }
}

/// A deployed stage: the names its readers need, each read once from the stack's outputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    /// The API's base URL as reachable from here ([`client_api_url`]).
    pub api_url: String,
    pub bucket: String,
    pub table: String,
    pub labels_table: String,
    pub dead_letter_queue_url: String,
    pub work_queue_url: String,
    /// The stage's user pool and its app client.
    pub pool: Pool,
    /// Every output, for the per-function ones (names, role ARNs).
    pub outputs: StackOutputs,
}

impl Deployed {
    /// The view of a stack's outputs as seen from `target`; fails on the first missing one.
    pub fn from_outputs(target: &Target, outputs: StackOutputs) -> Result<Self, StageError> {
        Ok(Self {
            api_url: client_api_url(target, &outputs.need(outputs::API_URL)?),
            bucket: outputs.need(outputs::BUCKET)?,
            table: outputs.need(outputs::TABLE)?,
            labels_table: outputs.need(outputs::LABELS_TABLE)?,
            dead_letter_queue_url: outputs.need(outputs::DEAD_LETTER_QUEUE_URL)?,
            work_queue_url: outputs.need(outputs::WORK_QUEUE_URL)?,
            pool: Pool {
                id: outputs.need(outputs::USER_POOL_ID)?,
                client_id: outputs.need(outputs::USER_POOL_CLIENT_ID)?,
            },
            outputs,
        })
    }
}

/// The stage's stack, or [`StageError::NoStack`].
pub async fn describe(cfn: &Client, stage: &Stage) -> Result<StackInfo, StageError> {
    let stack = stage.stack_name();
    cfn::describe(cfn, &stack)
        .await?
        .ok_or(StageError::NoStack { stack })
}

/// The deployed stage: its stack exists, is in a usable state, and has every output.
pub async fn read(cfn: &Client, target: &Target, stage: &Stage) -> Result<Deployed, StageError> {
    let info = describe(cfn, stage).await?;
    if !cfn::is_usable(&info.status) {
        return Err(StageError::NotDeployed {
            stack: info.name,
            status: info.status,
        });
    }
    Deployed::from_outputs(target, StackOutputs::of(&info))
}

/// The API's base URL as reachable from here. The local environment names APIs
/// `http://ID.execute-api.localhost:PORT`, which does not resolve everywhere; it also serves
/// them under `/_aws/execute-api/ID/$default` on its own address.
pub fn client_api_url(target: &Target, api_url: &str) -> String {
    let trimmed = api_url.trim_end_matches('/');
    match target {
        Target::Local { endpoint, .. } => {
            let host = trimmed
                .split("://")
                .nth(1)
                .unwrap_or(trimmed)
                .split('.')
                .next()
                .unwrap_or_default();
            format!(
                "{}/_aws/execute-api/{host}/$default",
                endpoint.trim_end_matches('/')
            )
        }
        Target::Aws { .. } => trimmed.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Target {
        Target::Local {
            endpoint: "https://127.0.0.1:4566".into(),
            certificate: Vec::new(),
            credentials: crate::cloud::aws::LocalCredentials::root(),
        }
    }

    fn complete() -> BTreeMap<String, String> {
        [
            (
                outputs::API_URL,
                "http://abc123.execute-api.localhost:4566/",
            ),
            (outputs::BUCKET, "b"),
            (outputs::TABLE, "t"),
            (outputs::LABELS_TABLE, "l"),
            (outputs::DEAD_LETTER_QUEUE_URL, "q"),
            (outputs::WORK_QUEUE_URL, "w"),
            (outputs::USER_POOL_ID, "us-east-1_AbC"),
            (outputs::USER_POOL_CLIENT_ID, "c"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn a_complete_stack_reads_as_a_stage() {
        let d = Deployed::from_outputs(&local(), StackOutputs::new("s", complete())).unwrap();
        assert_eq!(
            d.api_url,
            "https://127.0.0.1:4566/_aws/execute-api/abc123/$default"
        );
        assert_eq!((d.bucket.as_str(), d.table.as_str()), ("b", "t"));
        assert_eq!(d.outputs.get(outputs::LABELS_TABLE), Some("l"));
    }

    #[test]
    fn a_missing_output_names_the_stack_and_the_key() {
        let mut values = complete();
        values.remove(outputs::TABLE);
        let e = Deployed::from_outputs(&local(), StackOutputs::new("img-dev", values)).unwrap_err();
        assert!(
            matches!(&e, StageError::MissingOutput { stack, output } if stack == "img-dev" && output == outputs::TABLE),
            "{e:?}"
        );
        assert!(e.to_string().contains(outputs::TABLE));
    }

    #[test]
    fn local_api_urls_go_through_the_endpoint() {
        let local = Target::Local {
            endpoint: "https://127.0.0.1:4566".into(),
            certificate: Vec::new(),
            credentials: crate::cloud::aws::LocalCredentials::root(),
        };
        assert_eq!(
            client_api_url(&local, "https://58dc5b8f.execute-api.localhost:4566"),
            "https://127.0.0.1:4566/_aws/execute-api/58dc5b8f/$default"
        );
        let aws = Target::Aws {
            region: "eu-west-1".into(),
            profile: None,
        };
        assert_eq!(
            client_api_url(&aws, "https://abc.execute-api.eu-west-1.amazonaws.com/"),
            "https://abc.execute-api.eu-west-1.amazonaws.com"
        );
    }
}
