//! `cutover build`: a commit, built once, into the content-addressed artifact store.

use clap::Args;
use cutover_artifact::{Artifact, ArtifactStore};

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

/// Builds on a blocking thread (builds run commands and wait on them), after the checks gate:
/// a commit whose checks failed is refused; one whose checks never ran has them run first.
pub async fn build_in_background(
    ctx: Context,
    rev: String,
    checks: Checks,
    verbose: bool,
) -> anyhow::Result<Artifact> {
    if !checks.skip && !already_built(&ctx, &rev) {
        gate_on_checks(&ctx, &rev, checks, verbose).await?;
    }
    let allow_dirty = checks.allow_dirty;
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let progress = Renderer::new(verbose);
        cutover_server::builder::build(
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

/// Whether `rev` (a clean commit) is built already: then its checks were passed (or skipped) then.
fn already_built(ctx: &Context, rev: &str) -> bool {
    let Ok(repo) = cutover_git::Repo::discover(&ctx.root) else {
        return false;
    };
    let Ok(sha) = repo.resolve(rev) else {
        return false;
    };
    let Ok(Some(text)) = repo.show_file(&sha, cutover_config::CONFIG_FILE) else {
        return false;
    };
    let Ok(config) = cutover_config::Config::parse(&text, "cutover.toml") else {
        return false;
    };
    ArtifactStore::open(&ctx.state.path.join("artifacts"))
        .ok()
        .and_then(|s| s.get(config.app.name.as_str(), &sha).ok().flatten())
        .is_some()
}

/// Refuses a commit whose checks failed; runs the checks of one whose checks never ran.
async fn gate_on_checks(
    ctx: &Context,
    rev: &str,
    checks: Checks,
    verbose: bool,
) -> anyhow::Result<()> {
    let repo = cutover_git::Repo::discover(&ctx.root)?;
    let sha = repo.resolve(rev)?;
    let dirty = checks.allow_dirty && sha == repo.resolve("HEAD")? && repo.is_dirty()?;
    let Some(text) = repo.show_file(&sha, cutover_config::CONFIG_FILE)? else {
        return Ok(());
    };
    let config = cutover_config::Config::parse(&text, &cutover_config::committed_origin(&sha))?;
    if config.pipeline.checks.is_empty() || dirty {
        return Ok(());
    }
    let client = crate::client::Client::connect_or_start(&ctx.state).await?;
    let records: Vec<cutover_api::CheckView> = client.get(&format!("/v1/checks/{sha}")).await?;
    let refuse = |failed: Vec<String>, hint: String| -> anyhow::Error {
        cutover_api::Refusal {
            message: format!(
                "the checks of {} failed ({}); it is not built",
                crate::output::short(&sha),
                failed.join(", ")
            ),
            hint: Some(hint),
        }
        .into()
    };
    if records.is_empty() {
        let progress = Renderer::new(verbose);
        progress.step(&format!(
            "the checks of {} never ran: running them first",
            crate::output::short(&sha)
        ));
        let body = cutover_api::ChecksBody {
            rev: sha.to_string(),
        };
        let outcome = client
            .stream("/v1/checks/run", &body, |line| progress.line(line))
            .await?;
        progress.finish();
        if !outcome.is_success() {
            let hint = outcome.hint.unwrap_or_default();
            return Err(cutover_api::Refusal {
                message: outcome.message,
                hint: Some(format!("{hint}; fix and commit, or pass --skip-checks")),
            }
            .into());
        }
        return Ok(());
    }
    let failed: Vec<String> = records
        .iter()
        .filter(|r| r.status != "passed")
        .map(|r| format!("{} {}", r.name, r.status))
        .collect();
    if failed.is_empty() {
        return Ok(());
    }
    Err(refuse(
        failed,
        "fix the commit (a new commit runs its checks again), or pass --skip-checks".into(),
    ))
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
        0 => Err(cutover_api::Refusal {
            message: format!("{version:?} is not a known artifact of {app}"),
            hint: Some("build it first with `cutover build <rev>`, or deploy a commit with `cutover deploy <env> --rev <rev>`".into()),
        }
        .into()),
        n => Err(cutover_api::Refusal {
            message: format!("{version:?} matches {n} artifacts of {app}"),
            hint: Some("give more characters of the version".into()),
        }
        .into()),
    }
}
