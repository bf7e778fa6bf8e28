use crate::GitError;
use std::fmt;

/// How many characters a shortened sha or version shows.
pub const SHORT_LEN: usize = 12;

/// The first 12 characters of a sha or version (all of it if shorter), for messages.
pub fn short(version: &str) -> &str {
    match version.char_indices().nth(SHORT_LEN) {
        Some((end, _)) => &version[..end],
        None => version,
    }
}

/// A full commit sha: 40 lowercase hexadecimal digits.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha(String);

impl Sha {
    /// `value` as a sha, if it is 40 hexadecimal digits (either case; kept lowercase).
    pub fn parse(value: &str) -> Result<Sha, GitError> {
        if value.len() == 40 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Sha(value.to_ascii_lowercase()))
        } else {
            Err(GitError::NotASha {
                value: value.to_string(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, as messages show a commit.
    pub fn short(&self) -> &str {
        short(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::ops::Deref for Sha {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Sha {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Sha {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Sha {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Sha {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<Sha> for String {
    fn from(sha: Sha) -> String {
        sha.0
    }
}

impl std::str::FromStr for Sha {
    type Err = GitError;

    fn from_str(value: &str) -> Result<Sha, GitError> {
        Sha::parse(value)
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn a_sha_is_forty_hex_digits() {
        let sha = Sha::parse(FULL).unwrap();
        assert_eq!(sha.as_str(), FULL);
        assert_eq!(sha.to_string(), FULL);
        assert_eq!(sha.short(), "0123456789ab");
        assert_eq!(Sha::parse(&FULL.to_uppercase()).unwrap(), sha);
        for bad in [
            "",
            "0123456789ab",
            &FULL[1..],
            &format!("{FULL}0"),
            &FULL.replace('a', "g"),
        ] {
            let err = Sha::parse(bad).unwrap_err();
            assert!(matches!(err, GitError::NotASha { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("hint:"), "{err}");
        }
    }

    #[test]
    fn short_keeps_twelve_characters() {
        assert_eq!(short(FULL), "0123456789ab");
        assert_eq!(short(&format!("{FULL}-dirty-abcdef012345")), "0123456789ab");
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(""), "");
        assert_eq!(short("ééééééééééééé"), "éééééééééééé");
    }
}
