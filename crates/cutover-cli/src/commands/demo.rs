//! `cutover demo`: the course lab, Parts A–D, on the sample tasks-app, narrated. It runs the
//! real commands (as child processes of this binary) in a scratch git repository, checks that
//! each ends as the lab says it should, and cleans up.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Args;

const APP_SOURCE: &str = include_str!("../../../../examples/tasks-app/src/main.rs");

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the demo's repository and state afterwards (its path is printed).
    #[arg(long)]
    pub keep: bool,
}

/// A loopback address nobody listens on now, for one of the demo's environments.
fn free_address() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()
}

struct Demo {
    repo: PathBuf,
    exe: PathBuf,
    listen: SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    for tool in ["git", "cargo"] {
        if Command::new(tool).arg("--version").output().is_err() {
            bail!("the demo needs `{tool}` on PATH to build the sample app");
        }
    }
    let listen = free_address()?;
    let production = free_address()?;
    let repo = std::env::temp_dir().join(format!("cutover-demo-{}", std::process::id()));
    let demo = Demo {
        repo,
        exe: std::env::current_exe()?,
        listen,
    };
    let result = tokio::task::spawn_blocking({
        let demo = Demo {
            repo: demo.repo.clone(),
            exe: demo.exe.clone(),
            listen,
        };
        move || demo.walk(production)
    })
    .await?;
    let _ = demo.cutover(&["down"]);
    if args.keep {
        eprintln!("\nthe demo's repository is kept at {}", demo.repo.display());
    } else {
        let _ = std::fs::remove_dir_all(&demo.repo);
        let _ = std::fs::remove_dir_all(demo.edge_dir());
    }
    result.map(|()| 0)
}

impl Demo {
    fn walk(&self, production: SocketAddr) -> anyhow::Result<()> {
        let listen = self.listen;
        part("Part A — make something worth deploying");
        say("the course's tasks-app: GET /health, GET/POST /tasks, port from PORT (a small Rust service)");
        std::fs::create_dir_all(self.repo.join("src"))?;
        std::fs::write(self.repo.join("src/main.rs"), APP_SOURCE)?;
        std::fs::write(
            self.repo.join("Cargo.toml"),
            "[package]\nname = \"tasks-app\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
        )?;
        std::fs::write(self.repo.join(".gitignore"), "target/\n")?;
        std::fs::write(
            self.repo.join("cutover.toml"),
            demo_config(listen, production, "hello"),
        )?;
        self.git(&["init", "-q", "-b", "main"])?;
        self.commit("Add HTTP service and cutover.toml")?;
        say(&format!(
            "a git repository at {}, one commit",
            self.repo.display()
        ));

        part("Part B — build and tag the artifact, once");
        self.expect(&["build"], 0)?;
        say("building the same commit again reuses the artifact: nothing is ever rebuilt downstream");
        self.expect(&["build"], 0)?;

        part("Part C — deploy it, with a net");
        self.expect(&["deploy", "staging"], 0)?;
        let first = self.health()?;
        say(&format!("$ curl {listen}/health → {first}"));
        say("a second commit, deployed the same way; the first becomes the rollback target");
        std::fs::write(
            self.repo.join("cutover.toml"),
            demo_config(listen, production, "hello again"),
        )?;
        self.commit("Say hello again")?;
        self.expect(&["deploy", "staging"], 0)?;
        let second = self.health()?;
        say(&format!("$ curl {listen}/health → {second}"));
        self.expect(&["status"], 0)?;

        part("Part D — break a deploy and watch it roll back");
        say("the same artifact with BREAK=1: the new instance fails its health check");
        self.expect(&["deploy", "staging", "--env", "BREAK=1"], 3)?;
        let after = self.health()?;
        say(&format!(
            "$ curl {listen}/health → {after}   (still the known-good: traffic never stopped)"
        ));
        if after != second {
            bail!("after the failed deploy the proxy serves {after}, not {second}");
        }
        say("and back to the previous known-good by hand, no version to type:");
        self.expect(&["rollback", "staging"], 0)?;
        let back = self.health()?;
        say(&format!("$ curl {listen}/health → {back}"));
        if back != first {
            bail!("after the rollback the proxy serves {back}, not {first}");
        }
        self.expect(&["history", "staging"], 0)?;
        part("Done");
        say("every step above is in the ledger: `cutover show <id>` tells one release's story");
        say("read docs/lab.md to walk it by hand; Part E (delivery vs deployment) is one line of config");
        Ok(())
    }

    fn edge_dir(&self) -> std::path::PathBuf {
        self.repo.with_extension("edge")
    }

    fn cutover(&self, args: &[&str]) -> anyhow::Result<i32> {
        let status = Command::new(&self.exe)
            .args(args)
            .current_dir(&self.repo)
            .env_remove("CUTOVER_STATE_DIR")
            // An edge of the demo's own, apart from the machine's (and gone with the demo).
            .env("CUTOVER_EDGE_DIR", self.edge_dir())
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("running cutover {}", args.join(" ")))?;
        Ok(status.code().unwrap_or(1))
    }

    /// Runs `cutover ARGS`, shown as a shell line, and checks its exit code.
    fn expect(&self, args: &[&str], code: i32) -> anyhow::Result<()> {
        eprintln!("\n$ cutover {}", args.join(" "));
        let got = self.cutover(args)?;
        if got != code {
            bail!(
                "`cutover {}` exited {got}, the lab expects {code}",
                args.join(" ")
            );
        }
        if code != 0 {
            say(&format!("(exit code {code}, as expected)"));
        }
        Ok(())
    }

    fn git(&self, args: &[&str]) -> anyhow::Result<()> {
        cutover_git::git(&self.repo, args)?;
        Ok(())
    }

    fn commit(&self, message: &str) -> anyhow::Result<()> {
        self.git(&["add", "-A"])?;
        self.git(&[
            "-c",
            "user.name=cutover demo",
            "-c",
            "user.email=demo@cutover.invalid",
            "commit",
            "-q",
            "-m",
            message,
        ])
    }

    /// GET /health through the edge proxy.
    fn health(&self) -> anyhow::Result<String> {
        http_get(self.listen, "/health").map(|(_, body)| body)
    }
}

fn part(title: &str) {
    eprintln!("\n== {title}");
}

fn say(text: &str) {
    eprintln!("   {text}");
}

fn demo_config(listen: SocketAddr, production: SocketAddr, greeting: &str) -> String {
    format!(
        r#"# The demo's cutover.toml (see docs/lab.md for the full, commented one).
[app]
name = "tasks-app"

[build]
command = "cargo build --release --quiet"
files = ["target/release/tasks-app"]

[run]
command = ["./target/release/tasks-app"]

[health]
path = "/health"
body_contains = "ok"
interval = "100ms"
deadline = "20s"
monitor = "2s"

[env]
GREETING = "{greeting}"

[environments.staging]
listen = "{listen}"

[environments.production]
listen = "{production}"
"#
    )
}

/// A tiny HTTP/1.1 GET, enough for the demo and with no extra dependency.
pub fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.trim().to_string())
        .unwrap_or_default();
    Ok((status, body))
}
