//! The web console's static files, served at `/` of the admin listener
//! beside the REST API. The files are built from `console/` by the
//! `portcullis` binary's build script and handed to admin as a table
//! ([`ConsoleFiles`]), so this crate and its tests need neither npm nor the
//! built files. The console talks only to the public `/api/v1` routes.
//!
//! Routing in the console is by URL fragment (`/#/proxies/demo`), so the
//! server only ever needs `/`, `/index.html` and the files under
//! `assets/`; every other path keeps the API's JSON 404.

use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The console's files: path relative to the console root (`index.html`,
/// `assets/index-3f2a9c.js`) and contents.
pub type ConsoleFiles = &'static [(&'static str, &'static [u8])];

/// The console's Content-Security-Policy. `'unsafe-eval'` in `script-src`:
/// the settings forms validate against the hub's JSON Schemas with Ajv,
/// which compiles each schema into a function at run time. Inline styles:
/// the form library sets a few `style` attributes. Everything else comes
/// from this origin only, and no other site may frame the console.
const CSP: &str = "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// The media type of a console file, by extension.
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    match ext {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The console's answer to a GET or HEAD of `uri`, or `None` when the
/// path is not one of its files (the caller answers the API's 404).
pub fn serve(files: ConsoleFiles, method: &Method, uri: &Uri) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let path = uri.path();
    if path.starts_with("/api/") || path == "/api" {
        return None;
    }
    let wanted = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    let (name, body) = files.iter().find(|(name, _)| *name == wanted)?;
    // Vite names everything under assets/ by its content hash, so those
    // never change; index.html names the current ones and must be
    // revalidated on every load.
    let cache = if name.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut r = if method == Method::HEAD {
        StatusCode::OK.into_response()
    } else {
        (StatusCode::OK, *body).into_response()
    };
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(name)),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if name.ends_with(".html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        );
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: ConsoleFiles = &[
        ("index.html", b"<!doctype html><title>Portcullis</title>"),
        ("assets/index-abc123.js", b"console.log(1)"),
    ];

    fn get(path: &str) -> Option<Response> {
        serve(FILES, &Method::GET, &path.parse().unwrap())
    }

    #[test]
    fn index_is_revalidated_and_assets_are_immutable() {
        let r = get("/").unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
        let r = get("/assets/index-abc123.js").unwrap();
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            r.headers()[header::CACHE_CONTROL],
            "public, max-age=31536000, immutable"
        );
    }

    #[test]
    fn api_paths_other_methods_and_unknown_files_are_not_the_consoles() {
        assert!(get("/api/v1/nope").is_none());
        assert!(get("/assets/missing.js").is_none());
        assert!(get("/../Cargo.toml").is_none());
        assert!(serve(FILES, &Method::POST, &"/".parse().unwrap()).is_none());
    }
}
