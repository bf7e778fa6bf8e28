//! `cutover token`: API tokens, one per person, for approving over the server's HTTP API.

use clap::{Args, Subcommand};
use cutover_api::{Revoked, TokenBody, TokenCreated, TokenEntry};

use crate::client::Client;
use crate::context::Context;

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token for a person (printed once; only its hash is kept).
    Create(NameArgs),
    /// Who has a token.
    List,
    /// Take a person's token back.
    Revoke(NameArgs),
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
                    }),
                )
                .await?;
            println!("{}", answer.token);
            eprintln!(
                "a token for {}: send it as `Authorization: Bearer <token>` to POST /v1/approve on the server's \
                 HTTP listener ([webhook] listen); it is shown only now",
                args.name
            );
        }
        TokenCommand::List => {
            let list: Vec<TokenEntry> = client.get("/v1/tokens").await?;
            for t in list {
                println!("{}  issued {}", t.name, t.created_at);
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
                    }),
                )
                .await?;
            eprintln!("revoked the token of {}", args.name);
        }
    }
    Ok(0)
}
