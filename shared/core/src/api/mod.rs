//! Request and response schemas of the APIs embedfn speaks, with their handlers. Each handler
//! takes the raw body and the [`App`](crate::app::App) and returns the JSON reply bytes or
//! an [`Error`]; the route table ([`crate::routes`]) picks the handler, and its [`Api`] family
//! the error's JSON shape.

pub mod health;
pub mod ollama;
pub mod openai;
pub mod rerank;
pub mod spin;
pub mod tei;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::embed::Input;
use crate::error::{Error, Result};

/// Which API family a route belongs to: decides the error body's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `{"error": "message"}` (Ollama, and Spin's remote LLM contract)
    Ollama,
    /// `{"error": {"message", "type", "param", "code"}}`
    OpenAi,
    /// Hugging Face TEI: `{"error": "message", "error_type": "Validation"}`, with TEI's statuses
    Tei,
}

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

/// The field names of a JSON object body, with the field names of its object-valued fields:
/// what the route table's [`When`](crate::routes::When) conditions look at. Values are skipped,
/// not built.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, Vec<String>)>);

impl Fields {
    /// Whether `path` (`"texts"` or `"inputs.source_sentence"`) is present.
    pub fn has(&self, path: &str) -> bool {
        match path.split_once('.') {
            None => self.0.iter().any(|(k, _)| k == path),
            Some((outer, inner)) => self
                .0
                .iter()
                .any(|(k, keys)| k == outer && keys.iter().any(|i| i == inner)),
        }
    }
}

/// The fields of a body, or `None` when it is not a JSON object.
pub fn probe(body: &[u8]) -> Option<Fields> {
    serde_json::from_slice(body).ok()
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Top;
        impl<'de> serde::de::Visitor<'de> for Top {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Fields, A::Error> {
                let mut out = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    let Keys(inner) = map.next_value()?;
                    out.push((key, inner));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(Top)
    }
}

/// An object's keys; any other value gives none.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::IgnoredAny;
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<Keys, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Keys(Vec::new()))
            }
            fn visit_bool<E>(self, _: bool) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_i64<E>(self, _: i64) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_u64<E>(self, _: u64) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_f64<E>(self, _: f64) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_str<E>(self, _: &str) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
            fn visit_unit<E>(self) -> std::result::Result<Keys, E> {
                Ok(Keys(Vec::new()))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::probe;

    #[test]
    fn probe_sees_top_and_nested_fields() {
        let f = probe(br#"{"inputs": {"source_sentence": "a", "sentences": ["b"]}, "x": [1]}"#)
            .unwrap();
        assert!(f.has("inputs") && f.has("inputs.source_sentence") && f.has("x"));
        assert!(!f.has("texts") && !f.has("x.y"));
        assert!(probe(b"[1]").is_none() && probe(b"{").is_none());
    }
}
