//! `cutover deploy` and `cutover rollback`: the commands that change an environment.

use std::collections::BTreeMap;

use anyhow::Context as _;
use clap::Args;
use cutover_api::{
    DeployBody, Outcome, PassedElsewhere, PassedView, Refusal, RollbackBody, TargetView,
};
use cutover_config::Config;

use crate::client::Client;
use crate::context::Context;
use crate::output::{report, short, Renderer};

#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The environment, as named in [environments.NAME] (e.g. staging).
    pub env: String,
    /// The commit to deploy; built first if it is not built yet. Default: HEAD.
    #[arg(long, conflicts_with = "version")]
    pub rev: Option<String>,
    /// An artifact that is already built (its full sha or a unique prefix); never builds.
    #[arg(long)]
    pub version: Option<String>,
    /// One-off runtime config for this release, recorded in it (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_assignment)]
    pub overrides: Vec<(String, String)>,
    /// Build a dirty working tree anyway (tagged <sha>-dirty-<hash>).
    #[arg(long)]
    pub allow_dirty: bool,
    /// If another deploy holds the environment, wait for it instead of refusing.
    #[arg(long)]
    pub queue: bool,
    /// Stay until the monitor window closes; exit 3 if it rolled back.
    #[arg(long)]
    pub wait: bool,
    /// Build and deploy even though the commit's checks failed or never ran (recorded).
    #[arg(long)]
    pub skip_checks: bool,
    /// Show every probe and build line.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct RollbackArgs {
    /// The environment to roll back.
    pub env: String,
    /// A known-good release id or version (sha prefix); default: the previous known-good.
    #[arg(long)]
    pub to: Option<String>,
    /// If another deploy holds the environment, wait for it instead of refusing.
    #[arg(long)]
    pub queue: bool,
    /// Stay until the monitor window closes; exit 3 if it rolled back.
    #[arg(long)]
    pub wait: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

fn parse_assignment(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(format!("{s:?} is not NAME=VALUE (e.g. --env BREAK=1)")),
    }
}

pub async fn deploy(args: DeployArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let progress = Renderer::new(args.verbose);
    let artifact = match &args.version {
        Some(version) => {
            let app = ctx.working_config()?.app.name.to_string();
            cutover_build::find(&ctx.state, &app, version)?
        }
        None => {
            let rev = args.rev.clone().unwrap_or_else(|| "HEAD".into());
            let ctx = Context::at(&ctx.root, Some(&ctx.state.path));
            let checks = crate::commands::build::Checks {
                skip: args.skip_checks,
                allow_dirty: args.allow_dirty,
            };
            crate::commands::build::build_in_background(ctx, rev, checks, args.verbose).await?
        }
    };
    let config = Config::parse(
        &artifact.config_text,
        &cutover_config::committed_origin(&artifact.version),
    )?;
    config.environment(&args.env)?;
    config.check_overrides(&args.overrides)?;
    let secrets = config.resolve_secrets(&ctx.root)?;
    let client = ctx.client_for(&args.env).await?;
    // A remote server has neither the bundle nor, often, the repository: the bundle travels
    // by digest, and the commit's author (who may not approve it) is looked up here.
    let remote = ctx.server_of(&args.env).is_some();
    let mut author = None;
    let artifact = if remote {
        author = cutover_git::Repo::discover(&ctx.root)
            .and_then(|repo| repo.commit_info(&artifact.commit))
            .ok()
            .map(|c| c.author());
        crate::commands::ship::ship(&client, &ctx, artifact, &progress).await?
    } else {
        artifact
    };
    progress.step(&format!(
        "deploying {}:{} ({}) to {}{}",
        artifact.app,
        short(&artifact.version),
        artifact.digest,
        args.env,
        if remote {
            format!(" on {}", client.server())
        } else {
            String::new()
        }
    ));
    let body = DeployBody {
        env: args.env.clone(),
        app: artifact.app.clone(),
        version: artifact.version.clone(),
        overrides: args.overrides.iter().cloned().collect(),
        secrets,
        requested_by: cutover_daemon::current_user(),
        queue: args.queue,
        registry_login: config.registry_credentials(&ctx.root)?,
        trigger: "cli".into(),
        // A local server looks up the commit's author itself (and publishes the image first
        // if the environment needs it).
        author,
        skip_checks: args.skip_checks,
        passed_elsewhere: passed_elsewhere(&ctx, &config, &args.env, &artifact.version).await?,
        promoted_from: None,
    };
    let streamed = client
        .stream("/v1/deploy", &body, |line| progress.line(line))
        .await;
    progress.finish();
    let outcome = crate::commands::follow::settle(&client, &args.env, streamed).await?;
    finish(&client, outcome, args.wait, &progress).await
}

pub async fn rollback(
    args: RollbackArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    if let Some(to) = &args.to {
        if to.is_empty() || !to.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Refusal {
                message: format!("--to {to:?} is neither a release id nor a version"),
                hint: Some("e.g. --to 7 or --to 9f3a2c1".into()),
            }
            .into());
        }
    }
    let progress = Renderer::new(args.verbose);
    let client = ctx.client_for(&args.env).await?;
    let query = args
        .to
        .as_ref()
        .map(|t| format!("?to={t}"))
        .unwrap_or_default();
    let target: TargetView = client
        .get(&format!("/v1/rollback-target/{}{query}", args.env))
        .await?;
    let config = Config::parse(
        &target.config_text,
        &cutover_config::committed_origin(&target.release.version),
    )
    .context("the rollback target's committed config")?;
    let secrets: BTreeMap<String, String> = config.resolve_secrets(&ctx.root)?;
    let body = RollbackBody {
        env: args.env.clone(),
        to: Some(target.release.id.to_string()),
        secrets,
        requested_by: cutover_daemon::current_user(),
        queue: args.queue,
        registry_login: config.registry_credentials(&ctx.root)?,
    };
    let streamed = client
        .stream("/v1/rollback", &body, |line| progress.line(line))
        .await;
    progress.finish();
    let outcome = crate::commands::follow::settle(&client, &args.env, streamed).await?;
    finish(&client, outcome, args.wait, &progress).await
}

/// What the environments `env` requires say on the other servers they live on: the CLI
/// relays, with the caller's login there, whether `version` passed each one's monitor window
/// (the server deploying decides what it takes). Nothing for those on `env`'s own server.
pub(crate) async fn passed_elsewhere(
    ctx: &Context,
    config: &Config,
    env: &str,
    version: &str,
) -> anyhow::Result<Vec<PassedElsewhere>> {
    let env_cfg = config.environment(env)?;
    let mut relayed = Vec::new();
    for required in &env_cfg.requires {
        let Some(server) = config
            .environment(required)
            .ok()
            .and_then(|r| r.server.clone())
            .filter(|server| Some(server) != env_cfg.server.as_ref())
        else {
            continue;
        };
        let client = ctx.client_for(required).await?;
        let view: PassedView = client
            .get(&format!("/v1/passed/{required}/{version}"))
            .await
            .with_context(|| {
                format!(
                    "asking {server} whether {required} passed {}",
                    short(version)
                )
            })?;
        if view.passed {
            relayed.push(PassedElsewhere {
                environment: required.clone(),
                server,
                version: version.to_string(),
            });
        }
    }
    Ok(relayed)
}

/// Prints the outcome; with `--wait`, stays for the monitor window.
pub(crate) async fn finish(
    client: &Client,
    outcome: Outcome,
    wait: bool,
    progress: &Renderer,
) -> anyhow::Result<i32> {
    progress.finish();
    let code = report(&outcome);
    if code != 0 || !wait {
        return Ok(code);
    }
    let Some(release) = outcome.release else {
        return Ok(code);
    };
    eprintln!("waiting for the monitor window of release {release} to close (--wait)");
    let limit = std::time::Duration::from_secs(6 * 3600);
    let waited: Outcome = client
        .call_within(
            limit,
            "GET",
            &format!("/v1/releases/{release}/wait"),
            None::<&()>,
        )
        .await?;
    Ok(report(&waited))
}
