//! `cutover token`: API tokens, one per person, each with a role, for the server's HTTPS API
//! (`cutover server --listen`) and the approval routes of the webhook listener.

use clap::{Args, Subcommand};
use cutover_api::{RefusalsView, Revoked, Role, TokenBody, TokenCreated, TokenEntry};

use crate::client::Client;
use crate::context::Context;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token for a person (printed once; only its hash is kept). A second token for
    /// the same person replaces the first.
    Create(CreateArgs),
    /// Who has a token.
    List,
    /// Take a person's token back (at once).
    Revoke(NameArgs),
    /// The calls the server refused, newest first: no token, an invalid or revoked one, or a
    /// role too small for the call.
    Audit {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// The person's login, e.g. alice (what their calls are recorded under).
    pub name: String,
    /// What the token may do: `read` (status, history, show, logs), `deploy` (also deploy,
    /// rollback, promote, approve/reject, freeze, abort, pipeline runs) or `admin` (also
    /// tokens, prune, down).
    #[arg(long, default_value = "deploy", value_parser = parse_role)]
    pub role: Role,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("{text:?} is not a role: use read, deploy or admin"))
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// The person's login, e.g. alice (what approvals are recorded under).
    pub name: String,
}

pub async fn run(
    command: TokenCommand,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let by = cutover_daemon::current_user();
    match command {
        TokenCommand::Create(args) => {
            let answer: TokenCreated = client
                .call(
                    "POST",
                    "/v1/tokens",
                    Some(&TokenBody {
                        name: args.name.clone(),
                        by,
                        role: Some(args.role),
                    }),
                )
                .await?;
            println!("{}", answer.token);
            eprintln!(
                "a {} token for {}, shown only now: send it as `Authorization: Bearer <token>` to the server's \
                 HTTPS API (`cutover server --listen`) or its approval routes ([webhook] listen)",
                args.role, args.name
            );
        }
        TokenCommand::List => {
            let list: Vec<TokenEntry> = client.get("/v1/tokens").await?;
            for t in list {
                println!("{:<20} {:<7} issued {}", t.name, t.role, t.created_at);
            }
        }
        TokenCommand::Audit { json } => {
            let view: RefusalsView = client.get("/v1/refusals").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&view)?);
                return Ok(0);
            }
            if view.refusals.is_empty() {
                println!("no refused calls");
            }
            for r in &view.refusals {
                println!(
                    "{}  {} {} {} by {}: {}",
                    r.at.format("%Y-%m-%d %H:%M:%S"),
                    r.status,
                    r.method,
                    r.path,
                    r.token.as_deref().unwrap_or("(no valid token)"),
                    r.reason
                );
            }
        }
        TokenCommand::Revoke(args) => {
            let _: Revoked = client
                .call(
                    "POST",
                    "/v1/tokens/revoke",
                    Some(&TokenBody {
                        name: args.name.clone(),
                        by,
                        role: None,
                    }),
                )
                .await?;
            eprintln!("revoked the token of {}", args.name);
        }
    }
    Ok(0)
}
