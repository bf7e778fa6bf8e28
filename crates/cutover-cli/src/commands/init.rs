//! `cutover init`: a commented cutover.toml for the repository you stand in.

use std::path::PathBuf;

use clap::Args;
use cutover_config::{Config, CONFIG_FILE};

#[derive(Args, Debug)]
pub struct InitArgs {
    /// The app's name ([a-z0-9-]); default: the repository folder's name.
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing cutover.toml.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: InitArgs) -> i32 {
    let root = repo_root();
    let path = root.join(CONFIG_FILE);
    if path.exists() && !args.force {
        eprintln!(
            "error: {} already exists; nothing was changed",
            path.display()
        );
        eprintln!("hint: pass --force to overwrite it");
        return 1;
    }
    let name = args.name.unwrap_or_else(|| app_name_from(&root));
    let text = cutover_config::init_template(&name);
    if let Err(e) = Config::parse(&text, CONFIG_FILE) {
        eprintln!("error: {e}");
        eprintln!(
            "hint: pass --name with lowercase letters, digits and dashes, e.g. --name my-app"
        );
        return 1;
    }
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return 1;
    }
    eprintln!("wrote {} for app {name:?}", path.display());
    eprintln!("next: set [build] and [run] for your app, commit it, then: cutover deploy staging");
    0
}

/// The git top level of the current folder, or the folder itself outside a repository.
fn repo_root() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cutover_git::Repo::discover(&cwd)
        .map(|repo| repo.root)
        .unwrap_or(cwd)
}

/// A valid app name made from a folder name: lowercase, other characters as dashes.
fn app_name_from(root: &std::path::Path) -> String {
    let raw = root
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let name: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        "app".into()
    } else {
        name.chars().take(63).collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn folder_names_become_valid_app_names() {
        assert_eq!(
            super::app_name_from(std::path::Path::new("/x/My Cool_App")),
            "my-cool-app"
        );
        assert_eq!(super::app_name_from(std::path::Path::new("/")), "app");
    }
}
