//! API key secrets: generation, operator-supplied keys, the stored hash and the hint.
//! The secret itself is returned once by `CreateKey` and never stored or logged.

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Random bytes in a generated key (64 hex characters).
const RANDOM_BYTES: usize = 32;
pub const MIN_CUSTOM_LEN: usize = 16;
pub const MAX_CUSTOM_LEN: usize = 128;

/// `prefix` + 64 lower-case hex characters from the thread-local CSPRNG.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// An operator-supplied key: 16 to 128 characters of `[A-Za-z0-9_-]`. Never echoed.
pub fn custom(field: &str, value: &str) -> Result<String> {
    let len = value.chars().count();
    if !(MIN_CUSTOM_LEN..=MAX_CUSTOM_LEN).contains(&len) {
        return Err(Error::invalid(
            field,
            format!("must be {MIN_CUSTOM_LEN} to {MAX_CUSTOM_LEN} characters (got {len})"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Error::invalid(
            field,
            "may only contain the characters A-Z a-z 0-9 _ -",
        ));
    }
    Ok(value.to_owned())
}

/// Lower-case hex SHA-256: what storage keeps and what lookups use.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// First six characters, "…", last four: enough to recognise a key, useless to use it.
pub fn hint(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    let head: String = chars.iter().take(6).collect();
    let tail: String = chars[chars.len().saturating_sub(4)..].iter().collect();
    format!("{head}…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys() {
        let a = generate("sk-");
        let b = generate("sk-");
        assert_ne!(a, b);
        let hexpart = a.strip_prefix("sk-").unwrap();
        assert_eq!(hexpart.len(), 64);
        assert!(
            hexpart
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }

    #[test]
    fn hash_and_hint() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hint("sk-0123456789abcdef"), "sk-012…cdef");
    }

    #[test]
    fn custom_keys() {
        assert!(custom("custom_key", "my_custom-key_0123").is_ok());
        for bad in [
            "short",
            "has space 0123456789",
            "ünïcode-0123456789",
            &"x".repeat(129),
        ] {
            let e = custom("custom_key", bad).unwrap_err().to_string();
            assert!(e.contains("custom_key"), "{e}");
            assert!(!e.contains(bad), "never echo the key: {e}");
        }
    }
}
