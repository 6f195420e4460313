//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Generated, not written: each handler carries its `#[utoipa::path]`, its
//! request and response types derive their schemas, and `routes::surface`
//! builds the router and the document from the same `routes!` calls, so a
//! route is served exactly when it is documented. The domain stays free of
//! documentation attributes: the routes have their own wire types. This
//! module holds what no handler owns: the document's header, the bearer
//! scheme, the error answer every operation may give, and the document's
//! own route.

use axum::Extension;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use crate::error::ErrorBody;

/// Where the document is served.
pub const PATH: &str = "/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Surge",
        description = "High-concurrency order platform: catalog, flash sales, orders. Errors are \
            {\"error\": {code, message}}. Bodies are strict: unknown fields, null for an optional field, \
            and integers written with a fraction or exponent (7.0, 7e0) are 400 bad_request."
    ),
    paths(openapi_json),
    components(schemas(ErrorBody)),
    modifiers(&BearerJwt)
)]
struct Header;

/// `Authorization: Bearer <JWT>` (HS256), named `bearer` in the operations'
/// `security`.
struct BearerJwt;

impl utoipa::Modify for BearerJwt {
    fn modify(&self, document: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        document
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document before the routes add their paths and schemas.
pub fn header() -> utoipa::openapi::OpenApi {
    Header::openapi()
}

/// The finished document: every operation also answers the common errors
/// (400, 401, 403, 404, 413, 415, 422, 429, 503, 504) as the error body,
/// under `default`.
pub fn complete(mut document: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    for item in document.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.options,
            &mut item.head,
            &mut item.patch,
            &mut item.trace,
        ];
        for operation in operations.into_iter().flatten() {
            operation.responses.responses.entry("default".to_owned()).or_insert_with(any_other_error);
        }
    }
    document
}

fn any_other_error() -> RefOr<utoipa::openapi::Response> {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
    ResponseBuilder::new().description("any other error, as the error body").content("application/json", content).into()
}

/// This document
#[utoipa::path(get, path = "/openapi.json", tag = "operations", responses((status = 200, description = "OpenAPI 3.1")))]
pub async fn openapi_json(Extension(document): Extension<Bytes>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        serde_json::to_value(complete(header())).expect("the document serializes")
    }

    #[test]
    fn every_operation_answers_the_error_body_by_default() {
        let document = document();
        let default = &document["paths"]["/openapi.json"]["get"]["responses"]["default"];
        assert_eq!(default["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/Error");
        assert!(document["components"]["schemas"]["Error"].is_object(), "{document}");
        assert_eq!(document["components"]["securitySchemes"]["bearer"]["bearerFormat"], "JWT");
        assert_eq!(document["openapi"], "3.1.0");
    }
}
