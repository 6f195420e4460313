//! Schemas the route modules share on the wire.
//!
//! The domain's types carry no documentation attributes (the domain knows
//! nothing of HTTP), so each route module has its own wire types with
//! `From<domain type>`; what they have in common lives here.

use std::borrow::Cow;

use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, Required};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// An id as the wire carries it (API.md, "Conventions"): a 64-bit,
/// time-ordered number written as a string of digits, so JavaScript keeps
/// it exact. The domain's id types serialize so; this type names their
/// schema (`#[schema(value_type = Id)]`) and is never made.
pub enum Id {}

impl PartialSchema for Id {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(ID_PATTERN))
            .description(Some("an id: a string of digits (64-bit, time-ordered)"))
            .into()
    }
}

impl ToSchema for Id {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("Id")
    }
}

/// What the id parsers accept: 1 to 19 digits.
pub const ID_PATTERN: &str = "^[0-9]{1,19}$";

/// The `Idempotency-Key` header of a POST that creates something: the same
/// key from the same caller returns the first response again and creates
/// nothing new. Read by `extract::idempotency_key`; this type only
/// documents it (`params(IdempotencyKey)`).
pub enum IdempotencyKey {}

impl IntoParams for IdempotencyKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let key = ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(128))
            .pattern(Some("^[!-~]+$"))
            .description(Some("1-128 visible ASCII characters"));
        let header = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .schema(Some(key));
        vec![header.build()]
    }
}

/// A keyset page of a listing: `limit` (1–500, default 50) and the
/// `next_cursor` of the page before.
#[derive(Debug, serde::Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    #[param(value_type = u32, required = false, minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the page before.
    #[param(value_type = String, required = false, pattern = "^[0-9]{1,19}$")]
    pub cursor: Option<String>,
}
