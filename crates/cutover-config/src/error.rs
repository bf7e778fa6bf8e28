//! `ConfigError`: every error names the file, line, column, field and the fix.

use crate::fields::HINT_SEP;
use crate::locate::{self, Entry, Part};
use std::fmt;
use std::ops::Range;

/// What kind of problem a [`ConfigError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// The file is not valid TOML.
    Syntax,
    /// Valid TOML, but a key or value is wrong (unknown key, bad value, conflict).
    Invalid,
    /// The file does not exist.
    NotFound,
    /// The file could not be read.
    Io,
    /// An environment name that the config does not declare.
    UnknownEnvironment,
    /// A bad `--env NAME=VALUE` override.
    Override,
}

/// Where in which file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub origin: String,
    pub line: usize,
    pub column: usize,
}

/// A configuration error, displayed as
/// `cutover.toml:12:12: [health] interval: "10" is not a duration` and, on the next line,
/// `  hint: use a number with a unit, e.g. "10s" or "500ms"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(Box<Details>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct Details {
    kind: ConfigErrorKind,
    origin: Option<String>,
    location: Option<Location>,
    field: Option<String>,
    message: String,
    hint: Option<String>,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> ConfigError {
        ConfigError(Box::new(Details {
            kind,
            origin: None,
            location: None,
            field: None,
            message: message.into(),
            hint: None,
        }))
    }

    pub(crate) fn with_origin(mut self, origin: &str) -> Self {
        self.0.origin = Some(origin.to_string());
        self
    }

    pub(crate) fn with_field(mut self, field: impl Into<String>) -> Self {
        self.0.field = Some(field.into());
        self
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.0.hint = Some(hint.into());
        self
    }

    /// An `Invalid` error located at the byte offset `at` of `text`.
    pub(crate) fn at(text: &str, origin: &str, at: usize, message: impl Into<String>) -> Self {
        let (line, column) = locate::line_col(text, at);
        let mut err = ConfigError::new(ConfigErrorKind::Invalid, message).with_origin(origin);
        err.0.location = Some(Location {
            origin: origin.to_string(),
            line,
            column,
        });
        err
    }

    pub fn kind(&self) -> ConfigErrorKind {
        self.0.kind
    }

    /// File, line and column, when the error points into a file.
    pub fn location(&self) -> Option<&Location> {
        self.0.location.as_ref()
    }

    /// The field, e.g. `[health] interval` or `[environments.staging] listen`.
    pub fn field(&self) -> Option<&str> {
        self.0.field.as_deref()
    }

    /// What is wrong, without location, field or hint.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// How to fix it.
    pub fn hint(&self) -> Option<&str> {
        self.0.hint.as_deref()
    }

    /// Converts a TOML/serde error of `text`, rewriting serde's wording into ours.
    pub(crate) fn from_toml(text: &str, origin: &str, err: &toml::de::Error) -> ConfigError {
        let span = err.span().unwrap_or(0..0);
        let entries = locate::entries(text);
        let (raw, hint) = match err.message().split_once(HINT_SEP) {
            Some((message, hint)) => (message.to_string(), Some(hint.to_string())),
            None => (err.message().to_string(), None),
        };
        let entry = locate::entry_at(&entries, span.start);
        let syntax = entries.is_empty() && toml_edit::ImDocument::parse(text).is_err();
        let explained = if syntax {
            let fix = if raw.contains("duplicate key") {
                "a key may appear only once in a table: remove one of them"
            } else {
                "fix the TOML syntax here: strings need double quotes, tables are written [name]"
            };
            Explained {
                field: None,
                message: raw.replace('\n', ": "),
                hint: hint.or(Some(fix.to_string())),
            }
        } else {
            explain(&raw, hint, entry, &span, &entries)
        };
        let mut out = ConfigError::at(text, origin, span.start, explained.message);
        if syntax {
            out.0.kind = ConfigErrorKind::Syntax;
        }
        out.0.field = explained.field;
        out.0.hint = explained.hint;
        out
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.0.location, &self.0.origin) {
            (Some(l), _) => write!(f, "{}:{}:{}: ", l.origin, l.line, l.column)?,
            (None, Some(origin)) => write!(f, "{origin}: ")?,
            (None, None) => {}
        }
        if let Some(field) = &self.0.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.0.message)?;
        if let Some(hint) = &self.0.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

struct Explained {
    field: Option<String>,
    message: String,
    hint: Option<String>,
}

/// The words between backticks in `text`.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// "at the top level" or "in [health]".
fn table_label(table: &[String]) -> String {
    if table.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in {}", locate::field_name(table, true))
    }
}

fn explain(
    raw: &str,
    hint: Option<String>,
    entry: Option<&Entry>,
    span: &Range<usize>,
    entries: &[Entry],
) -> Explained {
    let path: Vec<String> = entry.map(|e| e.path.clone()).unwrap_or_default();
    let is_table = entry.is_some_and(|e| e.is_table && e.part == Part::Value);
    let field = (!path.is_empty()).then(|| locate::field_name(&path, is_table));

    if let Some(rest) = raw.strip_prefix("unknown field `") {
        let (name, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let table = &path[..path.len().saturating_sub(1)];
        let valid = backticked(expected).join(", ");
        return Explained {
            field,
            message: format!("unknown key `{name}` {}", table_label(table)),
            hint: Some(if valid.is_empty() {
                format!("remove `{name}`: nothing is valid {}", table_label(table))
            } else {
                format!("valid keys {}: {valid}", table_label(table))
            }),
        };
    }
    if let Some(rest) = raw.strip_prefix("missing field `") {
        let name = rest.trim_end_matches('`');
        // serde reports a missing key at the table that lacks it (the whole document for a
        // top-level key, which may begin with a table header too).
        let top_level = ["app", "build", "run", "environments"].contains(&name);
        let table: Vec<String> = entries
            .iter()
            .filter(|e| !top_level && (e.is_table || e.is_inline) && e.span.start == span.start)
            .min_by_key(|e| e.span.len())
            .map(|e| e.path.clone())
            .unwrap_or_default();
        let mut full = table.clone();
        full.push(name.to_string());
        return Explained {
            field: Some(locate::field_name(&full, top_level)),
            message: format!("missing required key `{name}` {}", table_label(&table)),
            hint: Some(format!("add it, e.g. {}", example_for(name))),
        };
    }
    if let Some(rest) = raw.strip_prefix("unknown variant `") {
        let (value, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let choices: Vec<String> = backticked(expected)
            .iter()
            .map(|c| format!("{c:?}"))
            .collect();
        return Explained {
            field,
            message: format!("{value:?} is not an allowed value"),
            hint: Some(format!("use one of {}", choices.join(", "))),
        };
    }
    if let Some(rest) = raw.strip_prefix("invalid type: ") {
        let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
        let (wanted, fix) = describe_expected(expected);
        return Explained {
            field,
            message: format!("wrong type: found {found}, expected {wanted}"),
            hint: hint.or(Some(fix.to_string())),
        };
    }
    Explained {
        field,
        message: raw.replace('\n', ": "),
        hint,
    }
}

fn describe_expected(expected: &str) -> (&str, &'static str) {
    match expected {
        "a string" => ("a string", "put the value in double quotes"),
        "u16" | "u32" | "u64" | "i64" | "i32" => (
            "a whole number",
            "write a whole number without quotes, e.g. 2",
        ),
        "a sequence" | "a list of strings" => (
            "a list",
            r#"write a list in brackets, e.g. ["python3", "serve.py"]"#,
        ),
        "a boolean" => ("true or false", "write true or false without quotes"),
        other if other.starts_with("struct") || other == "a map" => (
            "a table",
            "write a [table] header with keys under it, or an inline table { key = \"value\" }",
        ),
        other => (other, "see the template written by `cutover init`"),
    }
}

fn example_for(key: &str) -> String {
    match key {
        "app" => "[app] with name = \"my-app\"".into(),
        "name" => "name = \"my-app\"".into(),
        "build" => "[build] with files = [\"serve.py\"]".into(),
        "files" => "files = [\"serve.py\"]".into(),
        "run" => "[run] with command = [\"python3\", \"serve.py\"]".into(),
        "command" => "command = [\"python3\", \"serve.py\"]".into(),
        "environments" => "[environments.staging] with listen = \"127.0.0.1:8001\"".into(),
        "listen" => "listen = \"127.0.0.1:8001\"".into(),
        other => format!("{other} = …"),
    }
}
