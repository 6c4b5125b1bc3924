//! Session tokens: HS256 JWTs (the `jsonwebtoken` crate) carrying the user id, roles and a unique
//! id (`jti`). Tokens are stateless to check; logout puts the `jti` on a revocation list in
//! Redis ([`SessionGuard`](crate::store::sessions::SessionGuard)) that every node consults.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What a token says about its holder.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// User id.
    pub sub: i64,
    /// Token id, the handle for revocation.
    pub jti: String,
    /// Role names at login time.
    pub roles: Vec<String>,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Issued at (Unix milliseconds): compared with the holder's sign-out stamp, which a
    /// second's precision would leave ambiguous for a token issued right after it.
    #[serde(default)]
    pub iat_ms: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
}

impl Claims {
    /// Whether the holder has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// Expiry as a timestamp.
    pub fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.exp, 0).unwrap_or_default()
    }
}

/// Signs and checks tokens with the configured key.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: i64,
}

/// A token was not accepted.
#[derive(Debug, thiserror::Error)]
#[error("invalid token: {0}")]
pub struct BadToken(String);

impl TokenKeys {
    /// Keys from `secrets.jwt_key`; tokens live `ttl_secs`.
    pub fn new(secret: &SecretString, ttl_secs: u64) -> Self {
        let bytes = secret.expose_secret().as_bytes();
        TokenKeys {
            encoding: EncodingKey::from_secret(bytes),
            decoding: DecodingKey::from_secret(bytes),
            ttl_secs: ttl_secs as i64,
        }
    }

    /// A fresh token for `user_id` with `roles`, issued at `now`.
    pub fn issue(
        &self,
        user_id: i64,
        roles: Vec<String>,
        now: DateTime<Utc>,
    ) -> Result<(String, Claims), BadToken> {
        let claims = Claims {
            sub: user_id,
            jti: uuid::Uuid::new_v4().simple().to_string(),
            roles,
            iat: now.timestamp(),
            iat_ms: now.timestamp_millis(),
            exp: now.timestamp() + self.ttl_secs,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| BadToken(e.to_string()))?;
        Ok((token, claims))
    }

    /// The claims of a well-signed, unexpired token (revocation is checked separately).
    pub fn verify(&self, token: &str) -> Result<Claims, BadToken> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| BadToken(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> TokenKeys {
        TokenKeys::new(&SecretString::from(secret.to_string()), 3600)
    }

    #[test]
    fn issued_tokens_verify_and_carry_roles() {
        let k = keys("k1");
        let (token, claims) = k.issue(42, vec!["buyer".into()], Utc::now()).unwrap();
        let back = k.verify(&token).unwrap();
        assert_eq!(back, claims);
        assert!(back.has_role("buyer") && !back.has_role("admin"));
    }

    #[test]
    fn other_keys_and_expired_tokens_are_refused() {
        let (token, _) = keys("k1").issue(1, vec![], Utc::now()).unwrap();
        assert!(keys("k2").verify(&token).is_err());
        let old = Utc::now() - chrono::Duration::hours(2);
        let (expired, _) = keys("k1").issue(1, vec![], old).unwrap();
        assert!(keys("k1").verify(&expired).is_err());
    }
}
