//! `cargo xtask`: the project's command line. Parses arguments, turns them into the plain
//! config structs the libraries take, and prints for humans; the work happens in the libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod bootstrap;
mod build;
mod child;
mod console;
mod deploy;
mod e2e;
mod lint;
mod local;
mod logs;
mod model;
mod redrive;
mod smoke;
mod status;
mod synth;
mod target;
mod teardown;
mod test;
#[cfg(test)]
mod tidy;
mod trace;
mod user;
mod watch;

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Synthesize, build, deploy, smoke-test and tear down the serverless image pipeline",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// On an error, also print the full chain of causes (the AWS SDK's included)
    #[arg(long, global = true)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Write the CloudFormation template and each function's IAM policy, and summarise them
    Synth(synth::Args),
    /// Build the handlers as static Lambda binaries and package them as deterministic zips
    Build(build::Args),
    /// Create or update the bootstrap stack of an account and region (once, as an administrator)
    Bootstrap(bootstrap::Args),
    /// Deploy the stack (build, upload, change set, execute) to AWS or the local environment
    Deploy(deploy::Args),
    /// Prove a deployed pipeline works: upload, labels, listing, bad input, IAM matrix
    SmokeTest(smoke::Args),
    /// Remove a deployed stage: empty its bucket, delete its stack
    Teardown(teardown::Args),
    /// Print the functions' logs and the API's access log as one time-ordered stream
    Logs(logs::Args),
    /// Follow one image through the pipeline: API request, object versions, S3 event, receives and back-offs, item, dead letters
    Trace(trace::Args),
    /// Move the messages the work queue gave up on (its dead-letter queue) back to it, after a fix
    Redrive(redrive::Args),
    /// Keep the local environment's stage deployed: rebuild and redeploy what a saved change affects
    Watch(watch::Args),
    /// Show a deployed stage in one screen: stack, API, code deployed against built, template drift, pace, queues, alarms, items
    Status(status::Args),
    /// Manage a stage's users: add, remove (with all their images), list, print an access token
    User(user::Args),
    /// Print the IAM policy the identity running deploy, smoke-test and teardown needs (after bootstrap)
    DeployerPolicy(DeployerPolicyArgs),
    /// Manage the local environment (AWS emulator and label service on 127.0.0.1)
    Local(local::Args),
    /// Fetch and convert the local label model (EfficientNet-Lite0) into target/models/
    Model,
    /// Validate synthesized templates and policies with cfn-lint, checkov and parliament
    Lint(lint::Args),
    /// Run benchmarks; print a table and write JSON under target/bench/
    Bench(bench::Args),
    /// Run everything CI runs: Rust tests, lint, arm64 artifacts, the local end-to-end test
    Test(test::Args),
    /// Run only the end-to-end test on the local environment (part of `test`)
    E2e,
}

#[derive(Debug, clap::Args)]
struct DeployerPolicyArgs {
    /// Region the stacks are deployed in
    #[arg(long, value_name = "REGION")]
    region: String,
    /// The 12-digit account the stacks are deployed in
    #[arg(long, value_name = "ID", value_parser = parse_account)]
    account: String,
    /// Limit every statement to these stages (`pr-*` for a preview identity; it then passes
    /// only the preview execution role)
    #[arg(long, value_name = "PATTERN", default_value = "*")]
    stages: stack::app::StagePattern,
}

fn parse_account(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err("an AWS account id is 12 digits".into())
    }
}

fn deployer_policy(a: DeployerPolicyArgs) -> anyhow::Result<()> {
    deployer::cloud::aws::validate_region(&a.region)?;
    let doc = deployer::ops::permissions::deployer_policy(&a.account, &a.region, &a.stages);
    println!("{}", serde_json::to_string_pretty(&doc)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let result = match cli.cmd {
        Cmd::Synth(a) => synth::run(a),
        Cmd::Build(a) => build::run(a),
        Cmd::Bootstrap(a) => bootstrap::run(a),
        Cmd::Deploy(a) => deploy::run(a),
        Cmd::SmokeTest(a) => smoke::run(a),
        Cmd::Teardown(a) => teardown::run(a),
        Cmd::Status(a) => status::run(a),
        Cmd::Logs(a) => logs::run(a),
        Cmd::Trace(a) => trace::run(a),
        Cmd::Watch(a) => watch::run(a),
        Cmd::Redrive(a) => redrive::run(a),
        Cmd::Local(a) => local::run(a),
        Cmd::DeployerPolicy(a) => deployer_policy(a),
        Cmd::User(a) => user::run(a),
        Cmd::Lint(a) => lint::run(a),
        Cmd::Model => model::run(),
        Cmd::Test(a) => test::run(a),
        Cmd::E2e => e2e::run(None),
        Cmd::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if verbose {
                // The innermost error with every field, the SDK's own chain included.
                eprintln!("\ndetail: {:#?}", e.root_cause());
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn synth_rejects_a_bad_stage_with_a_clear_message() {
        let err = Cli::try_parse_from(["cargo xtask", "synth", "--stage", "Prod_1"])
            .map(|_| ())
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("lowercase letters, digits and single hyphens"),
            "{msg}"
        );
    }

    #[test]
    fn synth_defaults() {
        let cli = Cli::try_parse_from(["cargo xtask", "synth"]).map_err(|e| e.to_string());
        match cli {
            Ok(Cli {
                cmd: Cmd::Synth(a), ..
            }) => {
                assert_eq!(a.stage.as_str(), "dev");
                assert_eq!(a.arch, stack::Architecture::Arm64);
            }
            other => panic!("unexpected parse: {other:?}"),
        }
    }

    #[test]
    fn deploy_takes_at_most_one_place() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| {
            Cli::try_parse_from(args.iter().copied())
                .map(|_| ())
                .map_err(|e| e.kind())
        };
        // Without a place, the region comes from the environment or the profile (checked
        // when the command runs, and by the end-to-end test when there is none).
        assert_eq!(kind(&["cargo xtask", "deploy"]), Ok(()));
        assert_eq!(
            kind(&["cargo xtask", "deploy", "--local", "--region", "eu-west-1"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind(&["cargo xtask", "teardown", "--local", "--profile", "p"]),
            Err(ErrorKind::ArgumentConflict)
        );
        assert_eq!(kind(&["cargo xtask", "deploy", "--local"]), Ok(()));
        assert_eq!(
            kind(&[
                "cargo xtask",
                "smoke-test",
                "--region",
                "eu-west-1",
                "--stage",
                "pr-12"
            ]),
            Ok(())
        );
        assert_eq!(
            kind(&[
                "cargo xtask",
                "deployer-policy",
                "--region",
                "eu-west-1",
                "--account",
                "12"
            ]),
            Err(ErrorKind::ValueValidation)
        );
    }

    /// A command line, the kind of error clap must report, and what its message must say.
    type BadLine = (Vec<&'static str>, clap::error::ErrorKind, &'static str);

    /// Mistyped commands and stage names that are not stages.
    fn bad_stages(long: &'static str) -> Vec<BadLine> {
        use clap::error::ErrorKind::*;
        vec![
            (vec!["deploi"], InvalidSubcommand, ""),
            (vec!["deploy", "--stagee", "dev"], UnknownArgument, ""),
            (vec!["deploy", "--stage"], InvalidValue, ""),
            (
                vec!["deploy", "--stage", ""],
                ValueValidation,
                "must not be empty",
            ),
            (
                vec!["deploy", "--stage", "Prod"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "pr_1"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "a--b"],
                ValueValidation,
                "single hyphens",
            ),
            (
                vec!["deploy", "--stage=-a"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "a-"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "../etc"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "pr 1"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deploy", "--stage", "prüf"],
                ValueValidation,
                "lowercase letters",
            ),
            (vec!["deploy", "--stage", long], ValueValidation, "at most"),
            (
                vec!["deploy", "--stage", "assets"],
                ValueValidation,
                "reserved",
            ),
        ]
    }

    /// Bad values and conflicts of the other flags.
    fn bad_flags() -> Vec<BadLine> {
        use clap::error::ErrorKind::*;
        vec![
            (vec!["deploy", "--arch", "sparc"], ValueValidation, "sparc"),
            (vec!["deploy", "--output", "yaml"], InvalidValue, ""),
            (
                vec!["deploy", "--local", "--region", "eu-west-1"],
                ArgumentConflict,
                "",
            ),
            (
                vec!["deploy", "--local", "--profile", "p"],
                ArgumentConflict,
                "",
            ),
            (vec!["deploy", "--local-port", "70000"], ValueValidation, ""),
            (vec!["deploy", "--local-port", "-1"], UnknownArgument, ""),
            (vec!["deploy", "--local-port", "http"], ValueValidation, ""),
            (vec!["deploy", "--wait", "soon"], ValueValidation, ""),
            (vec!["deploy", "--plan=yes"], TooManyValues, ""),
            (vec!["smoke-test", "--timeout", "1e9"], ValueValidation, ""),
            (vec!["smoke-test", "--keep", "--keep"], ArgumentConflict, ""),
            (
                vec!["teardown", "--stage", "Prod"],
                ValueValidation,
                "lowercase letters",
            ),
            (
                vec!["deployer-policy", "--account", "12"],
                ValueValidation,
                "",
            ),
            (
                vec!["deployer-policy", "--account", "abcdefghijkl"],
                ValueValidation,
                "",
            ),
            (
                vec!["deployer-policy", "--account", "1234567890123"],
                ValueValidation,
                "",
            ),
            (vec!["local", "sideways"], InvalidSubcommand, ""),
        ]
    }

    /// Hostile and mistaken command lines, each with the exact kind of error clap reports and,
    /// where the message is ours, what it says. None may panic or reach a command.
    #[test]
    fn hostile_command_lines_get_their_exact_error() {
        let long: &'static str = "a".repeat(40).leak();
        let cases = [bad_stages(long), bad_flags()].concat();
        let mut wrong = Vec::new();
        for (args, want, says) in &cases {
            let argv = std::iter::once("cargo xtask").chain(args.iter().copied());
            match Cli::try_parse_from(argv) {
                Ok(_) => wrong.push(format!("{args:?}: accepted")),
                Err(e) if e.kind() != *want => {
                    wrong.push(format!("{args:?}: {:?}, want {want:?}: {e}", e.kind()))
                }
                Err(e) if !e.to_string().contains(says) => {
                    wrong.push(format!("{args:?}: does not say `{says}`: {e}"))
                }
                Err(_) => {}
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// Regions are checked for their form before any call, with one message.
    #[test]
    fn hostile_regions_are_refused_by_form() {
        for bad in [
            "",
            "eu west 1",
            "Ireland",
            "eu-west-1/../",
            "us-east-1\n",
            "x".repeat(64).as_str(),
        ] {
            let e = deployer::cloud::aws::validate_region(bad).map_err(|e| e.to_string());
            assert!(
                e.as_ref()
                    .is_err_and(|m| m.contains("is not an AWS region code")),
                "{bad:?}: {e:?}"
            );
        }
        for good in [
            "eu-west-1",
            "us-gov-west-1",
            "cn-north-1",
            "us-isof-south-1",
        ] {
            assert!(
                deployer::cloud::aws::validate_region(good).is_ok(),
                "{good}"
            );
        }
    }
}
