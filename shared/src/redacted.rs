//! A configured secret (a token, a key, a database URL that may carry a password). Its
//! `Debug` never shows the value, so a configuration printed with `{:?}` (a panic message,
//! a debug log line, a test failure) leaks nothing; code that needs the value asks for it
//! with `expose`.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Redacted(String);

impl Redacted {
    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Redacted {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Redacted {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// For clap: any string is accepted here; what it must look like is checked where it is
/// used (with an error that does not quote it).
impl FromStr for Redacted {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value_and_expose_gives_it() {
        let s: Redacted = "postgres://app:hunter2@db/tollgate".parse().unwrap();
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "postgres://app:hunter2@db/tollgate");
    }
}
