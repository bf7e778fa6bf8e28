//! `cutover server info`: what the server of a state dir is, for the person who sets up a
//! client on another machine (its HTTPS address and the fingerprint to pin).

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
