//! Bearer tokens for the scenarios, signed with the deployment's secret (the
//! bench is a client: it shares the secret, not the server's code).

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: String,
    exp: u64,
    iat: u64,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Tokens {
    pub fn new(secret: &str) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        }
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let secret = std::fs::read_to_string(path)?;
        Ok(Self::new(secret.trim()))
    }

    pub fn mint(&self, role: &str, sub: &str) -> anyhow::Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let claims = Claims { sub: sub.to_owned(), role: role.to_owned(), exp: now + 3600, iat: now };
        Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?)
    }

    /// The customer id behind a request's bearer token, if it verifies.
    pub fn customer(&self, headers: &HeaderMap) -> Option<i64> {
        self.subject(headers, "customer")
    }

    /// The numeric subject of a verified token of `role`.
    pub fn subject(&self, headers: &HeaderMap, role: &str) -> Option<i64> {
        let token = headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")?;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &Validation::new(Algorithm::HS256)).ok()?;
        (data.claims.role == role).then(|| data.claims.sub.parse().ok()).flatten()
    }
}
