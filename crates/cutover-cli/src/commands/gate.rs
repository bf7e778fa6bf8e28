//! The gate commands: `approve`, `reject`, `promote`, `freeze`, `unfreeze`, `abort`. The person
//! running them is the human click, recorded in the ledger.

use clap::Args;
use cutover_api::Outcome;
use cutover_api::{EnvBody, GateBody, StatusView};

use crate::client::Client;
use crate::context::Context;
use crate::output::{report, Renderer};
use cutover_api::Refusal;

#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// The environment whose waiting release to ship.
    pub env: String,
    /// A release id (default: the newest one waiting).
    #[arg(long)]
    pub release: Option<i64>,
    /// Allow approving a release older than the newest one waiting.
    #[arg(long)]
    pub older: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct RejectArgs {
    pub env: String,
    /// Why it does not ship (recorded with the release).
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub release: Option<i64>,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The environment whose live version to ship…
    pub from: String,
    /// …to this one: exactly that artifact and digest, nothing rebuilt.
    pub to: String,
    #[arg(long)]
    pub queue: bool,
    #[arg(long)]
    pub wait: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct FreezeArgs {
    pub env: String,
    /// Why (shown to everyone whose deploy is refused).
    #[arg(long)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    pub env: String,
}

fn me() -> String {
    cutover_daemon::current_user()
}

pub async fn approve(
    args: ApproveArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let progress = Renderer::new(args.verbose);
    let body = GateBody {
        env: args.env,
        by: me(),
        release: args.release,
        older: args.older,
        reason: None,
    };
    let outcome = client
        .stream("/v1/approve", &body, |line| progress.line(line))
        .await?;
    progress.finish();
    Ok(report(&outcome))
}

pub async fn reject(args: RejectArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let body = GateBody {
        env: args.env,
        by: me(),
        release: args.release,
        older: true,
        reason: Some(args.reason),
    };
    post(state_dir, "/v1/reject", &body).await
}

pub async fn freeze(args: FreezeArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    post(
        state_dir,
        "/v1/freeze",
        &EnvBody {
            env: args.env,
            by: me(),
            reason: Some(args.reason),
        },
    )
    .await
}

pub async fn unfreeze(args: EnvArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    post(
        state_dir,
        "/v1/unfreeze",
        &EnvBody {
            env: args.env,
            by: me(),
            reason: None,
        },
    )
    .await
}

pub async fn abort(args: EnvArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    post(
        state_dir,
        "/v1/abort",
        &EnvBody {
            env: args.env,
            by: me(),
            reason: None,
        },
    )
    .await
}

async fn post(
    state_dir: Option<&std::path::Path>,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let outcome: Outcome = client.call("POST", path, Some(body)).await?;
    Ok(report(&outcome))
}

/// Deploys exactly what is live in `from` to `to`.
pub async fn promote(
    args: PromoteArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let status: StatusView = client.get("/v1/status").await?;
    let source = status.environments.iter().find(|e| e.name == args.from);
    let Some(live) = source.and_then(|e| e.live.as_ref()) else {
        return Err(Refusal {
            message: format!("nothing is live in {} to promote", args.from),
            hint: Some(format!(
                "deploy to {} first: cutover deploy {}",
                args.from, args.from
            )),
        }
        .into());
    };
    eprintln!(
        "promoting release {} of {} ({}) to {}",
        live.release, args.from, live.digest, args.to
    );
    let deploy = crate::commands::deploy::DeployArgs {
        env: args.to,
        rev: None,
        version: Some(live.version.clone()),
        overrides: Vec::new(),
        allow_dirty: false,
        queue: args.queue,
        wait: args.wait,
        skip_checks: false,
        verbose: args.verbose,
    };
    crate::commands::deploy::deploy(deploy, state_dir).await
}
