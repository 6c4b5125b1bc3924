//! The OpenAPI 3 document (`GET /api-docs/openapi.json`), generated from the handlers'
//! annotations. Every operation's error answers are described by the envelope
//! (API.md, "Errors"), so a client generator, or a fuzzer checking answers against the
//! document, knows the shape of a 4xx/5xx without each handler repeating it.

use super::error::{ErrorBody, ErrorInner};
use super::{
    accounts, admin, admin_orders, catalog, mq, ops, orders, payments, reconcile, ticket_buyers,
};
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

/// The OpenAPI document, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "boxoffice",
        description = "Ticketing engine for high-demand on-sales (API v1)"
    ),
    paths(
        ops::healthz,
        ops::readyz,
        ops::metrics,
        openapi_json,
        accounts::register,
        accounts::new_challenge,
        accounts::login,
        accounts::logout,
        accounts::sign_out_everywhere,
        super::admin_users::set_access,
        accounts::me,
        ticket_buyers::create,
        ticket_buyers::list,
        ticket_buyers::remove,
        catalog::list,
        catalog::detail,
        catalog::seats,
        admin::create,
        admin::edit,
        admin_orders::list_orders,
        admin_orders::list_discarded,
        reconcile::inventory,
        reconcile::list,
        reconcile::run,
        reconcile::handled,
        mq::list,
        mq::handled,
        mq::republish,
        orders::place,
        orders::one,
        orders::list,
        orders::cancel,
        payments::start,
        payments::notify,
        payments::pay_check,
        payments::refund,
    ),
    components(schemas(ErrorBody, ErrorInner)),
    modifiers(&ErrorEnvelope, &BlankFilters)
)]
pub struct ApiDoc;

/// Serves the OpenAPI 3 document of this server.
#[utoipa::path(get, path = "/api-docs/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3 document", body = Object)))]
pub async fn openapi_json() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(ApiDoc::openapi())
}

/// Gives every documented 4xx/5xx answer the envelope as its body, and every operation a
/// `default` answer in the envelope: any status an operation can answer besides the ones it
/// lists (401, 413, 429, 503 …) is an error in that shape.
struct ErrorEnvelope;

impl Modify for ErrorEnvelope {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                describe_errors(operation);
            }
        }
    }
}

/// Says which lists take a blank query value as "no filter" (a form's untouched fields).
struct BlankFilters;

impl Modify for BlankFilters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for path in admin_orders::BLANK_QUERY_VALUES_ALLOWED {
            let item = openapi.paths.paths.get_mut(path);
            allow_blank_query_values(item.and_then(|i| i.get.as_mut()));
        }
    }
}

/// Lets each query parameter of `operation` also be the empty string (`anyOf` its schema and
/// `""`): what `allowEmptyValue` meant, said the way OpenAPI 3.1 recommends.
fn allow_blank_query_values(operation: Option<&mut Operation>) {
    let parameters = operation.and_then(|o| o.parameters.as_mut());
    for parameter in parameters.into_iter().flatten() {
        if parameter.parameter_in != ParameterIn::Query {
            continue;
        }
        let blank = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some([""]));
        let mut either = AnyOfBuilder::new().item(blank);
        if let Some(schema) = parameter.schema.take() {
            either = either.item(schema);
        }
        parameter.schema = Some(RefOr::T(Schema::AnyOf(either.build())));
    }
}

/// The envelope on each error answer of `operation`, and as its `default`.
fn describe_errors(operation: &mut Operation) {
    let responses = &mut operation.responses.responses;
    for (status, response) in responses.iter_mut() {
        let is_error = status.starts_with('4') || status.starts_with('5');
        if let (true, RefOr::T(response)) = (is_error, response) {
            response
                .content
                .insert("application/json".into(), envelope_content());
        }
    }
    responses.entry("default".into()).or_insert_with(|| {
        RefOr::T(
            ResponseBuilder::new()
                .description("An error, in the envelope (API.md, \"Errors\")")
                .content("application/json", envelope_content())
                .build(),
        )
    });
}

fn envelope_content() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_answers_errors_in_the_envelope() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let envelope = "#/components/schemas/ErrorBody";
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        assert!(!paths.is_empty());
        for (path, item) in paths {
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                let responses = op["responses"].as_object().cloned().unwrap_or_default();
                for (status, response) in responses {
                    let schema = &response["content"]["application/json"]["schema"]["$ref"];
                    if status == "default" || status.starts_with(['4', '5']) {
                        assert_eq!(schema, envelope, "{method} {path} {status}");
                    }
                }
                assert!(op["responses"].get("default").is_some(), "{method} {path}");
            }
        }
    }

    #[test]
    fn the_documented_document_kinds_are_the_accepted_ones() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let pattern = &doc["components"]["schemas"]["NewTicketBuyer"]["properties"]["id_type"];
        let kinds = crate::domain::identity::ID_TYPES.join("|");
        assert_eq!(pattern["pattern"], format!("^({kinds})$"));
    }

    #[test]
    fn query_parameters_are_documented_in_the_query() {
        // A query struct without `parameter_in = Query` is documented as path parameters
        // that the path does not have: clients and fuzzers then never send them.
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let paths = doc["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            for (method, op) in item.as_object().cloned().unwrap_or_default() {
                let parameters = op["parameters"].as_array().cloned().unwrap_or_default();
                for p in parameters.iter().filter(|p| p["in"] == "path") {
                    let name = p["name"].as_str().unwrap_or_default();
                    let placeholder = format!("{{{name}}}");
                    assert!(path.contains(&placeholder), "{method} {path}: {name}");
                }
            }
        }
        let orders = &doc["paths"]["/api/v1/admin/programs/{id}/orders"]["get"];
        let blank_ok = orders["parameters"].as_array().is_some_and(|ps| {
            ps.iter()
                .filter(|p| p["in"] == "query")
                .all(|p| p["schema"]["anyOf"][0]["enum"][0] == "")
        });
        assert!(blank_ok, "blank filters are documented: {orders}");
    }
}
