//! embedfn as a Spin HTTP component (`wasm32-wasip2`, WASIp2 `wasi:http/incoming-handler`).
//!
//! The handler hands every request to the core's route table, so each route answers exactly as
//! on the native server; tokenizing, pooling and ranking run inside Wasm, and the model runs in
//! the host through `wasi:nn` (default feature `wasi-nn`), or inside the component with the
//! `embedfn-tract` engine (feature `tract`: needs nothing from the host, so it runs under stock
//! Spin and Wasmtime). State is built once ([`state`]); Wizer can snapshot it into the
//! component so that a fresh instance per request pays no parsing.

mod alloc;
#[cfg(not(feature = "tract"))]
mod nn;
mod state;

use embedfn_core::api::Api;
use embedfn_core::router::{check_key, error_reply};
use embedfn_core::settings::SECRETS;
use embedfn_core::{route, ApiKey, Error, Reply};
use spin_sdk::http::{Request, Response};
use spin_sdk::http_component;

#[allow(missing_docs, dead_code, clippy::all)]
mod bindings {
    spin_sdk::wit_bindgen::generate!({
        world: "component",
        path: "wit",
        runtime_path: "spin_sdk::wit_bindgen::rt",
        generate_all,
    });
}

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator;

struct Component;

impl bindings::Guest for Component {
    fn wizer_initialize() {
        // A failure is kept and answered (500) by every request, with its reason.
        // Freed memory is zeroed meanwhile: Wizer ships only non-zero bytes.
        // Nothing here may touch stdout/stderr: a stream opened now would be a dead handle in
        // the snapshot.
        alloc::zeroing_freed(|| {
            let _ = state::app();
            // Anything that read the environment meanwhile (the C library's copy of it, taken
            // by the first `getenv` of any dependency) holds the secrets that were in it. The
            // snapshot ships the whole linear memory: scrub them from it.
            for name in SECRETS {
                if let Some(secret) = state::var(&state::environment(), name) {
                    scrub(secret.into_bytes());
                }
            }
        });
    }
}

bindings::export!(Component with_types_in bindings);

/// Answers one request through the core's route table.
#[http_component]
fn handle(req: Request) -> Response {
    let started = std::time::Instant::now();
    // The live environment: the C library's copy was taken at pre-initialisation.
    let environment = state::environment();
    let key = state::var(&environment, "API_KEY")
        .filter(|k| !k.trim().is_empty())
        .map(ApiKey::new);
    let headers: Vec<(&str, &str)> = req
        .headers()
        .filter_map(|(name, value)| Some((name, value.as_str()?)))
        .collect();
    let method = req.method().to_string();
    let request = embedfn_core::Request {
        method: &method,
        path: req.path_and_query().unwrap_or_else(|| req.path()),
        headers: &headers,
        body: req.body(),
    };
    let reply = match (check_key(key.as_ref(), &request), state::app()) {
        (Some(refused), _) => refused,
        (None, Ok(app)) => route(app, &request),
        (None, Err(why)) => error_reply(Api::Ollama, &Error::Model(why.to_string())),
    };
    if environment.iter().any(|(k, _)| k == "EMBEDFN_LOG_MEMORY") {
        eprintln!("embedfn: linear memory {} bytes", memory_bytes());
    }
    if environment.iter().any(|(k, _)| k == "EMBEDFN_PROFILE") {
        let ms = started.elapsed().as_secs_f64() * 1e3;
        eprintln!("embedfn profile: request {ms:.2} ms");
    }
    respond(reply)
}

/// Zeroes every copy of `secret` in linear memory but this one (zeroed last). Secrets shorter
/// than 8 bytes are left: they would match unrelated bytes.
fn scrub(mut secret: Vec<u8>) {
    let n = secret.len();
    if n < 8 {
        return;
    }
    let own = secret.as_ptr() as usize..secret.as_ptr() as usize + n;
    let end = memory_bytes();
    let first = secret[0];
    let mut at = 1; // address 0 holds no object
    while at + n <= end {
        // SAFETY: pre-initialisation runs no other code; every address below `end` is in the
        // linear memory, and the bytes rewritten are copies of a secret nothing may keep.
        let window = unsafe { std::slice::from_raw_parts_mut(at as *mut u8, n) };
        if window[0] == first && !own.contains(&at) && window == secret.as_slice() {
            window.fill(0);
            at += n;
        } else {
            at += 1;
        }
    }
    secret.fill(0);
    std::hint::black_box(&secret);
}

/// The linear memory's size: its high-water mark (Wasm memory never shrinks).
fn memory_bytes() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0) << 16;
    #[cfg(not(target_arch = "wasm32"))]
    0
}

fn respond(reply: Reply) -> Response {
    let mut response = Response::builder();
    response
        .status(reply.status)
        .header("content-type", reply.content_type);
    if let Some(seconds) = reply.retry_after {
        response.header("retry-after", seconds.to_string());
    }
    for (name, value) in reply.headers {
        response.header(name, value);
    }
    response.body(reply.body).build()
}
