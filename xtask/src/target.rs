//! What deploy, smoke-test and teardown share: where they run (`--region` or `--local`) and
//! how they print (`--output`).

use anyhow::{Context, Result};
use deployer::cloud::aws::{LocalCredentials, RegionSource, Target};
use deployer::local::emulator::{self as local, LocalConfig};

use crate::console::Console;
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
pub struct Where {
    /// AWS region to work in (default: AWS_REGION, AWS_DEFAULT_REGION, then the profile's
    /// region); credentials come from the standard AWS chain
    #[arg(long, value_name = "REGION", conflicts_with = "local")]
    pub region: Option<String>,
    /// Work against the local environment on 127.0.0.1 (started when not running)
    #[arg(long)]
    pub local: bool,
    /// AWS profile to use (default: the standard chain's choice)
    #[arg(long, value_name = "NAME", conflicts_with = "local")]
    pub profile: Option<String>,
    #[command(flatten)]
    pub ports: Ports,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Ports {
    /// Port of the local AWS emulator on 127.0.0.1
    #[arg(long, value_name = "PORT", default_value_t = local::DEFAULT_PORT, env = "IMAGE_PIPELINE_LOCAL_PORT")]
    pub local_port: u16,
    /// Port of the local label service on 127.0.0.1
    #[arg(long, value_name = "PORT", default_value_t = local::DEFAULT_LABELS_PORT, env = "IMAGE_PIPELINE_LABELS_PORT")]
    pub labels_port: u16,
    /// Run this detect-labels binary instead of building one
    #[arg(long, value_name = "PATH", env = "IMAGE_PIPELINE_LABELS_BIN")]
    pub labels_bin: Option<std::path::PathBuf>,
    /// The DetectLabels quota, in calls a second. With --local the label service becomes
    /// that quota: at most Q calls a second, Rekognition's over-quota error above it (0: no
    /// limit; unset: keep the running service's rate; a change restarts it). `deploy` paces
    /// the stage below Q (on AWS instead of the quota Service Quotas gives)
    #[arg(long, value_name = "Q", env = "IMAGE_PIPELINE_LABELS_TPS")]
    pub labels_tps: Option<u32>,
    /// Stub mode for scale runs: the local label service answers every readable image after
    /// MS milliseconds with one label named "Stub (not the model)" instead of running the
    /// model (`off`: the model; unset: keep the running service's). A change restarts it
    #[arg(
        long,
        value_name = "MS|off",
        env = "IMAGE_PIPELINE_LABELS_STUB_LATENCY_MS"
    )]
    pub labels_stub_latency_ms: Option<local::LabelsAnswer>,
    /// Call the local environment as this IAM user of the emulator (default: its root);
    /// the secret comes from IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY
    #[arg(
        long,
        value_name = "KEY_ID",
        env = "IMAGE_PIPELINE_LOCAL_ACCESS_KEY_ID",
        requires = "local_secret_access_key"
    )]
    pub local_access_key_id: Option<String>,
    #[arg(
        long,
        hide = true,
        env = "IMAGE_PIPELINE_LOCAL_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub local_secret_access_key: Option<String>,
}

impl Ports {
    pub fn config(&self) -> LocalConfig {
        LocalConfig {
            // The services start in their own directory: a relative path is the caller's.
            labels_binary: self
                .labels_bin
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            labels_tps: self.labels_tps,
            labels_answer: self.labels_stub_latency_ms,
            ..LocalConfig::for_ports(self.local_port, self.labels_port)
        }
    }
}

/// The resolved target, plus the label endpoint and its rate when it is local.
pub struct Resolved {
    pub target: Target,
    pub labels_endpoint: Option<String>,
    /// The local label service's rate in calls a second, when it has one.
    pub labels_rate: Option<u32>,
}

impl Where {
    /// For `--local`, starts the local environment when it is not running.
    pub fn resolve(&self) -> Result<Resolved> {
        if self.local {
            let cfg = self.ports.config();
            let st = local::status(&cfg);
            if !st.all_healthy() {
                eprintln!("local  the local environment is not running; starting it");
                local::up(&cfg, &Console::new("local"))
                    .context("cannot start the local environment")?;
            } else if !local::labels_as_asked(&cfg) {
                local::up(&cfg, &Console::new("local"))
                    .context("cannot restart the local label service")?;
            }
            let credentials = match (
                &self.ports.local_access_key_id,
                &self.ports.local_secret_access_key,
            ) {
                (Some(id), Some(secret)) => LocalCredentials {
                    access_key_id: id.clone(),
                    secret_access_key: secret.clone(),
                },
                _ => LocalCredentials::root(),
            };
            let certificate = cfg
                .tls()
                .cert_pem()
                .context("the local environment has no certificate")?;
            return Ok(Resolved {
                target: Target::Local {
                    endpoint: cfg.endpoint(),
                    certificate,
                    credentials,
                },
                labels_endpoint: Some(cfg.labels_endpoint()),
                labels_rate: local::labels_rate(&cfg),
            });
        }
        let (region, source) = runtime()?.block_on(deployer::cloud::aws::resolve_region(
            self.region.as_deref(),
            self.profile.as_deref(),
        ))?;
        match source {
            RegionSource::Flag => {}
            RegionSource::Environment => {
                eprintln!("region {region} (from AWS_REGION or AWS_DEFAULT_REGION)")
            }
            RegionSource::Profile => eprintln!("region {region} (from the AWS profile)"),
        }
        Ok(Resolved {
            target: Target::Aws {
                region,
                profile: self.profile.clone(),
            },
            labels_endpoint: None,
            labels_rate: None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Human-readable report on stdout
    Text,
    /// One JSON document on stdout; everything human goes to stderr
    Json,
}

pub fn print_json<T: Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
