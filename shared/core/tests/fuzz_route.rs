//! Fuzzing request parsing and routing: random and mutated requests go through `route()` with
//! the real test models' tokenizers and configs (`scripts/fetch-test-models.sh`) and a stand-in
//! backend that always succeeds. Whatever comes in, `route()` must not panic, must answer a
//! status the error table allows (never 5xx here, as the backend cannot fail), and error bodies
//! must be JSON with an `error` field.
//!
//! `FUZZ_CASES` sets the number of cases (default 20 000, what the test command runs); the
//! 1M-case run: `FUZZ_CASES=1000000 cargo test --release -p embedfn-core --features fs --test
//! fuzz_route`.

use std::path::PathBuf;
use std::sync::OnceLock;

use embedfn_core::files::read_model_dir;
use embedfn_core::{
    route, ApiKey, App, Backend, Batch, Embedder, EmbedderOptions, ModelInfo, ModelSpec,
    Quantization, Registry, Request, RerankOptions, Reranker, Result, Served, Tensor,
    TextTokenizer,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Answers every batch with a tensor of the right shape: token-level `[batch, seq, width]`, or
/// cross-encoder logits `[batch, 1]` when `width` is 1.
#[derive(Debug)]
struct StandIn {
    width: usize,
}

impl Backend for StandIn {
    fn forward(&self, b: &Batch) -> Result<Tensor> {
        let shape = if self.width == 1 {
            vec![b.batch, 1]
        } else {
            vec![b.batch, b.seq, self.width]
        };
        let n = shape.iter().product();
        Ok(Tensor {
            shape,
            data: (0..n).map(|i| (i % 7) as f32 - 3.0).collect(),
        })
    }
}

fn models_dir() -> PathBuf {
    let dir = std::env::var_os("EMBEDFN_MODELS").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/embedfn/models"),
        PathBuf::from,
    );
    assert!(
        dir.join("minilm/tokenizer.json").is_file(),
        "test models missing in {}: run scripts/fetch-test-models.sh",
        dir.display()
    );
    dir
}

fn load(name: &str) -> (ModelSpec, TextTokenizer, ModelInfo) {
    let files = read_model_dir(&models_dir().join(name)).unwrap();
    let info = ModelInfo {
        name: name.into(),
        size: 0,
        modified_at: "2026-11-21T00:00:00Z".into(),
        digest: "0".into(),
        quantization: Quantization::None,
        weights: None,
    };
    (
        ModelSpec::from_files(&files).unwrap(),
        TextTokenizer::from_bytes(&files.tokenizer_json).unwrap(),
        info,
    )
}

/// Two apps on the Jina-shaped fixtures (tasks, long context, a reranker): one open, one with
/// an API key.
fn apps() -> &'static [App<StandIn>; 2] {
    static APPS: OnceLock<[App<StandIn>; 2]> = OnceLock::new();
    APPS.get_or_init(|| {
        let make = |key: Option<&str>| {
            let (spec, tok, info) = load("jina-embed-tiny");
            let width = spec.dims;
            let embedder =
                Embedder::new(spec, tok, StandIn { width }, EmbedderOptions::default()).unwrap();
            let (spec, tok, rinfo) = load("jina-rerank-tiny");
            let reranker = Reranker::new(spec, tok, StandIn { width: 1 }, RerankOptions::default());
            let mut app = App::new(Registry::single(
                Some(Served {
                    info,
                    model: embedder,
                }),
                Some(Served {
                    info: rinfo,
                    model: reranker,
                }),
            ));
            app.limits.max_body_bytes = 64 * 1024;
            app.api_key = key.map(ApiKey::new);
            app
        };
        [make(None), make(Some("k3y"))]
    })
}

const PATHS: &[&str] = &[
    "/",
    "/health",
    "/metrics",
    "/api/embed",
    "/api/embeddings",
    "/api/rerank",
    "/api/tags",
    "/api/show",
    "/api/ps",
    "/api/version",
    "/v1/embeddings",
    "/embeddings",
    "/v1/models",
    "/v1/rerank",
    "/rerank",
    "/v2/rerank",
    "/tokenize",
    "/embed",
    "/embed_all",
    "/similarity",
    "/decode",
    "/info",
    "/openapi.json",
    "/api/embed/",
    "/v1/embeddings?x=1",
    "/nope",
    "//api/embed",
    "/api/../api/embed",
    "",
    "/%00",
    "/v1/",
];

/// Valid bodies the mutations start from.
const TEMPLATES: &[&str] = &[
    r#"{"model": "jina-embed-tiny", "input": ["Hello", "world"], "options": {"task": "retrieval.query"}, "dimensions": 32, "truncate": true}"#,
    r#"{"input": "x", "keep_alive": "5m"}"#,
    r#"{"model": "jina-embed-tiny-query", "prompt": "legacy"}"#,
    r#"{"model": "jina-embed-tiny", "input": [[1, 2, 3], [4]], "encoding_format": "base64", "task": "text-matching"}"#,
    r#"{"input": ["a", "b"], "late_chunking": true, "embedding_type": "ubinary", "normalized": false}"#,
    r#"{"model": "jina-rerank-tiny", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1, "return_documents": false}"#,
    r#"{"query": "q", "documents": ["a", "b"]}"#,
    r#"{"model": "jina-embed-tiny", "verbose": true}"#,
    r#"{"input": ["Hello"], "task": "retrieval.passage"}"#,
    r#"{"inputs": ["Hello", [1, 2]], "truncate": false, "truncation_direction": "Left", "prompt_name": "retrieval.query", "normalize": false, "dimensions": 32}"#,
    r#"{"query": "q", "texts": ["a", "b"], "raw_scores": true, "return_text": true}"#,
    r#"{"inputs": {"source_sentence": "a", "sentences": ["b", "c"]}, "parameters": {"truncate": true}}"#,
    r#"{"inputs": "Hello world", "add_special_tokens": false}"#,
    r#"{"ids": [[0, 5, 2], [7]], "skip_special_tokens": false}"#,
    r#"{"model": "jina-embed-tiny", "input": ["spin", "remote"]}"#,
    r#"{"input": ["x"], "max_length": 3, "encoding_format": null, "dimensions": null, "user": null}"#,
];

/// Byte strings the mutations insert: JSON edge cases.
const DICTIONARY: &[&str] = &[
    "NaN",
    "-Infinity",
    "1e999",
    "-1",
    "18446744073709551616",
    "0",
    "null",
    "true",
    "[]",
    "{}",
    "\"\"",
    "\"\\ud800\"",
    "\"\\u0000\"",
    "[[[[[[[[",
    "]]]]",
    "\u{feff}",
    "\\",
    ",",
    ":",
    "\"",
    "\"input\":",
    "\"documents\":",
    "\"dimensions\":",
    "\"task\":",
    "\"model\":",
    "\"inputs\":",
    "\"texts\":",
    "\"ids\":",
    "1.5",
];

#[derive(Debug, Clone)]
enum Edit {
    Truncate(usize),
    Insert(usize, usize),
    Delete(usize, usize),
    Flip(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), 0..DICTIONARY.len()).prop_map(|(at, w)| Edit::Insert(at, w)),
        (any::<usize>(), 1usize..12).prop_map(|(at, n)| Edit::Delete(at, n)),
        (any::<usize>(), any::<u8>()).prop_map(|(at, b)| Edit::Flip(at, b)),
    ]
}

fn apply(mut body: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let len = body.len().max(1);
        match *e {
            Edit::Truncate(at) => body.truncate(at % len),
            Edit::Insert(at, w) => {
                let at = at % len.min(body.len() + 1);
                body.splice(at..at, DICTIONARY[w].bytes());
            }
            Edit::Delete(at, n) => {
                let at = (at % len).min(body.len());
                body.drain(at..(at + n).min(body.len()));
            }
            Edit::Flip(at, b) => {
                if !body.is_empty() {
                    let i = at % body.len();
                    body[i] = b;
                }
            }
        }
    }
    body
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => (0..TEMPLATES.len(), proptest::collection::vec(edit(), 0..4))
            .prop_map(|(t, edits)| apply(TEMPLATES[t].as_bytes().to_vec(), &edits)),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => (0..TEMPLATES.len()).prop_map(|t| TEMPLATES[t].as_bytes().to_vec()),
    ]
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just("POST".to_string()),
        2 => Just("GET".to_string()),
        1 => Just("HEAD".to_string()),
        1 => "[A-Z]{0,7}",
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (0..PATHS.len()).prop_map(|i| PATHS[i].to_string()),
        1 => "/[a-z/%?.]{0,30}",
    ]
}

fn auth() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("Bearer k3y".to_string())),
        ".{0,20}".prop_map(Some),
    ]
}

#[test]
fn route_never_panics_and_answers_json_errors() {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (method(), path(), auth(), body(), any::<bool>());
    runner
        .run(&strategy, |(method, path, auth, body, keyed)| {
            let app = &apps()[usize::from(keyed)];
            let headers: Vec<(&str, &str)> = auth
                .as_deref()
                .map(|a| ("Authorization", a))
                .into_iter()
                .collect();
            let reply = route(
                app,
                &Request {
                    method: &method,
                    path: &path,
                    headers: &headers,
                    body: &body,
                },
            );
            prop_assert!(
                matches!(reply.status, 200 | 400 | 401 | 404 | 405 | 413 | 422),
                "status {} for {method} {path}: {}",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            );
            if reply.status != 200 {
                let v: serde_json::Value = serde_json::from_slice(&reply.body)
                    .map_err(|e| TestCaseError::fail(format!("error body is not JSON: {e}")))?;
                prop_assert!(v.get("error").is_some());
            }
            Ok(())
        })
        .unwrap();
}
