//! How the CLI talks to people: data on stdout, everything else on stderr; a spinner on a
//! terminal, plain lines elsewhere; `error:` and `hint:` lines (uv's STYLE.md).

use std::io::IsTerminal;
use std::time::Duration;

use cutover_api::{Line, Outcome, Refusal};
use indicatif::{ProgressBar, ProgressStyle};

/// The one renderer of progress lines ([`Line`]), whether they come from the server's NDJSON
/// answers or from a build in this process: on stderr, a spinner on a terminal.
pub struct Renderer {
    bar: Option<ProgressBar>,
    verbose: bool,
}

impl Renderer {
    pub fn new(verbose: bool) -> Renderer {
        let fancy = std::io::stderr().is_terminal()
            && std::env::var_os("NO_COLOR").is_none()
            && std::env::var_os("CI").is_none();
        let bar = fancy.then(|| {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {elapsed:.dim}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Renderer { bar, verbose }
    }

    /// A step: shown as the spinner's message and kept as a line.
    pub fn step(&self, message: &str) {
        match &self.bar {
            Some(bar) => {
                bar.println(format!("  {message}"));
                bar.set_message(message.to_string());
            }
            None => eprintln!("  {message}"),
        }
    }

    /// Detail: shown on the spinner, kept as a line only with --verbose or without a TTY.
    fn detail(&self, message: &str) {
        match &self.bar {
            Some(bar) => {
                if self.verbose {
                    bar.println(format!("    {message}"));
                }
                bar.set_message(message.to_string());
            }
            None => eprintln!("    {message}"),
        }
    }

    /// A progress line; an outcome is printed by [`report`] once the command ends.
    pub fn line(&self, line: &Line) {
        match line {
            Line::Step { message } => self.step(message),
            Line::Detail { message } => self.detail(message),
            Line::Outcome(_) | Line::Release { .. } | Line::Heartbeat => {}
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Renderer {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Prints an outcome and returns its exit code.
pub fn report(outcome: &Outcome) -> i32 {
    if outcome.is_success() {
        eprintln!("{}", outcome.message);
        if let Some(hint) = &outcome.hint {
            eprintln!("hint: {hint}");
        }
    } else {
        eprintln!("error: {}", outcome.message);
        if !outcome.logs.is_empty() {
            eprintln!("  last lines of the instance's output:");
            for line in &outcome.logs {
                eprintln!("  | {line}");
            }
        }
        if let Some(hint) = &outcome.hint {
            eprintln!("hint: {hint}");
        }
        if outcome.exit_code == 4 {
            eprintln!("error: THE ENVIRONMENT MAY NOT BE SERVING: check `cutover status`");
        }
    }
    outcome.exit_code
}

/// Prints an error (with its hint, if it is a refusal or a config error) and returns 1, or 5
/// when the outcome of a command that changes an environment is unknown.
pub fn report_error(error: &anyhow::Error) -> i32 {
    if let Some(unknown) = error.downcast_ref::<crate::commands::follow::OutcomeUnknown>() {
        eprintln!("error: {}", unknown.message);
        eprintln!("hint: {}", unknown.hint);
        return 5;
    }
    let unreachable = error
        .downcast_ref::<crate::client::Unreachable>()
        .map(|u| &u.0);
    if let Some(r) = unreachable.or_else(|| error.downcast_ref::<Refusal>()) {
        eprintln!("error: {}", r.message);
        if let Some(hint) = &r.hint {
            eprintln!("hint: {hint}");
        }
        return 1;
    }
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    1
}

/// "5m ago"-style age of a time.
pub fn ago(t: chrono::DateTime<chrono::Utc>) -> String {
    let secs = (chrono::Utc::now() - t).num_seconds().max(0);
    match secs {
        0..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

pub use cutover_git::short;
