//! Kalshi request signing: RSA-PSS (SHA-256, MGF1-SHA-256, 32-byte salt) over
//! `timestamp_ms + METHOD + path`, sent as three headers on every REST request and on the
//! WebSocket upgrade. Also the verifying side, for the simulator.

use std::fmt;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer as _, Verifier as _};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey, pss};
use sha2::Sha256;

/// Header carrying the API key id.
pub const HEADER_KEY: &str = "KALSHI-ACCESS-KEY";
/// Header carrying the signing time, Unix milliseconds as a decimal string.
pub const HEADER_TIMESTAMP: &str = "KALSHI-ACCESS-TIMESTAMP";
/// Header carrying the base64 (standard, padded) RSA-PSS signature.
pub const HEADER_SIGNATURE: &str = "KALSHI-ACCESS-SIGNATURE";

/// The smallest key accepted. PSS with SHA-256 and a 32-byte salt needs at least 528 bits;
/// Kalshi issues 2048-bit keys.
pub const MIN_KEY_BITS: usize = 1024;

/// Signs requests with one Kalshi API key. `Debug` shows the key id only.
#[derive(Clone)]
pub struct Signer {
    key_id: String,
    key: pss::SigningKey<Sha256>,
}

/// The three authentication headers of one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedHeaders {
    /// `KALSHI-ACCESS-KEY`: the API key id.
    pub key_id: String,
    /// `KALSHI-ACCESS-TIMESTAMP`: Unix milliseconds.
    pub timestamp: String,
    /// `KALSHI-ACCESS-SIGNATURE`: base64 (standard alphabet, padded).
    pub signature: String,
}

/// A key that cannot be used, or a signature that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The PEM text is not an RSA private or public key we can read.
    #[error("unreadable RSA key: {0}")]
    Key(String),
    /// The key file could not be read.
    #[error("cannot read key file {path}: {message}")]
    Io { path: String, message: String },
    /// The signature header is not valid base64 or has the wrong length.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    Mismatch,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl SignedHeaders {
    /// The headers as `(name, value)` pairs, ready to add to a request.
    #[must_use]
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            (HEADER_KEY, &self.key_id),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// The signed message: `timestamp + METHOD + path`, with any query string removed.
fn message(timestamp: &str, method: &str, path: &str) -> String {
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    let method = method.to_ascii_uppercase();
    let mut message = String::with_capacity(timestamp.len() + method.len() + path.len());
    message.push_str(timestamp);
    message.push_str(&method);
    message.push_str(path);
    message
}

impl Signer {
    /// A signer from an API key id and an RSA private key in PEM, PKCS#1
    /// (`BEGIN RSA PRIVATE KEY`) or PKCS#8 (`BEGIN PRIVATE KEY`, unencrypted).
    ///
    /// # Errors
    /// [`SignatureError::Key`] if the PEM is neither, the key is inconsistent, or it is shorter
    /// than [`MIN_KEY_BITS`].
    pub fn from_pem(key_id: impl Into<String>, pem: &str) -> Result<Self, SignatureError> {
        let pem = pem.trim();
        let key = if pem.contains("BEGIN RSA PRIVATE KEY") {
            RsaPrivateKey::from_pkcs1_pem(pem).map_err(|e| SignatureError::Key(e.to_string()))?
        } else if pem.contains("BEGIN PRIVATE KEY") {
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|e| SignatureError::Key(e.to_string()))?
        } else if pem.contains("BEGIN ENCRYPTED PRIVATE KEY") {
            return Err(SignatureError::Key(
                "encrypted PKCS#8 keys are not supported; decrypt it first".to_owned(),
            ));
        } else {
            return Err(SignatureError::Key(
                "expected a PEM `RSA PRIVATE KEY` or `PRIVATE KEY` block".to_owned(),
            ));
        };
        Self::from_key(key_id, key)
    }

    /// Reads the PEM private key from a file (see [`Signer::from_pem`]).
    ///
    /// # Errors
    /// [`SignatureError::Io`] if the file cannot be read, else as [`Signer::from_pem`].
    pub fn from_file(
        key_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, SignatureError> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| SignatureError::Io {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::from_pem(key_id, &pem)
    }

    fn from_key(key_id: impl Into<String>, key: RsaPrivateKey) -> Result<Self, SignatureError> {
        let bits = key.size() * 8;
        if bits < MIN_KEY_BITS {
            return Err(SignatureError::Key(format!(
                "{bits}-bit key is shorter than {MIN_KEY_BITS} bits"
            )));
        }
        key.validate()
            .map_err(|e| SignatureError::Key(e.to_string()))?;
        Ok(Self {
            key_id: key_id.into(),
            key: pss::SigningKey::new(key),
        })
    }

    /// A fresh random key of `bits` bits (at least [`MIN_KEY_BITS`]) for tests and the
    /// simulator, with its public half. Slow: 2048 bits can take seconds in a debug build.
    ///
    /// # Errors
    /// [`SignatureError::Key`] if `bits` is too small or generation fails.
    pub fn generate_for_tests(
        key_id: impl Into<String>,
        bits: usize,
    ) -> Result<(Self, RsaPublicKey), SignatureError> {
        if bits < MIN_KEY_BITS {
            return Err(SignatureError::Key(format!(
                "{bits}-bit key is shorter than {MIN_KEY_BITS} bits"
            )));
        }
        let key = RsaPrivateKey::new(&mut ThreadRng(rand::rng()), bits)
            .map_err(|e| SignatureError::Key(e.to_string()))?;
        let public = key.to_public_key();
        Ok((Self::from_key(key_id, key)?, public))
    }

    /// The API key id.
    #[must_use]
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The public half of the key (what Kalshi, or the simulator, verifies with).
    #[must_use]
    pub fn public_key(&self) -> RsaPublicKey {
        self.key.as_ref().to_public_key()
    }

    /// Signs `now_ms + METHOD + path` (the query string, if any, is dropped; `path` is the full
    /// path, e.g. `/trade-api/v2/markets` or `/trade-api/ws/v2`).
    ///
    /// Signing can only fail if the operating system's random source fails; then the signature
    /// is empty and logged, so the exchange rejects the request with 401 rather than the
    /// caller panicking.
    #[must_use]
    pub fn headers(&self, method: &str, path: &str, now_ms: i64) -> SignedHeaders {
        let timestamp = now_ms.to_string();
        let signature = match self
            .key
            .try_sign(message(&timestamp, method, path).as_bytes())
        {
            Ok(signature) => BASE64.encode(signature.to_bytes()),
            Err(e) => {
                tracing::error!(error = %e, "RSA-PSS signing failed; sending an empty signature");
                String::new()
            }
        };
        SignedHeaders {
            key_id: self.key_id.clone(),
            timestamp,
            signature,
        }
    }
}

/// Checks a request's signature: `signature_b64` must be an RSA-PSS (SHA-256, 32-byte salt)
/// signature of `timestamp + METHOD + path` (query string dropped) by `public_key`.
///
/// # Errors
/// [`SignatureError::Malformed`] for bad base64 or length, [`SignatureError::Mismatch`] when it
/// does not verify.
pub fn verify(
    public_key: &RsaPublicKey,
    timestamp: &str,
    method: &str,
    path: &str,
    signature_b64: &str,
) -> Result<(), SignatureError> {
    let bytes = BASE64
        .decode(signature_b64.trim())
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    if bytes.len() != public_key.size() {
        return Err(SignatureError::Malformed(format!(
            "{} bytes for a {}-byte key",
            bytes.len(),
            public_key.size()
        )));
    }
    let signature = pss::Signature::try_from(bytes.as_slice())
        .map_err(|e| SignatureError::Malformed(e.to_string()))?;
    pss::VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(message(timestamp, method, path).as_bytes(), &signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The public key as SPKI PEM (`BEGIN PUBLIC KEY`), the form Kalshi's UI shows.
///
/// # Errors
/// [`SignatureError::Key`] if encoding fails.
pub fn public_key_pem(public_key: &RsaPublicKey) -> Result<String, SignatureError> {
    public_key
        .to_public_key_pem(LineEnding::LF)
        .map_err(|e| SignatureError::Key(e.to_string()))
}

/// Reads a public key from PEM: SPKI (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
///
/// # Errors
/// [`SignatureError::Key`] if it is neither.
pub fn public_key_from_pem(pem: &str) -> Result<RsaPublicKey, SignatureError> {
    let pem = pem.trim();
    if pem.contains("BEGIN RSA PUBLIC KEY") {
        RsaPublicKey::from_pkcs1_pem(pem).map_err(|e| SignatureError::Key(e.to_string()))
    } else {
        RsaPublicKey::from_public_key_pem(pem).map_err(|e| SignatureError::Key(e.to_string()))
    }
}

/// `rand`'s thread-local CSPRNG behind the `rand_core` 0.10 traits `rsa` expects.
struct ThreadRng(rand::rngs::ThreadRng);

impl rsa::rand_core::TryRng for ThreadRng {
    type Error = std::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(rand::RngCore::next_u32(&mut self.0))
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(rand::RngCore::next_u64(&mut self.0))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        rand::RngCore::fill_bytes(&mut self.0, dst);
        Ok(())
    }
}

// `ThreadRng` is a ChaCha-based CSPRNG seeded from the OS (`rand::rngs::ThreadRng` docs).
impl rsa::rand_core::TryCryptoRng for ThreadRng {}

#[cfg(test)]
mod tests {
    use super::*;

    const PKCS1: &str = include_str!("../../tests/fixtures/kalshi/test_key_pkcs1.pem");
    const PKCS8: &str = include_str!("../../tests/fixtures/kalshi/test_key_pkcs8.pem");
    const PUBLIC: &str = include_str!("../../tests/fixtures/kalshi/test_key_public.pem");
    /// `openssl dgst -sha256 -sigopt rsa_padding_mode:pss -sigopt rsa_pss_saltlen:32 -sign
    /// test_key_pkcs8.pem` of `1703123456789GET/trade-api/v2/portfolio/balance`.
    const OPENSSL_SIGNATURE: &str =
        include_str!("../../tests/fixtures/kalshi/test_signature_openssl.b64");

    #[test]
    fn pkcs1_and_pkcs8_give_the_same_key() {
        let a = Signer::from_pem("k", PKCS1).unwrap();
        let b = Signer::from_pem("k", PKCS8).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        assert_eq!(a.public_key(), public_key_from_pem(PUBLIC).unwrap());
        assert_eq!(
            public_key_from_pem(&public_key_pem(&a.public_key()).unwrap()).unwrap(),
            a.public_key()
        );
    }

    #[test]
    fn debug_does_not_print_the_key() {
        let signer = Signer::from_pem("key-id-123", PKCS8).unwrap();
        let debug = format!("{signer:?}");
        assert!(debug.contains("key-id-123"));
        assert!(debug.contains("<redacted>"));
        assert!(debug.len() < 80, "{debug}");
    }

    #[test]
    fn bad_keys_are_errors() {
        assert!(matches!(
            Signer::from_pem("k", "not a key"),
            Err(SignatureError::Key(_))
        ));
        let truncated = PKCS8
            .replace("\n", "")
            .chars()
            .take(200)
            .collect::<String>();
        assert!(Signer::from_pem("k", &truncated).is_err());
        assert!(matches!(
            Signer::from_file("k", "/nonexistent/key.pem"),
            Err(SignatureError::Io { .. })
        ));
    }

    #[test]
    fn sign_then_verify_and_reject_tampering() {
        let signer = Signer::from_pem("key", PKCS1).unwrap();
        let public = signer.public_key();
        let headers = signer.headers("GET", "/trade-api/v2/markets?limit=1000", 1_703_123_456_789);
        assert_eq!(headers.key_id, "key");
        assert_eq!(headers.timestamp, "1703123456789");
        assert_eq!(
            headers.pairs()[2],
            (HEADER_SIGNATURE, headers.signature.as_str())
        );
        // The query string is not signed.
        verify(
            &public,
            "1703123456789",
            "GET",
            "/trade-api/v2/markets",
            &headers.signature,
        )
        .unwrap();
        verify(
            &public,
            "1703123456789",
            "get",
            "/trade-api/v2/markets?x=1",
            &headers.signature,
        )
        .unwrap();
        for (ts, method, path) in [
            ("1703123456790", "GET", "/trade-api/v2/markets"),
            ("1703123456789", "POST", "/trade-api/v2/markets"),
            ("1703123456789", "GET", "/trade-api/v2/market"),
        ] {
            assert_eq!(
                verify(&public, ts, method, path, &headers.signature),
                Err(SignatureError::Mismatch)
            );
        }
        assert!(matches!(
            verify(&public, "1", "GET", "/", "!!!"),
            Err(SignatureError::Malformed(_))
        ));
        assert!(matches!(
            verify(&public, "1", "GET", "/", "AAAA"),
            Err(SignatureError::Malformed(_))
        ));
    }

    #[test]
    fn verifies_a_signature_made_by_openssl() {
        let public = public_key_from_pem(PUBLIC).unwrap();
        verify(
            &public,
            "1703123456789",
            "GET",
            "/trade-api/v2/portfolio/balance",
            OPENSSL_SIGNATURE,
        )
        .unwrap();
    }

    /// Our signature checked by the `openssl` CLI, when it is installed.
    #[test]
    fn openssl_verifies_our_signature() {
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl not installed; covered by the round-trip tests");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kalshi-sign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let signer = Signer::from_pem("key", PKCS8).unwrap();
        let headers = signer.headers("GET", "/trade-api/ws/v2", 1_786_085_188_416);
        let message = format!("{}GET/trade-api/ws/v2", headers.timestamp);
        std::fs::write(dir.join("msg"), &message).unwrap();
        std::fs::write(dir.join("sig"), BASE64.decode(&headers.signature).unwrap()).unwrap();
        std::fs::write(dir.join("pub.pem"), PUBLIC).unwrap();
        let output = std::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-sigopt", "rsa_padding_mode:pss"])
            .args(["-sigopt", "rsa_pss_saltlen:32", "-verify"])
            .arg(dir.join("pub.pem"))
            .arg("-signature")
            .arg(dir.join("sig"))
            .arg(dir.join("msg"))
            .output()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            output.status.success(),
            "openssl: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout).trim(),
            "Verified OK"
        );
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        assert!(Signer::generate_for_tests("k", 512).is_err());
        let (signer, public) = Signer::generate_for_tests("k", 1024).unwrap();
        let headers = signer.headers("GET", "/trade-api/ws/v2", 5);
        verify(&public, "5", "GET", "/trade-api/ws/v2", &headers.signature).unwrap();
    }
}
