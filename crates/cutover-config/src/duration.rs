//! Durations written as strings: `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"30d"`, `"1m30s"`.

use std::time::Duration;

const HINT: &str = "use a number with a unit, e.g. \"10s\" or \"500ms\" (units: ms, s, m, h, d)";

/// Parses `"500ms"`, `"30s"`, `"5m"`, `"1h"`, `"30d"` or a sum such as `"1m30s"`.
/// The error says what is wrong and how to write it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|(message, hint)| format!("{message}: {hint}"))
}

/// Formats a duration so that [`parse_duration`] reads it back: `"200ms"`, `"10s"`, `"1m30s"`.
/// Precision below a millisecond is dropped.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// Parses a duration; the error is `(message, hint)`.
pub(crate) fn parse(s: &str) -> Result<Duration, (String, String)> {
    let bad = |what: &str| (format!("{s:?} {what}"), HINT.to_string());
    let text = s.trim();
    if text.is_empty() {
        return Err(bad("is not a duration"));
    }
    if text.starts_with('-') {
        return Err(bad("is negative; durations must be zero or more"));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("is not a duration"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("is too large a duration"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(number),
            "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            "d" => Duration::from_secs(number.saturating_mul(86_400)),
            "" => return Err(bad("is not a duration (the unit is missing)")),
            _ => return Err(bad("is not a duration")),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `#[serde(with = "crate::duration::serde_str")]` for `Duration` fields.
pub(crate) mod serde_str {
    use super::{format_duration, parse};
    use crate::fields::invalid;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let value = crate::fields::StrOrOther::deserialize(d)?;
        match value {
            crate::fields::StrOrOther::Str(s) => {
                parse(&s).map_err(|(message, hint)| invalid(&message, &hint))
            }
            crate::fields::StrOrOther::Other(shown) => Err(invalid(
                &format!("{shown} is not a duration"),
                &format!("write it as a string with a unit, e.g. \"{shown}s\" or \"500ms\""),
            )),
        }
    }
}

/// `#[serde(with = "crate::duration::positive")]`: a duration that must be more than zero.
pub(crate) mod positive {
    use crate::fields::invalid;
    use serde::Deserializer;
    use std::time::Duration;

    pub use super::serde_str::serialize;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let duration = super::serde_str::deserialize(d)?;
        if duration.is_zero() {
            return Err(invalid(
                "a timeout of 0 would end everything at once",
                "use a duration of more than 0, e.g. \"30s\"",
            ));
        }
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_sums() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_with_the_fix() {
        for bad in ["10", "-1s", "ten", "", "1.5s", "10 s", "5w", "s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("e.g. \"10s\""), "{bad}: {err}");
        }
        assert!(parse_duration("-1s").unwrap_err().contains("negative"));
    }

    #[test]
    fn formats_back() {
        for ms in [
            0,
            1,
            200,
            1000,
            1500,
            10_000,
            90_000,
            3_600_000,
            3_723_004,
            2_592_000_000,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms}");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
    }
}
