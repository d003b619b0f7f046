//! Ids from names, and proxies' base paths: one set of rules for the
//! gateway's configuration file and for admin, so an id or base path admin
//! hands out is one every gateway accepts, and the other way round.

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

/// Whether a base path is made of characters safe in a URL path.
pub fn valid_context(context: &str) -> bool {
    context
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b))
        && !context.contains("//")
}

/// What [`valid_context`] allows, as the error message says it.
pub const CONTEXT_RULE: &str = "may hold letters, digits, `-`, `_`, `.`, `~` and single `/`";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_contexts() {
        assert_eq!(slugify("Chat API  (prod)"), "chat-api-prod");
        assert_eq!(slugify("--"), "");
        assert_eq!(normalise_context("llmtest/"), "/llmtest");
        assert_eq!(normalise_context(""), "/");
        assert_eq!(normalise_context("/a/b/"), "/a/b");
        assert!(valid_context("/a/b-c"));
        assert!(!valid_context("/a b"));
        assert!(!valid_context("/a//b"));
    }
}
