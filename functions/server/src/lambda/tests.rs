//! The Lambda handler driven directly with real event fixtures (`tests/fixtures/lambda/`), on
//! the real MiniLM int8 model and the Jina-shaped reranker fixture from
//! `scripts/fetch-test-models.sh` (missing models fail these tests).

use std::path::PathBuf;
use std::sync::OnceLock;

use embedfn_core::{App, Place, Settings};
use embedfn_ort::models::Engine;
use serde_json::{json, Value};

use super::*;

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("EMBEDFN_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| embedfn_ort::runtime::cache_dir().join("models"));
    assert!(
        dir.join("minilm/tokenizer.json").is_file(),
        "test models missing in {}: run scripts/fetch-test-models.sh",
        dir.display()
    );
    dir
}

fn app() -> &'static App<Engine> {
    static APP: OnceLock<App<Engine>> = OnceLock::new();
    APP.get_or_init(|| {
        let dir = models_dir();
        let vars = [
            ("EMBEDDINGS_MODEL_ID", dir.join("minilm")),
            ("RERANKER_MODEL_ID", dir.join("jina-rerank-tiny")),
            ("ORT_INTRA_THREADS", "1".into()),
            ("USE_CUDA", "false".into()),
        ];
        let settings = Settings::from_lookup(
            |k| {
                vars.iter()
                    .find(|(name, _)| *name == k)
                    .map(|(_, v)| v.display().to_string())
            },
            Place::Native,
        )
        .unwrap();
        embedfn_ort::build(&settings).expect("test app")
    })
}

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/lambda")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Sends one event through `lambda_http`'s own event parsing and our handler.
fn invoke(event: &Value) -> (u16, Value) {
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let response = handle(app(), &request);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body = match response.body() {
        Body::Text(text) => serde_json::from_str(text).unwrap(),
        other => panic!("expected a text body, got {other:?}"),
    };
    (response.status().as_u16(), body)
}

/// The vectors the local server's path gives for the same body.
fn local_embeddings(path: &str, body: &str) -> Value {
    let reply = bridge::answer(
        app(),
        &http::Method::POST,
        path,
        &http::HeaderMap::new(),
        body.as_bytes(),
    );
    assert_eq!(reply.status, 200);
    serde_json::from_slice(&reply.body).unwrap()
}

#[test]
fn api_gateway_rest_event_embeds_like_the_local_server() {
    let event = fixture("apigw-v1");
    let (status, body) = invoke(&event);
    assert_eq!(status, 200);
    let local = local_embeddings("/api/embed", event["body"].as_str().unwrap());
    assert_eq!(body["embeddings"], local["embeddings"]);
    let vectors = body["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 2);
    assert_eq!(vectors[0].as_array().unwrap().len(), 384);
    assert_eq!(body["model"], "minilm");
}

#[test]
fn http_api_event_with_a_base64_body_reaches_the_openai_route() {
    let (status, body) = invoke(&fixture("apigw-v2"));
    assert_eq!(status, 200);
    let local = local_embeddings(
        "/v1/embeddings",
        r#"{"model": "minilm", "input": "Hello world", "encoding_format": "float"}"#,
    );
    assert_eq!(body["data"], local["data"]);
    assert_eq!(body["object"], "list");
}

#[test]
fn function_url_event_reranks() {
    let (status, body) = invoke(&fixture("function-url"));
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    let local = local_embeddings(
        "/v1/rerank",
        fixture("function-url")["body"].as_str().unwrap(),
    );
    assert_eq!(body["results"], local["results"]);
}

#[test]
fn alb_event_lists_the_models() {
    let (status, body) = invoke(&fixture("alb"));
    assert_eq!(status, 200);
    let names: Vec<&str> = body["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["minilm", "jina-rerank-tiny"]);
}

#[test]
fn direct_invocation_with_an_ollama_body_is_answered() {
    let event = fixture("direct");
    let (status, body) = invoke(&event);
    assert_eq!(status, 200);
    let local = local_embeddings("/api/embed", &event.to_string());
    assert_eq!(body["embeddings"], local["embeddings"]);

    let rerank = json!({"model": "jina-rerank-tiny", "query": "q", "documents": ["a", "b"]});
    let (status, body) = invoke(&rerank);
    assert_eq!(
        (status, body["results"].as_array().unwrap().len()),
        (200, 2)
    );
}

#[test]
fn bad_input_is_an_http_error_not_a_function_error() {
    let mut event = fixture("apigw-v1");
    event["body"] = json!("{\"model\": \"minilm\", \"input\": ");
    let (status, body) = invoke(&event);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body"),
        "{body}"
    );

    event["body"] = json!(r#"{"model": "nope", "input": "x"}"#);
    assert_eq!(invoke(&event).0, 404);

    let mut event = fixture("apigw-v2");
    event["rawPath"] = json!("/v1/nothing-here");
    let (status, body) = invoke(&event);
    assert_eq!(status, 404);
    assert_eq!(body["error"]["type"], "not_found_error");

    let mut event = fixture("alb");
    event["httpMethod"] = json!("DELETE");
    assert_eq!(invoke(&event).0, 405);
}

#[test]
fn a_named_http_api_stage_is_not_part_of_the_route() {
    let mut event = fixture("alb");
    event["path"] = json!("/api/version");
    assert_eq!(invoke(&event).0, 200);

    let mut event = fixture("apigw-v2");
    event["rawPath"] = json!("/prod/v1/embeddings");
    event["requestContext"]["stage"] = json!("prod");
    assert_eq!(invoke(&event).0, 200);
}

#[test]
fn direct_payloads_route_by_shape() {
    assert_eq!(direct_path(br#"{"input": "x"}"#), "/api/embed");
    assert_eq!(direct_path(br#"{"prompt": "x"}"#), "/api/embeddings");
    assert_eq!(
        direct_path(br#"{"query": "q", "documents": []}"#),
        "/api/rerank"
    );
    assert_eq!(direct_path(b"not json"), "/api/embed");
}
