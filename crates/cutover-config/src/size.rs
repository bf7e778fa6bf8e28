//! Sizes written as strings: `"100MB"`, `"512KB"`, `"1GiB"`, `"800B"`.

const HINT: &str =
    "use a whole number with a unit, e.g. \"100MB\" or \"512KB\" (units: B, KB, MB, GB, KiB, MiB, GiB)";

/// Parses a size in bytes; the error is `(message, hint)`. KB, MB and GB are powers of 1000;
/// KiB, MiB and GiB of 1024.
pub(crate) fn parse(s: &str) -> Result<u64, (String, String)> {
    let bad = |what: &str| (format!("{s:?} {what}"), HINT.to_string());
    let text = s.trim();
    if text.starts_with('-') {
        return Err(bad("is negative; a size is 1B or more"));
    }
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return Err(bad("is not a size"));
    }
    let number: u64 = text[..digits]
        .parse()
        .map_err(|_| bad("is too large a size"))?;
    let unit: u64 = match text[digits..].trim() {
        "B" => 1,
        "KB" | "kB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "" => return Err(bad("is not a size (the unit is missing)")),
        _ => return Err(bad("is not a size (unknown unit)")),
    };
    let bytes = number
        .checked_mul(unit)
        .ok_or_else(|| bad("is too large a size"))?;
    if bytes == 0 {
        return Err(bad("is zero; a size is 1B or more"));
    }
    Ok(bytes)
}

/// Formats a size so that [`parse`] reads it back: the largest decimal unit it is a whole
/// number of.
pub(crate) fn format(bytes: u64) -> String {
    for (unit, size) in [("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1000)] {
        if bytes >= size && bytes / size * size == bytes {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// `#[serde(with = "crate::size::serde_str")]` for sizes in bytes.
pub(crate) mod serde_str {
    use crate::fields::{invalid, StrOrOther};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format(*bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match StrOrOther::deserialize(d)? {
            StrOrOther::Str(s) => {
                super::parse(&s).map_err(|(message, hint)| invalid(&message, &hint))
            }
            StrOrOther::Other(shown) => Err(invalid(
                &format!("{shown} is not a size"),
                &format!("write it as a string with a unit, e.g. \"{shown}MB\" or \"512KB\""),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_formats_back() {
        assert_eq!(parse("100MB"), Ok(100_000_000));
        assert_eq!(parse("512KB"), Ok(512_000));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("2MiB"), Ok(2 << 20));
        assert_eq!(parse("800B"), Ok(800));
        for bytes in [1, 999, 1000, 1500, 100_000_000, 3_000_000_000, 1 << 20] {
            assert_eq!(parse(&format(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format(100_000_000), "100MB");
    }

    #[test]
    fn rejects_with_the_fix() {
        for bad in [
            "100XB",
            "100",
            "-1MB",
            "0MB",
            "MB",
            "",
            "1.5MB",
            "99999999999999GB",
        ] {
            let (message, hint) = parse(bad).unwrap_err();
            assert!(hint.contains("e.g. \"100MB\""), "{bad}: {message}");
        }
        assert!(parse("100XB").unwrap_err().0.contains("unknown unit"));
        assert!(parse("0B").unwrap_err().0.contains("zero"));
    }
}
