//! `cargo xtask user`: a stage's users. `add` makes a user who can sign in at once, `remove`
//! deletes a user and all their images, `list` shows them, `token` prints an access token for
//! curl and scripts.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use deployer::ops::users::{StageUsers, UsersConfig};
use stack::Stage;

use crate::console::Console;
use crate::target::{Output, Where, print_json, runtime};

/// Where a password comes from when it is not typed.
pub const PASSWORD_ENV: &str = "IMAGE_PIPELINE_PASSWORD";

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: UserCmd,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCmd {
    /// Add a user who can sign in at once (password from IMAGE_PIPELINE_PASSWORD, or typed)
    Add(OneUser),
    /// Delete a user and every image they own (objects, items, label index, upload counts)
    Remove(OneUser),
    /// List the stage's users
    List(Stagewide),
    /// Sign in and print an access token on stdout (password from IMAGE_PIPELINE_PASSWORD, or typed)
    Token(OneUser),
}

#[derive(Debug, clap::Args)]
pub struct OneUser {
    /// The user's email address (their user name)
    #[arg(value_name = "EMAIL", value_parser = parse_email)]
    pub email: String,
    #[command(flatten)]
    pub stage: Stagewide,
}

#[derive(Debug, clap::Args)]
pub struct Stagewide {
    #[command(flatten)]
    pub place: Where,
    /// Stage whose user pool to use
    #[arg(long, default_value = "dev")]
    pub stage: Stage,
    /// Output format
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// An email address in the form Cognito takes one: one `@`, something on each side, no
/// spaces or control characters.
pub fn parse_email(s: &str) -> Result<String, String> {
    let ok = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@').is_some_and(|(user, domain)| {
            !user.is_empty() && domain.contains('.') && !domain.contains('@')
        });
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("`{s}` is not an email address"))
    }
}

/// The password from [`PASSWORD_ENV`], or typed (unechoed) on a terminal.
fn password(prompt: &str) -> Result<String> {
    if let Ok(p) = std::env::var(PASSWORD_ENV) {
        if p.is_empty() {
            bail!("{PASSWORD_ENV} is set but empty");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no password: set {PASSWORD_ENV}, or run this on a terminal to type it");
    }
    let p = rpassword::prompt_password(prompt).context("reading the password")?;
    if p.is_empty() {
        bail!("no password typed");
    }
    Ok(p)
}

fn connect(s: &Stagewide) -> Result<StageUsers> {
    let resolved = s.place.resolve()?;
    let cfg = UsersConfig {
        target: resolved.target,
        stage: s.stage.clone(),
    };
    Ok(runtime()?.block_on(StageUsers::connect(&cfg))?)
}

pub fn run(a: Args) -> Result<()> {
    match a.cmd {
        UserCmd::Add(u) => {
            let pass = password(&format!("password for {}: ", u.email))?;
            let users = connect(&u.stage)?;
            let new = runtime()?.block_on(users.add(&u.email, &pass))?;
            let what = if new {
                "added"
            } else {
                "already there; password set"
            };
            match u.stage.output {
                Output::Json => print_json(&serde_json::json!({"email": u.email, "new": new}))?,
                Output::Text => println!("{}: {what}; they can sign in now", u.email),
            }
        }
        UserCmd::Remove(u) => {
            let users = connect(&u.stage)?;
            let console = Console::new("user remove");
            let removed = runtime()?.block_on(users.remove(&u.email, &console));
            console.finish();
            let removed = removed?;
            match u.stage.output {
                Output::Json => print_json(&removed)?,
                Output::Text if removed.existed => println!(
                    "{}: removed, with {} object versions, {} items and {} label index entries",
                    removed.email, removed.object_versions, removed.items, removed.index_entries
                ),
                Output::Text => println!("{}: no such user; nothing to remove", removed.email),
            }
        }
        UserCmd::List(s) => {
            let users = connect(&s)?;
            let list = runtime()?.block_on(users.list())?;
            match s.output {
                Output::Json => print_json(&list)?,
                Output::Text if list.is_empty() => println!("no users in stage {}", s.stage),
                Output::Text => {
                    for u in list {
                        let enabled = if u.enabled { "" } else { " (disabled)" };
                        println!("{:40} {:22} {}{enabled}", u.email, u.status, u.sub);
                    }
                }
            }
        }
        UserCmd::Token(u) => {
            let pass = password(&format!("password for {}: ", u.email))?;
            let users = connect(&u.stage)?;
            let tokens = runtime()?.block_on(users.token(&u.email, &pass))?;
            match u.stage.output {
                Output::Json => print_json(&serde_json::json!({
                    "access_token": tokens.access_token,
                    "expires_in": tokens.expires_in,
                }))?,
                Output::Text => println!("{}", tokens.access_token),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked_for_their_form() {
        for good in ["a@example.com", "first.last+tag@sub.example.org"] {
            assert_eq!(parse_email(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "a",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@b@c.com",
            "a\n@x.y",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?}");
        }
    }
}
