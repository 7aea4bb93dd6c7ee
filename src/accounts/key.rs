//! API keys and other bearer secrets: generation, parsing, the visible prefix and the hash
//! that is all Postgres ever stores.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every live API key starts with this.
pub const API_KEY_SCHEME: &str = "kb_live_";

/// Random base62 characters in a generated key: 40 × log2(62) ≈ 238 bits.
pub const API_KEY_RANDOM_CHARS: usize = 40;

/// The shortest and longest random part [`ApiKey::parse`] accepts (room for a longer format
/// later without breaking keys already issued).
const API_KEY_RANDOM_RANGE: std::ops::RangeInclusive<usize> = 32..=64;

/// Characters of the key shown to its owner to tell keys apart (`kb_live_` + 4): enough to
/// recognise a key, far too few to guess the rest.
pub const API_KEY_PREFIX_LEN: usize = 12;

/// `n` random base62 characters (`[A-Za-z0-9]`) from the thread-local CSPRNG (ChaCha,
/// seeded from the operating system).
fn random_base62(n: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

/// SHA-256 of a secret: how keys and refresh tokens are stored and looked up. A database leak
/// yields no usable secret, and a key of ~238 random bits needs no slow hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    #[must_use]
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Reads a stored hash (`bytea`); `None` unless exactly 32 bytes.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Compares in constant time, so timing tells an attacker nothing about how much of a
    /// guessed hash matched.
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Harmless to print, but a hash in a log invites offline guessing of weak secrets.
        f.write_str("SecretHash(…)")
    }
}

/// A presented string that is not an API key; said without echoing the string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("an API key starts with `kb_live_`")]
    Scheme,
    #[error("an API key has 32 to 64 letters and digits after `kb_live_`")]
    Body,
}

/// A full API key: the secret itself. Exists in memory when a key is created (shown once) or
/// presented; only its [`SecretHash`] and [`ApiKey::prefix`] are stored. `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// A new random key.
    #[must_use]
    pub fn generate() -> Self {
        Self(format!(
            "{API_KEY_SCHEME}{}",
            random_base62(API_KEY_RANDOM_CHARS)
        ))
    }

    /// Validates a presented key (surrounding whitespace ignored, as from a header or a paste).
    ///
    /// # Errors
    /// [`KeyFormatError`] when it cannot be a key, so no database lookup is needed.
    pub fn parse(presented: &str) -> Result<Self, KeyFormatError> {
        let presented = presented.trim();
        let body = presented
            .strip_prefix(API_KEY_SCHEME)
            .ok_or(KeyFormatError::Scheme)?;
        if API_KEY_RANDOM_RANGE.contains(&body.len())
            && body.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            Ok(Self(presented.to_owned()))
        } else {
            Err(KeyFormatError::Body)
        }
    }

    /// The visible start of the key, e.g. `kb_live_AbC1`.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.0[..API_KEY_PREFIX_LEN]
    }

    #[must_use]
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }

    /// The key itself: call only to show it to its owner, once.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

/// A dashboard refresh token: a random bearer secret stored only as its [`SecretHash`] in
/// `sessions`. `Debug` redacts.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

/// Marks refresh tokens so one is never mistaken for an API key (or pasted as one).
const REFRESH_TOKEN_SCHEME: &str = "kb_rt_";
const REFRESH_TOKEN_RANDOM_CHARS: usize = 43;

impl RefreshToken {
    #[must_use]
    pub fn generate() -> Self {
        Self(format!(
            "{REFRESH_TOKEN_SCHEME}{}",
            random_base62(REFRESH_TOKEN_RANDOM_CHARS)
        ))
    }

    /// A presented token, checked for shape only.
    #[must_use]
    pub fn parse(presented: &str) -> Option<Self> {
        let presented = presented.trim();
        let body = presented.strip_prefix(REFRESH_TOKEN_SCHEME)?;
        (body.len() == REFRESH_TOKEN_RANDOM_CHARS
            && body.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| Self(presented.to_owned()))
    }

    #[must_use]
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }

    /// The token itself: call only to hand it to its owner.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        let key = ApiKey::generate();
        let text = key.expose();
        assert!(text.starts_with("kb_live_"), "{text}");
        assert_eq!(text.len(), 8 + API_KEY_RANDOM_CHARS);
        assert!(text[8..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(key.prefix(), &text[..12]);
        assert_eq!(ApiKey::parse(text), Ok(key.clone()));
        assert_ne!(ApiKey::generate(), key, "two keys differ");
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let printed = format!("{key:?}");
        assert!(!printed.contains(&key.expose()[12..]), "{printed}");
        assert!(printed.contains(key.prefix()), "{printed}");
        let token = RefreshToken::generate();
        assert!(!format!("{token:?}").contains(&token.expose()[6..]));
    }

    #[test]
    fn malformed_keys_are_refused() {
        let body = "a".repeat(40);
        assert_eq!(
            ApiKey::parse(&format!("kb_test_{body}")),
            Err(KeyFormatError::Scheme)
        );
        assert_eq!(ApiKey::parse("kb_live_short"), Err(KeyFormatError::Body));
        assert_eq!(
            ApiKey::parse(&format!("kb_live_{}", "a".repeat(65))),
            Err(KeyFormatError::Body)
        );
        assert_eq!(
            ApiKey::parse(&format!("kb_live_{}-", "a".repeat(39))),
            Err(KeyFormatError::Body)
        );
        assert_eq!(ApiKey::parse(""), Err(KeyFormatError::Scheme));
        let padded = format!("  kb_live_{body}\n");
        assert_eq!(ApiKey::parse(&padded).unwrap().expose(), padded.trim());
        // Multi-byte input must not panic on the prefix slice.
        assert!(ApiKey::parse(&format!("kb_live_{}", "é".repeat(20))).is_err());
    }

    #[test]
    fn hashes_compare_by_value() {
        let key = ApiKey::generate();
        assert!(key.hash().ct_eq(&SecretHash::of(key.expose())));
        assert!(!key.hash().ct_eq(&ApiKey::generate().hash()));
        assert_eq!(
            SecretHash::from_slice(key.hash().as_bytes()),
            Some(key.hash())
        );
        assert_eq!(SecretHash::from_slice(&[0; 31]), None);
    }

    #[test]
    fn refresh_tokens_parse_and_differ_from_keys() {
        let token = RefreshToken::generate();
        assert_eq!(RefreshToken::parse(token.expose()), Some(token.clone()));
        assert!(ApiKey::parse(token.expose()).is_err());
        assert_eq!(RefreshToken::parse("kb_rt_x"), None);
    }
}
