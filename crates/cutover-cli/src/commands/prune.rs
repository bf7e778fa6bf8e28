//! `cutover prune`: remove instances left of releases that no longer run, old images,
//! artifacts and unpacked releases — never the way back.

use clap::Args;
use cutover_api::{PruneBody, PruneReport};

use crate::client::Client;
use crate::context::Context;
use crate::output::short;

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Say what would be removed and kept, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Known-good releases per environment to keep (default: `[retention] keep`, 5).
    #[arg(long)]
    pub keep: Option<u32>,
    /// Print the report as one JSON document.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: PruneArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let config = ctx.working_config()?;
    let keep = args.keep.unwrap_or(config.retention.keep);
    let client = Client::connect_or_start(&ctx.state).await?;
    let body = PruneBody {
        app: config.app.name.to_string(),
        keep,
        dry_run: args.dry_run,
    };
    let limit = std::time::Duration::from_secs(300);
    let report: PruneReport = client
        .call_within(limit, "POST", "/v1/prune", Some(&body))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(0);
    }
    let verb = if report.dry_run {
        "would remove"
    } else {
        "removed"
    };
    for i in &report.instances_removed {
        println!("{verb}  instance {i}");
    }
    for r in &report.removed {
        let images = if r.images.is_empty() {
            String::new()
        } else {
            format!(" and image {}", r.images.join(", "))
        };
        println!("{verb}  {}{images}", short(&r.version));
        if let Some(e) = &r.error {
            println!("        could not remove its image: {e}");
        }
    }
    for k in &report.kept {
        println!("kept     {}  ({})", short(&k.version), k.reasons.join("; "));
    }
    println!(
        "{} artifact(s) {verb}, {} kept; {} unpacked release folder(s) {verb}; {} bytes freed",
        report.removed.len(),
        report.kept.len(),
        report.release_dirs_removed,
        report.bytes_freed
    );
    Ok(0)
}
