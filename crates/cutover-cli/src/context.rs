//! Where the CLI stands: the repository, its `cutover.toml` and its state dir.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use cutover_api::Refusal;
use cutover_config::{Config, CONFIG_FILE};
use cutover_daemon::StateDir;

#[derive(Clone)]
pub struct Context {
    /// The folder holding `cutover.toml` (the repository root, normally).
    pub root: PathBuf,
    pub state: StateDir,
    /// The working tree's config, read once per command (`server_of` asks for it per
    /// environment).
    config: std::sync::OnceLock<Config>,
}

impl Context {
    /// Finds `cutover.toml` in the current folder or above it. `state_dir` overrides the
    /// default `.cutover/` beside it; with a `state_dir`, no `cutover.toml` is needed (a
    /// server on a target machine has no repository: `token`, `status`, `down` and the other
    /// commands that only ask the server work there), and commands that need one say so.
    pub fn discover(state_dir: Option<&Path>) -> anyhow::Result<Context> {
        let cwd = std::env::current_dir().context("reading the current folder")?;
        let found = cwd.ancestors().find(|d| d.join(CONFIG_FILE).is_file());
        if let (None, Some(dir)) = (found, state_dir) {
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            let root = dir.parent().unwrap_or(&dir).to_path_buf();
            return Ok(Context::at(&root, Some(&dir)));
        }
        let Some(root) = found else {
            bail!(Refusal::new(
                format!(
                    "no {CONFIG_FILE} in {} or any folder above it",
                    cwd.display()
                ),
                Some("create one with `cutover init`".into()),
            ));
        };
        Ok(Context::at(root, state_dir))
    }

    pub fn at(root: &Path, state_dir: Option<&Path>) -> Context {
        let root = root.to_path_buf();
        let state = StateDir::new(
            state_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| root.join(".cutover")),
        );
        Context {
            root,
            state,
            config: std::sync::OnceLock::new(),
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// The working tree's config (commands that do not deploy read this one), read and
    /// checked once; an error is read again (and said) each time it is asked for.
    pub fn working_config(&self) -> anyhow::Result<&Config> {
        if let Some(config) = self.config.get() {
            return Ok(config);
        }
        let config = Config::load(&self.config_path())?;
        Ok(self.config.get_or_init(|| config))
    }

    /// The server `env` lives on, as the working tree's config says (`server = "https://…"`);
    /// `None`: this machine's.
    pub fn server_of(&self, env: &str) -> Option<String> {
        let config = self.working_config().ok()?;
        config.environment(env).ok()?.server.clone()
    }

    /// A client of the server that runs `env`: the remote one its `server` names (with the
    /// login kept for it, or CUTOVER_TOKEN and CUTOVER_SERVER_FINGERPRINT), or this machine's,
    /// started in the background when none runs.
    pub async fn client_for(&self, env: &str) -> anyhow::Result<crate::client::Client> {
        match self.server_of(env) {
            Some(url) => {
                let login = crate::credentials::for_server(&url)?;
                crate::client::Client::remote(&url, &login.fingerprint, &login.token)
            }
            None => crate::client::Client::connect_or_start(&self.state).await,
        }
    }
}
