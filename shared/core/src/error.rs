//! One error enum for the core and the one table from error kind to HTTP status.
//!
//! Adapters never pick a status themselves: they turn an [`Error`] into a reply through
//! [`Error::status`], so every runtime answers the same input with the same status.

/// Everything the core can fail with. The message is shown to the client as is.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for something the model cannot do.
    #[error("{0}")]
    BadRequest(String),
    /// The request names a model this server does not serve.
    #[error("{0}")]
    ModelNotFound(String),
    /// No route matches the path.
    #[error("{0}")]
    RouteNotFound(String),
    /// The route exists but not for this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Missing or wrong API key.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is larger than the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// The body is declared as something other than JSON on a JSON route.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The client did not send its body within the read timeout.
    #[error("{0}")]
    BodyTimeout(String),
    /// The request ran past its deadline (`REQUEST_TIMEOUT`); its work was dropped.
    #[error("{0}")]
    Timeout(String),
    /// A worker that runs the model has stopped; the process is about to exit for its
    /// supervisor to restart it.
    #[error("{0}")]
    Unhealthy(String),
    /// One input needs more memory than the budget (`MAX_MEMORY`) allows, even alone, and may
    /// not be cut; the message says how many tokens fit.
    #[error("{message}")]
    TooLargeForMemory {
        /// Shown to the client.
        message: String,
        /// The most tokens one sequence may have under the budget.
        fits: usize,
    },
    /// The server is at capacity: the request waited too long or too many already wait.
    #[error("{message}")]
    Overloaded {
        /// Shown to the client.
        message: String,
        /// Seconds the client should wait before retrying (`Retry-After`).
        retry_after: u32,
    },
    /// The model or its files cannot serve: at load (a bad directory, an unknown quantization),
    /// or when a request reaches a model that could not be made ready (a component whose state
    /// failed to build, a tokenizer whose post-processor fails). Never a fault of the input: 500.
    #[error("{0}")]
    Model(String),
    /// The inference backend failed while running a graph.
    #[error("inference failed: {0}")]
    Backend(String),
}

impl Error {
    /// The one table from error kind to HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::ModelNotFound(_) | Error::RouteNotFound(_) => 404,
            Error::MethodNotAllowed(_) => 405,
            Error::BodyTimeout(_) => 408,
            Error::PayloadTooLarge(_) | Error::TooLargeForMemory { .. } => 413,
            Error::UnsupportedMediaType(_) => 415,
            Error::Overloaded { .. } | Error::Unhealthy(_) => 503,
            Error::Timeout(_) => 504,
            Error::Model(_) | Error::Backend(_) => 500,
        }
    }

    /// The OpenAI-style `type` of the error.
    pub fn openai_type(&self) -> &'static str {
        match self {
            Error::BadRequest(_)
            | Error::PayloadTooLarge(_)
            | Error::TooLargeForMemory { .. }
            | Error::UnsupportedMediaType(_)
            | Error::BodyTimeout(_)
            | Error::MethodNotAllowed(_) => "invalid_request_error",
            Error::ModelNotFound(_) | Error::RouteNotFound(_) => "not_found_error",
            Error::Unauthorized(_) => "authentication_error",
            Error::Model(_)
            | Error::Backend(_)
            | Error::Overloaded { .. }
            | Error::Timeout(_)
            | Error::Unhealthy(_) => "server_error",
        }
    }

    /// The OpenAI-style `code` of the error.
    pub fn openai_code(&self) -> Option<&'static str> {
        match self {
            Error::ModelNotFound(_) => Some("model_not_found"),
            Error::Unauthorized(_) => Some("invalid_api_key"),
            Error::PayloadTooLarge(_) => Some("payload_too_large"),
            Error::TooLargeForMemory { .. } => Some("context_length_exceeded"),
            Error::Overloaded { .. } => Some("server_overloaded"),
            _ => None,
        }
    }

    /// Seconds a client should wait before retrying (the `Retry-After` header), for errors
    /// that pass.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            Error::Unhealthy(_) => Some(1),
            _ => None,
        }
    }

    /// Shorthand for a 400 with a formatted message.
    pub fn bad_request(msg: impl Into<String>) -> Self {
        Error::BadRequest(msg.into())
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
