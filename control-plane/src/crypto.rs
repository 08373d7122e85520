//! Encryption at rest for upstream credentials (API keys, OAuth tokens, proxy URLs).
//! XChaCha20-Poly1305 with a random 192-bit nonce per value; the stored form is
//! `v1:` + base64(nonce ‖ ciphertext). The 32-byte key comes from configuration.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{Error, Result};

const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key redacted>)")
    }
}

impl SecretBox {
    /// From the base64 text of a 32-byte key (what `generate_key_b64` writes).
    pub fn from_base64(text: &str) -> Result<Self> {
        let raw = B64
            .decode(text.trim())
            .map_err(|_| Error::Config("encryption key is not valid base64".into()))?;
        if raw.len() != 32 {
            return Err(Error::Config(format!(
                "encryption key must be 32 bytes, got {}",
                raw.len()
            )));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&raw)
            .map_err(|_| Error::Config("encryption key has the wrong length".into()))?;
        Ok(Self { cipher })
    }

    pub fn generate_key_b64() -> String {
        B64.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub fn encrypt(&self, plaintext: &str) -> Result<String> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ct = self
            .cipher
            .encrypt(&nonce, plaintext.as_bytes())
            .map_err(|_| Error::Crypto("encryption failed".into()))?;
        let mut buf = Vec::with_capacity(NONCE_LEN + ct.len());
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(&ct);
        Ok(format!("{PREFIX}{}", B64.encode(buf)))
    }

    pub fn decrypt(&self, stored: &str) -> Result<String> {
        let body = stored
            .strip_prefix(PREFIX)
            .ok_or_else(|| Error::Crypto("unknown ciphertext format".into()))?;
        let raw = B64
            .decode(body)
            .map_err(|_| Error::Crypto("ciphertext is not base64".into()))?;
        if raw.len() < NONCE_LEN {
            return Err(Error::Crypto("ciphertext too short".into()));
        }
        let (nonce, ct) = raw.split_at(NONCE_LEN);
        let pt = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            // Wrong key or tampered data: say so without echoing anything.
            .map_err(|_| {
                Error::Crypto("cannot decrypt stored secret (wrong encryption key?)".into())
            })?;
        String::from_utf8(pt).map_err(|_| Error::Crypto("decrypted secret is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_no_plaintext() {
        let b = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let enc = b.encrypt("sk-secret-value").unwrap();
        assert!(!enc.contains("sk-secret-value"));
        assert_ne!(
            enc,
            b.encrypt("sk-secret-value").unwrap(),
            "nonce must differ"
        );
        assert_eq!(b.decrypt(&enc).unwrap(), "sk-secret-value");
    }

    #[test]
    fn wrong_key_fails_cleanly() {
        let a = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let b = SecretBox::from_base64(&SecretBox::generate_key_b64()).unwrap();
        let enc = a.encrypt("x").unwrap();
        assert!(matches!(b.decrypt(&enc), Err(Error::Crypto(_))));
        assert!(SecretBox::from_base64("c2hvcnQ=").is_err());
    }
}
