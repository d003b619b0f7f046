//! Ids from names, base paths and URLs: the same rules the gateway applies
//! to its configuration file, so an id admin hands out is one the gateway
//! accepts.

/// The id a name gets: lowercase ASCII letters and digits, runs of anything
/// else become one hyphen, no leading or trailing hyphen.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    let mut hyphen = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            if hyphen && !out.is_empty() {
                out.push('-');
            }
            hyphen = false;
            out.push(c.to_ascii_lowercase());
        } else {
            hyphen = true;
        }
    }
    out
}

/// A base path with a leading `/` and no trailing `/` (`/` stays `/`).
pub fn normalise_context(context: &str) -> String {
    let trimmed = context.trim().trim_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Whether a context is made of characters safe in a URL path.
pub fn valid_context(context: &str) -> bool {
    context
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !context.contains("//")
}

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
    fn slugs_contexts_urls() {
        assert_eq!(slugify("Chat API  (prod)"), "chat-api-prod");
        assert_eq!(slugify("--"), "");
        assert_eq!(normalise_context("llmtest/"), "/llmtest");
        assert_eq!(normalise_context(""), "/");
        assert!(valid_context("/a/b-c"));
        assert!(!valid_context("/a b"));
        assert!(valid_url("http://127.0.0.1:8080"));
        assert!(!valid_url("ftp://x"));
        assert!(!valid_url("http://"));
    }
}
