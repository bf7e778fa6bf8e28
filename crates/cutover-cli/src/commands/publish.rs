//! `cutover publish`: push a version's image, exactly as built, to the registry and record the
//! registry's digest (what every deploy of it pulls).

use clap::Args;
use cutover_artifact::{Artifact, ArtifactStore};
use cutover_config::Config;

use crate::client::Refusal;
use crate::context::Context;
use crate::output::{short, Progress};

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The commit whose image to publish (built first if needed); default HEAD.
    pub rev: Option<String>,
    #[arg(short, long)]
    pub verbose: bool,
}

pub async fn run(args: PublishArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let rev = args.rev.unwrap_or_else(|| "HEAD".into());
    let artifact =
        crate::commands::build::build_in_background(ctx.clone(), rev, false, args.verbose).await?;
    let progress = Progress::new(args.verbose);
    let artifact = publish(&ctx, artifact, &progress).await?;
    progress.finish();
    if let Some(image) = &artifact.image {
        println!(
            "{}:{} {}",
            image.repository,
            artifact.version,
            image.registry_digest.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

/// Pushes the artifact's image unless the registry already has it at the recorded digest;
/// returns the artifact with its registry digest recorded.
pub async fn publish(
    ctx: &Context,
    mut artifact: Artifact,
    progress: &Progress,
) -> anyhow::Result<Artifact> {
    let config = Config::parse(
        &artifact.config_text,
        &format!("cutover.toml@{}", short(&artifact.version)),
    )?;
    let Some(registry) = &config.registry else {
        return Err(Refusal {
            message: format!(
                "the config of {} has no [registry] to publish to",
                short(&artifact.version)
            ),
            hint: Some(
                "add [registry] with url and repository to cutover.toml and commit it".into(),
            ),
        }
        .into());
    };
    let Some(image) = artifact.image.clone() else {
        return Err(Refusal {
            message: format!(
                "{}:{} has no image to publish",
                artifact.app,
                short(&artifact.version)
            ),
            hint: Some("add [build] dockerfile to cutover.toml and commit it".into()),
        }
        .into());
    };
    let login = config.registry_credentials(&ctx.root)?;
    let creds =
        login.map(|(username, password)| cutover_docker::Credentials { username, password });
    let (host, name) = (registry.url.as_str(), registry.repository.as_str());
    if let Some(recorded) = &image.registry_digest {
        let now =
            cutover_docker::registry_digest(host, name, &artifact.version, creds.as_ref()).await?;
        if now.as_deref() == Some(recorded.as_str()) {
            progress.step(&format!(
                "{}:{} is already published as {recorded}",
                image.repository,
                short(&artifact.version)
            ));
            return Ok(artifact);
        }
    }
    let engine = crate::commands::build::connect_engine(&config).await?;
    let local = format!("{}:{}", image.repository, artifact.version);
    if !cutover_docker::image_exists(&engine, &local).await? {
        return Err(Refusal {
            message: format!("the image {local} is no longer on the {} engine, so it cannot be published", engine.kind),
            hint: Some("images are built once and never rebuilt: deploy a version that is still here, or build a new commit".into()),
        }
        .into());
    }
    progress.step(&format!("publishing {local} to {host}"));
    let digest = cutover_docker::push(
        &engine,
        &image.repository,
        &artifact.version,
        creds.as_ref(),
        &mut |line| progress.detail(&line),
    )
    .await?;
    for tag in &image.moving_tags {
        cutover_docker::push(
            &engine,
            &image.repository,
            tag,
            creds.as_ref(),
            &mut |line| progress.detail(&line),
        )
        .await?;
    }
    progress.step(&format!("published {local} as {digest}"));
    if let Some(img) = artifact.image.as_mut() {
        img.registry_digest = Some(digest);
    }
    ArtifactStore::open(&ctx.state.path.join("artifacts"))?.put_manifest(&artifact)?;
    Ok(artifact)
}
