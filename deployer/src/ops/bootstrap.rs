//! `bootstrap`: what an administrator creates once per account and region so that the
//! identities that deploy never need to touch IAM themselves. One CloudFormation stack,
//! [`stack::app::bootstrap::STACK`], holds:
//!
//! - the assets bucket (imported into the stack when an earlier version created it outside any
//!   stack), artifacts under `{stage}/`;
//! - per scope (release: every stage; preview: the preview stages, `pr-*` unless told
//!   otherwise), a CloudFormation execution role and the permissions boundary it must put on
//!   every function role it creates (`permissions::execution_policy`, `boundary_policy`).
//!
//! `deploy` reads the stack's outputs ([`read`]) and refuses to run when it is missing or
//! older than this version of the tool. `bootstrap --ci github` adds, in a stack of its own per
//! repository and branch or environment, a role that only GitHub Actions runs of that
//! repository can assume, holding the deployer policy.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use policies::{Action, Effect, PolicyDocument, Principal, Statement};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use stack::app::bootstrap::{self as names, Scope, outputs};
use stack::app::{Stage, StagePattern};
use stack::expr::Expr;
use stack::resources::{Bucket, BucketPolicy, InlinePolicy, ManagedPolicy, ResourceProps, Role};
use stack::template::{Output, Policy, Resource, Template};
use thiserror::Error;

use crate::cloud::aws::{self, AwsError, Identity, Target};
use crate::cloud::cfn::{
    self, CfnError, ChangeSetRequest, Import, Outcome, Planned, Prepared, StackOps, StackProgress,
};
use crate::cloud::stage::{StackOutputs, StageError};
use crate::ops::permissions::{self, CLOUDFORMATION_SERVICE};

const BUCKET_ID: &str = "AssetsBucket";
const BUCKET_POLICY_ID: &str = "AssetsBucketPolicy";
const CI_ROLE_ID: &str = "CiRole";

/// GitHub Actions' OIDC issuer and the audience AWS's credential action asks for.
pub const GITHUB_ISSUER: &str = "token.actions.githubusercontent.com";
pub const GITHUB_AUDIENCE: &str = "sts.amazonaws.com";

/// What the bootstrap stack is made for: one account and region, and the stages the preview
/// scope covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub account: String,
    pub region: String,
    pub preview: StagePattern,
}

impl Spec {
    fn partition(&self) -> &'static str {
        aws::partition_of(&self.region)
    }

    /// The stages a scope's execution role deploys.
    pub fn stages(&self, scope: Scope) -> StagePattern {
        match scope {
            Scope::Release => StagePattern::all(),
            Scope::Preview => self.preview.clone(),
        }
    }
}

fn logical(scope: Scope, what: &str) -> String {
    format!("{}{what}", stack::app::pascal(scope.as_str()))
}

fn strings(doc: &PolicyDocument<String>) -> PolicyDocument<Expr> {
    doc.map_resources(|r| Expr::str(r.clone()))
}

fn trust(principal: Principal, action: &'static str) -> PolicyDocument<Expr> {
    PolicyDocument::new(vec![Statement {
        sid: None,
        effect: Effect::Allow,
        principal: Some(principal),
        action: vec![Action::known(action)],
        resource: Vec::new(),
        condition: None,
    }])
}

/// The bootstrap stack's template for `spec`, with its version as an output.
pub fn template(spec: &Spec) -> Template {
    let mut t = unversioned(spec);
    let v = version(&t);
    t.outputs.insert(
        outputs::VERSION.into(),
        Output {
            description:
                "Digest of this template: deploy refuses a bootstrap stack of another version"
                    .into(),
            value: Expr::str(v),
        },
    );
    t
}

/// The template as CloudFormation gets it, inline: compact JSON within its limit.
fn inline(template: &Template) -> Result<String, BootstrapError> {
    let body = template
        .to_compact_json()
        .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
    if body.len() > crate::cloud::cfn::MAX_TEMPLATE_BODY {
        return Err(BootstrapError::Invalid(format!(
            "the bootstrap template is {} bytes, over CloudFormation's inline limit of {}",
            body.len(),
            crate::cloud::cfn::MAX_TEMPLATE_BODY
        )));
    }
    Ok(body)
}

/// A digest of the template: the same tool and spec give the same version.
fn version(t: &Template) -> String {
    let json = serde_json::to_string(t).unwrap_or_default();
    let digest = Sha256::digest(json.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn assets_bucket(spec: &Spec) -> Resource {
    let bucket = Bucket::locked_down(Expr::str(names::assets_bucket(&spec.account, &spec.region)));
    let mut r = Resource::new(ResourceProps::Bucket(Box::new(bucket))).skip_check(
        "CKV_AWS_18",
        "artifacts are written only by the deploying identities through CloudFormation deploys, which CloudTrail records",
    );
    // The artifacts outlive the stack: a rollback of any stage may still need them.
    r.deletion_policy = Some(Policy::Retain);
    r.update_replace_policy = Some(Policy::Retain);
    r
}

fn unversioned(spec: &Spec) -> Template {
    let (account, region, p) = (&spec.account, &spec.region, spec.partition());
    let mut resources = BTreeMap::new();
    let mut outs = BTreeMap::new();
    resources.insert(BUCKET_ID.to_string(), assets_bucket(spec));
    let bucket_arn = format!("arn:{p}:s3:::{}", names::assets_bucket(account, region));
    resources.insert(
        BUCKET_POLICY_ID.to_string(),
        Resource::new(ResourceProps::BucketPolicy(BucketPolicy {
            bucket: Expr::r#ref(BUCKET_ID),
            policy_document: stack::synth::tls_only(
                Expr::str(bucket_arn.clone()),
                Expr::str(format!("{bucket_arn}/*")),
            ),
        })),
    );
    outs.insert(
        outputs::ASSETS_BUCKET.to_string(),
        Output {
            description: "Bucket of the functions' artifacts, keys under the stage".into(),
            value: Expr::r#ref(BUCKET_ID),
        },
    );
    outs.insert(
        outputs::PREVIEW_STAGES.to_string(),
        Output {
            description: "Stages the preview execution role deploys".into(),
            value: Expr::str(spec.preview.as_str()),
        },
    );
    for scope in Scope::ALL {
        let stages = spec.stages(scope);
        let boundary_id = logical(scope, "Boundary");
        let role_id = logical(scope, "ExecutionRole");
        resources.insert(
            boundary_id.clone(),
            Resource::new(ResourceProps::ManagedPolicy(ManagedPolicy {
                managed_policy_name: Expr::str(names::boundary(scope, region)),
                description: Expr::str(format!(
                    "{}: the most a function role of stages `{stages}` may ever do",
                    stack::app::APP
                )),
                policy_document: strings(&permissions::boundary_policy(account, region, &stages)),
            })),
        );
        resources.insert(
            role_id.clone(),
            Resource::new(ResourceProps::Role(Role {
                role_name: Some(Expr::str(names::execution_role(scope, region))),
                description: Expr::str(format!(
                    "{}: CloudFormation deploys stages `{stages}` as this role",
                    stack::app::APP
                )),
                assume_role_policy_document: trust(
                    Principal::Service(CLOUDFORMATION_SERVICE.into()),
                    "sts:AssumeRole",
                ),
                policies: vec![InlinePolicy {
                    policy_name: "deploy-stages".into(),
                    policy_document: strings(&permissions::execution_policy(
                        account, region, scope, &stages,
                    )),
                }],
                permissions_boundary: None,
                max_session_duration: None,
            })),
        );
        outs.insert(
            outputs::execution_role(scope),
            Output {
                description: format!("CloudFormation execution role of stages `{stages}`"),
                value: Expr::get_att(role_id, "Arn"),
            },
        );
        outs.insert(
            outputs::boundary(scope),
            Output {
                description: format!("Permissions boundary of stages `{stages}`"),
                value: Expr::r#ref(boundary_id),
            },
        );
    }
    Template {
        format_version: stack::template::FORMAT_VERSION,
        description: format!(
            "{}: bootstrap (assets bucket, execution roles, permissions boundaries) of one account and region",
            stack::app::APP
        ),
        parameters: BTreeMap::new(),
        conditions: BTreeMap::new(),
        resources,
        outputs: outs,
    }
}

/// A bootstrap stack as deploy needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub assets_bucket: String,
    pub preview_stages: StagePattern,
    pub execution_roles: BTreeMap<Scope, String>,
    pub boundaries: BTreeMap<Scope, String>,
    pub version: String,
}

impl Bootstrap {
    /// The scope that deploys `stage`: preview stages use the preview role, every other stage
    /// the release role.
    pub fn scope_for(&self, stage: &Stage) -> Scope {
        if self.preview_stages.matches(stage) {
            Scope::Preview
        } else {
            Scope::Release
        }
    }

    /// The stages a scope's execution role deploys.
    pub fn stages(&self, scope: Scope) -> StagePattern {
        match scope {
            Scope::Release => StagePattern::all(),
            Scope::Preview => self.preview_stages.clone(),
        }
    }
}

#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error(transparent)]
    Aws(#[from] AwsError),
    #[error(transparent)]
    Stack(#[from] CfnError),
    #[error(
        "{target} has not been bootstrapped: run `cargo xtask bootstrap {flags}` once, as an administrator of the account, then deploy again"
    )]
    Missing { target: String, flags: String },
    #[error(
        "the bootstrap stack {stack} in {target} is {status}: run `cargo xtask bootstrap {flags}` to repair it"
    )]
    Unusable {
        stack: String,
        target: String,
        status: String,
        flags: String,
    },
    #[error(
        "the bootstrap stack {stack} is version {found}, this tool needs {want}: run `cargo xtask bootstrap {flags}` (as an administrator) to update it"
    )]
    Outdated {
        stack: String,
        found: String,
        want: String,
        flags: String,
    },
    #[error(transparent)]
    Output(#[from] StageError),
    #[error("{0}")]
    Invalid(String),
    #[error("IAM {operation} failed: {reason}")]
    Iam {
        operation: &'static str,
        reason: String,
    },
    #[error("S3 {operation} on {bucket} failed: {reason}")]
    S3 {
        operation: &'static str,
        bucket: String,
        reason: String,
    },
}

/// The command-line flags that name `target`, for messages.
pub fn flags(target: &Target) -> String {
    match target {
        Target::Local { .. } => "--local".into(),
        Target::Aws { region, profile } => match profile {
            Some(p) => format!("--region {region} --profile {p}"),
            None => format!("--region {region}"),
        },
    }
}

/// Reads the bootstrap stack of the identity's account and region; fails, naming the command
/// that fixes it, when there is none, it is broken, or it is of another version.
pub async fn read(
    cfn: &aws_sdk_cloudformation::Client,
    identity: &Identity,
    target: &Target,
) -> Result<Bootstrap, BootstrapError> {
    let stack = names::STACK;
    let Some(info) = cfn::describe(cfn, stack).await? else {
        return Err(BootstrapError::Missing {
            target: format!("account {} in {}", identity.account, target.describe()),
            flags: flags(target),
        });
    };
    if !cfn::is_usable(&info.status) {
        return Err(BootstrapError::Unusable {
            stack: stack.into(),
            target: target.describe(),
            status: info.status.as_str().into(),
            flags: flags(target),
        });
    }
    let found_outputs = StackOutputs::of(&info);
    let get = |k: &str| found_outputs.need(k);
    let preview_stages = StagePattern::parse(&get(outputs::PREVIEW_STAGES)?).map_err(|e| {
        BootstrapError::Invalid(format!("the bootstrap stack's preview stages: {e}"))
    })?;
    let found = get(outputs::VERSION)?;
    let want = version(&unversioned(&Spec {
        account: identity.account.clone(),
        region: identity.region.clone(),
        preview: preview_stages.clone(),
    }));
    if found != want {
        return Err(BootstrapError::Outdated {
            stack: stack.into(),
            found,
            want,
            flags: flags(target),
        });
    }
    let mut execution_roles = BTreeMap::new();
    let mut boundaries = BTreeMap::new();
    for scope in Scope::ALL {
        execution_roles.insert(scope, get(&outputs::execution_role(scope))?);
        boundaries.insert(scope, get(&outputs::boundary(scope))?);
    }
    Ok(Bootstrap {
        assets_bucket: get(outputs::ASSETS_BUCKET)?,
        preview_stages,
        execution_roles,
        boundaries,
        version: found,
    })
}

/// Which GitHub Actions runs may assume a CI role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CiSubject {
    Branch(String),
    Environment(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubCi {
    /// `OWNER/NAME`.
    pub repo: String,
    pub subject: CiSubject,
    /// The stages the role may deploy (the deployer policy's `--stages`).
    pub stages: StagePattern,
}

impl GithubCi {
    /// Checks the repository and branch or environment names GitHub allows.
    pub fn validate(&self) -> Result<(), BootstrapError> {
        let part_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let repo_ok = self
            .repo
            .split_once('/')
            .is_some_and(|(o, n)| part_ok(o) && part_ok(n));
        if !repo_ok {
            return Err(BootstrapError::Invalid(format!(
                "`{}` is not a GitHub repository OWNER/NAME",
                self.repo
            )));
        }
        let (CiSubject::Branch(name) | CiSubject::Environment(name)) = &self.subject;
        let ok = !name.is_empty()
            && name.len() <= 255
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
        if !ok {
            return Err(BootstrapError::Invalid(format!(
                "`{name}` is not a branch or environment name this tool accepts (letters, digits, - _ . /)"
            )));
        }
        Ok(())
    }

    /// The token's `sub` claim GitHub issues for these runs.
    pub fn subject_claim(&self) -> String {
        match &self.subject {
            CiSubject::Branch(b) => format!("repo:{}:ref:refs/heads/{b}", self.repo),
            CiSubject::Environment(e) => format!("repo:{}:environment:{e}", self.repo),
        }
    }

    /// Names the CI stack and role: a digest of what the role trusts and may do.
    pub fn digest(&self) -> String {
        let d = Sha256::digest(format!("{}\n{}", self.subject_claim(), self.stages).as_bytes());
        d.iter().take(5).map(|b| format!("{b:02x}")).collect()
    }
}

/// The CI role's stack: one role GitHub's OIDC provider `provider_arn` vouches for, for
/// `ci`'s repository and branch or environment only, holding the deployer policy of its stages.
pub fn ci_template(account: &str, region: &str, provider_arn: &str, ci: &GithubCi) -> Template {
    let mut trust = trust(
        Principal::Federated(provider_arn.to_string()),
        "sts:AssumeRoleWithWebIdentity",
    );
    trust.statement[0].condition = Some(BTreeMap::from([(
        "StringEquals".to_string(),
        BTreeMap::from([
            (
                format!("{GITHUB_ISSUER}:aud"),
                vec![GITHUB_AUDIENCE.to_string()],
            ),
            (format!("{GITHUB_ISSUER}:sub"), vec![ci.subject_claim()]),
        ]),
    )]));
    let role = Role {
        role_name: Some(Expr::str(names::ci_role(&ci.digest(), region))),
        description: Expr::str(format!(
            "{}: GitHub Actions runs of {} deploy stages `{}`",
            stack::app::APP,
            ci.subject_claim(),
            ci.stages
        )),
        assume_role_policy_document: trust,
        policies: vec![InlinePolicy {
            policy_name: "deployer".into(),
            policy_document: strings(&permissions::deployer_policy(account, region, &ci.stages)),
        }],
        permissions_boundary: None,
        max_session_duration: Some(3600),
    };
    Template {
        format_version: stack::template::FORMAT_VERSION,
        description: format!("{}: the CI role of {}", stack::app::APP, ci.subject_claim()),
        parameters: BTreeMap::new(),
        conditions: BTreeMap::new(),
        resources: BTreeMap::from([(
            CI_ROLE_ID.to_string(),
            Resource::new(ResourceProps::Role(role)),
        )]),
        outputs: BTreeMap::from([(
            outputs::CI_ROLE.to_string(),
            Output {
                description: "The role GitHub Actions assumes (role-to-assume)".into(),
                value: Expr::get_att(CI_ROLE_ID, "Arn"),
            },
        )]),
    }
}

#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    pub target: Target,
    pub preview: StagePattern,
    pub ci: Option<GithubCi>,
    pub timeout: Duration,
}

/// What a bootstrap did; the `--output json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BootstrapReport {
    pub stack: String,
    pub target: String,
    pub identity: Identity,
    pub status: Outcome,
    pub bootstrap: Bootstrap,
    /// The assets bucket an earlier version made outside any stack, now imported.
    pub imported_bucket: Option<String>,
    pub ci: Option<CiReport>,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CiReport {
    pub stack: String,
    pub role_arn: String,
    pub subject: String,
    pub stages: String,
    pub provider_arn: String,
    /// Whether this run created the account's GitHub OIDC provider.
    pub provider_created: bool,
    pub status: Outcome,
}

/// Creates or updates the bootstrap stack (and the CI role when asked), idempotently.
pub async fn bootstrap(
    cfg: &BootstrapConfig,
    progress: &dyn StackProgress,
) -> Result<BootstrapReport, BootstrapError> {
    let start = Instant::now();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    progress.step(&format!(
        "bootstrapping account {} in {} as {} (stack {})",
        identity.account,
        cfg.target.describe(),
        identity.arn,
        names::STACK
    ));
    if let Some(ci) = &cfg.ci {
        ci.validate()?;
        if !ci.stages.is_all() && ci.stages != cfg.preview {
            return Err(BootstrapError::Invalid(format!(
                "a CI role for stages `{}` deploys with the preview execution role, which covers `{}`: give the same pattern to --stages and --preview-stages, or use --stages '*'",
                ci.stages, cfg.preview
            )));
        }
    }
    let spec = Spec {
        account: identity.account.clone(),
        region: identity.region.clone(),
        preview: cfg.preview.clone(),
    };
    let poll = aws::poll_interval(&cfg.target);
    let ops = StackOps {
        cfn: &clients.cfn,
        name: names::STACK,
        poll,
        progress,
        role_arn: None,
    };
    let kind = ops.prepare(cfg.timeout).await?;
    let full = template(&spec);
    let tags = BTreeMap::from([("app".to_string(), stack::app::APP.to_string())]);
    let mut imported_bucket = None;
    let legacy = names::assets_bucket(&identity.account, &identity.region);
    let kind = if kind == Prepared::Create
        && bucket_exists(&clients.s3, &legacy, &identity.account).await?
    {
        progress.step(&format!(
            "importing the existing assets bucket {legacy} into {}",
            names::STACK
        ));
        let mut only = full.clone();
        only.resources.retain(|k, _| k == BUCKET_ID);
        only.outputs.clear();
        let body = only
            .to_compact_json()
            .map_err(|e| BootstrapError::Invalid(e.to_string()))?;
        // An import may add nothing else, stack tags included; the update adds them.
        let req = ChangeSetRequest {
            imports: vec![Import {
                logical_id: BUCKET_ID.into(),
                resource_type: "AWS::S3::Bucket".into(),
                identifier: ("BucketName".into(), legacy.clone()),
            }],
            ..ChangeSetRequest::new(kind, body)
        };
        if let Planned::Changes {
            name, id, stack_id, ..
        } = ops.create_change_set(&req, cfg.timeout).await?
        {
            ops.execute(&name, (&id, &stack_id), 1, cfg.timeout).await?;
        }
        imported_bucket = Some(legacy);
        Prepared::Update
    } else {
        kind
    };
    let status = apply(&ops, kind, &full, &tags, cfg.timeout, progress).await?;
    let bootstrap = read(&clients.cfn, &identity, &cfg.target).await?;
    let ci = match &cfg.ci {
        Some(ci) => {
            Some(github_ci(&clients.iam, &clients.cfn, &identity, ci, cfg, progress).await?)
        }
        None => None,
    };
    Ok(BootstrapReport {
        stack: names::STACK.into(),
        target: cfg.target.describe(),
        identity,
        status: if imported_bucket.is_some() && status == Outcome::Updated {
            Outcome::Created
        } else {
            status
        },
        bootstrap,
        imported_bucket,
        ci,
        elapsed_ms: crate::util::elapsed_ms(start),
    })
}

/// One change set of `template` on `ops`' stack, executed when it changes anything.
async fn apply(
    ops: &StackOps<'_>,
    kind: Prepared,
    template: &Template,
    tags: &BTreeMap<String, String>,
    timeout: Duration,
    progress: &dyn StackProgress,
) -> Result<Outcome, BootstrapError> {
    let req = ChangeSetRequest {
        tags: tags.clone(),
        ..ChangeSetRequest::new(kind, inline(template)?)
    };
    match ops.create_change_set(&req, timeout).await? {
        Planned::NoChanges => {
            progress.step(&format!("no changes: {} is up to date", ops.name));
            Ok(Outcome::NoChanges)
        }
        Planned::Changes {
            name,
            id,
            stack_id,
            changes,
        } => {
            ops.execute(&name, (&id, &stack_id), changes.len(), timeout)
                .await?;
            Ok(match kind {
                Prepared::Create => Outcome::Created,
                Prepared::Update => Outcome::Updated,
            })
        }
    }
}

async fn bucket_exists(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    owner: &str,
) -> Result<bool, BootstrapError> {
    match s3
        .head_bucket()
        .bucket(bucket)
        .expected_bucket_owner(owner)
        .send()
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => Ok(false),
        Err(e) => Err(BootstrapError::S3 {
            operation: "HeadBucket",
            bucket: bucket.into(),
            reason: crate::cloud::error::chain(&e),
        }),
    }
}

/// What `bootstrap --remove` removed; the `--output json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoveReport {
    pub stack: String,
    pub target: String,
    pub identity: Identity,
    /// Whether there was a bootstrap stack to delete.
    pub removed: bool,
    pub ci_stacks_removed: Vec<String>,
    /// The assets bucket (retained by the stack), emptied and deleted.
    pub assets_bucket: String,
    /// Whether there was such a bucket to delete.
    pub assets_bucket_removed: bool,
    pub assets_objects_deleted: usize,
    pub elapsed_ms: u64,
}

/// Every stack of the account and region that is not deleted, by name.
async fn live_stacks(cfn: &aws_sdk_cloudformation::Client) -> Result<Vec<String>, BootstrapError> {
    let mut names = Vec::new();
    let mut token = None;
    loop {
        let out = cfn
            .list_stacks()
            .set_next_token(token)
            .send()
            .await
            .map_err(|e| CfnError::Call {
                operation: "ListStacks",
                stack: "*".into(),
                reason: crate::cloud::error::chain(&e),
            })?;
        for st in out.stack_summaries() {
            let deleted = st.stack_status()
                == Some(&aws_sdk_cloudformation::types::StackStatus::DeleteComplete);
            if let (Some(name), false) = (st.stack_name(), deleted) {
                names.push(name.to_string());
            }
        }
        token = out.next_token().map(str::to_string);
        if token.is_none() {
            names.sort();
            names.dedup();
            return Ok(names);
        }
    }
}

/// Removes the bootstrap: the CI role stacks, the bootstrap stack, and the assets bucket it
/// retains. Refuses while any stage's stack exists, since deleting a stage needs its execution
/// role. Leaves the account's GitHub OIDC provider, which other tools may share. Nothing to
/// remove is success.
pub async fn remove(
    cfg: &BootstrapConfig,
    progress: &dyn StackProgress,
) -> Result<RemoveReport, BootstrapError> {
    let start = Instant::now();
    let (clients, identity) = aws::connect(&cfg.target).await?;
    let stacks = live_stacks(&clients.cfn).await?;
    let stages: Vec<&String> = stacks
        .iter()
        .filter(|s| s.starts_with(&format!("{}-", stack::app::APP)))
        .collect();
    if !stages.is_empty() {
        return Err(BootstrapError::Invalid(format!(
            "stages are still deployed ({}): tear each down with `cargo xtask teardown --stage S {}` first, since deleting a stage needs its execution role",
            stages
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            flags(&cfg.target)
        )));
    }
    let poll = aws::poll_interval(&cfg.target);
    let mut ci_stacks_removed = Vec::new();
    let ci_prefix = names::ci_stack("");
    for name in stacks.iter().filter(|s| s.starts_with(&ci_prefix)) {
        let ops = StackOps {
            cfn: &clients.cfn,
            name,
            poll,
            progress,
            role_arn: None,
        };
        if let Some(info) = ops.wait_settled(cfg.timeout).await? {
            progress.step(&format!("deleting the CI role stack {name}"));
            ops.delete(&info.id, cfg.timeout).await?;
            ci_stacks_removed.push(name.clone());
        }
    }
    let ops = StackOps {
        cfn: &clients.cfn,
        name: names::STACK,
        poll,
        progress,
        role_arn: None,
    };
    let removed = match ops.wait_settled(cfg.timeout).await? {
        Some(info) => {
            progress.step(&format!("deleting {}", names::STACK));
            ops.delete(&info.id, cfg.timeout).await?;
            true
        }
        None => {
            progress.step(&format!("{} does not exist", names::STACK));
            false
        }
    };
    let bucket = names::assets_bucket(&identity.account, &identity.region);
    let assets_bucket_removed = bucket_exists(&clients.s3, &bucket, &identity.account).await?;
    let mut assets_objects_deleted = 0;
    if assets_bucket_removed {
        progress.step(&format!("emptying and deleting the assets bucket {bucket}"));
        assets_objects_deleted =
            crate::cloud::assets::remove_bucket(&clients.s3, &bucket, &identity.account)
                .await
                .map_err(|e| BootstrapError::S3 {
                    operation: "DeleteBucket",
                    bucket: bucket.clone(),
                    reason: e.to_string(),
                })?;
    }
    Ok(RemoveReport {
        stack: names::STACK.into(),
        target: cfg.target.describe(),
        identity,
        removed,
        ci_stacks_removed,
        assets_bucket: bucket,
        assets_bucket_removed,
        assets_objects_deleted,
        elapsed_ms: crate::util::elapsed_ms(start),
    })
}

fn iam_call<E: std::error::Error + 'static>(
    operation: &'static str,
) -> impl Fn(aws_sdk_iam::error::SdkError<E>) -> BootstrapError {
    move |e| BootstrapError::Iam {
        operation,
        reason: crate::cloud::error::chain(&e),
    }
}

/// GitHub's OIDC provider (created when the account has none) and the CI role's stack.
async fn github_ci(
    iam: &aws_sdk_iam::Client,
    cfn: &aws_sdk_cloudformation::Client,
    identity: &Identity,
    ci: &GithubCi,
    cfg: &BootstrapConfig,
    progress: &dyn StackProgress,
) -> Result<CiReport, BootstrapError> {
    let provider_arn = format!(
        "arn:{}:iam::{}:oidc-provider/{GITHUB_ISSUER}",
        identity.partition, identity.account
    );
    let listed = iam
        .list_open_id_connect_providers()
        .send()
        .await
        .map_err(iam_call("ListOpenIDConnectProviders"))?;
    let exists = listed
        .open_id_connect_provider_list()
        .iter()
        .any(|p| p.arn() == Some(provider_arn.as_str()));
    if !exists {
        progress.step(&format!(
            "creating the account's OIDC provider for GitHub Actions ({GITHUB_ISSUER})"
        ));
        iam.create_open_id_connect_provider()
            .url(format!("https://{GITHUB_ISSUER}"))
            .client_id_list(GITHUB_AUDIENCE)
            .send()
            .await
            .map_err(iam_call("CreateOpenIDConnectProvider"))?;
    }
    let stack = names::ci_stack(&ci.digest());
    let ops = StackOps {
        cfn,
        name: &stack,
        poll: aws::poll_interval(&cfg.target),
        progress,
        role_arn: None,
    };
    progress.step(&format!(
        "CI role for {} (stages `{}`) in stack {stack}",
        ci.subject_claim(),
        ci.stages
    ));
    let kind = ops.prepare(cfg.timeout).await?;
    let t = ci_template(&identity.account, &identity.region, &provider_arn, ci);
    let tags = BTreeMap::from([("app".to_string(), stack::app::APP.to_string())]);
    let status = apply(&ops, kind, &t, &tags, cfg.timeout, progress).await?;
    let role_arn = match ops.describe().await? {
        Some(info) => StackOutputs::of(&info).need(outputs::CI_ROLE)?,
        None => return Err(StageError::NoStack { stack }.into()),
    };
    Ok(CiReport {
        stack,
        role_arn,
        subject: ci.subject_claim(),
        stages: ci.stages.to_string(),
        provider_arn,
        provider_created: !exists,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        Spec {
            account: "123456789012".into(),
            region: "eu-west-1".into(),
            preview: StagePattern::parse("pr-*").unwrap_or_else(|_| StagePattern::all()),
        }
    }

    /// IAM's quotas: a role's inline policies at most 10,240 characters, a managed policy
    /// 6,144, whitespace not counted.
    #[test]
    fn every_policy_fits_iams_size_quotas() {
        let len = |doc: &PolicyDocument<String>| {
            serde_json::to_string(doc)
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .count()
        };
        let s = spec();
        for scope in Scope::ALL {
            let stages = s.stages(scope);
            let exec = len(&permissions::execution_policy(
                &s.account, &s.region, scope, &stages,
            ));
            let boundary = len(&permissions::boundary_policy(
                &s.account, &s.region, &stages,
            ));
            let deployer = len(&permissions::deployer_policy(
                &s.account, &s.region, &stages,
            ));
            assert!(exec <= 10_240, "{scope} execution policy: {exec}");
            assert!(boundary <= 6_144, "{scope} boundary: {boundary}");
            assert!(deployer <= 10_240, "{scope} deployer policy: {deployer}");
        }
    }

    #[test]
    fn ci_roles_trust_one_repository_subject_only() {
        let ci = GithubCi {
            repo: "octo/pipe".into(),
            subject: CiSubject::Environment("preview".into()),
            stages: StagePattern::parse("pr-*").unwrap_or_else(|_| StagePattern::all()),
        };
        assert!(ci.validate().is_ok());
        assert_eq!(ci.subject_claim(), "repo:octo/pipe:environment:preview");
        let t = ci_template(
            "123456789012",
            "eu-west-1",
            "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com",
            &ci,
        );
        let json: serde_json::Value =
            serde_json::from_str(&t.to_json().unwrap_or_default()).unwrap_or_default();
        let trust = &json["Resources"][CI_ROLE_ID]["Properties"]["AssumeRolePolicyDocument"];
        assert_eq!(
            trust["Statement"][0]["Condition"]["StringEquals"]["token.actions.githubusercontent.com:sub"],
            serde_json::json!(["repo:octo/pipe:environment:preview"])
        );
        let branch = GithubCi {
            subject: CiSubject::Branch("main".into()),
            ..ci.clone()
        };
        assert_eq!(branch.subject_claim(), "repo:octo/pipe:ref:refs/heads/main");
        assert_ne!(branch.digest(), ci.digest());
        for bad in [
            "octo",
            "octo/",
            "/pipe",
            "oc to/pipe",
            "octo/pipe/x",
            "octo/pi*pe",
        ] {
            let c = GithubCi {
                repo: bad.into(),
                ..ci.clone()
            };
            assert!(c.validate().is_err(), "{bad}");
        }
        let c = GithubCi {
            subject: CiSubject::Branch("*".into()),
            ..ci
        };
        assert!(c.validate().is_err(), "a wildcard branch");
    }

    /// Only CloudFormation can act as an execution role: nothing else can use its grants to
    /// update a function's code outside a deploy.
    #[test]
    fn only_cloudformation_assumes_the_execution_roles() {
        let json: serde_json::Value =
            serde_json::from_str(&template(&spec()).to_json().unwrap_or_default())
                .unwrap_or_default();
        for scope in Scope::ALL {
            let role = &json["Resources"][logical(scope, "ExecutionRole")]["Properties"];
            assert_eq!(
                role["AssumeRolePolicyDocument"]["Statement"],
                serde_json::json!([{
                    "Effect": "Allow",
                    "Principal": {"Service": "cloudformation.amazonaws.com"},
                    "Action": ["sts:AssumeRole"]
                }]),
                "{scope}"
            );
            assert!(role.get("PermissionsBoundary").is_none());
        }
    }

    /// `bootstrap` sends the template inline: it must stay within CloudFormation's limit.
    #[test]
    fn the_template_fits_an_inline_template_body() {
        let body = inline(&template(&spec()));
        assert!(body.is_ok(), "{body:?}");
    }

    #[test]
    fn the_template_is_deterministic_and_versioned() {
        let a = template(&spec()).to_json().unwrap_or_default();
        let b = template(&spec()).to_json().unwrap_or_default();
        assert_eq!(a, b);
        let mut other = spec();
        other.preview = StagePattern::parse("preview-*").unwrap_or_else(|_| StagePattern::all());
        let v = |s: &Spec| {
            format!(
                "{:?}",
                template(s).outputs.get(outputs::VERSION).map(|o| &o.value)
            )
        };
        assert_ne!(v(&spec()), v(&other));
    }
}
