//! JSON parsing that names the failing field without paying for it on
//! every body.
//!
//! `serde_path_to_error` tracks the path of every value it visits, which
//! costs a few percent of a request's CPU when done on each request and
//! answer. Bodies are parsed with plain `serde_json` first; only a body
//! that fails is parsed again, with path tracking, to say where.

use serde::de::DeserializeOwned;

/// Why a body did not parse, and where.
#[derive(Debug)]
pub struct JsonError {
    /// The failing field's path (`messages[0].content`), `.` for the root.
    pub path: String,
    pub inner: serde_json::Error,
}

impl JsonError {
    /// The body is not JSON at all (as opposed to JSON of the wrong shape).
    pub fn is_syntax(&self) -> bool {
        self.inner.is_syntax() || self.inner.is_eof()
    }
}

/// Parses `body` as one JSON value of type `T` (trailing characters are an
/// error, as with `serde_json::from_slice`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, JsonError> {
    let fast = match serde_json::from_slice(body) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let de = &mut serde_json::Deserializer::from_slice(body);
    match serde_path_to_error::deserialize::<_, T>(de) {
        Err(e) => Err(JsonError {
            path: e.path().to_string(),
            inner: e.into_inner(),
        }),
        // Only what follows the value was wrong.
        Ok(_) => Err(JsonError {
            path: ".".to_owned(),
            inner: fast,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Req {
        model: String,
        messages: Vec<Msg>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Msg {
        role: String,
    }

    #[test]
    fn names_the_field_only_when_parsing_fails() {
        let ok: Req = parse(br#"{"model":"m","messages":[{"role":"user"}]}"#).unwrap();
        assert_eq!(ok.model, "m");
        let e = parse::<Req>(br#"{"model":"m","messages":[{"role":7}]}"#).unwrap_err();
        assert_eq!(e.path, "messages[0].role");
        assert!(!e.is_syntax());
        let e = parse::<Req>(br#"{"model":"m","messages":[]} x"#).unwrap_err();
        assert_eq!(e.path, ".");
        assert!(e.is_syntax(), "{}", e.inner);
        let e = parse::<Req>(br#"{"model":"m""#).unwrap_err();
        assert!(e.is_syntax());
    }
}
