//! Maps byte offsets of a TOML document to line:column and to the key path they belong to,
//! and key paths back to spans (for checks that span several fields).

use std::ops::Range;
use toml_edit::{ImDocument, Item, Table, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The key itself (`interval` in `interval = "10"`).
    Key,
    /// The value, or a table's `[header]`.
    Value,
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub span: Range<usize>,
    pub path: Vec<String>,
    pub part: Part,
    /// A `[table]` header.
    pub is_table: bool,
    /// An inline `{ … }` table value.
    pub is_inline: bool,
}

/// Every key and value of the document with its span and path, in no particular order.
pub(crate) fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    if let Ok(doc) = ImDocument::parse(text) {
        walk_table(doc.as_table(), &mut Vec::new(), &mut out);
    }
    out
}

fn walk_table(table: &Table, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    for (key, item) in table.iter() {
        let Some((k, _)) = table.get_key_value(key) else {
            continue;
        };
        path.push(key.to_string());
        if let Some(span) = k.span() {
            out.push(Entry {
                span,
                path: path.clone(),
                part: Part::Key,
                is_table: false,
                is_inline: false,
            });
        }
        walk_item(item, path, out);
        path.pop();
    }
}

fn walk_item(item: &Item, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    match item {
        Item::None => {}
        Item::Value(value) => walk_value(value, path, out),
        Item::Table(table) => {
            if let Some(span) = table.span() {
                out.push(Entry {
                    span,
                    path: path.clone(),
                    part: Part::Value,
                    is_table: true,
                    is_inline: false,
                });
            }
            walk_table(table, path, out);
        }
        Item::ArrayOfTables(tables) => {
            for table in tables.iter() {
                walk_table(table, path, out);
            }
        }
    }
}

fn walk_value(value: &Value, path: &mut Vec<String>, out: &mut Vec<Entry>) {
    let is_inline = value.is_inline_table();
    if let Some(span) = value.span() {
        out.push(Entry {
            span,
            path: path.clone(),
            part: Part::Value,
            is_table: false,
            is_inline,
        });
    }
    if let Value::InlineTable(table) = value {
        for (key, v) in table.iter() {
            path.push(key.to_string());
            if let Some((k, _)) = table.get_key_value(key) {
                if let Some(span) = k.span() {
                    out.push(Entry {
                        span,
                        path: path.clone(),
                        part: Part::Key,
                        is_table: false,
                        is_inline: false,
                    });
                }
            }
            walk_value(v, path, out);
            path.pop();
        }
    }
}

/// The narrowest entry whose span contains `offset`.
pub(crate) fn entry_at(entries: &[Entry], offset: usize) -> Option<&Entry> {
    entries
        .iter()
        .filter(|e| {
            e.span.start <= offset
                && (offset < e.span.end || e.span.is_empty() && offset == e.span.start)
        })
        .min_by_key(|e| e.span.len())
}

/// The span of the value (or table header) at `path`.
pub(crate) fn value_span(entries: &[Entry], path: &[&str]) -> Option<Range<usize>> {
    entries
        .iter()
        .find(|e| {
            e.part == Part::Value && e.path.iter().map(String::as_str).eq(path.iter().copied())
        })
        .map(|e| e.span.clone())
}

/// The span of the key at `path`.
pub(crate) fn key_span(entries: &[Entry], path: &[&str]) -> Option<Range<usize>> {
    entries
        .iter()
        .find(|e| e.part == Part::Key && e.path.iter().map(String::as_str).eq(path.iter().copied()))
        .map(|e| e.span.clone())
}

/// The span of the `index`th element of the array at `path`.
pub(crate) fn array_item_span(text: &str, path: &[&str], index: usize) -> Option<Range<usize>> {
    let doc = ImDocument::parse(text).ok()?;
    let mut item = doc.as_item();
    for key in path {
        item = item.get(key)?;
    }
    item.as_array()?.get(index)?.span()
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// A key path as a person reads it: `[health] interval`, `[environments.staging] listen`,
/// `[app]`, or a top-level key alone.
pub(crate) fn field_name(path: &[String], last_is_table: bool) -> String {
    let quoted: Vec<String> = path.iter().map(|k| quote_key(k)).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) if !last_is_table => last.clone(),
        Some(_) if last_is_table => format!("[{}]", quoted.join(".")),
        Some((last, table)) => format!("[{}] {last}", table.join(".")),
    }
}

fn quote_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, text.find("= \"").unwrap()), (2, 4));
    }

    #[test]
    fn finds_paths() {
        let text = "[health]\ninterval = \"10\"\n[environments.staging]\nlisten = \"x\"\nenv = { A = \"1\" }\n";
        let e = entries(text);
        let at = entry_at(&e, text.find("\"10\"").unwrap()).unwrap();
        assert_eq!(at.path, ["health", "interval"]);
        let span = value_span(&e, &["environments", "staging", "listen"]).unwrap();
        assert_eq!(&text[span], "\"x\"");
        let at = entry_at(&e, text.find("A =").unwrap()).unwrap();
        assert_eq!(field_name(&at.path, false), "[environments.staging.env] A");
    }
}
