//! Between the `http` crate's types, which axum and `lambda_http` share, and the core's
//! [`Request`] / [`Reply`]: both adapters route through here, so they cannot drift apart.

use embedfn_core::{route, App, Backend, Reply, Request};
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};

/// Answers one HTTP request through the core's route table (blocking: it runs inference).
pub fn answer<B: Backend>(
    app: &App<B>,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    route(
        app,
        &Request {
            method: method.as_str(),
            path,
            headers: &headers,
            body,
        },
    )
}

/// The reply as an HTTP response; `body` turns the bytes into the adapter's body type.
pub fn respond<T>(reply: Reply, body: impl FnOnce(Vec<u8>) -> T) -> Response<T> {
    let mut response = Response::new(body(reply.body));
    *response.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(reply.content_type),
    );
    if let Some(seconds) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    for (name, value) in reply.headers {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
