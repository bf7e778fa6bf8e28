//! The read commands (`status`, `history`, `show`, `logs`) and `down`. With `--json` a read
//! command prints one JSON document on stdout; text for people goes to stdout too, progress
//! and notes to stderr.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use clap::Args;
use cutover_api::{AccessLogView, HistoryView, InstanceLogs, ShowView, StatusView};

use crate::client::Client;
use crate::context::Context;
use crate::output::{ago, report, short};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print the status as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// The environment.
    pub env: String,
    /// How many releases, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    /// The release id (see `cutover history ENV`).
    pub release: i64,
    #[arg(long, conflicts_with = "follow")]
    pub json: bool,
    /// Print the timeline as it happens until the release is live or has failed, and exit as
    /// `deploy` would have: 0 it went live (or waits at a manual gate), 1 refused before any
    /// instance started, 3 its instances failed and the previous version serves. For a deploy
    /// whose client went away (Ctrl-C, a dropped network): the server carries it on.
    #[arg(short, long)]
    pub follow: bool,
    /// The release's environment: asks the server that environment lives on (its `server` in
    /// cutover.toml). Default: this machine's server.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The environment.
    pub env: String,
    /// How many lines per instance.
    #[arg(short = 'n', long, default_value_t = 50)]
    pub lines: usize,
    /// Keep printing new output until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// The edge's access log instead: one JSON line per request.
    #[arg(long)]
    pub access: bool,
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<i32> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(0)
}

pub async fn status(args: StatusArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    // A server's own state dir on a target machine has no cutover.toml beside it: nothing to
    // warn about there.
    let has_config = ctx.config_path().exists();
    if let (true, Err(e)) = (has_config, ctx.working_config()) {
        eprintln!("warning: the working tree's cutover.toml is invalid (deploys use the committed one):\n{e}");
    }
    let client = Client::connect_or_start(&ctx.state).await?;
    let mut view: StatusView = client.get("/v1/status").await?;
    merge_remote(&ctx, &mut view).await;
    if args.json {
        return print_json(&view);
    }
    if view.environments.is_empty() {
        println!("no environments: add [environments.NAME] to cutover.toml");
    }
    for env in &view.environments {
        let on = env
            .server
            .as_ref()
            .map(|s| format!("  on {s}"))
            .unwrap_or_default();
        let hosts = if env.hosts.is_empty() {
            String::new()
        } else {
            format!("  {}", env.hosts.join(", "))
        };
        println!(
            "{}  {}{hosts}{on}",
            env.name,
            env.listen.as_deref().unwrap_or("-")
        );
        if let Some(why) = &env.unreachable {
            println!("  unreachable: {why}");
            continue;
        }
        match &env.live {
            Some(live) => {
                let since = live
                    .since
                    .map(|s| format!("since {} ({})", s.format("%Y-%m-%d %H:%M:%SZ"), ago(s)))
                    .unwrap_or_default();
                let monitoring = live
                    .monitoring_until
                    .map(|m| format!("  monitoring until {}", m.format("%H:%M:%SZ")))
                    .unwrap_or_default();
                println!(
                    "  live      release {}  {}  {}  {since}  by {}{monitoring}",
                    live.release,
                    short(&live.version),
                    live.digest,
                    live.deployed_by
                );
            }
            None => println!("  live      nothing"),
        }
        match &env.previous {
            Some(p) => println!(
                "  previous  release {}  {}  {}",
                p.release,
                short(&p.version),
                p.digest
            ),
            None => println!("  previous  none (no known-good to roll back to)"),
        }
        for c in &env.certificates {
            let serving = match c.not_after {
                Some(t) => format!("valid until {}", t.format("%Y-%m-%d %H:%MZ")),
                None => "none yet: handshakes for it fail".to_string(),
            };
            match &c.error {
                Some(e) => println!(
                    "  certificate {}  {serving}; the last ACME attempt failed: {e}",
                    c.host
                ),
                None => println!("  certificate {}  {serving}", c.host),
            }
        }
        if let Some(m) = &env.maintenance {
            println!(
                "  edge      in maintenance (503) since {} by {}: {}",
                m.at.format("%H:%M:%SZ"),
                m.by,
                m.message
            );
        }
        if let Some(p) = &env.paused {
            println!(
                "  edge      paused by {}: new requests wait until {} at the latest",
                p.by,
                p.until.format("%H:%M:%SZ")
            );
        }
        for i in &env.instances {
            println!(
                "  instance  {}  {}  pid {}  {}  {}  restarts {}{}",
                i.id,
                i.address,
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.state,
                i.role,
                i.restarts,
                i.node
                    .as_ref()
                    .map_or(String::new(), |n| format!("  on node {n}"))
            );
            if let Some(r) = &i.last_restart {
                println!(
                    "    last restart at {}: {}",
                    r.at.format("%H:%M:%SZ"),
                    r.reason
                );
            }
        }
    }
    Ok(0)
}

/// Replaces the environments the working tree's config puts on other servers by what those
/// servers say of them; a server that cannot be asked is shown as such, the others still are.
async fn merge_remote(ctx: &Context, view: &mut StatusView) {
    let Ok(config) = ctx.working_config() else {
        return;
    };
    let mut by_server: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, env) in &config.environments {
        if let Some(url) = &env.server {
            by_server
                .entry(url.clone())
                .or_default()
                .push(name.to_string());
        }
    }
    for (url, names) in by_server {
        view.environments.retain(|e| !names.contains(&e.name));
        let answer = async {
            let login = crate::credentials::for_server(&url)?;
            let client = Client::remote(&url, &login.fingerprint, &login.token)?;
            client.get::<StatusView>("/v1/status").await
        }
        .await;
        match answer {
            Ok(remote) => {
                for mut env in remote.environments {
                    if names.contains(&env.name) {
                        env.server = Some(url.clone());
                        view.environments.push(env);
                    }
                }
            }
            Err(e) => {
                for name in &names {
                    view.environments.push(cutover_api::EnvironmentView {
                        name: name.clone(),
                        listen: None,
                        hosts: Vec::new(),
                        live: None,
                        previous: None,
                        instances: Vec::new(),
                        awaiting_approval: Vec::new(),
                        frozen: None,
                        maintenance: None,
                        paused: None,
                        server: Some(url.clone()),
                        unreachable: Some(format!("{e:#}")),
                        certificates: Vec::new(),
                    });
                }
            }
        }
    }
}

pub async fn history(
    args: HistoryArgs,
    state_dir: Option<&std::path::Path>,
) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = ctx.client_for(&args.env).await?;
    let view: HistoryView = client
        .get(&format!("/v1/history/{}?limit={}", args.env, args.limit))
        .await?;
    if args.json {
        return print_json(&view);
    }
    if view.releases.is_empty() {
        println!("no releases in {} yet", args.env);
        return Ok(0);
    }
    println!(
        "{:>4}  {:<12}  {:<12}  {:<19}  {:<8}  {:<20}  REASON",
        "ID", "STATE", "VERSION", "DIGEST", "KIND", "CREATED"
    );
    for r in &view.releases {
        let digest = r.digest.get(..19).unwrap_or(&r.digest);
        let good = if r.known_good { "*" } else { " " };
        let reason = match (&r.reason, &r.promoted_from) {
            (Some(reason), _) => reason.clone(),
            (None, Some(from)) => from.to_string(),
            (None, None) => String::new(),
        };
        println!(
            "{:>4}{good} {:<12}  {:<12}  {:<19}  {:<8}  {:<20}  {reason}",
            r.id,
            r.state,
            short(&r.version),
            digest,
            r.kind,
            r.created_at.format("%Y-%m-%d %H:%M:%SZ"),
        );
    }
    println!("(* known-good)");
    Ok(0)
}

pub async fn show(args: ShowArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = match &args.env {
        Some(env) => ctx.client_for(env).await?,
        None => Client::connect_or_start(&ctx.state).await?,
    };
    if args.follow {
        let env = args.env.as_deref();
        let outcome = crate::commands::follow::follow(&client, env, args.release, true).await?;
        return Ok(report(&outcome));
    }
    let view: ShowView = client
        .get(&format!("/v1/releases/{}", args.release))
        .await?;
    if args.json {
        return print_json(&view);
    }
    let r = &view.release;
    println!(
        "release {} in {}: {} ({})",
        r.id, r.environment, r.state, r.kind
    );
    println!("  artifact  {} {}", r.artifact, r.digest);
    println!("  by        {}", r.requested_by);
    if let Some(from) = r.restored_from {
        println!("  restores  release {from}");
    }
    if let Some(from) = &r.promoted_from {
        println!(
            "  promotes  release {} of {}",
            from.release, from.environment
        );
    }
    if let Some(reason) = &r.reason {
        println!("  reason    {reason}");
    }
    for (name, value) in &view.config.overrides {
        println!("  --env     {name}={value}");
    }
    for (name, hash) in &view.config.secrets {
        println!("  secret    {name} ({hash})");
    }
    println!("timeline:");
    for e in &view.events {
        println!(
            "  {}  {:<12}  {}",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.message
        );
    }
    for i in &view.instances {
        println!("instance {}  {}  {}  {}", i.id, i.address, i.state, i.role);
    }
    Ok(0)
}

pub async fn logs(args: LogsArgs, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let client = ctx.client_for(&args.env).await?;
    if args.access {
        let log: AccessLogView = client
            .get(&format!(
                "/v1/logs/{}/access?lines={}",
                args.env, args.lines
            ))
            .await?;
        if log.lines.is_empty() && !args.follow {
            eprintln!("the edge of {} has answered no request yet", args.env);
        }
        for line in &log.lines {
            println!("{line}");
        }
        if !args.follow {
            return Ok(0);
        }
        let mut offset = std::fs::metadata(&log.log_file)
            .map(|m| m.len())
            .unwrap_or(0);
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            for line in read_new(&log.log_file, &mut offset).lines() {
                println!("{line}");
            }
        }
    }
    let instances: Vec<InstanceLogs> = client
        .get(&format!("/v1/logs/{}?lines={}", args.env, args.lines))
        .await?;
    if instances.is_empty() {
        eprintln!("no instance runs in {}", args.env);
    }
    let mut offsets: HashMap<String, u64> = HashMap::new();
    for i in &instances {
        for line in &i.lines {
            println!("{}  {line}", i.id);
        }
        if let Some(file) = &i.log_file {
            offsets.insert(
                file.clone(),
                std::fs::metadata(file).map(|m| m.len()).unwrap_or(0),
            );
        }
    }
    if !args.follow {
        return Ok(0);
    }
    let mut names: HashMap<String, String> = instances
        .iter()
        .filter_map(|i| Some((i.log_file.clone()?, i.id.clone())))
        .collect();
    let mut tick = 0u32;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        tick += 1;
        if tick.is_multiple_of(8) {
            // New instances appear with each release.
            if let Ok(now) = client
                .get::<Vec<InstanceLogs>>(&format!("/v1/logs/{}?lines=0", args.env))
                .await
            {
                for i in now {
                    if let Some(file) = i.log_file {
                        offsets.entry(file.clone()).or_insert(0);
                        names.insert(file, i.id);
                    }
                }
            }
        }
        for (file, offset) in offsets.iter_mut() {
            let new = read_new(file, offset);
            let id = names.get(file).map(String::as_str).unwrap_or("?");
            for line in new.lines() {
                println!("{id}  {line}");
            }
        }
    }
}

/// What `file` has gained since `offset` (from the start again when it was rotated).
fn read_new(file: &str, offset: &mut u64) -> String {
    let mut new = String::new();
    let Ok(mut f) = std::fs::File::open(file) else {
        return new;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len < *offset {
        *offset = 0; // rotated
    }
    if len == *offset || f.seek(SeekFrom::Start(*offset)).is_err() {
        return new;
    }
    if f.read_to_string(&mut new).is_ok() {
        *offset += new.len() as u64;
    }
    new
}

pub async fn down(state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let ctx = Context::discover(state_dir)?;
    let Some(client) = Client::connect_existing(&ctx.state).await else {
        eprintln!(
            "no cutover server runs for {}; nothing to stop",
            ctx.state.path.display()
        );
        return Ok(0);
    };
    eprintln!(
        "stopping every instance, the edge proxies and the server of {}",
        ctx.state.path.display()
    );
    let _: cutover_api::Stopped = client
        .call_within(Duration::from_secs(120), "POST", "/v1/down", None::<&()>)
        .await?;
    let pid_file = ctx.state.pid_file();
    for _ in 0..100 {
        if !pid_file.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!("stopped");
    Ok(0)
}
