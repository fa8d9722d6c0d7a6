//! `GET /openapi.json`: an OpenAPI 3.1 document generated from the route table's rows
//! ([`crate::routes::openapi`] hands them over as [`Operation`]s) and the schema types of `api/*`
//! (their `utoipa::ToSchema` derives). Every row contributes its request and
//! response schemas; rows that share a path and method (the body decides between them) become an
//! `anyOf`; every operation's `default` response is its API family's error shape.

use std::collections::BTreeMap;

use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItemBuilder};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{
    ComponentsBuilder, Content, InfoBuilder, OpenApiBuilder, PathsBuilder, Ref, RefOr, Required,
    ResponseBuilder,
};
use utoipa::ToSchema;

use crate::api::Api;

/// Collects named component schemas and returns a reference to one.
pub type SchemaFn = fn(&mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema>;

/// What a reply body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Body {
    /// JSON with the row's response schema.
    #[default]
    Json,
    /// Any JSON (the OpenAPI document itself).
    AnyJson,
    /// Plain text.
    Text,
}

/// What `/openapi.json` says about one route row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Doc {
    request: Option<SchemaFn>,
    response: Option<SchemaFn>,
    body: Body,
}

impl Doc {
    /// A reply of any JSON.
    pub fn any_json() -> Self {
        Doc {
            body: Body::AnyJson,
            ..Doc::default()
        }
    }
}

fn schema_ref<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) -> RefOr<Schema> {
    T::schemas(out);
    let name = T::name().into_owned();
    out.push((name.clone(), T::schema()));
    Ref::from_schema_name(name).into()
}

/// A row with a JSON request body and JSON reply.
pub fn doc<Req: ToSchema, Resp: ToSchema>() -> Doc {
    Doc {
        request: Some(schema_ref::<Req>),
        response: Some(schema_ref::<Resp>),
        body: Body::Json,
    }
}

/// A row without a request body and with a JSON reply.
pub fn get<Resp: ToSchema>() -> Doc {
    Doc {
        request: None,
        response: Some(schema_ref::<Resp>),
        body: Body::Json,
    }
}

/// A row answering plain text.
pub fn text() -> Doc {
    Doc {
        body: Body::Text,
        ..Doc::default()
    }
}

/// Ollama's (and Spin's) error body.
#[derive(Serialize, ToSchema)]
pub struct OllamaError {
    /// What went wrong.
    pub error: String,
}

/// The inside of OpenAI's error body.
#[derive(Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    /// What went wrong.
    pub message: String,
    /// `invalid_request_error`, `not_found_error`, `authentication_error`, `server_error`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// Always null.
    pub param: Option<String>,
    /// `model_not_found`, `invalid_api_key`, `payload_too_large`, or null.
    pub code: Option<String>,
}

/// OpenAI's (and Jina's, Cohere's) error body.
#[derive(Serialize, ToSchema)]
pub struct OpenAiError {
    /// The error.
    pub error: OpenAiErrorDetail,
}

fn error_schema(api: Api) -> SchemaFn {
    match api {
        Api::Ollama => schema_ref::<OllamaError>,
        Api::OpenAi => schema_ref::<OpenAiError>,
        Api::Tei => schema_ref::<crate::api::tei::ErrorResponse>,
    }
}

/// One schema, or `anyOf` the rows' schemas (an error body of one family may also fit
/// another's looser schema, so `oneOf` would be wrong).
fn any_of(mut items: Vec<RefOr<Schema>>) -> RefOr<Schema> {
    let mut seen = Vec::new();
    items.retain(|s| {
        let key = serde_json::to_string(s).unwrap_or_default();
        let new = !seen.contains(&key);
        seen.push(key);
        new
    });
    if items.len() == 1 {
        return items.remove(0);
    }
    let mut b = AnyOfBuilder::new();
    for item in items {
        b = b.item(item);
    }
    RefOr::T(Schema::AnyOf(b.build()))
}

fn text_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new().schema_type(Type::String).build(),
    ))
}

/// What the document needs of one route row.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// The row's first method (`GET` or `POST`).
    pub method: &'static str,
    /// Its path.
    pub path: &'static str,
    /// Its API family (the error schema).
    pub api: Api,
    /// Its schemas.
    pub doc: Doc,
}

/// The document for these rows.
pub fn document(
    rows: impl IntoIterator<Item = Operation>,
    version: &str,
) -> utoipa::openapi::OpenApi {
    let mut components: Vec<(String, RefOr<Schema>)> = Vec::new();
    // path → method → rows' (request, response, errors, body kind)
    type Parts = (
        Vec<RefOr<Schema>>,
        Vec<RefOr<Schema>>,
        Vec<RefOr<Schema>>,
        Body,
    );
    let mut paths: BTreeMap<&str, BTreeMap<&str, Parts>> = BTreeMap::new();
    for row in rows {
        let method = row.method;
        let entry = paths
            .entry(row.path)
            .or_default()
            .entry(method)
            .or_insert_with(|| (Vec::new(), Vec::new(), Vec::new(), row.doc.body));
        if let Some(f) = row.doc.request {
            entry.0.push(f(&mut components));
        }
        if let Some(f) = row.doc.response {
            entry.1.push(f(&mut components));
        }
        entry.2.push(error_schema(row.api)(&mut components));
    }
    let mut builder = PathsBuilder::new();
    for (path, methods) in paths {
        let mut item = PathItemBuilder::new();
        for (method, (requests, responses, errors, body)) in methods {
            let http = if method == "POST" {
                HttpMethod::Post
            } else {
                HttpMethod::Get
            };
            let ok = match body {
                Body::Json => Content::new(Some(any_of(responses))),
                Body::AnyJson => Content::new(Some(RefOr::T(Schema::Object(
                    ObjectBuilder::new().schema_type(Type::Object).build(),
                )))),
                Body::Text => Content::new(Some(text_schema())),
            };
            let ok_type = match body {
                Body::Text if path == "/metrics" => "text/plain; version=0.0.4; charset=utf-8",
                Body::Text => "text/plain; charset=utf-8",
                _ => "application/json",
            };
            let mut op = OperationBuilder::new()
                .operation_id(Some(format!(
                    "{}{}",
                    method.to_lowercase(),
                    path.replace(['/', '.'], "_")
                )))
                .response(
                    "200",
                    ResponseBuilder::new()
                        .description("Success")
                        .content(ok_type, ok)
                        .build(),
                )
                .response(
                    "default",
                    ResponseBuilder::new()
                        .description("Error, in the API family's own shape")
                        .content("application/json", Content::new(Some(any_of(errors))))
                        .build(),
                );
            if !requests.is_empty() {
                op = op.request_body(Some(
                    RequestBodyBuilder::new()
                        .content("application/json", Content::new(Some(any_of(requests))))
                        .required(Some(Required::True))
                        .build(),
                ));
            }
            item = item.operation(http, op.build());
        }
        builder = builder.path(path, item.build());
    }
    components.sort_by(|a, b| a.0.cmp(&b.0));
    components.dedup_by(|a, b| a.0 == b.0);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("embedfn")
                .version(version)
                .description(Some(
                    "Text embeddings and reranking behind Ollama, OpenAI, Jina, Cohere, \
                     Hugging Face TEI and Spin routes.",
                ))
                .build(),
        )
        .paths(builder.build())
        .components(Some(
            ComponentsBuilder::new()
                .schemas_from_iter(components)
                .build(),
        ))
        .build()
}
