//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Written out here, next to the routes, rather than derived: the domain
//! types stay free of documentation attributes. A test calls every
//! operation listed here against the real app, so a documented route that
//! does not exist fails the build.

use serde_json::{Value, json};

fn error_response(description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn ok(description: &str, schema: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id_param(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}})
}

/// A product name: 1-200 characters, no control characters, not blank
/// (the server trims it).
const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$";

fn paging() -> Vec<Value> {
    vec![
        json!({"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}}),
        json!({"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}),
    ]
}

fn idempotency_key() -> Value {
    json!({"name": "Idempotency-Key", "in": "header", "schema": {"type": "string", "minLength": 1, "maxLength": 128}})
}

/// OpenAPI links from a response to the operations its id feeds: `path`
/// with its `{id}` taken from `field` of the response body.
fn links(field: &str, targets: &[(&str, &str, &str)]) -> Value {
    let links: serde_json::Map<String, Value> = targets
        .iter()
        .map(|(name, path, method)| {
            let operation = format!("#/paths/{}/{method}", path.replace('~', "~0").replace('/', "~1"));
            let link = json!({"operationRef": operation, "parameters": {"id": format!("$response.body#/{field}")}});
            ((*name).to_owned(), link)
        })
        .collect();
    Value::Object(links)
}

fn errors(codes: &[(&str, &str)]) -> serde_json::Map<String, Value> {
    codes.iter().map(|(status, why)| ((*status).to_owned(), error_response(why))).collect()
}

/// The document, with every operation also answering the common errors
/// (`default`: 400, 401, 403, 404, 413, 415, 422, 429, 503, 504 as the
/// error body).
pub fn document() -> Value {
    let mut document = paths_and_schemas();
    if let Some(paths) = document["paths"].as_object_mut() {
        for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|ops| ops.values_mut()) {
            if let Some(responses) = operation["responses"].as_object_mut() {
                responses.entry("default").or_insert_with(|| error_response("any other error, as the error body"));
            }
        }
    }
    document
}

fn paths_and_schemas() -> Value {
    let secured = json!([{"bearer": []}]);
    let mut product_created = errors(&[
        ("400", "bad input"),
        ("401", "no valid token"),
        ("403", "not this tenant"),
        ("409", "duplicate_sku"),
    ]);
    let mut created = ok("the product", "Product");
    created["links"] = links(
        "id",
        &[
            ("ReadProduct", "/v1/products/{id}", "get"),
            ("ChangeProduct", "/v1/products/{id}", "patch"),
            ("SetStock", "/v1/products/{id}/stock", "put"),
        ],
    );
    product_created.insert("201".into(), created);
    let mut product_changed = errors(&[
        ("400", "bad input"),
        ("401", "no valid token"),
        ("403", "not the owner"),
        ("404", "no such product"),
    ]);
    product_changed.insert("200".into(), ok("the product", "Product"));
    let mut intake = errors(&[
        ("400", "bad quantity or key"),
        ("401", "no valid token"),
        ("403", "not a customer"),
        ("404", "no such sale"),
        ("409", "sold_out or limit_exceeded"),
        ("422", "not_active"),
        ("429", "rate_limited"),
        ("503", "degraded or overloaded"),
    ]);
    let mut accepted = ok("accepted; the order is created shortly", "Accepted");
    accepted["links"] = links(
        "order_id",
        &[
            ("ReadOrder", "/v1/orders/{id}", "get"),
            ("PayOrder", "/v1/orders/{id}/pay", "post"),
            ("CancelOrder", "/v1/orders/{id}/cancel", "post"),
        ],
    );
    intake.insert("202".into(), accepted);
    let mut sale_created = ok("the sale", "Sale");
    sale_created["links"] = links(
        "id",
        &[("ReadSale", "/v1/flash-sales/{id}", "get"), ("PlaceOrder", "/v1/flash-sales/{id}/orders", "post")],
    );
    let mut order_moved = errors(&[
        ("401", "no valid token"),
        ("403", "seen but not the caller's to move (a merchant paying)"),
        ("404", "no such order, or not the caller's"),
        ("422", "invalid_state"),
    ]);
    order_moved.insert("200".into(), ok("the order", "Order"));

    json!({
        "openapi": "3.1.0",
        "info": {"title": "Surge", "version": env!("CARGO_PKG_VERSION"),
                 "description": "High-concurrency order platform: catalog, flash sales, orders. Errors are {\"error\": {code, message}}. Bodies are strict: unknown fields, null for an optional field, and integers written with a fraction or exponent (7.0, 7e0) are 400 bad_request."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
                    "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
                "Product": {"type": "object", "required": ["id", "merchant_id", "sku", "name", "price_cents", "stock", "updated_at"],
                    "properties": {"id": {"type": "string"}, "merchant_id": {"type": "string"}, "sku": {"type": "string"},
                        "name": {"type": "string"}, "price_cents": {"type": "integer", "minimum": 0},
                        "stock": {"type": "integer", "minimum": 0}, "updated_at": {"type": "string", "format": "date-time"}}},
                "NewProduct": {"type": "object", "additionalProperties": false, "required": ["sku", "name", "price_cents", "stock"],
                    "properties": {"sku": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NAME_PATTERN},
                        "price_cents": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000_000i64},
                        "stock": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000},
                        "merchant_id": {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "required from an admin"}}},
                "ProductPatch": {"type": "object", "additionalProperties": false, "minProperties": 1,
                    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": NAME_PATTERN},
                        "price_cents": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000_000i64}}},
                "StockBody": {"type": "object", "additionalProperties": false, "required": ["stock"],
                    "properties": {"stock": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}}},
                "ProductPage": {"type": "object", "required": ["items", "next_cursor"], "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Product"}}, "next_cursor": {"type": ["string", "null"]}}},
                "NewSale": {"type": "object", "additionalProperties": false,
                    "required": ["product_id", "stock", "price_cents", "starts_at", "ends_at", "per_user_limit"],
                    "description": "starts_at at most a minute in the past; ends_at after starts_at, at most 31 days later",
                    "properties": {"product_id": {"type": "string", "pattern": "^[0-9]{1,19}$"},
                        "stock": {"type": "integer", "minimum": 1, "maximum": 10_000_000},
                        "price_cents": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000_000i64},
                        "starts_at": {"type": "string", "format": "date-time"},
                        "ends_at": {"type": "string", "format": "date-time"},
                        "per_user_limit": {"type": "integer", "minimum": 1, "maximum": 1000}}},
                "Sale": {"type": "object", "properties": {"id": {"type": "string"}, "product_id": {"type": "string"},
                    "stock": {"type": "integer"}, "stock_left": {"type": "integer"}, "price_cents": {"type": "integer"},
                    "starts_at": {"type": "string", "format": "date-time"}, "ends_at": {"type": "string", "format": "date-time"},
                    "per_user_limit": {"type": "integer"}, "status": {"enum": ["scheduled", "active", "sold_out", "ended"]}}},
                "IntakeBody": {"type": "object", "additionalProperties": false,
                    "properties": {"quantity": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 1}}},
                "Accepted": {"type": "object", "required": ["order_id", "status"],
                    "properties": {"order_id": {"type": "string"}, "status": {"const": "PENDING"}}},
                "Order": {"type": "object", "properties": {"id": {"type": "string"}, "user_id": {"type": "string"},
                    "merchant_id": {"type": "string"}, "product_id": {"type": "string"}, "flash_sale_id": {"type": ["string", "null"]},
                    "quantity": {"type": "integer"}, "amount_cents": {"type": "integer"},
                    "status": {"enum": ["PENDING", "CREATED", "PAID", "FULFILLING", "DELIVERED", "CANCELLED",
                                        "RETURN_REQUESTED", "RETURNED", "REFUNDED", "FAILED"]},
                    "created_at": {"type": "string", "format": "date-time"}, "updated_at": {"type": "string", "format": "date-time"}}},
                "OrderPage": {"type": "object", "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Order"}}, "next_cursor": {"type": ["string", "null"]}}},
                "Switch": {"type": "object", "properties": {"name": {"type": "string"}, "enabled": {"type": "boolean"},
                    "reason": {"type": "string"}, "mode": {"enum": ["manual", "auto"]}, "updated_at": {"type": "string", "format": "date-time"}}},
                "SwitchList": {"type": "object", "properties": {"items": {"type": "array", "items": {"$ref": "#/components/schemas/Switch"}}}},
                "SetSwitch": {"type": "object", "additionalProperties": false, "required": ["enabled", "reason"],
                    "properties": {"enabled": {"type": "boolean"}, "reason": {"type": "string", "maxLength": 500},
                        "mode": {"enum": ["manual", "auto"]}}},
                "Tunables": {"type": "object", "additionalProperties": false,
                    "description": "flash_sale, overload and notify_breaker settings; PUT takes any subset",
                    "properties": {"flash_sale": {"type": "object"}, "overload": {"type": "object"}, "notify_breaker": {"type": "object"}}}
            }
        },
        "paths": {
            "/v1/products": {
                "get": {"summary": "List products", "parameters": [json!({"name": "merchant_id", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"}}), paging()[0].clone(), paging()[1].clone()],
                        "responses": {"200": ok("a page", "ProductPage"), "400": error_response("bad query")}},
                "post": {"summary": "Create a product (merchant: own tenant; admin)", "security": secured, "parameters": [idempotency_key()],
                         "requestBody": body("NewProduct"), "responses": product_created}
            },
            "/v1/products/{id}": {
                "get": {"summary": "Read a product (cached)", "parameters": [id_param("id")],
                        "responses": {"200": ok("the product", "Product"), "400": error_response("malformed id"), "404": error_response("no such product"), "503": error_response("degraded")}},
                "patch": {"summary": "Change name and/or price", "security": secured, "parameters": [id_param("id")],
                          "requestBody": body("ProductPatch"), "responses": product_changed.clone()}
            },
            "/v1/products/{id}/stock": {
                "put": {"summary": "Set the stock", "security": secured, "parameters": [id_param("id")],
                        "requestBody": body("StockBody"), "responses": product_changed}
            },
            "/v1/flash-sales": {
                "post": {"summary": "Create a flash sale (admin)", "security": secured, "requestBody": body("NewSale"),
                         "responses": {"201": sale_created, "400": error_response("bad input"), "401": error_response("no valid token"), "403": error_response("admin only")}}
            },
            "/v1/flash-sales/{id}": {
                "get": {"summary": "A sale with live stock_left and status", "parameters": [id_param("id")],
                        "responses": {"200": ok("the sale", "Sale"), "404": error_response("no such sale")}}
            },
            "/v1/flash-sales/{id}/orders": {
                "post": {"summary": "Intake: 202 with an order id at once", "security": secured,
                         "parameters": [id_param("id"), idempotency_key()], "requestBody": body("IntakeBody"), "responses": intake}
            },
            "/v1/orders": {
                "get": {"summary": "Orders, newest first (customer: own; merchant: tenant's; admin: all)", "security": secured,
                        "parameters": paging(), "responses": {"200": ok("a page", "OrderPage"), "401": error_response("no valid token")}}
            },
            "/v1/orders/{id}": {
                "get": {"summary": "An order (PENDING until written)", "security": secured, "parameters": [id_param("id")],
                        "responses": {"200": ok("the order", "Order"), "404": error_response("no such order, or not the caller's")}}
            },
            "/v1/orders/{id}/pay": {
                "post": {"summary": "Pay (buyer)", "security": secured, "parameters": [id_param("id")], "responses": order_moved.clone()}
            },
            "/v1/orders/{id}/cancel": {
                "post": {"summary": "Cancel (buyer, admin); stock returned", "security": secured, "parameters": [id_param("id")], "responses": order_moved}
            },
            "/v1/admin/switches": {
                "get": {"summary": "Degradation switches (admin)", "security": secured, "responses": {"200": ok("the switches", "SwitchList")}}
            },
            "/v1/admin/switches/{name}": {
                "put": {"summary": "Flip a switch (admin; persisted)", "security": secured,
                        "parameters": [json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}})],
                        "requestBody": body("SetSwitch"), "responses": {"200": ok("the switch", "Switch"), "404": error_response("no such switch")}}
            },
            "/v1/admin/config": {
                "get": {"summary": "Run-time settings (admin)", "security": secured, "responses": {"200": ok("the settings", "Tunables")}},
                "put": {"summary": "Change run-time settings (admin; any subset; validated, persisted)", "security": secured,
                        "requestBody": body("Tunables"), "responses": {"200": ok("the settings", "Tunables"), "400": error_response("invalid")}}
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "running"}}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {"200": {"description": "ready"}, "503": error_response("a dependency is down")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition"}}}},
            "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every link names an operation of the document, and one that takes an
    /// `{id}` in its path.
    #[test]
    fn every_link_points_at_an_operation_with_an_id() {
        let document = document();
        let mut seen = 0;
        for operation in
            document["paths"].as_object().expect("paths").values().flat_map(|ops| {
                ops.as_object().expect("operations").values().filter_map(|op| op["responses"].as_object())
            })
        {
            for link in operation.values().filter_map(|response| response["links"].as_object()).flat_map(|l| l.values())
            {
                let reference = link["operationRef"].as_str().expect("operationRef");
                let pointer = reference.strip_prefix('#').expect("local");
                assert!(document.pointer(pointer).is_some(), "{reference} names no operation");
                assert!(pointer.contains("{id}"), "{reference} takes no id");
                seen += 1;
            }
        }
        assert_eq!(seen, 8, "the links of a created product, a created sale and an accepted order");
    }
}
