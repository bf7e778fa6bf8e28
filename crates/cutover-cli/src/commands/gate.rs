//! The gate commands: `approve`, `reject`, `promote`, `freeze`, `unfreeze`, `abort`. The person
//! running them is the human click, recorded in the ledger.

use clap::Args;
use cutover_api::{DeployBody, EnvBody, GateBody, Outcome, PromoteBody, RemoteRelease, TargetView};
use cutover_config::Config;

use crate::context::Context;
use crate::output::{report, Renderer};

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
    /// The environment whose waiting release to turn down.
    pub env: String,
    /// Why it does not ship (recorded with the release).
    #[arg(long)]
    pub reason: String,
    /// A release id (default: the newest one waiting).
    #[arg(long)]
    pub release: Option<i64>,
}

#[derive(Args, Debug)]
pub struct PromoteArgs {
    /// The environment whose live version to ship…
    pub from: String,
    /// …to this one: exactly that artifact and digest, nothing rebuilt.
    pub to: String,
    /// If another deploy holds the target environment, wait for it instead of refusing.
    #[arg(long)]
    pub queue: bool,
    /// Stay until the monitor window closes; exit 3 if it rolled back.
    #[arg(long)]
    pub wait: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct FreezeArgs {
    /// The environment to freeze, as named in [environments.NAME].
    pub env: String,
    /// Why (shown to everyone whose deploy is refused).
    #[arg(long)]
    pub reason: String,
}

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// The environment, as named in [environments.NAME].
    pub env: String,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Switch {
    On,
    Off,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Examples:\n  cutover maintenance production on --message \"Back at 14:00 UTC\"\n  cutover maintenance production off\n\nBrowsers get an HTML page, clients that accept JSON get {\"error\": \"maintenance\", \"message\": …}; both with Retry-After. Recorded in the ledger, shown by `cutover status`; it lasts until `off`."
)]
pub struct MaintenanceArgs {
    /// The environment, as named in [environments.NAME].
    pub env: String,
    /// `on` answers every request with 503 and the message; `off` lets requests through again.
    pub switch: Switch,
    /// What people see instead of the app (with `on`).
    #[arg(long)]
    pub message: Option<String>,
}

#[derive(Args, Debug)]
#[command(
    after_help = "Example (a database migration that must not see requests):\n  cutover pause production --max 2m && ./migrate && cutover resume production\n\nHeld requests wait at the edge (up to 10000, beyond that 503) and go on at `cutover resume` or when --max runs out. Recorded in the ledger, shown by `cutover status`."
)]
pub struct PauseArgs {
    /// The environment, as named in [environments.NAME].
    pub env: String,
    /// The longest the edge holds requests, e.g. 30s (1s to 10m).
    #[arg(long, default_value = "30s", value_parser = parse_max)]
    pub max: std::time::Duration,
}

fn parse_max(text: &str) -> Result<std::time::Duration, String> {
    cutover_config::parse_duration(text)
}

fn me() -> String {
    cutover_daemon::current_user()
}

pub async fn approve(
    args: ApproveArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = ctx.client_for(&args.env).await?;
    let progress = Renderer::new(args.verbose);
    let env = args.env.clone();
    let body = GateBody {
        env: args.env,
        by: me(),
        release: args.release,
        older: args.older,
        reason: None,
    };
    let streamed = client
        .stream("/v1/approve", &body, |line| progress.line(line))
        .await;
    progress.finish();
    let outcome = crate::commands::follow::settle(&client, &env, streamed).await?;
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
    let env = body.env.clone();
    post(state_dir, &env, "/v1/reject", &body).await
}

pub async fn freeze(args: FreezeArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    post(
        state_dir,
        &args.env.clone(),
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
        &args.env.clone(),
        "/v1/unfreeze",
        &EnvBody {
            env: args.env,
            by: me(),
            reason: None,
        },
    )
    .await
}

pub async fn maintenance(
    args: MaintenanceArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let body = cutover_api::MaintenanceBody {
        env: args.env,
        by: me(),
        on: matches!(args.switch, Switch::On),
        message: args.message,
    };
    let env = body.env.clone();
    post(state_dir, &env, "/v1/maintenance", &body).await
}

pub async fn pause(args: PauseArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let body = cutover_api::PauseBody {
        env: args.env,
        by: me(),
        max_ms: Some(u64::try_from(args.max.as_millis()).unwrap_or(u64::MAX)),
    };
    let env = body.env.clone();
    post(state_dir, &env, "/v1/pause", &body).await
}

pub async fn resume(args: EnvArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    post(
        state_dir,
        &args.env.clone(),
        "/v1/resume",
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
        &args.env.clone(),
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
    env: &str,
    path: &str,
    body: &impl serde::Serialize,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = ctx.client_for(env).await?;
    let outcome: Outcome = client.call("POST", path, Some(body)).await?;
    Ok(report(&outcome))
}

/// Ships exactly the release live in `from` to `to`: the server takes it under `to`'s lock
/// and records a promotion of it.
pub async fn promote(
    args: PromoteArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    if ctx.server_of(&args.from) != ctx.server_of(&args.to) {
        return promote_across(args, &ctx).await;
    }
    let client = ctx.client_for(&args.to).await?;
    // Secrets and the registry login are resolved here, in the caller's environment, from the
    // config of what is live in `from` now (the server resolves any the release it takes lacks).
    let live: Option<TargetView> = client.get(&format!("/v1/live/{}", args.from)).await?;
    let (secrets, registry_login) = match &live {
        Some(live) => {
            let config = Config::parse(
                &live.config_text,
                &cutover_config::committed_origin(&live.release.version),
            )?;
            (
                config.resolve_secrets(&ctx.root)?,
                config.registry_credentials(&ctx.root)?,
            )
        }
        None => Default::default(),
    };
    let progress = Renderer::new(args.verbose);
    let body = PromoteBody {
        from: args.from,
        to: args.to.clone(),
        secrets,
        requested_by: me(),
        queue: args.queue,
        registry_login,
    };
    let streamed = client
        .stream("/v1/promote", &body, |line| progress.line(line))
        .await;
    progress.finish();
    let outcome = crate::commands::follow::settle(&client, &args.to, streamed).await?;
    crate::commands::deploy::finish(&client, outcome, args.wait, &progress).await
}

/// A promotion between environments on two servers, relayed by the CLI with the caller's
/// logins on both: it reads the release live in `from` on its server, streams the blobs the
/// target lacks from one server to the other (images go through the registry), and asks the
/// target's server to deploy exactly that digest as a promotion of it. The target's server
/// decides the rest (gates, approval, digest check), as for every deploy.
async fn promote_across(args: PromoteArgs, ctx: &Context) -> anyhow::Result<i32> {
    let source = ctx.client_for(&args.from).await?;
    let target = ctx.client_for(&args.to).await?;
    let progress = Renderer::new(args.verbose);
    let live: Option<TargetView> = source.get(&format!("/v1/live/{}", args.from)).await?;
    let Some(live) = live else {
        return Err(cutover_api::Refusal::new(
            format!("nothing is live in {} to promote", args.from),
            Some(format!(
                "deploy to {} first: cutover deploy {}",
                args.from, args.from
            )),
        )
        .into());
    };
    let r = &live.release;
    let config = Config::parse(
        &live.config_text,
        &cutover_config::committed_origin(&r.version),
    )?;
    config.environment(&args.to)?;
    progress.step(&format!(
        "promoting release {} of {} on {} ({}, {}) to {} on {}",
        r.id,
        args.from,
        source.server(),
        crate::output::short(&r.version),
        r.digest,
        args.to,
        target.server()
    ));
    let app = config.app.name.to_string();
    crate::commands::ship::relay(&source, &target, &app, &r.version, &progress).await?;
    let body = DeployBody {
        env: args.to.clone(),
        app,
        version: r.version.clone(),
        overrides: Default::default(),
        secrets: config.resolve_secrets(&ctx.root)?,
        requested_by: me(),
        queue: args.queue,
        registry_login: config.registry_credentials(&ctx.root)?,
        trigger: "cli".into(),
        author: None,
        skip_checks: false,
        passed_elsewhere: crate::commands::deploy::passed_elsewhere(
            ctx, &config, &args.to, &r.version,
        )
        .await?,
        promoted_from: Some(RemoteRelease {
            server: source.server(),
            environment: args.from.clone(),
            release: r.id,
            digest: r.digest.clone(),
        }),
    };
    let streamed = target
        .stream("/v1/deploy", &body, |line| progress.line(line))
        .await;
    progress.finish();
    let outcome = crate::commands::follow::settle(&target, &args.to, streamed).await?;
    crate::commands::deploy::finish(&target, outcome, args.wait, &progress).await
}
