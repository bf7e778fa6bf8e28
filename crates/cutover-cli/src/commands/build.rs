//! `cutover build`: a commit, built once, into the content-addressed artifact store.

use anyhow::Context as _;
use clap::Args;
use cutover_artifact::{Artifact, ArtifactStore, BuildEvent, BuildRequest, Repo};

use crate::context::Context;
use crate::output::{short, Progress};

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

pub fn run(args: BuildArgs, state_dir: Option<&std::path::Path>) -> i32 {
    let progress = Progress::new(args.verbose);
    let result = Context::discover(state_dir).and_then(|ctx| {
        build(
            &ctx,
            args.rev.as_deref().unwrap_or("HEAD"),
            args.allow_dirty,
            &progress,
        )
    });
    progress.finish();
    match result {
        Ok(artifact) => {
            println!("{}:{} {}", artifact.app, artifact.version, artifact.digest);
            0
        }
        Err(e) => crate::output::report_error(&e),
    }
}

/// Builds `rev` (or finds it built) with progress on stderr.
pub fn build(
    ctx: &Context,
    rev: &str,
    allow_dirty: bool,
    progress: &Progress,
) -> anyhow::Result<Artifact> {
    ctx.state
        .create()
        .with_context(|| format!("creating {}", ctx.state.path.display()))?;
    let repo = Repo::discover(&ctx.root)?;
    let store = ArtifactStore::open(&ctx.state.path.join("artifacts"))?;
    let work_dir = ctx.state.path.join("build");
    let request = BuildRequest {
        repo: &repo,
        store: &store,
        work_dir: &work_dir,
        rev,
        allow_dirty,
        image_builder: None,
    };
    let artifact = cutover_artifact::build(request, &mut |event| match event {
        BuildEvent::Started { version } => progress.step(&format!("building {}", short(&version))),
        BuildEvent::Reused { artifact } => progress.step(&format!(
            "{}:{} is already built ({}); reusing it",
            artifact.app,
            short(&artifact.version),
            artifact.digest
        )),
        BuildEvent::Output(line) => progress.detail(&line),
        BuildEvent::Collected { files, bytes } => {
            progress.step(&format!("collected {files} file(s), {bytes} bytes"))
        }
        BuildEvent::Stored { artifact } => progress.step(&format!(
            "stored {}:{} as {}",
            artifact.app,
            short(&artifact.version),
            artifact.digest
        )),
    })?;
    Ok(artifact)
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
