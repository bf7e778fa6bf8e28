//! `cutover pipeline run`, `list` and `show`: checks → build → publish → staging →
//! (approval) → production, the same way a push webhook or `cutover watch` runs it.

use clap::{Args, Subcommand};
use cutover_api::{Line, RunEventKind, RunRequest, RunView, RunsView};

use crate::client::Client;
use crate::context::Context;
use crate::output::{report, Renderer};

#[derive(Subcommand, Debug)]
pub enum PipelineCommand {
    /// Run the pipeline for a commit (default HEAD): checks, build, publish, environments.
    Run(RunArgs),
    /// The most recent runs, newest first, with their outcome and reason — those a push
    /// webhook or `cutover watch` started too, refused ones included.
    List(ListArgs),
    /// One run, stage by stage.
    Show(ShowArgs),
}

#[derive(Args, Debug)]
pub struct ListArgs {
    /// How many runs.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub limit: usize,
    /// One JSON document on stdout (`{"runs": [...]}`).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The commit (sha, branch or tag); it must be on `[pipeline] branch`.
    pub rev: Option<String>,
    /// Build and deploy without running the checks (recorded in the run).
    #[arg(long)]
    pub skip_checks: bool,
    /// Stream one JSON event per line on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The run id (printed by `pipeline run`).
    pub run: i64,
    #[arg(long)]
    pub json: bool,
}

pub async fn run(
    command: PipelineCommand,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    match command {
        PipelineCommand::Run(args) => run_pipeline(args, state_dir).await,
        PipelineCommand::List(args) => list(args, state_dir).await,
        PipelineCommand::Show(args) => show(args, state_dir).await,
    }
}

async fn run_pipeline(args: RunArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let body = RunRequest {
        rev: args.rev.unwrap_or_else(|| "HEAD".into()),
        trigger: "cli".into(),
        requested_by: cutover_daemon::current_user(),
        skip_checks: args.skip_checks,
    };
    let progress = Renderer::new(args.verbose);
    let json = args.json;
    let outcome = client
        .stream("/v1/pipeline/run", &body, |line| {
            if json {
                if let Ok(text) = serde_json::to_string(line) {
                    println!("{text}");
                }
            } else {
                progress.line(line);
            }
        })
        .await?;
    progress.finish();
    if json {
        println!(
            "{}",
            serde_json::to_string(&Line::Outcome(outcome.clone()))?
        );
    }
    Ok(report(&outcome))
}

async fn list(args: ListArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let view: RunsView = client
        .get(&format!("/v1/pipeline/runs?limit={}", args.limit))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    if view.runs.is_empty() {
        println!("no pipeline runs yet (`cutover pipeline run` starts one)");
    }
    for r in &view.runs {
        println!(
            "{:>4}  {}  {:<12} {:<9} {:<9} {}",
            r.id,
            r.started_at.format("%Y-%m-%d %H:%M:%S"),
            crate::output::short(&r.sha),
            r.trigger,
            r.state,
            r.message.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

async fn show(args: ShowArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = Client::connect_or_start(&ctx.state).await?;
    let view: RunView = client
        .get(&format!("/v1/pipeline/runs/{}", args.run))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(0);
    }
    let r = &view.run;
    println!(
        "pipeline run {} for {} ({} by {}): {}{}",
        r.id,
        crate::output::short(&r.sha),
        r.trigger,
        r.requested_by,
        r.state,
        r.message
            .as_ref()
            .map(|m| format!(" — {m}"))
            .unwrap_or_default()
    );
    for c in &view.checks {
        println!(
            "  check {:<16} {:<10} {:>7} ms  {}",
            c.name, c.status, c.duration_ms, c.log_file
        );
    }
    for e in &view.events {
        if e.kind == RunEventKind::Step {
            println!("  {}", e.message);
        }
    }
    Ok(0)
}
