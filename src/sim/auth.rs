//! Kalshi request signatures, checked the way the exchange checks them: RSA-PSS with SHA-256,
//! MGF1(SHA-256), 32-byte salt, over `timestamp_ms + METHOD + path` (no query string), sent
//! base64 (standard alphabet) in `KALSHI-ACCESS-SIGNATURE` beside `KALSHI-ACCESS-KEY` and
//! `KALSHI-ACCESS-TIMESTAMP`. Written independently of the client signer on purpose.

use axum::http::HeaderMap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rsa::RsaPublicKey;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::pss::{Signature, VerifyingKey};
use rsa::signature::Verifier as _;
use sha2::Sha256;

/// Header carrying the API key id (`KALSHI-ACCESS-KEY`; HTTP header names are
/// case-insensitive, and the `http` crate wants them lower-case).
pub const ACCESS_KEY: &str = "kalshi-access-key";
/// Header carrying the request time in Unix milliseconds (`KALSHI-ACCESS-TIMESTAMP`).
pub const ACCESS_TIMESTAMP: &str = "kalshi-access-timestamp";
/// Header carrying the base64 RSA-PSS signature (`KALSHI-ACCESS-SIGNATURE`).
pub const ACCESS_SIGNATURE: &str = "kalshi-access-signature";

/// Why a request's signature was refused. The text is what the 401 body's `details` says.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing header {}", .0.to_uppercase())]
    MissingHeader(&'static str),
    #[error("unknown API key id")]
    UnknownKey,
    #[error("KALSHI-ACCESS-TIMESTAMP is not a Unix time in milliseconds")]
    BadTimestamp,
    #[error("KALSHI-ACCESS-TIMESTAMP is {skew_ms} ms away from the exchange clock")]
    StaleTimestamp { skew_ms: i64 },
    #[error("KALSHI-ACCESS-SIGNATURE is not a base64 RSA signature")]
    BadSignatureEncoding,
    #[error("INCORRECT_API_KEY_SIGNATURE")]
    BadSignature,
}

/// A PEM that holds no RSA key this module can read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RSA public or private key in PEM (SPKI, PKCS#1 or PKCS#8)")]
pub struct KeyError;

/// Reads an RSA public key from PEM: `BEGIN PUBLIC KEY` (SPKI), `BEGIN RSA PUBLIC KEY`
/// (PKCS#1), or a private key (`BEGIN PRIVATE KEY` / `BEGIN RSA PRIVATE KEY`), whose public
/// half is taken, so the simulator can be pointed at the same file the collector signs with.
///
/// # Errors
/// [`KeyError`] if the text is none of those.
pub fn parse_public_key_pem(pem: &str) -> Result<RsaPublicKey, KeyError> {
    let pem = pem.trim();
    if let Ok(key) = RsaPublicKey::from_public_key_pem(pem) {
        return Ok(key);
    }
    if let Ok(key) = RsaPublicKey::from_pkcs1_pem(pem) {
        return Ok(key);
    }
    if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        return Ok(key.to_public_key());
    }
    if let Ok(key) = rsa::RsaPrivateKey::from_pkcs1_pem(pem) {
        return Ok(key.to_public_key());
    }
    Err(KeyError)
}

/// Checks one signature: `signature_b64` over `timestamp_ms + method + path`.
///
/// # Errors
/// [`AuthError::BadSignatureEncoding`] or [`AuthError::BadSignature`].
pub fn verify(
    public_key: &RsaPublicKey,
    timestamp_ms: &str,
    method: &str,
    path: &str,
    signature_b64: &str,
) -> Result<(), AuthError> {
    let bytes = STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| AuthError::BadSignatureEncoding)?;
    let signature =
        Signature::try_from(bytes.as_slice()).map_err(|_| AuthError::BadSignatureEncoding)?;
    let message = format!("{timestamp_ms}{method}{path}");
    VerifyingKey::<Sha256>::new(public_key.clone())
        .verify(message.as_bytes(), &signature)
        .map_err(|_| AuthError::BadSignature)
}

/// The exchange's gate: one public key, optionally one accepted key id, a clock tolerance.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    pub public_key: RsaPublicKey,
    pub api_key_id: Option<String>,
    pub max_skew_ms: i64,
}

impl Gate {
    /// Checks the three headers of a request to `method path` at exchange time `now_ms`.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        now_ms: i64,
    ) -> Result<(), AuthError> {
        let header = |name: &'static str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .filter(|value| !value.is_empty())
                .ok_or(AuthError::MissingHeader(name))
        };
        let key = header(ACCESS_KEY)?;
        let timestamp = header(ACCESS_TIMESTAMP)?;
        let signature = header(ACCESS_SIGNATURE)?;
        if self
            .api_key_id
            .as_deref()
            .is_some_and(|expected| expected != key)
        {
            return Err(AuthError::UnknownKey);
        }
        let sent_ms: i64 = timestamp.parse().map_err(|_| AuthError::BadTimestamp)?;
        let skew_ms = now_ms.saturating_sub(sent_ms);
        if skew_ms.abs() > self.max_skew_ms {
            return Err(AuthError::StaleTimestamp { skew_ms });
        }
        verify(&self.public_key, timestamp, method, path, signature)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use rsa::pss::SigningKey;
    use rsa::signature::{SignatureEncoding, Signer};

    use super::*;

    const KEY: &str = include_str!("testdata/sim_test_key.pem");

    fn sign(message: &str) -> String {
        let key = rsa::RsaPrivateKey::from_pkcs8_pem(KEY).unwrap();
        let signature = SigningKey::<Sha256>::new(key).sign(message.as_bytes());
        STANDARD.encode(signature.to_bytes())
    }

    fn headers(timestamp: &str, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCESS_KEY,
            HeaderValue::from_static("a952bcbe-ec3b-4b5b-b8f9-11dae589608c"),
        );
        headers.insert(ACCESS_TIMESTAMP, HeaderValue::from_str(timestamp).unwrap());
        headers.insert(ACCESS_SIGNATURE, HeaderValue::from_str(signature).unwrap());
        headers
    }

    #[test]
    fn accepts_kalshi_signatures_and_nothing_else() {
        let public_key = parse_public_key_pem(KEY).unwrap();
        let gate = Gate {
            public_key,
            api_key_id: None,
            max_skew_ms: 60_000,
        };
        let ts = "1703123456789";
        let good = sign(&format!("{ts}GET/trade-api/ws/v2"));
        let now = 1_703_123_456_789;
        assert_eq!(
            gate.check("GET", "/trade-api/ws/v2", &headers(ts, &good), now),
            Ok(())
        );
        // Another path, method or time is another message.
        assert_eq!(
            gate.check("GET", "/trade-api/v2/markets", &headers(ts, &good), now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            gate.check("POST", "/trade-api/ws/v2", &headers(ts, &good), now),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            gate.check("GET", "/trade-api/ws/v2", &headers(ts, &good), now + 60_001),
            Err(AuthError::StaleTimestamp { .. })
        ));
        assert_eq!(
            gate.check(
                "GET",
                "/trade-api/ws/v2",
                &headers(ts, "bm90IGEgc2lnbmF0dXJl"),
                now
            ),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            gate.check("GET", "/trade-api/ws/v2", &HeaderMap::new(), now),
            Err(AuthError::MissingHeader(ACCESS_KEY))
        );
    }

    #[test]
    fn reads_public_and_private_pems() {
        let from_private = parse_public_key_pem(KEY).unwrap();
        let spki = rsa::pkcs8::EncodePublicKey::to_public_key_pem(
            &from_private,
            rsa::pkcs8::LineEnding::LF,
        )
        .unwrap();
        assert_eq!(parse_public_key_pem(&spki), Ok(from_private.clone()));
        let pkcs1 =
            rsa::pkcs1::EncodeRsaPublicKey::to_pkcs1_pem(&from_private, rsa::pkcs8::LineEnding::LF)
                .unwrap();
        assert_eq!(parse_public_key_pem(&pkcs1), Ok(from_private));
        assert_eq!(parse_public_key_pem("hello"), Err(KeyError));
    }
}
