//! `cutover server info`: what the server of a state dir is, for the person who sets up a
//! client on another machine (its HTTPS address and the fingerprint to pin); `cutover server
//! stop` and `restart`: the server alone, the instances and the edge serving on.

use cutover_api::ServerInfo;

/// Prints the server's `server.json`, and whether that server still runs.
pub fn info(json: bool, state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let state = crate::roles::server_state(state_dir)?;
    let path = state.path.join("server.json");
    let text = match std::fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!(
                "no cutover server has run for {} yet\n  hint: start one with `cutover server --listen 0.0.0.0:9871` to serve other machines",
                state.path.display()
            );
        }
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    };
    let info: ServerInfo = serde_json::from_slice(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a server's info: {e}", path.display()))?;
    let running = cutover_daemon::read_pid(&state.pid_file()) == Some(info.pid)
        && cutover_daemon::pid_runs(info.pid, &["server"]);
    if json {
        let mut value = serde_json::to_value(&info)?;
        value["running"] = serde_json::Value::Bool(running);
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(0);
    }
    println!(
        "server   {} (pid {}, version {}, started {})",
        if running { "running" } else { "not running" },
        info.pid,
        info.version,
        info.started_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    println!("state    {}", state.path.display());
    match (&info.https, &info.fingerprint) {
        (Some(url), Some(fingerprint)) => {
            println!("https    {url}");
            println!("pin      {fingerprint}");
            if let Some(cert) = &info.certificate {
                println!("cert     {cert}");
            }
        }
        _ => println!("https    off (local unix socket only; `cutover server --listen ADDR` serves other machines)"),
    }
    Ok(0)
}

/// How long a stopped server may take to exit.
const EXIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(20);

/// The server of this state dir that answers, if one does: it and its info.
async fn running(
    state: &cutover_daemon::StateDir,
) -> Option<(crate::client::Client, cutover_api::Ping)> {
    let client = crate::client::Client::connect_existing(state).await?;
    let ping: cutover_api::Ping = client.call("GET", "/v1/ping", None::<&()>).await.ok()?;
    Some((client, ping))
}

/// Asks the server to stop (it refuses while a change is under way) and waits for its process
/// to end.
async fn stop_running(client: &crate::client::Client, pid: u32) -> anyhow::Result<()> {
    let _: cutover_api::Stopped = client.call("POST", "/v1/server/stop", None::<&()>).await?;
    let started = std::time::Instant::now();
    while cutover_daemon::pid_alive(pid) {
        if started.elapsed() > EXIT_LIMIT {
            anyhow::bail!(
                "the server (pid {pid}) said it stops but still runs after {} s\n  hint: its log is in the state dir's logs/server.log",
                EXIT_LIMIT.as_secs()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Ok(())
}

/// `cutover server stop`.
pub async fn stop(state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let state = crate::roles::server_state(state_dir)?;
    let Some((client, ping)) = running(&state).await else {
        eprintln!(
            "no cutover server runs for {}; nothing to stop",
            state.path.display()
        );
        return Ok(0);
    };
    stop_running(&client, ping.pid).await?;
    eprintln!(
        "stopped the server of {} (pid {}); the instances and the edge serve on, and the next cutover command starts a server again",
        state.path.display(),
        ping.pid
    );
    Ok(0)
}

/// `cutover server restart`: stop, then start with the options the stopped one had (its
/// `server.json`), and say what the new server did first (its log since it started: the
/// releases it found interrupted, an edge it upgraded).
pub async fn restart(state_dir: Option<&std::path::Path>) -> anyhow::Result<i32> {
    let state = crate::roles::server_state(state_dir)?;
    let args = std::fs::read(state.path.join("server.json"))
        .ok()
        .and_then(|text| serde_json::from_slice::<ServerInfo>(&text).ok())
        .map(|info| info.args)
        .unwrap_or_default();
    let before = match running(&state).await {
        Some((client, ping)) => {
            stop_running(&client, ping.pid).await?;
            Some(ping)
        }
        None => None,
    };
    let log = state.log_file();
    let logged = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
    let client = crate::client::Client::connect_or_start_with(&state, &args).await?;
    let after: cutover_api::Ping = client.call("GET", "/v1/ping", None::<&()>).await?;
    match before {
        Some(before) => eprintln!(
            "restarted the server of {}: pid {} (cutover {}) → pid {} (cutover {})",
            state.path.display(),
            before.pid,
            before.version,
            after.pid,
            after.version
        ),
        None => eprintln!(
            "no server ran for {}; started one (pid {}, cutover {})",
            state.path.display(),
            after.pid,
            after.version
        ),
    }
    for line in said_since(&log, logged) {
        eprintln!("  {line}");
    }
    Ok(0)
}

/// What the server's log says after its first `from` bytes (what a new server did first),
/// the lines that tell something: its own start line, an edge upgrade, reconcile's findings.
fn said_since(log: &std::path::Path, from: u64) -> Vec<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(log) {
        let from = if file.metadata().map(|m| m.len()).unwrap_or(0) < from {
            0 // rotated meanwhile
        } else {
            from
        };
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_string(&mut text);
        }
    }
    text.lines()
        .filter(|l| {
            l.contains("edge upgraded")
                || l.contains("edge was not upgraded")
                || l.starts_with("reconcile:")
                || l.starts_with("HTTPS API on")
        })
        .map(str::to_string)
        .collect()
}
