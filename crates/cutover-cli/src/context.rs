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
        Context { root, state }
    }

    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// The working tree's config (commands that do not deploy read this one).
    pub fn working_config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config_path())?)
    }
}
