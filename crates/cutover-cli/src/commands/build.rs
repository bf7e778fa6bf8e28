//! `cutover build`: a commit, built once, into the content-addressed artifact store.

use clap::Args;
use cutover_api::{ChecksBody, Refusal, Verdict, VerdictQuery};
use cutover_build::Artifact;

use crate::client::Client;
use crate::context::Context;
use crate::output::Renderer;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The commit to build (a sha, branch or tag); default HEAD.
    pub rev: Option<String>,
    /// Build a dirty working tree anyway; the artifact is tagged <sha>-dirty-<hash>.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Build even though the commit's checks failed or never ran (recorded when deployed).
    #[arg(long)]
    pub skip_checks: bool,
    /// Show every line of the build command's output.
    #[arg(short, long)]
    pub verbose: bool,
}

pub async fn run(args: BuildArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let rev = args.rev.unwrap_or_else(|| "HEAD".into());
    let gate = Checks {
        skip: args.skip_checks,
        allow_dirty: args.allow_dirty,
    };
    let artifact = build_in_background(ctx, rev, gate, args.verbose).await?;
    println!("{}:{} {}", artifact.app, artifact.version, artifact.digest);
    if let Some(image) = &artifact.image {
        println!("{}:{} {}", image.repository, artifact.version, image.id);
    }
    Ok(0)
}

/// How a build treats the commit's `[[pipeline.check]]`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct Checks {
    /// `--skip-checks`.
    pub skip: bool,
    /// A dirty build: checks run on commits, so there is nothing to check.
    pub allow_dirty: bool,
}

/// Builds on a blocking thread (builds run commands and wait on them), after the server's
/// checks gate: it refuses a commit whose checks failed, and has the checks of one whose
/// checks never ran run first.
pub async fn build_in_background(
    ctx: Context,
    rev: String,
    checks: Checks,
    verbose: bool,
) -> anyhow::Result<Artifact> {
    gate_on_checks(&ctx, &rev, checks, verbose).await?;
    let allow_dirty = checks.allow_dirty;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let progress = Renderer::new(verbose);
        cutover_build::build(
            &ctx.root,
            &ctx.state,
            &rev,
            allow_dirty,
            &|line| progress.line(&line),
            &handle,
        )
    })
    .await?
}

/// Asks the server whether `rev` may be built; runs its checks first if the server says so.
async fn gate_on_checks(
    ctx: &Context,
    rev: &str,
    checks: Checks,
    verbose: bool,
) -> anyhow::Result<()> {
    let client = Client::connect_or_start(&ctx.state).await?;
    let query = VerdictQuery {
        rev: rev.to_string(),
        allow_dirty: checks.allow_dirty,
        skip_checks: checks.skip,
    };
    let verdict: Verdict = client
        .call("POST", "/v1/checks/verdict", Some(&query))
        .await?;
    match verdict {
        Verdict::Allowed { .. } => Ok(()),
        Verdict::Refused { message, hint } => Err(Refusal { message, hint }.into()),
        Verdict::RunChecks { sha, message } => {
            let progress = Renderer::new(verbose);
            progress.step(&message);
            let outcome = client
                .stream("/v1/checks/run", &ChecksBody { rev: sha }, |line| {
                    progress.line(line)
                })
                .await?;
            progress.finish();
            match outcome.is_success() {
                true => Ok(()),
                false => Err(Refusal {
                    message: outcome.message,
                    hint: outcome.hint,
                }
                .into()),
            }
        }
    }
}
