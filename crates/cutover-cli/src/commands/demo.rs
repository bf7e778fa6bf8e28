//! `cutover demo`: the course lab, Parts A–D, on the sample tasks-app, narrated.

use clap::Args;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's repository and state afterwards (its path is printed).
    #[arg(long)]
    pub keep: bool,
}

pub async fn run(_args: DemoArgs) -> anyhow::Result<i32> {
    anyhow::bail!("the demo is not written yet")
}
