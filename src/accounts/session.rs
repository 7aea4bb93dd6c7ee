//! Dashboard sessions: a short-lived signed access token (JWT, HS256) and a long-lived refresh
//! token that Postgres stores hashed and rotates on every use.
//!
//! The access token is stateless: whoever holds the secret (`KALSHIBOOK_JWT_SECRET`) can check
//! it without a database round trip, which is why it lives minutes, not days. Revocation works
//! on refresh tokens (logout, reuse detection).

use std::sync::Once;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{Error as JwtError, ErrorKind as JwtErrorKind};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use uuid::Uuid;

/// How long an access token is accepted.
pub const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a refresh token may be used (each use replaces it with a new one).
pub const REFRESH_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Shortest accepted signing secret: HS256's own output size.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

const ISSUER: &str = "kalshibook";
const AUDIENCE: &str = "kalshibook-dashboard";

/// What an access token asserts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// The user.
    pub sub: Uuid,
    /// The user's billing account (the tenant).
    pub acc: Uuid,
    pub iss: String,
    pub aud: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
}

/// A signed access token and when it stops being accepted.
#[derive(Clone)]
pub struct AccessToken {
    pub token: String,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken")
            .field("token", &"***")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Session token failures. Messages are safe to show a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("the session signing secret needs at least 32 bytes")]
    WeakSecret,
    #[error("the access token is invalid or has expired; sign in again or refresh")]
    InvalidToken,
    #[error("cannot sign the access token")]
    Signing,
}

/// The HS256 signing secret, ready to issue and check access tokens. Cheap to clone.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    /// # Errors
    /// [`SessionError::WeakSecret`] below [`MIN_JWT_SECRET_BYTES`].
    pub fn new(secret: &[u8]) -> Result<Self, SessionError> {
        if secret.len() < MIN_JWT_SECRET_BYTES {
            return Err(SessionError::WeakSecret);
        }
        install_provider();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iat", "sub", "iss", "aud"]);
        validation.leeway = 30;
        Ok(Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        })
    }

    /// Signs an access token for `user` acting on `account`, valid from `now` for
    /// [`ACCESS_TOKEN_TTL`].
    ///
    /// # Errors
    /// [`SessionError::Signing`] (not expected with a valid key).
    pub fn issue(
        &self,
        user: Uuid,
        account: Uuid,
        now: OffsetDateTime,
    ) -> Result<AccessToken, SessionError> {
        let expires_at = now + ACCESS_TOKEN_TTL;
        let claims = AccessClaims {
            sub: user,
            acc: account,
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now.unix_timestamp(),
            exp: expires_at.unix_timestamp(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| SessionError::Signing)?;
        Ok(AccessToken { token, expires_at })
    }

    /// Checks signature, algorithm (HS256 only), issuer, audience and expiry (30 s leeway,
    /// against the system clock).
    ///
    /// # Errors
    /// [`SessionError::InvalidToken`] for any failure, without saying which.
    pub fn verify(&self, token: &str) -> Result<AccessClaims, SessionError> {
        jsonwebtoken::decode::<AccessClaims>(token.trim(), &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|_| SessionError::InvalidToken)
    }
}

// jsonwebtoken 11 delegates cryptography to a process-wide provider. Its own providers pull
// large dependencies (see Cargo.toml), and we need only HS256, so this one implements exactly
// that on the hmac/sha2 crates; every other algorithm is refused.

type HmacSha256 = Hmac<Sha256>;

struct Hs256(HmacSha256);

impl Hs256 {
    fn new(family: AlgorithmFamily, secret: &[u8]) -> Result<Self, JwtError> {
        if family != AlgorithmFamily::Hmac {
            return Err(JwtErrorKind::InvalidKeyFormat.into());
        }
        HmacSha256::new_from_slice(secret)
            .map(Self)
            .map_err(|_| JwtErrorKind::InvalidKeyFormat.into())
    }
}

impl signature::Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> Result<Vec<u8>, signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl signature::Verifier<Vec<u8>> for Hs256 {
    fn verify(&self, message: &[u8], tag: &Vec<u8>) -> Result<(), signature::Error> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant-time comparison of the tags.
        mac.verify_slice(tag).map_err(|_| signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn new_signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, JwtError> {
    match algorithm {
        Algorithm::HS256 => Ok(Box::new(Hs256::new(key.family(), key.as_bytes())?)),
        _ => Err(JwtErrorKind::InvalidAlgorithm.into()),
    }
}

fn new_verifier(
    algorithm: &Algorithm,
    key: &DecodingKey,
) -> Result<Box<dyn JwtVerifier>, JwtError> {
    match algorithm {
        Algorithm::HS256 => Ok(Box::new(Hs256::new(key.family(), key.try_get_as_bytes()?)?)),
        _ => Err(JwtErrorKind::InvalidAlgorithm.into()),
    }
}

static HS256_ONLY: CryptoProvider = CryptoProvider {
    signer_factory: new_signer,
    verifier_factory: new_verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Installs [`HS256_ONLY`] as jsonwebtoken's provider, once per process. Should another part
/// of the process have installed one first, that one stays (it is then what signs).
fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if HS256_ONLY.install_default().is_err() {
            tracing::debug!("a jsonwebtoken crypto provider was already installed");
        }
    });
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&[7; 32]).unwrap()
    }

    #[test]
    fn a_token_round_trips() {
        let (user, account) = (Uuid::new_v4(), Uuid::new_v4());
        let issued = keys()
            .issue(user, account, OffsetDateTime::now_utc())
            .unwrap();
        let claims = keys().verify(&issued.token).unwrap();
        assert_eq!((claims.sub, claims.acc), (user, account));
        assert!(!format!("{issued:?}").contains(&issued.token));
    }

    #[test]
    fn expired_foreign_and_tampered_tokens_are_refused() {
        let (user, account) = (Uuid::new_v4(), Uuid::new_v4());
        let old = OffsetDateTime::now_utc() - Duration::from_secs(3600);
        let expired = keys().issue(user, account, old).unwrap();
        assert_eq!(
            keys().verify(&expired.token),
            Err(SessionError::InvalidToken)
        );

        let now = OffsetDateTime::now_utc();
        let other = JwtKeys::new(&[8; 32])
            .unwrap()
            .issue(user, account, now)
            .unwrap();
        assert_eq!(keys().verify(&other.token), Err(SessionError::InvalidToken));

        // Swap in claims for another account, keeping the signature.
        let good = keys().issue(user, account, now).unwrap().token;
        let parts: Vec<&str> = good.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["acc"] = serde_json::json!(Uuid::new_v4());
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        assert_eq!(keys().verify(&forged), Err(SessionError::InvalidToken));

        // `alg: none` with no signature.
        let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{}.", parts[1]);
        assert_eq!(keys().verify(&unsigned), Err(SessionError::InvalidToken));
        assert_eq!(keys().verify("garbage"), Err(SessionError::InvalidToken));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            JwtKeys::new(&[1; 31]).map(|_| ()),
            Err(SessionError::WeakSecret)
        );
    }

    #[test]
    fn other_algorithms_are_refused_by_the_provider() {
        let key = EncodingKey::from_secret(&[7; 32]);
        install_provider();
        let header = Header::new(Algorithm::HS512);
        assert!(jsonwebtoken::encode(&header, &serde_json::json!({}), &key).is_err());
    }
}
