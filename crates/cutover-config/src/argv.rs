//! `$NAME` and `${NAME}` in `[run] command`, Procfile style, so that a server taking its port
//! as an argument (`gunicorn -b 127.0.0.1:${PORT}`) needs no `sh -c` wrapper.
//!
//! The rules, the same at parse time (validation) and at start (expansion):
//! - `$NAME` (the longest run of letters, digits and `_` after `$`, not starting with a digit)
//!   and `${NAME}` are replaced by the variable's value;
//! - `$$` is one literal `$`;
//! - a `$` followed by anything else (a space, a digit, punctuation, the end) stays a `$`;
//! - `${` without a `}`, or with something other than a name inside, is an error.
//!
//! There is no other shell syntax: no defaults (`${A:-b}`), no quoting, no word splitting. An
//! argument stays one argument whatever its value.

use crate::fields::is_env_var_name;
use std::collections::BTreeMap;

/// One part of an argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Var(&'a str),
}

/// Splits `arg` into text and variable references; the error says what is malformed.
pub(crate) fn pieces(arg: &str) -> Result<Vec<Piece<'_>>, String> {
    let mut out = Vec::new();
    let mut rest = arg;
    while let Some(at) = rest.find('$') {
        if at > 0 {
            out.push(Piece::Text(&rest[..at]));
        }
        let after = &rest[at + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                return Err(format!("`${{` in {arg:?} has no closing `}}`"));
            };
            let name = &inner[..end];
            if !is_env_var_name(name) {
                return Err(format!(
                    "`${{{name}}}` in {arg:?} is not a variable name (letters, digits and `_`)"
                ));
            }
            out.push(Piece::Var(name));
            rest = &inner[end + 1..];
        } else if let Some(more) = after.strip_prefix('$') {
            out.push(Piece::Text("$"));
            rest = more;
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let name = &after[..len];
            if is_env_var_name(name) {
                out.push(Piece::Var(name));
                rest = &after[len..];
            } else {
                out.push(Piece::Text("$"));
                rest = after;
            }
        }
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The variables `arg` refers to, in order.
pub(crate) fn names(arg: &str) -> Result<Vec<&str>, String> {
    Ok(pieces(arg)?
        .into_iter()
        .filter_map(|p| match p {
            Piece::Var(name) => Some(name),
            Piece::Text(_) => None,
        })
        .collect())
}

/// `argv` with `$NAME`, `${NAME}` and `$$` expanded from `vars` (see the module's rules). A
/// name `vars` lacks is an error, never an empty string.
pub fn expand_argv(
    argv: &[String],
    vars: &BTreeMap<String, String>,
) -> Result<Vec<String>, String> {
    argv.iter()
        .map(|arg| {
            let mut out = String::with_capacity(arg.len());
            for piece in pieces(arg)? {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Var(name) => match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            return Err(format!("`{name}` in {arg:?} is not set for the instance"))
                        }
                    },
                }
            }
            Ok(out)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [
            ("PORT", "8123"),
            ("HTTP_PORT", "9000"),
            ("APP_VERSION", "abc"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn expand(args: &[&str]) -> Result<Vec<String>, String> {
        let argv: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        expand_argv(&argv, &vars())
    }

    #[test]
    fn dollar_name_and_braced_name() {
        assert_eq!(expand(&["$PORT", "${PORT}"]).unwrap(), ["8123", "8123"]);
    }

    #[test]
    fn adjacent_text_stays() {
        assert_eq!(
            expand(&[
                "-b",
                "127.0.0.1:${PORT}",
                "--port=$PORT",
                "${PORT}x",
                "v$APP_VERSION."
            ])
            .unwrap(),
            ["-b", "127.0.0.1:8123", "--port=8123", "8123x", "vabc."]
        );
        // `$NAME` takes the longest name: `$PORTx` is PORTx, which is not set.
        assert!(expand(&["$PORTx"]).unwrap_err().contains("`PORTx`"));
    }

    #[test]
    fn double_dollar_is_a_literal_dollar() {
        assert_eq!(
            expand(&["$$", "$$PORT", "$$$PORT", "a$$b"]).unwrap(),
            ["$", "$PORT", "$8123", "a$b"]
        );
    }

    #[test]
    fn a_dollar_before_no_name_stays() {
        assert_eq!(
            expand(&["$", "5$", "$1", "$ x", "$-", "a$/b"]).unwrap(),
            ["$", "5$", "$1", "$ x", "$-", "a$/b"]
        );
    }

    #[test]
    fn custom_port_env() {
        assert_eq!(
            expand(&["serve", "--listen", ":${HTTP_PORT}"]).unwrap(),
            ["serve", "--listen", ":9000"]
        );
    }

    #[test]
    fn an_unset_or_malformed_reference_is_an_error() {
        assert!(expand(&["${NOPE}"]).unwrap_err().contains("`NOPE`"));
        assert!(expand(&["${PORT"]).unwrap_err().contains("no closing"));
        assert!(expand(&["${1X}"])
            .unwrap_err()
            .contains("not a variable name"));
        assert!(expand(&["${}"]).is_err());
    }

    #[test]
    fn no_reference_is_unchanged() {
        assert_eq!(expand(&[]).unwrap(), Vec::<String>::new());
        assert_eq!(expand(&["./app", ""]).unwrap(), ["./app", ""]);
        assert_eq!(names("a${B}c$D$$E").unwrap(), ["B", "D"]);
    }
}
