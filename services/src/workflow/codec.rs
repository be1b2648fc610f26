//! `portable_json`: the payload encoding every DBOS implementation can read.
//!
//! Inputs are `{"positionalArgs":[...],"namedArgs":{...}}`; a Rust workflow's input is a tuple
//! of its positional arguments (`(a, b)` is `[a, b]`, `()` is `[]`). Outputs are plain compact
//! JSON. Errors are `{"name","message","code","data"}`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{Error, PortableError};

/// The `serialization` column value of everything this system writes.
pub const PORTABLE_JSON: &str = "portable_json";

/// Encodes a workflow input (a tuple of positional arguments) as portable JSON.
///
/// # Errors
/// The input does not serialise to a JSON array (or null for `()`).
pub fn encode_input<I: Serialize>(input: &I) -> Result<String, Error> {
    let args = match serde_json::to_value(input).map_err(Error::encode)? {
        Value::Null => Vec::new(),
        Value::Array(a) => a,
        other => {
            return Err(Error::Encode(format!(
                "a workflow input must be a tuple of positional arguments, e.g. (x,) for one; got {other}"
            )))
        }
    };
    // Field order as DBOS for Python writes it: namedArgs first.
    #[derive(Serialize)]
    struct Inputs {
        #[serde(rename = "namedArgs")]
        named_args: serde_json::Map<String, Value>,
        #[serde(rename = "positionalArgs")]
        positional_args: Vec<Value>,
    }
    serde_json::to_string(&Inputs {
        positional_args: args,
        named_args: Default::default(),
    })
    .map_err(Error::encode)
}

/// Decodes portable inputs: positional arguments into a tuple, or named arguments (with no
/// positional ones) into a struct whose fields are the names.
///
/// # Errors
/// Malformed JSON, a mix of positional and named arguments, or arguments that do not match
/// the input type.
pub fn decode_input<I: DeserializeOwned>(text: &str) -> Result<I, Error> {
    #[derive(Deserialize)]
    struct Inputs {
        #[serde(rename = "positionalArgs", default)]
        positional_args: Vec<Value>,
        #[serde(rename = "namedArgs", default)]
        named_args: Option<serde_json::Map<String, Value>>,
    }
    let inputs: Inputs = serde_json::from_str(text)
        .map_err(|e| Error::Encode(format!("workflow inputs are not portable JSON: {e}")))?;
    if let Some(named) = inputs.named_args.filter(|m| !m.is_empty()) {
        if !inputs.positional_args.is_empty() {
            return Err(Error::Encode(
                "Rust workflows take positional or named arguments, not both".into(),
            ));
        }
        let named = Value::Object(named);
        return serde_json::from_value(named.clone())
            .map_err(|e| Error::Encode(format!("workflow arguments {named} do not match: {e}")));
    }
    let args = Value::Array(inputs.positional_args);
    // `()` deserialises from null, not from [].
    let value = match &args {
        Value::Array(a) if a.is_empty() => serde_json::from_value::<I>(Value::Null)
            .or_else(|_| serde_json::from_value::<I>(args.clone())),
        _ => serde_json::from_value::<I>(args.clone()),
    };
    value.map_err(|e| Error::Encode(format!("workflow arguments {args} do not match: {e}")))
}

/// Encodes an output value.
///
/// # Errors
/// The value cannot be serialised.
pub fn encode<T: Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(Error::encode)
}

/// Decodes an output value.
///
/// # Errors
/// The text is not JSON of the expected type.
pub fn decode<T: DeserializeOwned>(text: &str) -> Result<T, Error> {
    serde_json::from_str(text)
        .map_err(|e| Error::Encode(format!("recorded output {text:?} does not decode: {e}")))
}

/// Encodes an error as `{"name","message","code","data"}`.
pub fn encode_error(e: &PortableError) -> String {
    serde_json::to_string(e).expect("portable errors always serialise")
}

/// Decodes a recorded error; text that is not a portable error becomes its message.
pub fn decode_error(text: &str) -> PortableError {
    serde_json::from_str(text).unwrap_or_else(|_| PortableError {
        name: "Error".into(),
        message: text.to_owned(),
        code: None,
        data: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_positional_args_with_empty_named_args() {
        assert_eq!(
            encode_input(&(1, "a")).unwrap(),
            r#"{"namedArgs":{},"positionalArgs":[1,"a"]}"#
        );
        assert_eq!(
            encode_input(&()).unwrap(),
            r#"{"namedArgs":{},"positionalArgs":[]}"#
        );
        let (n, s): (i64, String) =
            decode_input(r#"{"namedArgs":{},"positionalArgs":[7,"x"]}"#).unwrap();
        assert_eq!((n, s.as_str()), (7, "x"));
        decode_input::<()>(r#"{"positionalArgs":[],"namedArgs":{}}"#).unwrap();
        assert!(encode_input(&5).is_err());
        assert!(decode_input::<(i64,)>(r#"{"positionalArgs":[1],"namedArgs":{"k":1}}"#).is_err());
        #[derive(Deserialize)]
        struct Named {
            name: String,
            count: i64,
        }
        let n: Named =
            decode_input(r#"{"positionalArgs":[],"namedArgs":{"name":"t","count":4}}"#).unwrap();
        assert_eq!((n.name.as_str(), n.count), ("t", 4));
        assert!(decode_input::<(i64,)>("not json").is_err());
    }

    #[test]
    fn errors_round_trip_in_the_portable_shape() {
        let e = PortableError {
            name: "ValueError".into(),
            message: "bad".into(),
            code: Some(serde_json::json!(3)),
            data: None,
        };
        let text = encode_error(&e);
        assert_eq!(text, r#"{"name":"ValueError","message":"bad","code":3}"#);
        assert_eq!(decode_error(&text), e);
        assert_eq!(decode_error("boom").message, "boom");
    }
}
