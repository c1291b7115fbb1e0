//! `deploy`: preflight, build, assets, change set, execution, and a check that what Lambda
//! runs is what was built.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use stack::synth::{self, Format, SynthOptions};
use stack::{App, Architecture, Stage};
use thiserror::Error;

use crate::assets::{self, AssetsError, Uploaded};
use crate::aws::{self, AwsError, Identity, Target};
use crate::build::{self, BuildArch, BuildConfig, BuildError, Progress};
use crate::cfn::{self, CfnError, Change, ChangeSetRequest, Observer, Planned, Prepared};

/// CloudFormation's limit for an inline template body.
pub const MAX_TEMPLATE_BODY: usize = 51_200;

#[derive(Debug, Clone)]
pub struct DeployConfig {
    pub target: Target,
    pub stage: Stage,
    /// Ignored for the local environment, which always runs the host's architecture.
    pub arch: Architecture,
    /// Stop after showing the change set.
    pub plan: bool,
    /// The Rekognition endpoint the process function calls (the local label service).
    pub rekognition_endpoint: Option<String>,
    /// How long to wait for another deployment of the same stack to finish.
    pub wait_for_other: Duration,
    /// How long the change set may take to execute.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Created,
    Updated,
    NoChanges,
    Planned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::NoChanges => "no-changes",
            Outcome::Planned => "planned",
        }
    }
}

/// What a deploy did; serialised as the `--output json` document.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub stack: String,
    pub stage: String,
    pub target: String,
    pub identity: Identity,
    pub architecture: String,
    pub status: Outcome,
    pub changes: Vec<Change>,
    pub artifacts: Vec<Uploaded>,
    pub assets_bucket: String,
    pub outputs: BTreeMap<String, String>,
    /// The API's base URL as a client on this machine reaches it.
    pub api_url: Option<String>,
    /// Milliseconds per phase.
    pub timings: BTreeMap<String, u64>,
    /// Things the deploy did on the way that a user should know about.
    pub notes: Vec<String>,
}

#[derive(Debug, Error)]
pub enum DeployError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error("build failed: {0}")]
    Build(#[from] BuildError),
    #[error(transparent)]
    Assets(#[from] AssetsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error("cannot synthesize the template: {0}")]
    Synth(String),
    #[error("the template is {0} bytes, over CloudFormation's inline limit of {MAX_TEMPLATE_BODY}")]
    TemplateTooLarge(usize),
    #[error(
        "{function}: Lambda runs code with CodeSha256 {deployed}, but the artifact built is {built}"
    )]
    CodeMismatch {
        function: String,
        deployed: String,
        built: String,
    },
    #[error("cannot read the deployed {function} function: {reason}")]
    Function { function: String, reason: String },
}

/// The template body sent to CloudFormation: compact JSON (YAML needs quoting care, and JSON
/// is what the service stores anyway).
pub fn template_body(app: &App, stage: &Stage, arch: Architecture) -> Result<String, DeployError> {
    let opts = SynthOptions {
        stage: stage.clone(),
        architecture: arch,
    };
    let s =
        synth::render(app, &opts, Format::Json).map_err(|e| DeployError::Synth(e.to_string()))?;
    let value = serde_json::to_value(&s.template).map_err(|e| DeployError::Synth(e.to_string()))?;
    let body = serde_json::to_string(&value).map_err(|e| DeployError::Synth(e.to_string()))?;
    if body.len() > MAX_TEMPLATE_BODY {
        return Err(DeployError::TemplateTooLarge(body.len()));
    }
    Ok(body)
}

/// The stack's parameters for a deploy.
pub fn parameters(
    app: &App,
    stage: &Stage,
    arch: Architecture,
    assets_bucket: &str,
    artifacts: &[Uploaded],
    rekognition_endpoint: Option<&str>,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    p.insert(
        stack::app::STAGE_PARAM.to_string(),
        stage.as_str().to_string(),
    );
    p.insert(
        synth::PARAM_ARCHITECTURE.to_string(),
        arch.as_str().to_string(),
    );
    p.insert(
        synth::PARAM_ARTIFACT_BUCKET.to_string(),
        assets_bucket.to_string(),
    );
    p.insert(
        stack::app::REKOGNITION_ENDPOINT_PARAM.to_string(),
        rekognition_endpoint.unwrap_or_default().to_string(),
    );
    for f in &app.functions {
        if let Some(a) = artifacts.iter().find(|a| a.function == f.name) {
            p.insert(f.code_key_param(), a.key.clone());
        }
    }
    p
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

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// Runs a deploy. `progress` hears about the build, `obs` about everything after it.
pub async fn deploy(
    cfg: &DeployConfig,
    progress: &dyn Progress,
    obs: &dyn Observer,
) -> Result<DeployReport, DeployError> {
    let total = Instant::now();
    let mut timings = BTreeMap::new();
    let mut notes = Vec::new();
    let app = App::image_pipeline();
    let stack_name = cfg.stage.stack_name();
    let poll = aws::poll_interval(&cfg.target);

    // 1. Preflight.
    let t = Instant::now();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let region = cfg.target.region().to_string();
    obs.step(&format!(
        "deploying stack {stack_name} to {} as {} (account {})",
        cfg.target.describe(),
        identity.arn,
        identity.account
    ));
    timings.insert("preflight".to_string(), ms(t.elapsed()));

    // 2. Build.
    let t = Instant::now();
    let build_arch = if cfg.target.is_local() {
        BuildArch::Host
    } else {
        BuildArch::Lambda(cfg.arch)
    };
    let arch = build_arch.resolve()?;
    let report = build::build(
        &BuildConfig {
            arch: build_arch,
            functions: Vec::new(),
            opt_level: None,
        },
        progress,
    )?;
    timings.insert("build".to_string(), ms(t.elapsed()));

    // 3. Assets.
    let t = Instant::now();
    let assets_bucket = assets::bucket_name(&identity.account, &region);
    if assets::ensure_bucket(&clients.s3, &assets_bucket, &region, &identity.partition).await? {
        notes.push(format!("created the assets bucket {assets_bucket}"));
        obs.step(&format!(
            "created the assets bucket {assets_bucket} (public access blocked, encrypted, TLS only)"
        ));
    }
    let artifacts = assets::upload_artifacts(&clients.s3, &assets_bucket, &report).await?;
    let sent: Vec<&str> = artifacts
        .iter()
        .filter(|a| a.uploaded)
        .map(|a| a.function.as_str())
        .collect();
    obs.step(&if sent.is_empty() {
        format!("artifacts already in s3://{assets_bucket}")
    } else {
        format!("uploaded {} to s3://{assets_bucket}", sent.join(", "))
    });
    timings.insert("assets".to_string(), ms(t.elapsed()));

    // 4. Change set.
    let t = Instant::now();
    let kind = cfn::prepare(&clients.cfn, &stack_name, cfg.wait_for_other, poll, obs).await?;
    let req = ChangeSetRequest {
        stack: stack_name.clone(),
        kind: kind.clone(),
        template_body: template_body(&app, &cfg.stage, arch)?,
        parameters: parameters(
            &app,
            &cfg.stage,
            arch,
            &assets_bucket,
            &artifacts,
            cfg.rekognition_endpoint.as_deref(),
        ),
        tags: BTreeMap::from([
            ("app".to_string(), stack::app::APP.to_string()),
            ("stage".to_string(), cfg.stage.as_str().to_string()),
        ]),
    };
    obs.step(&format!(
        "creating the change set ({})",
        if kind == Prepared::Create {
            "CREATE: the stack is new"
        } else {
            "UPDATE"
        }
    ));
    let planned = cfn::create_change_set(&clients.cfn, &req, cfg.timeout, poll).await?;
    timings.insert("change_set".to_string(), ms(t.elapsed()));

    let mut result = DeployReport {
        stack: stack_name.clone(),
        stage: cfg.stage.as_str().to_string(),
        target: cfg.target.describe(),
        identity,
        architecture: arch.as_str().to_string(),
        status: Outcome::NoChanges,
        changes: Vec::new(),
        artifacts,
        assets_bucket,
        outputs: BTreeMap::new(),
        api_url: None,
        timings,
        notes,
    };

    let (name, changes) = match planned {
        Planned::NoChanges => {
            obs.step("no changes: the stack already matches (the empty change set was deleted)");
            let info = cfn::describe(&clients.cfn, &stack_name).await?;
            finish(
                &mut result,
                &cfg.target,
                info.map(|i| i.outputs).unwrap_or_default(),
            );
            result
                .timings
                .insert("total".to_string(), ms(total.elapsed()));
            return Ok(result);
        }
        Planned::Changes { name, changes, .. } => (name, changes),
    };
    result.changes = changes.clone();
    if cfg.plan {
        cfn::discard(&clients.cfn, &stack_name, &name, &kind).await?;
        result.status = Outcome::Planned;
        result
            .timings
            .insert("total".to_string(), ms(total.elapsed()));
        return Ok(result);
    }

    // 5. Execute and follow.
    let t = Instant::now();
    let expected = changes.len();
    let info = cfn::execute(
        &clients.cfn,
        &stack_name,
        &name,
        expected,
        cfg.timeout,
        poll,
        obs,
    )
    .await?;
    result
        .timings
        .insert("execute".to_string(), ms(t.elapsed()));
    result.status = if kind == Prepared::Create {
        Outcome::Created
    } else {
        Outcome::Updated
    };

    // 6. What runs is what was built.
    let t = Instant::now();
    verify_code(&clients.lambda, &app, &info.outputs, &result.artifacts).await?;
    result.timings.insert("verify".to_string(), ms(t.elapsed()));
    finish(&mut result, &cfg.target, info.outputs);
    result
        .timings
        .insert("total".to_string(), ms(total.elapsed()));
    Ok(result)
}

fn finish(result: &mut DeployReport, target: &Target, outputs: BTreeMap<String, String>) {
    result.api_url = outputs
        .get(synth::outputs::API_URL)
        .map(|u| client_api_url(target, u));
    result.outputs = outputs;
}

/// Compares each function's deployed `CodeSha256` with the artifact that was uploaded.
pub async fn verify_code(
    lambda: &aws_sdk_lambda::Client,
    app: &App,
    outputs: &BTreeMap<String, String>,
    artifacts: &[Uploaded],
) -> Result<(), DeployError> {
    for f in &app.functions {
        let key = f.function_name_output();
        let (Some(name), Some(artifact)) = (
            outputs.get(&key),
            artifacts.iter().find(|a| a.function == f.name),
        ) else {
            continue;
        };
        let out = lambda
            .get_function()
            .function_name(name)
            .send()
            .await
            .map_err(|e| DeployError::Function {
                function: f.name.to_string(),
                reason: aws_smithy_types::error::display::DisplayErrorContext(&e).to_string(),
            })?;
        let deployed = out
            .configuration()
            .and_then(|c| c.code_sha256())
            .unwrap_or_default()
            .to_string();
        if deployed != artifact.code_sha256 {
            return Err(DeployError::CodeMismatch {
                function: f.name.to_string(),
                deployed,
                built: artifact.code_sha256.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_api_urls_go_through_the_endpoint() {
        let local = Target::Local {
            endpoint: "https://127.0.0.1:4566".into(),
            certificate: Vec::new(),
            credentials: crate::aws::LocalCredentials::root(),
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

    #[test]
    fn template_fits_inline_and_parameters_cover_every_function() {
        let app = App::image_pipeline();
        let stage = Stage::default();
        let body = template_body(&app, &stage, Architecture::Arm64);
        assert!(body.is_ok(), "{body:?}");
        let artifacts: Vec<Uploaded> = app
            .functions
            .iter()
            .map(|f| Uploaded {
                function: f.name.to_string(),
                key: format!("lambda/arm64/{}/x.zip", f.name),
                sha256: "x".into(),
                code_sha256: "y".into(),
                uploaded: true,
                bytes: 1,
            })
            .collect();
        let p = parameters(
            &app,
            &stage,
            Architecture::Arm64,
            "assets",
            &artifacts,
            None,
        );
        let template: serde_json::Value =
            serde_json::from_str(&body.unwrap_or_default()).unwrap_or_default();
        let declared: Vec<&String> = template["Parameters"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        for k in p.keys() {
            assert!(declared.contains(&k), "{k} is not a template parameter");
        }
        for k in declared {
            let has_default = template["Parameters"][k].get("Default").is_some();
            assert!(has_default || p.contains_key(k), "{k} has no value");
        }
    }
}
