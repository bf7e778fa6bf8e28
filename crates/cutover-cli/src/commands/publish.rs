//! `cutover publish`: push a version's image, exactly as built, to the registry and record the
//! registry's digest (what every deploy of it pulls).

use crate::context::Context;
use crate::output::Renderer;
use clap::Args;

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
    let artifact = crate::commands::build::build_in_background(
        ctx.clone(),
        rev,
        Default::default(),
        args.verbose,
    )
    .await?;
    let progress = Renderer::new(args.verbose);
    let artifact = cutover_build::publish(&ctx.root, &ctx.state, artifact, None, &|line| {
        progress.line(&line)
    })
    .await?;
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
