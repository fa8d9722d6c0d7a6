//! Embedding output encodings: float, base64 (little-endian f32, what the OpenAI SDKs ask for by
//! default), and the sign-bit packed `binary` (int8) / `ubinary` (uint8) of the Jina and Cohere
//! APIs.

use base64::Engine as _;
use serde::Serialize;

use crate::error::{Error, Result};

/// How an embedding is written into the JSON reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputEncoding {
    /// A JSON array of numbers.
    #[default]
    Float,
    /// Little-endian f32 bytes, base64 encoded into one string.
    Base64,
    /// One bit per dimension (1 when > 0), packed MSB first, as signed bytes.
    Binary,
    /// As `Binary` but unsigned bytes.
    Ubinary,
}

impl OutputEncoding {
    /// Parses the API's name for an encoding.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "float" => Ok(Self::Float),
            "base64" => Ok(Self::Base64),
            "binary" => Ok(Self::Binary),
            "ubinary" => Ok(Self::Ubinary),
            other => Err(Error::bad_request(format!(
                "unknown encoding format '{other}': expected one of float, base64, binary, ubinary"
            ))),
        }
    }

    /// Encodes one vector.
    pub fn encode(self, v: Vec<f32>) -> Encoded {
        match self {
            Self::Float => Encoded::Float(v),
            Self::Base64 => {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Encoded::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            }
            Self::Ubinary => Encoded::Unsigned(pack_bits(&v)),
            Self::Binary => Encoded::Signed(
                pack_bits(&v)
                    .into_iter()
                    .map(|b| (i16::from(b) - 128) as i8)
                    .collect(),
            ),
        }
    }
}

/// An encoded vector, serialised as the API expects. Floats are written as f32 (shortest
/// round-trip form), not widened to f64: shorter bodies, faster encoding, same values.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Encoded {
    /// JSON numbers.
    Float(Vec<f32>),
    /// One base64 string.
    Base64(String),
    /// Packed bits as signed bytes.
    Signed(Vec<i8>),
    /// Packed bits as unsigned bytes.
    Unsigned(Vec<u8>),
}

/// Sign bits of `v`, eight dimensions a byte, the first dimension in the highest bit.
pub fn pack_bits(v: &[f32]) -> Vec<u8> {
    v.chunks(8)
        .map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |acc, (i, &x)| acc | (u8::from(x > 0.0) << (7 - i)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32() {
        let Encoded::Base64(s) = OutputEncoding::Base64.encode(vec![1.0, -2.5]) else {
            panic!("not base64")
        };
        let bytes = base64::engine::general_purpose::STANDARD.decode(s).unwrap();
        assert_eq!(
            bytes,
            [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
        );
    }

    #[test]
    fn bits_pack_msb_first() {
        let v = [1.0, -1.0, 0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.0];
        assert_eq!(pack_bits(&v), vec![0b1001_0001, 0b1000_0000]);
        assert_eq!(
            serde_json::to_value(OutputEncoding::Binary.encode(v.to_vec())).unwrap(),
            serde_json::json!([0b1001_0001 - 128, 0])
        );
        assert_eq!(
            serde_json::to_string(&OutputEncoding::Float.encode(vec![0.1, 1.0])).unwrap(),
            "[0.1,1.0]"
        );
    }

    #[test]
    fn unknown_encoding_is_bad_request() {
        assert_eq!(OutputEncoding::parse("int4").unwrap_err().status(), 400);
    }
}
