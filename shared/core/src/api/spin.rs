//! Spin's remote LLM contract, default API type: Spin's `llm-remote-http` client sends
//! `POST {url}/embed {"model", "input": [..]}` with `authorization: bearer <token>` and expects
//! `{"embeddings": [[..]], "usage": {"promptTokenCount": N}}`. (Its `open_ai` API type calls
//! `/v1/embeddings`, served by the OpenAI module.) Errors are `{"error": "message"}`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{check_count, parse_body, reply};
use crate::app::App;
use crate::backend::Backend;
use crate::embed::{EmbedParams, Input};
use crate::error::{Error, Result};

/// `POST /embed` with `input`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"input": ["Hello", "world"]}))]
pub struct SpinEmbedRequest {
    /// The model name the Spin app asked for (e.g. `all-minilm-l6-v2`).
    pub model: Option<String>,
    /// The texts.
    pub input: Vec<String>,
}

/// Token counts.
#[derive(Serialize, ToSchema)]
pub struct SpinUsage {
    /// Tokens run.
    #[serde(rename = "promptTokenCount")]
    pub prompt_token_count: usize,
}

/// One vector per input, and usage.
#[derive(Serialize, ToSchema)]
pub struct SpinEmbedResponse {
    /// The vectors, in input order.
    pub embeddings: Vec<Vec<f32>>,
    /// Token counts.
    pub usage: SpinUsage,
}

/// `POST /embed` (Spin's shape)
pub fn embed<B: Backend>(app: &App<B>, body: &[u8]) -> Result<Vec<u8>> {
    let req: SpinEmbedRequest = parse_body(body)?;
    let (served, task) = app.models.embedder_for(req.model.as_deref(), None, None)?;
    check_count(req.input.len(), app.limits.max_inputs, "inputs")?;
    if req.input.is_empty() {
        return Err(Error::bad_request("'input' must not be empty"));
    }
    let inputs: Vec<Input> = req.input.into_iter().map(Input::Text).collect();
    let params = EmbedParams {
        task,
        ..EmbedParams::default()
    };
    let out = served.model.embed(&inputs, &params)?;
    reply(&SpinEmbedResponse {
        embeddings: out.vectors,
        usage: SpinUsage {
            prompt_token_count: out.prompt_tokens,
        },
    })
}
