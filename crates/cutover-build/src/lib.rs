//! Builds: a commit built once into its artifact (the bundle, and the OCI image with `[build]
//! dockerfile`), the image published to the registry, and artifacts found by version. Used by
//! the CLI (a build runs in the caller's process, with the caller's toolchain) and by the
//! server (the pipeline, publish-if-needed before a deploy) alike. Progress goes to a
//! [`Report`] as wire progress lines ([`cutover_api::Line`]), which the CLI renders and the
//! server streams.

use std::path::Path;

use anyhow::Context as _;
use cutover_api::{Line, Refusal};
use cutover_artifact::{ArtifactStore, BuildEvent, BuildRequest, ImageArtifact, ImageBuildInput};
use cutover_config::Config;
use cutover_daemon::StateDir;
use cutover_git::{short, Repo};

pub use cutover_artifact::Artifact;

/// Where build and publish progress goes (a terminal, a stream of JSON lines).
pub type Report<'a> = dyn Fn(Line) + Sync + 'a;

fn step(progress: &Report<'_>, message: String) {
    progress(Line::Step { message })
}

/// Builds `rev` of the repository at `root` (or finds it built).
pub fn build(
    root: &Path,
    state: &StateDir,
    rev: &str,
    allow_dirty: bool,
    progress: &Report<'_>,
    handle: &tokio::runtime::Handle,
) -> anyhow::Result<Artifact> {
    state
        .create()
        .with_context(|| format!("creating {}", state.path.display()))?;
    let repo = Repo::discover(root)?;
    let store = ArtifactStore::open(&state.artifacts())?;
    let work_dir = state.path.join("build");
    let request = BuildRequest {
        repo: &repo,
        store: &store,
        work_dir: &work_dir,
        rev,
        allow_dirty,
        image_builder: Some(&mut |input| build_image(input, progress, handle)),
    };
    let artifact = cutover_artifact::build(request, &mut |event| match event {
        BuildEvent::Started { version } => step(progress, format!("building {}", short(&version))),
        BuildEvent::Reused { artifact } => step(
            progress,
            format!(
                "{}:{} is already built ({}); reusing it",
                artifact.app,
                short(&artifact.version),
                artifact.digest
            ),
        ),
        BuildEvent::Output(message) => progress(Line::Detail { message }),
        BuildEvent::Collected { files, bytes } => step(
            progress,
            format!("collected {files} file(s), {bytes} bytes"),
        ),
        BuildEvent::Stored { artifact } => step(
            progress,
            format!(
                "stored {}:{} as {}",
                artifact.app,
                short(&artifact.version),
                artifact.digest
            ),
        ),
    })?;
    Ok(artifact)
}

/// Builds the image of a commit whose config has `[build] dockerfile`, tagged
/// `<repository>:<version>` and its moving tags.
fn build_image(
    input: ImageBuildInput<'_>,
    progress: &Report<'_>,
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
    step(
        progress,
        format!(
            "building image {repository}:{} from {dockerfile}",
            short(input.version)
        ),
    );
    handle.block_on(async {
        let engine = connect_engine(config).await.map_err(|e| e.to_string())?;
        let spec = cutover_docker::BuildSpec {
            context_dir: &context_dir,
            dockerfile: &dockerfile,
            tags,
        };
        let id = cutover_docker::build_image(&engine, spec, &mut |line| {
            progress(Line::Detail { message: line })
        })
        .await
        .map_err(|e| e.to_string())?;
        step(
            progress,
            format!("image {repository}:{} is {id}", short(input.version)),
        );
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

/// Pushes the artifact's image unless the registry already has it at the recorded digest;
/// returns the artifact with its registry digest recorded. `login` is the caller's registry
/// login; `None`: resolved from the config's `[registry]` sources, from `root`.
pub async fn publish(
    root: &Path,
    state: &StateDir,
    mut artifact: Artifact,
    login: Option<(String, String)>,
    progress: &Report<'_>,
) -> anyhow::Result<Artifact> {
    let config = Config::parse(
        &artifact.config_text,
        &cutover_config::committed_origin(&artifact.version),
    )?;
    let Some(registry) = &config.registry else {
        return Err(Refusal::new(
            format!(
                "the config of {} has no [registry] to publish to",
                short(&artifact.version)
            ),
            Some("add [registry] with url and repository to cutover.toml and commit it".into()),
        )
        .into());
    };
    let Some(image) = artifact.image.clone() else {
        return Err(Refusal::new(
            format!(
                "{}:{} has no image to publish",
                artifact.app,
                short(&artifact.version)
            ),
            Some("add [build] dockerfile to cutover.toml and commit it".into()),
        )
        .into());
    };
    let login = match login {
        Some(login) => Some(login),
        None => config.registry_credentials(root)?,
    };
    let creds =
        login.map(|(username, password)| cutover_docker::Credentials { username, password });
    let (host, name) = (registry.url.as_str(), registry.repository.as_str());
    let access = cutover_docker::RegistryAccess {
        insecure: registry.insecure,
        ca_bundle: registry.ca_bundle.as_ref().map(|p| root.join(p)),
        ..Default::default()
    };
    if let Some(recorded) = &image.registry_digest {
        let now =
            cutover_docker::registry_digest(host, name, &artifact.version, creds.as_ref(), &access)
                .await?;
        if now.as_deref() == Some(recorded.as_str()) {
            step(
                progress,
                format!(
                    "{}:{} is already published as {recorded}",
                    image.repository,
                    short(&artifact.version)
                ),
            );
            return Ok(artifact);
        }
    }
    let engine = connect_engine(&config).await?;
    let local = format!("{}:{}", image.repository, artifact.version);
    if !cutover_docker::image_exists(&engine, &local).await? {
        return Err(Refusal::new(
            format!("the image {local} is no longer on the {} engine, so it cannot be published", engine.kind),
            Some("images are built once and never rebuilt: deploy a version that is still here, or build a new commit".into()),
        )
        .into());
    }
    step(progress, format!("publishing {local} to {host}"));
    let digest = cutover_docker::push(
        &engine,
        &image.repository,
        &artifact.version,
        creds.as_ref(),
        &access,
        &mut |line| progress(Line::Detail { message: line }),
    )
    .await?;
    for tag in &image.moving_tags {
        cutover_docker::push(
            &engine,
            &image.repository,
            tag,
            creds.as_ref(),
            &access,
            &mut |line| progress(Line::Detail { message: line }),
        )
        .await?;
    }
    step(progress, format!("published {local} as {digest}"));
    if let Some(img) = artifact.image.as_mut() {
        img.registry_digest = Some(digest);
    }
    ArtifactStore::open(&state.artifacts())?.put_manifest(&artifact)?;
    Ok(artifact)
}

/// The artifact `app:version`, if it is built.
pub fn built(state: &StateDir, app: &str, version: &str) -> Option<Artifact> {
    ArtifactStore::open(&state.artifacts())
        .ok()?
        .get(app, version)
        .ok()
        .flatten()
}

/// An artifact already built, by full version or unique prefix. Never builds.
pub fn find(state: &StateDir, app: &str, version: &str) -> anyhow::Result<Artifact> {
    let store = ArtifactStore::open(&state.artifacts())?;
    if let Some(a) = store.get(app, version)? {
        return Ok(a);
    }
    let mut found = store.find_by_prefix(app, version)?;
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Refusal::new(
            format!("{version:?} is not a known artifact of {app}"),
            Some("build it first with `cutover build <rev>`, or deploy a commit with `cutover deploy <env> --rev <rev>`".into()),
        )
        .into()),
        n => Err(Refusal::new(
            format!("{version:?} matches {n} artifacts of {app}"),
            Some("give more characters of the version".into()),
        )
        .into()),
    }
}
