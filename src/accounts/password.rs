//! Dashboard passwords: the policy, and argon2id hashing to PHC strings.
//!
//! Parameters: argon2id, version 0x13, 19 MiB of memory, 2 passes, 1 lane, 16-byte random salt,
//! 32-byte output: OWASP's first recommended argon2id configuration (Password Storage Cheat
//! Sheet), about 20–40 ms per hash on one core of a current server. They are written into each
//! PHC string, so raising them later leaves existing hashes verifiable.
//!
//! Hashing is CPU-bound on purpose: async callers run it on a blocking thread.

use std::fmt;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_PASSWORD_CHARS: usize = 12;
/// Bounds the work an attacker can make one login cost.
pub const MAX_PASSWORD_CHARS: usize = 128;

const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

/// A password that breaks the policy; the message states the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a password needs 12 to 128 characters and may not be only spaces")]
pub struct WeakPassword;

/// A cleartext password, checked against the policy. `Debug` redacts.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// # Errors
    /// [`WeakPassword`] unless it has [`MIN_PASSWORD_CHARS`]..=[`MAX_PASSWORD_CHARS`]
    /// characters and something other than whitespace.
    pub fn new(cleartext: impl Into<String>) -> Result<Self, WeakPassword> {
        let cleartext = cleartext.into();
        let chars = cleartext.chars().count();
        if (MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars)
            && !cleartext.trim().is_empty()
        {
            Ok(Self(cleartext))
        } else {
            Err(WeakPassword)
        }
    }

    /// A password presented at login: not held to the policy (it may predate it), only to
    /// the length bound, so a huge input cannot make hashing expensive.
    #[must_use]
    pub fn presented(cleartext: &str) -> Option<Self> {
        (cleartext.chars().count() <= MAX_PASSWORD_CHARS).then(|| Self(cleartext.to_owned()))
    }

    /// Hashes with a fresh random salt.
    ///
    /// # Errors
    /// Only if the operating system's random source fails.
    pub fn hash(&self) -> Result<PasswordHashString, HashError> {
        let hash = hasher()
            .hash_password(self.0.as_bytes())
            .map_err(|e| HashError(e.to_string()))?;
        Ok(PasswordHashString(hash.to_string()))
    }

    /// Whether this password matches `stored` (any argon2 variant and parameters the PHC
    /// string names). The final comparison is constant-time (inside the argon2 crate).
    #[must_use]
    pub fn verify(&self, stored: &str) -> bool {
        PasswordHash::new(stored)
            .is_ok_and(|parsed| hasher().verify_password(self.0.as_bytes(), &parsed).is_ok())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), what `users.password_hash` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHashString(String);

impl PasswordHashString {
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hashing failed (the random source, in practice).
#[derive(Debug, Clone, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

fn hasher() -> Argon2<'static> {
    // Constant, valid parameters: `Params::new` cannot fail for them (tested below).
    let params = Params::new(MEMORY_KIB, PASSES, LANES, Some(32)).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// A hash of a random password, verified against when a login names no known user, so the
/// answer takes as long as for a known user and does not reveal which emails have accounts.
#[must_use]
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = crate::accounts::RefreshToken::generate();
        Password(random.expose().to_owned())
            .hash()
            .map(|h| h.0)
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_is_enforced_and_stated() {
        assert!(Password::new("short").is_err());
        assert!(Password::new(" ".repeat(20)).is_err());
        assert!(Password::new("x".repeat(129)).is_err());
        assert!(Password::new("correct horse").is_ok());
        // Characters, not bytes: 12 multi-byte characters pass.
        assert!(Password::new("é".repeat(12)).is_ok());
        assert!(WeakPassword.to_string().contains("12"));
    }

    #[test]
    fn hashes_are_argon2id_with_the_documented_parameters() {
        assert_eq!(
            Params::new(MEMORY_KIB, PASSES, LANES, Some(32)).map(|p| p.m_cost()),
            Ok(19_456)
        );
        let password = Password::new("correct horse battery").unwrap();
        let hash = password.hash().unwrap();
        assert!(
            hash.as_str().starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{}",
            hash.as_str()
        );
        assert!(password.verify(hash.as_str()));
        assert!(
            !Password::new("correct horse battery!")
                .unwrap()
                .verify(hash.as_str())
        );
        assert!(!password.verify("not a phc string"));
        assert_ne!(password.hash().unwrap(), hash, "fresh salt each time");
        assert!(!format!("{password:?}").contains("horse"));
    }

    #[test]
    fn the_dummy_hash_is_a_real_hash() {
        assert!(dummy_hash().starts_with("$argon2id$"));
        assert!(
            !Password::presented("anything")
                .unwrap()
                .verify(dummy_hash())
        );
        assert!(Password::presented(&"x".repeat(129)).is_none());
    }
}
