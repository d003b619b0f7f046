//! Ids from names, base paths and URLs. The id and base-path rules are the
//! gateway's own (`portcullis_config::names`), so an id admin hands out is
//! one every gateway accepts.

pub use portcullis_config::names::{CONTEXT_RULE, normalise_context, slugify, valid_context};

/// An absolute http(s) URL with a host.
pub fn valid_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) => {
            let host = r.split(['/', '?', '#']).next().unwrap_or("");
            !host.is_empty() && !host.contains(char::is_whitespace)
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(valid_url("http://127.0.0.1:8080"));
        assert!(!valid_url("ftp://x"));
        assert!(!valid_url("http://"));
    }
}
