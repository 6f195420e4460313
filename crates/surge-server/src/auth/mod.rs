//! Bearer tokens: JWT, HS256 only, with a role and a subject.
//!
//! The secret comes from `auth.jwt_secret` (shared by every node of a
//! deployment) or, in the embedded mode, from `<data_dir>/jwt-secret`, which
//! the first start creates with 256 random bits. `surge token` reads the same
//! settings, so the tokens it prints are the ones the server accepts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use surge_domain::{Actor, CourierId, MerchantId, UserId};

use crate::config::{AuthSettings, Secret};
use crate::error::ApiError;
use crate::state::AppState;

mod secret;

pub use secret::{SECRET_FILE, SECRET_LEN_MIN, load_or_create_secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Customer,
    Merchant,
    Admin,
    Courier,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub exp: u64,
    pub iat: u64,
}

/// Signs and verifies tokens with one secret.
pub struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Keys {
    pub fn new(secret: &Secret, settings: &AuthSettings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
            validation,
        }
    }

    /// A token for `sub` in `role`, valid for `ttl`. Customer and merchant
    /// subjects must be ids (digits), as everywhere else.
    pub fn mint(&self, role: Role, sub: &str, ttl: Duration) -> Result<String, String> {
        let claims = Claims { sub: sub.to_owned(), role, exp: unix_now() + ttl.as_secs(), iat: unix_now() };
        actor_of(&claims)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map_err(|e| e.to_string())
    }

    /// The actor behind a bearer token, or why it is refused.
    pub fn verify(&self, token: &str) -> Result<Actor, String> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "token expired".to_owned(),
                jsonwebtoken::errors::ErrorKind::InvalidSignature => "token signature is invalid".to_owned(),
                _ => "token is malformed".to_owned(),
            })?;
        actor_of(&data.claims)
    }
}

fn actor_of(claims: &Claims) -> Result<Actor, String> {
    let id = || claims.sub.parse::<i64>().ok().filter(|_| claims.sub.bytes().all(|b| b.is_ascii_digit()));
    match claims.role {
        Role::Admin if !claims.sub.is_empty() => Ok(Actor::Admin(claims.sub.clone())),
        Role::Customer => id().map(|v| Actor::Customer(UserId::new(v))).ok_or_else(not_an_id),
        Role::Merchant => id().map(|v| Actor::Merchant(MerchantId::new(v))).ok_or_else(not_an_id),
        Role::Courier => id().map(|v| Actor::Courier(CourierId::new(v))).ok_or_else(not_an_id),
        Role::Admin => Err("token subject is empty".to_owned()),
    }
}

fn not_an_id() -> String {
    "a customer's, merchant's or courier's token subject must be an id (digits)".to_owned()
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An authenticated caller; rejects the request with 401 otherwise.
pub struct Caller(pub Actor);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| ApiError::unauthorized("authorization must be 'Bearer <token>'"))?;
        state.keys.verify(token.trim()).map(Caller).map_err(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(secret: &str) -> Keys {
        Keys::new(&Secret::new(secret.repeat(32)), &AuthSettings::default())
    }

    #[test]
    fn a_minted_token_verifies_to_its_actor() {
        let keys = keys("a");
        let token = keys.mint(Role::Merchant, "42", Duration::from_secs(60)).expect("mint");
        assert_eq!(keys.verify(&token), Ok(Actor::Merchant(MerchantId::new(42))));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = keys("a").mint(Role::Admin, "ops", Duration::from_secs(60)).expect("mint");
        assert_eq!(keys("b").verify(&token), Err("token signature is invalid".to_owned()));
    }

    #[test]
    fn customer_and_merchant_subjects_must_be_ids() {
        assert!(keys("a").mint(Role::Customer, "alice", Duration::from_secs(60)).is_err());
        assert!(keys("a").mint(Role::Merchant, "-1", Duration::from_secs(60)).is_err());
        assert!(keys("a").mint(Role::Admin, "alice", Duration::from_secs(60)).is_ok());
    }
}
