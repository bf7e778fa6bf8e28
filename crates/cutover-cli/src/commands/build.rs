//! `cutover build`: a commit, built once, into the content-addressed artifact store.

use anyhow::Context as _;
use clap::Args;
use cutover_artifact::{
    Artifact, ArtifactStore, BuildEvent, BuildRequest, ImageArtifact, ImageBuildInput, Repo,
};
use cutover_config::Config;

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
        build(&ctx, &rev, allow_dirty, &progress, &handle)
    })
    .await?
}

/// Builds `rev` (or finds it built) with progress on stderr.
pub fn build(
    ctx: &Context,
    rev: &str,
    allow_dirty: bool,
    progress: &Progress,
    handle: &tokio::runtime::Handle,
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
        image_builder: Some(&mut |input| build_image(input, progress, handle)),
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

/// Builds the image of a commit whose config has `[build] dockerfile`, tagged
/// `<repository>:<version>` and its moving tags.
fn build_image(
    input: ImageBuildInput<'_>,
    progress: &Progress,
    handle: &tokio::runtime::Handle,
) -> Result<ImageArtifact, String> {
    let config = input.config;
    let dockerfile = config
        .build
        .dockerfile
        .clone()
        .unwrap_or_else(|| "Dockerfile".into());
    let repository = image_repository(config);
    let mut tags = vec![format!("{repository}:{}", input.version)];
    tags.extend(
        config
            .build
            .tags
            .iter()
            .map(|t| format!("{repository}:{t}")),
    );
    let context_dir = input.checkout.join(&config.build.context);
    progress.step(&format!(
        "building image {repository}:{} from {dockerfile}",
        short(input.version)
    ));
    handle.block_on(async {
        let engine = connect_engine(config).await.map_err(|e| e.to_string())?;
        let spec = cutover_docker::BuildSpec {
            context_dir: &context_dir,
            dockerfile: &dockerfile,
            tags,
        };
        let id = cutover_docker::build_image(&engine, spec, &mut |line| progress.detail(&line))
            .await
            .map_err(|e| e.to_string())?;
        progress.step(&format!(
            "image {repository}:{} is {id}",
            short(input.version)
        ));
        Ok(ImageArtifact {
            repository,
            id,
            moving_tags: config.build.tags.clone(),
            registry_digest: None,
        })
    })
}

/// The image name of an app: `<registry>/<repository>`, or the app's name without a registry.
pub fn image_repository(config: &Config) -> String {
    config
        .registry
        .as_ref()
        .map(|r| r.image())
        .unwrap_or_else(|| config.app.name.to_string())
}

/// The container engine a config's environments use (Podman only if none uses Docker).
pub async fn connect_engine(
    config: &Config,
) -> Result<cutover_docker::Engine, cutover_docker::DockerError> {
    use cutover_config::RuntimeKind;
    let kinds: Vec<RuntimeKind> = config.environments.values().map(|e| e.runtime).collect();
    let kind = if kinds.contains(&RuntimeKind::Podman) && !kinds.contains(&RuntimeKind::Docker) {
        cutover_docker::EngineKind::Podman
    } else {
        cutover_docker::EngineKind::Docker
    };
    cutover_docker::Engine::connect(config.docker.host.as_deref(), kind).await
}
