//! `cargo xtask local up|down|status`: the local environment (AWS emulator and label service).

use anyhow::{Result, bail};
use deployer::local::emulator::{self as local, LocalStatus};

use crate::target::{Output, Ports, print_json};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
    #[command(flatten)]
    pub ports: Ports,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
}

#[derive(Debug, clap::Subcommand)]
pub enum Cmd {
    /// Start the emulator and the label service (no-op when they are running)
    Up,
    /// Stop both (no-op when they are not running); state stays under target/local/
    Down {
        /// Also delete everything the environment holds (stacks, objects, items, IAM users),
        /// to start over from nothing
        #[arg(long)]
        wipe: bool,
    },
    /// Show whether each service is running and healthy; exits 1 when one is not
    Status,
}

fn table(st: &LocalStatus) -> String {
    st.services
        .iter()
        .map(|s| {
            format!(
                "{:<14} {:<24} {:<10} {:<9} log {}",
                s.name,
                s.url,
                s.pid.map_or("-".to_string(), |p| format!("pid {p}")),
                if s.healthy { "healthy" } else { "down" },
                s.log.display()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The table, the endpoint, and what the emulator enforces.
fn report(st: &LocalStatus, endpoint: &str) -> String {
    format!(
        "{}\nendpoint: {endpoint} (TLS; clients trust {})\nIAM enforcement: {}",
        table(st),
        st.certificate.display(),
        match (
            st.iam_enforced,
            st.services.first().is_some_and(|s| s.healthy)
        ) {
            (true, _) => "on (every call is authorized as its caller)",
            (false, true) =>
                "OFF: this emulator was not started by `local up`; stop it and run `cargo xtask local up`",
            (false, false) => "unknown (the emulator is not answering)",
        }
    )
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.ports.config();
    match a.cmd {
        Cmd::Up => {
            let st = local::up(&cfg, &crate::console::Console::new("local"))?;
            match a.output {
                Output::Json => print_json(&st)?,
                Output::Text => println!("{}", report(&st, &cfg.endpoint())),
            }
        }
        Cmd::Down { wipe } => {
            let stopped = local::down(&cfg)?;
            if wipe {
                local::wipe(&cfg)?;
                eprintln!(
                    "local  deleted everything the environment held ({})",
                    cfg.dir.display()
                );
            }
            match a.output {
                Output::Json => print_json(&Stopped { stopped })?,
                Output::Text if stopped.is_empty() => {
                    println!("the local environment was not running")
                }
                Output::Text => println!("stopped {}", stopped.join(" and ")),
            }
        }
        Cmd::Status => {
            let st = local::status(&cfg);
            match a.output {
                Output::Json => print_json(&st)?,
                Output::Text => println!("{}", report(&st, &cfg.endpoint())),
            }
            if !st.all_healthy() {
                bail!(
                    "the local environment is not (fully) running: `cargo xtask local up` starts it"
                );
            }
        }
    }
    Ok(())
}

/// `local down --output json`: the services it stopped.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Stopped {
    pub stopped: Vec<String>,
}
