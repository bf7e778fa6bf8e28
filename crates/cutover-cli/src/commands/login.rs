//! `cutover login` and `cutover logout`: the fingerprint and token of a server on another
//! machine, checked with it before they are kept.

use clap::Args;
use cutover_api::{Refusal, WhoAmI};

use crate::client::Client;
use crate::credentials::{self, Credentials};

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// The server, as `cutover server --listen` serves it: https://host:port.
    pub url: String,
    /// Its certificate's fingerprint, as `cutover server info` shows it there (sha256:…).
    #[arg(long)]
    pub fingerprint: String,
    /// Your token (from `cutover token create` there). Default: `--token-file` or
    /// CUTOVER_TOKEN, so that it stays out of the shell's history.
    #[arg(long)]
    pub token: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The server to forget.
    pub url: String,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<i32> {
    let url = cutover_config::server_url(&args.url)
        .map_err(|(message, hint)| Refusal::new(format!("{}: {message}", args.url), Some(hint)))?;
    let fingerprint = credentials::parse_pin(&args.fingerprint, "--fingerprint")?;
    let token = match args.token {
        Some(t) => t.trim().to_string(),
        None => credentials::token_from_environment()?.ok_or_else(|| {
            Refusal::new(
                "no token given",
                Some("pass --token, --token-file FILE, or set CUTOVER_TOKEN".into()),
            )
        })?,
    };
    let client = Client::remote(&url, &fingerprint, &token)?;
    let me: WhoAmI = client.get("/v1/whoami").await?;
    let path = credentials::save(&url, Credentials { fingerprint, token })?;
    eprintln!(
        "logged in to {url} as {} (role {}); kept in {}",
        me.name,
        me.role,
        path.display()
    );
    Ok(0)
}

pub fn logout(args: LogoutArgs) -> anyhow::Result<i32> {
    let url = cutover_config::server_url(&args.url).unwrap_or_else(|_| args.url.clone());
    if credentials::forget(&url)? {
        eprintln!("forgot the login of {url}");
    } else {
        eprintln!("no login kept for {url}");
    }
    Ok(0)
}
