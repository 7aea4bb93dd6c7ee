//! Admin commands (`kalshibook accounts|keys|credits …`): an operator acting on the configured
//! Postgres. Each change is audited with the operator as actor (`cli:<login>`). Results go to
//! standard output (a new API key alone on it, for scripts); notes and logs to standard error.

use std::io::BufRead;

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use uuid::Uuid;

use crate::accounts::{Actor, Credits, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
use crate::config::{Config, Secret};
use crate::postgres::accounts::AccountStore;
use crate::{postgres, telemetry};

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Create a user and their Free-tier billing account.
    Create(CreateAccountArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("password_source").required(true).args(["password", "password_stdin"])))]
pub struct CreateAccountArgs {
    /// The user's email (their sign-in name).
    #[arg(long)]
    pub email: String,
    /// The password. It shows in the process list and shell history: prefer --password-stdin.
    #[arg(long, value_parser = secret)]
    pub password: Option<Secret>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key for a user's account; prints the key, once.
    Create(CreateKeyArgs),
    /// List a user's API keys (never the keys themselves).
    List(EmailArgs),
    /// Revoke one of a user's API keys.
    Revoke(RevokeKeyArgs),
}

#[derive(Debug, Args)]
pub struct CreateKeyArgs {
    #[arg(long)]
    pub email: String,
    /// A name to tell the key apart (1 to 64 characters).
    #[arg(long)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct EmailArgs {
    #[arg(long)]
    pub email: String,
}

#[derive(Debug, Args)]
pub struct RevokeKeyArgs {
    #[arg(long)]
    pub email: String,
    /// The key's id (from `keys list`).
    #[arg(long)]
    pub id: Uuid,
}

#[derive(Debug, Subcommand)]
pub enum CreditsCommand {
    /// Add credits to the current billing cycle's allowance of a user's account.
    Grant(GrantArgs),
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[arg(long)]
    pub email: String,
    /// Whole credits to add; they last until the current cycle ends.
    #[arg(long)]
    pub amount: u64,
}

#[allow(clippy::unnecessary_wraps)] // clap's value_parser signature
fn secret(value: &str) -> Result<Secret, String> {
    Ok(Secret::new(value))
}

fn store() -> anyhow::Result<AccountStore> {
    let config = Config::from_env()?;
    telemetry::init_logging(&config.log)?;
    Ok(AccountStore::new(postgres::pool(&config.postgres)?))
}

/// Runs `kalshibook accounts …`.
///
/// # Errors
/// Invalid configuration, an unreachable database, or the store's refusal (taken email,
/// weak password), with a message saying which.
pub async fn accounts(command: AccountsCommand) -> anyhow::Result<()> {
    match command {
        AccountsCommand::Create(args) => {
            let password = match args.password {
                Some(password) => password,
                None => read_password_line()?,
            };
            let store = store()?;
            let user = store
                .create_account(&args.email, password.expose(), &Actor::cli_from_env())
                .await?;
            println!(
                "created account {} for {} (user {}, free tier)",
                user.account_id, user.email, user.id
            );
            Ok(())
        }
    }
}

fn read_password_line() -> anyhow::Result<Secret> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.strip_suffix('\n').unwrap_or(&line);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        anyhow::bail!(
            "no password on standard input (expected one line of {MIN_PASSWORD_CHARS} to \
             {MAX_PASSWORD_CHARS} characters)"
        );
    }
    Ok(Secret::new(password))
}

/// Runs `kalshibook keys …`.
///
/// # Errors
/// Invalid configuration, an unreachable database, an unknown email or key.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let store = store()?;
    match command {
        KeysCommand::Create(args) => {
            let created = store
                .create_key_for_email(&args.email, &args.name, &Actor::cli_from_env())
                .await?;
            eprintln!(
                "API key {} ({}…, \"{}\") for {}: shown only this once, store it now",
                created.info.id, created.info.prefix, created.info.name, args.email
            );
            println!("{}", created.key.expose());
        }
        KeysCommand::List(args) => {
            let user = store
                .find_user_by_email(&args.email)
                .await?
                .context("no user with that email")?;
            for key in store.list_keys(user.account_id).await? {
                let state = key
                    .revoked_at
                    .map_or_else(|| "active".to_owned(), |at| format!("revoked {at}"));
                println!(
                    "{}  {:<14} {:<24} created {}  {}",
                    key.id,
                    format!("{}…", key.prefix),
                    key.name,
                    key.created_at,
                    state
                );
            }
        }
        KeysCommand::Revoke(args) => {
            let key = store
                .revoke_key_for_email(&args.email, args.id, &Actor::cli_from_env())
                .await?;
            println!("revoked API key {} ({}…)", key.id, key.prefix);
        }
    }
    Ok(())
}

/// Runs `kalshibook credits …`.
///
/// # Errors
/// Invalid configuration, an unreachable database, an unknown email, an amount out of range.
pub async fn credits(command: CreditsCommand) -> anyhow::Result<()> {
    match command {
        CreditsCommand::Grant(args) => {
            let store = store()?;
            let balance = store
                .grant_credits(
                    &args.email,
                    Credits::new(args.amount),
                    &Actor::cli_from_env(),
                )
                .await?;
            println!(
                "granted {} credits to {}: {} of {} used, {} remaining until {}",
                args.amount,
                args.email,
                balance.used,
                balance.total,
                balance.remaining(),
                balance.cycle.end
            );
            Ok(())
        }
    }
}
