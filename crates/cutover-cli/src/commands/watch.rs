//! `cutover watch`: for users with no webhook, poll a git remote (or path) for new commits on
//! `[pipeline] branch` and run the pipeline for each, as a push webhook would.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use cutover_api::RunRequest;
use cutover_git::{Repo, Sha};

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
    let branch = ctx.working_config()?.pipeline.branch.clone();
    let repo = Repo::discover(&ctx.root)?;
    let mut last: Option<Sha> = None;
    eprintln!(
        "watching {} for new commits on {branch} every {}",
        args.remote,
        cutover_config::format_duration(args.every)
    );
    loop {
        let Some(tip) = repo.remote_tip(&args.remote, &branch)? else {
            bail!("{} has no branch {branch}", args.remote);
        };
        if last.as_ref() != Some(&tip) {
            // Under `refs/cutover/watch/<branch>` (the pipeline's branch check accepts it), so
            // that no branch of the user's is moved.
            repo.fetch(
                &args.remote,
                &format!("+refs/heads/{branch}:refs/cutover/watch/{branch}"),
            )?;
            eprintln!("new commit on {branch}: {}", tip.short());
            let client = Client::connect_or_start(&ctx.state).await?;
            let body = RunRequest {
                rev: tip.to_string(),
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
