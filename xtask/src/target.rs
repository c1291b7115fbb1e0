//! What deploy, smoke-test and teardown share: where they run (`--region` or `--local`), how
//! they print (`--output`), and the live CloudFormation progress on stderr.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use deployer::aws::{LocalCredentials, Target};
use deployer::cfn::{Observer, StackEvent};
use deployer::local::{self, LocalConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("where").required(true).args(["region", "local"]))]
pub struct Where {
    /// AWS region to work in (credentials come from the standard AWS chain)
    #[arg(long, value_name = "REGION")]
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
            labels_binary: self.labels_bin.clone(),
            ..LocalConfig::for_ports(self.local_port, self.labels_port)
        }
    }
}

/// The resolved target, plus the label endpoint when it is local.
pub struct Resolved {
    pub target: Target,
    pub labels_endpoint: Option<String>,
}

impl Where {
    /// For `--local`, starts the local environment when it is not running.
    pub fn resolve(&self) -> Result<Resolved> {
        if self.local {
            let cfg = self.ports.config();
            let st = local::status(&cfg);
            if !st.all_healthy() {
                eprintln!("local  the local environment is not running; starting it");
                local::up(&cfg, &|m| eprintln!("local  {m}"))
                    .context("cannot start the local environment")?;
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
            });
        }
        let region = self
            .region
            .clone()
            .context("--region is required unless --local is given")?;
        Ok(Resolved {
            target: Target::Aws {
                region,
                profile: self.profile.clone(),
            },
            labels_endpoint: None,
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

/// CloudFormation progress on stderr: a bar (resources done / total) with the latest events
/// beneath it on a terminal, one line per event otherwise.
pub struct Progress {
    bar: Mutex<Option<ProgressBar>>,
    recent: Mutex<VecDeque<String>>,
    prefix: &'static str,
}

const RECENT: usize = 4;

impl Progress {
    pub fn new(prefix: &'static str) -> Self {
        Self {
            bar: Mutex::new(None),
            recent: Mutex::new(VecDeque::new()),
            prefix,
        }
    }

    fn tty() -> bool {
        std::io::stderr().is_terminal()
    }
}

fn event_line(e: &StackEvent) -> String {
    let mut s = format!("{:<32} {:<20} {}", e.logical_id, e.status, e.resource_type);
    if !e.reason.is_empty() && e.status.ends_with("FAILED") {
        s.push_str(&format!(" - {}", e.reason));
    }
    s
}

impl Observer for Progress {
    fn step(&self, message: &str) {
        let text = format!("{}  {message}", self.prefix);
        match self.bar.lock().ok().as_deref().and_then(Option::as_ref) {
            Some(b) => b.println(text),
            None => eprintln!("{text}"),
        }
    }

    fn begin(&self, total: usize) {
        if !Self::tty() {
            return;
        }
        let bar = ProgressBar::new(total as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {elapsed:>4} [{bar:30}] {pos}/{len} resources\n{msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn event(&self, e: &StackEvent, done: usize) {
        let line = event_line(e);
        let shown = {
            let slot = self.bar.lock();
            if let Some(bar) = slot.as_ref().ok().and_then(|s| s.as_ref()) {
                if done as u64 > bar.length().unwrap_or(0) {
                    bar.set_length(done as u64);
                }
                bar.set_position(done as u64);
                if let Ok(mut recent) = self.recent.lock() {
                    recent.push_back(format!("  {line}"));
                    while recent.len() > RECENT {
                        recent.pop_front();
                    }
                    bar.set_message(recent.iter().cloned().collect::<Vec<_>>().join("\n"));
                }
                if e.status.ends_with("FAILED") {
                    bar.println(format!("{}  {line}", self.prefix));
                }
                true
            } else {
                false
            }
        };
        if !shown {
            eprintln!("{}  {line}", self.prefix);
        }
    }

    fn end(&self) {
        if let Some(bar) = self.bar.lock().ok().and_then(|mut s| s.take()) {
            bar.finish_and_clear();
        }
        if let Ok(mut r) = self.recent.lock() {
            r.clear();
        }
    }
}

pub fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}
