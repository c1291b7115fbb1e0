//! The GitHub Actions workflow `bootstrap --ci github` writes for the CI role it makes: for a
//! role trusting a GitHub environment, a preview workflow (each pull request deployed to its
//! own stage, smoke-tested and torn down); for a role trusting a branch, a release workflow
//! (each push to that branch deploys the stage `prod` and smoke-tests it).
//!
//! What makes it one to trust: every action pinned by commit, the workflow's token with no
//! permission and the job's with only `id-token: write` (for the role) and `contents: read`,
//! no `pull_request_target`, checkout without persisted credentials, and nothing from the
//! event or inputs expanded inside a `run:` script (they reach it as environment variables).
//! `cargo xtask lint` checks both kinds with actionlint and zizmor.

use stack::Stage;
use stack::app::StagePattern;

use crate::ops::bootstrap::CiSubject;

/// The actions the workflows use, pinned by commit (the tag each commit is, as a comment).
pub const CHECKOUT: &str = "actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2";
pub const SETUP_PYTHON: &str =
    "actions/setup-python@0b93645e9fea7318ecaed2b359559ac225c90a2b # v5.3.0";
pub const AWS_CREDENTIALS: &str =
    "aws-actions/configure-aws-credentials@e3dd6a429d7300a6a4c196c26e071d42e0343502 # v4.0.2";

/// The stage a release workflow deploys.
pub const RELEASE_STAGE: &str = "prod";

/// What a workflow is written for.
#[derive(Debug, Clone)]
pub struct WorkflowSpec {
    pub role_arn: String,
    pub region: String,
    pub subject: CiSubject,
    /// The stages the role may deploy.
    pub stages: StagePattern,
}

/// Where the workflow goes when `--workflow` does not say.
pub fn default_path(subject: &CiSubject) -> &'static str {
    match subject {
        CiSubject::Environment(_) => ".github/workflows/image-pipeline-preview.yml",
        CiSubject::Branch(_) => ".github/workflows/image-pipeline-release.yml",
    }
}

/// The workflow's YAML, or why none fits the role.
pub fn github(spec: &WorkflowSpec) -> Result<String, String> {
    match &spec.subject {
        CiSubject::Environment(env) => {
            if !spec.stages.matches(&preview_probe()) {
                return Err(format!(
                    "the CI role may deploy stages {}, not the pull requests' pr-N stages the preview workflow deploys (bootstrap it with --stages 'pr-*')",
                    spec.stages
                ));
            }
            Ok(preview(spec, env))
        }
        CiSubject::Branch(branch) => {
            let prod = Stage::parse(RELEASE_STAGE).map_err(|e| e.to_string())?;
            if !spec.stages.matches(&prod) {
                return Err(format!(
                    "the CI role may deploy stages {}, not {RELEASE_STAGE}, which the release workflow deploys",
                    spec.stages
                ));
            }
            Ok(release(spec, branch))
        }
    }
}

/// A stage name every pull request's stage looks like.
fn preview_probe() -> Stage {
    Stage::parse("pr-1").unwrap_or_else(|_| unreachable!("pr-1 is a valid stage name"))
}

/// The steps both workflows start with: the code, Python for the tool's validators and
/// emulator-free builds, and the role's credentials.
fn setup_steps(spec: &WorkflowSpec) -> String {
    format!(
        r#"      - uses: {CHECKOUT}
        with:
          persist-credentials: false
      - uses: {SETUP_PYTHON}
        with:
          python-version: "3.11"
      - uses: {AWS_CREDENTIALS}
        with:
          role-to-assume: {role}
          aws-region: {region}
"#,
        role = spec.role_arn,
        region = spec.region,
    )
}

fn preview(spec: &WorkflowSpec, environment: &str) -> String {
    format!(
        r#"# Written by `cargo xtask bootstrap --ci github`; bootstrap again rather than edit it.
# Each pull request is deployed to its own stage pr-N with the CI role, smoke-tested and torn
# down. The role trusts runs in the GitHub environment "{environment}" only and may deploy
# stages {stages}, so a pull request cannot touch any other stage.
name: image-pipeline preview
on: pull_request
permissions: {{}}
concurrency:
  group: image-pipeline-preview-${{{{ github.event.pull_request.number }}}}
  cancel-in-progress: false # never interrupt a deploy; the next run waits
jobs:
  preview:
    runs-on: ubuntu-24.04
    environment: {environment}
    timeout-minutes: 90
    permissions:
      id-token: write # the OIDC token the role trusts
      contents: read
    env:
      AWS_REGION: {region}
      STAGE: pr-${{{{ github.event.pull_request.number }}}}
    steps:
{setup}      - name: deploy
        run: cargo xtask deploy --region "$AWS_REGION" --stage "$STAGE" --output json > deploy.json
      - name: smoke test
        run: cargo xtask smoke-test --region "$AWS_REGION" --stage "$STAGE" --output json > smoke.json
      - name: teardown
        if: always()
        run: cargo xtask teardown --region "$AWS_REGION" --stage "$STAGE" --purge-assets
"#,
        stages = spec.stages,
        region = spec.region,
        setup = setup_steps(spec),
    )
}

fn release(spec: &WorkflowSpec, branch: &str) -> String {
    format!(
        r#"# Written by `cargo xtask bootstrap --ci github`; bootstrap again rather than edit it.
# Each push to {branch} deploys the stage {RELEASE_STAGE} with the CI role and smoke-tests it. The
# deploy watches the stage's alarms for 10 minutes and rolls back on one. A change that
# broadens a permission is refused here; to approve it, run this workflow by hand on
# {branch} with approve-broadening ticked.
name: image-pipeline release
on:
  push:
    branches: [{branch}]
  workflow_dispatch:
    inputs:
      approve-broadening:
        description: Deploy even though it broadens a permission (the refused run names them)
        type: boolean
        default: false
permissions: {{}}
concurrency:
  group: image-pipeline-release
  cancel-in-progress: false # never interrupt a deploy; the next run waits
jobs:
  release:
    runs-on: ubuntu-24.04
    timeout-minutes: 120
    permissions:
      id-token: write # the OIDC token the role trusts
      contents: read
    env:
      AWS_REGION: {region}
      STAGE: {RELEASE_STAGE}
      APPROVE_BROADENING: ${{{{ inputs.approve-broadening == true }}}}
    steps:
{setup}      - name: deploy
        run: |
          approve=()
          if [ "$APPROVE_BROADENING" = true ]; then approve=(--approve-broadening); fi
          cargo xtask deploy --region "$AWS_REGION" --stage "$STAGE" "${{approve[@]}}" --output json > deploy.json
      - name: smoke test
        run: cargo xtask smoke-test --region "$AWS_REGION" --stage "$STAGE" --output json > smoke.json
"#,
        region = spec.region,
        setup = setup_steps(spec),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subject: CiSubject, stages: &str) -> WorkflowSpec {
        WorkflowSpec {
            role_arn: "arn:aws:iam::123456789012:role/ImagePipelineCi-0123456789-eu-west-1".into(),
            region: "eu-west-1".into(),
            subject,
            stages: stages.parse().unwrap_or_else(|e| panic!("{stages}: {e:?}")),
        }
    }

    #[test]
    fn the_preview_workflow_is_pinned_least_privileged_and_injection_free() {
        let y = github(&spec(CiSubject::Environment("preview".into()), "pr-*"))
            .unwrap_or_else(|e| panic!("{e}"));
        for pin in [CHECKOUT, SETUP_PYTHON, AWS_CREDENTIALS] {
            assert!(y.contains(&format!("uses: {pin}")), "{pin}");
        }
        assert!(y.contains("permissions: {}\n"));
        assert!(y.contains("environment: preview\n"));
        assert!(y.contains("role-to-assume: arn:aws:iam::123456789012:role/"));
        assert!(!y.contains("pull_request_target"));
        // No expression inside a script: every `${{` is on a line that is not a run step.
        for line in y.lines().filter(|l| l.contains("${{")) {
            assert!(!line.trim_start().starts_with("run:"), "{line}");
            assert!(
                line.trim_start().starts_with("STAGE:") || line.trim_start().starts_with("group:"),
                "{line}"
            );
        }
    }

    #[test]
    fn the_release_workflow_approves_broadening_only_by_hand() {
        let y =
            github(&spec(CiSubject::Branch("main".into()), "*")).unwrap_or_else(|e| panic!("{e}"));
        assert!(y.contains("branches: [main]"));
        assert!(y.contains("STAGE: prod"));
        assert!(y.contains("APPROVE_BROADENING: ${{ inputs.approve-broadening == true }}"));
        assert!(y.contains(r#""${approve[@]}""#));
        assert!(!y.contains("teardown"));
    }

    /// docs/ci.md shows the preview workflow exactly as bootstrap writes it for its example.
    #[test]
    fn the_ci_recipe_shows_the_workflow_bootstrap_writes() {
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/ci.md"),
        )
        .unwrap_or_else(|e| panic!("docs/ci.md: {e}"));
        let y = github(&spec(CiSubject::Environment("preview".into()), "pr-*"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            doc.contains(&format!("```yaml\n{y}```")),
            "docs/ci.md does not show the preview workflow bootstrap writes:\n{y}"
        );
    }

    #[test]
    fn a_role_that_cannot_deploy_the_workflow_s_stages_gets_no_workflow() {
        let e = github(&spec(CiSubject::Environment("preview".into()), "prod"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("pr-*"), "{e}");
        let e = github(&spec(CiSubject::Branch("main".into()), "pr-*"))
            .err()
            .unwrap_or_default();
        assert!(e.contains("not prod"), "{e}");
    }
}
