//! `cutover build`: a commit, built once, into the content-addressed artifact store.

use clap::Args;
use cutover_artifact::{Artifact, ArtifactStore};

use crate::context::Context;
use crate::output::Progress;

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// The commit to build (a sha, branch or tag); default HEAD.
    pub rev: Option<String>,
    /// Build a dirty working tree anyway; the artifact is tagged <sha>-dirty-<hash>.
    #[arg(long)]
    pub allow_dirty: bool,
    /// Show every line of the build command's output.
    #[arg(short, long)]
    pub verbose: bool,
}

pub async fn run(args: BuildArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let rev = args.rev.unwrap_or_else(|| "HEAD".into());
    let artifact = build_in_background(ctx, rev, args.allow_dirty, args.verbose).await?;
    println!("{}:{} {}", artifact.app, artifact.version, artifact.digest);
    if let Some(image) = &artifact.image {
        println!("{}:{} {}", image.repository, artifact.version, image.id);
    }
    Ok(0)
}

/// [`build`] on a blocking thread (builds run commands and wait on them).
pub async fn build_in_background(
    ctx: Context,
    rev: String,
    allow_dirty: bool,
    verbose: bool,
) -> anyhow::Result<Artifact> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let progress = Progress::new(verbose);
        cutover_server::builder::build(&ctx.root, &ctx.state, &rev, allow_dirty, &progress, &handle)
    })
    .await?
}

/// An artifact already built, by full version or unique prefix. Never builds.
pub fn find(ctx: &Context, app: &str, version: &str) -> anyhow::Result<Artifact> {
    let store = ArtifactStore::open(&ctx.state.path.join("artifacts"))?;
    if let Some(a) = store.get(app, version)? {
        return Ok(a);
    }
    let mut found = store.find_by_prefix(app, version)?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(crate::client::Refusal {
            message: format!("{version:?} is not a known artifact of {app}"),
            hint: Some("build it first with `cutover build <rev>`, or deploy a commit with `cutover deploy <env> --rev <rev>`".into()),
        }
        .into()),
        n => Err(crate::client::Refusal {
            message: format!("{version:?} matches {n} artifacts of {app}"),
            hint: Some("give more characters of the version".into()),
        }
        .into()),
    }
}
