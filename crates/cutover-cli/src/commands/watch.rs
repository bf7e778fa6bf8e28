//! `cutover watch`: for users with no webhook, poll a git remote (or path) for new commits on
//! `[pipeline] branch` and run the pipeline for each, as a push webhook would.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;
use cutover_api::RunRequest;

use crate::client::Client;
use crate::context::Context;
use crate::output::{report, Renderer};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The remote name, URL or path to poll.
    #[arg(long, default_value = "origin")]
    pub remote: String,
    /// How often to look.
    #[arg(long, default_value = "30s", value_parser = cutover_config::parse_duration)]
    pub every: Duration,
    /// Look once, run the pipeline if there is something new, and exit with its code.
    #[arg(long)]
    pub once: bool,
}

pub async fn run(args: WatchArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let branch = ctx.working_config()?.pipeline.branch;
    let mut last: Option<String> = None;
    eprintln!(
        "watching {} for new commits on {branch} every {}",
        args.remote,
        cutover_config::format_duration(args.every)
    );
    loop {
        let tip = remote_tip(&ctx, &args.remote, &branch)?;
        if last.as_deref() != Some(tip.as_str()) {
            fetch(&ctx, &args.remote, &branch)?;
            eprintln!("new commit on {branch}: {}", &tip[..tip.len().min(12)]);
            let client = Client::connect_or_start(&ctx.state).await?;
            let body = RunRequest {
                rev: tip.clone(),
                trigger: "watch".into(),
                requested_by: format!("watch ({})", args.remote),
                skip_checks: false,
            };
            let progress = Renderer::new(false);
            let outcome = client
                .stream("/v1/pipeline/run", &body, |line| progress.line(line))
                .await?;
            progress.finish();
            let code = report(&outcome);
            if args.once {
                return Ok(code);
            }
            last = Some(tip);
        } else if args.once {
            eprintln!("nothing new on {branch}");
            return Ok(0);
        }
        tokio::time::sleep(args.every).await;
    }
}

fn git(ctx: &Context, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(&ctx.root)
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The commit `branch` points at on `remote`.
fn remote_tip(ctx: &Context, remote: &str, branch: &str) -> anyhow::Result<String> {
    let listing = git(ctx, &["ls-remote", remote, &format!("refs/heads/{branch}")])?;
    match listing.split_whitespace().next() {
        Some(sha) => Ok(sha.to_string()),
        None => bail!("{remote} has no branch {branch}"),
    }
}

/// Brings the remote's commits here, under `refs/cutover/watch/<branch>` (the pipeline's
/// branch check accepts it) so that no branch of the user's is moved.
fn fetch(ctx: &Context, remote: &str, branch: &str) -> anyhow::Result<()> {
    git(
        ctx,
        &[
            "fetch",
            "--quiet",
            remote,
            &format!("+refs/heads/{branch}:refs/cutover/watch/{branch}"),
        ],
    )
    .map(|_| ())
}
