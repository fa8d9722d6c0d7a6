//! Request and response schemas of the APIs embedfn speaks, with their handlers. Each handler
//! takes the raw body and the [`App`](crate::router::App) and returns the JSON reply bytes or
//! an [`Error`]; the route table (`router`) picks the handler and the error's JSON shape.

pub mod ollama;
pub mod openai;
pub mod rerank;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::embed::Input;
use crate::error::{Error, Result};

/// Parses a JSON body into `T`; every failure is a 400 that says what was wrong.
pub fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => {
            return Err(Error::bad_request(
                "request body is empty; expected a JSON object",
            ))
        }
        // serde would also fill a struct from a JSON array, field by field: refuse it here.
        Some(b'{') => {}
        Some(_) => {
            return Err(Error::bad_request(
                "invalid request body: expected a JSON object",
            ))
        }
    }
    serde_json::from_slice(body)
        .map_err(|e| Error::bad_request(format!("invalid request body: {e}")))
}

/// Texts from `string | [string]` (Ollama `input`); an empty list is rejected.
pub fn texts(input: Option<Value>, field: &str) -> Result<Vec<Input>> {
    let wrong = || Error::bad_request(format!("'{field}' must be a string or an array of strings"));
    match input {
        None | Some(Value::Null) => Err(Error::bad_request(format!("'{field}' is required"))),
        Some(Value::String(s)) => Ok(vec![Input::Text(s)]),
        Some(Value::Array(items)) if items.is_empty() => {
            Err(Error::bad_request(format!("'{field}' must not be empty")))
        }
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(Input::Text(s)),
                _ => Err(wrong()),
            })
            .collect(),
        Some(_) => Err(wrong()),
    }
}

/// Inputs from `string | [string] | [int] | [[int]]` (OpenAI `input`).
pub fn inputs(input: Option<Value>) -> Result<Vec<Input>> {
    let wrong = || {
        Error::bad_request(
            "'input' must be a string, an array of strings, an array of token ids, or an array of arrays of token ids",
        )
    };
    let ids = |items: &[Value]| -> Result<Vec<i64>> {
        items.iter().map(|v| v.as_i64().ok_or_else(wrong)).collect()
    };
    match input {
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_number) => {
            Ok(vec![Input::Tokens(ids(&items)?)])
        }
        Some(Value::Array(items)) if items.first().is_some_and(Value::is_array) => items
            .iter()
            .map(|v| match v {
                Value::Array(inner) if !inner.is_empty() => Ok(Input::Tokens(ids(inner)?)),
                Value::Array(_) => {
                    Err(Error::bad_request("'input' token arrays must not be empty"))
                }
                _ => Err(wrong()),
            })
            .collect(),
        other => texts(other, "input"),
    }
}

/// Serialises a reply body.
pub fn reply<T: serde::Serialize + ?Sized>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Backend(format!("cannot encode reply: {e}")))
}

/// Checks a list's length against a configured maximum.
pub fn check_count(n: usize, max: usize, what: &str) -> Result<()> {
    if n > max {
        return Err(Error::bad_request(format!(
            "too many {what}: {n} (the limit is {max})"
        )));
    }
    Ok(())
}
