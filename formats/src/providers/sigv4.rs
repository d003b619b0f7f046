//! AWS Signature Version 4 request signing, for Bedrock.
//!
//! [`sign`] takes a request as it will be sent (method, `Host`, the path and
//! query exactly as they go on the wire, the headers to sign and the body)
//! and returns the headers to add: `x-amz-date`, `x-amz-content-sha256`,
//! `x-amz-security-token` (when the credentials carry a session token) and
//! `authorization`. [`authorization`] is the primitive under it, for callers
//! (and tests) that choose every signed header themselves.
//!
//! The algorithm, in short: a canonical request (method, canonical URI,
//! canonical query, canonical headers, signed header names, hex SHA-256 of
//! the body) is hashed into a string to sign together with the timestamp
//! and the credential scope `date/region/service/aws4_request`; a key
//! derived from the secret by chained HMAC-SHA256 over that scope signs it.
//!
//! Two details decide whether AWS computes the same signature:
//! - The canonical URI is the URI-encoding of every path segment *of the
//!   path as sent*. For every service but S3 that means a path that is
//!   already percent-encoded is encoded a second time: a Bedrock model id
//!   `anthropic.claude-3-5-sonnet-20240620-v1:0` travels as `...-v1%3A0`
//!   and is signed as `...-v1%253A0`. S3 signs the sent path as is.
//! - Header values are trimmed and runs of spaces collapsed to one; names
//!   are lowercased and sorted; repeated names are joined with commas.
//!
//! Paths are not normalised (no removal of `.`/`..` segments or repeated
//! slashes): the gateway builds its own paths and never produces those.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::AwsCredentials;

/// The signing algorithm named in the `Authorization` header.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// A request to sign, described as it will be sent.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    /// The AWS service signing name (`bedrock` for Bedrock Runtime).
    pub service: &'a str,
    /// The HTTP method, uppercase (`POST`).
    pub method: &'a str,
    /// The `Host` header the request is sent with (`host[:port]`).
    pub host: &'a str,
    /// Path and query exactly as they go on the wire (already
    /// percent-encoded where needed).
    pub path_and_query: &'a str,
    /// Further headers to sign, e.g. `content-type`. Must not contain
    /// `host` or the `x-amz-*` headers that [`sign`] adds itself.
    pub headers: &'a [(&'a str, &'a str)],
    /// The request body.
    pub payload: &'a [u8],
}

/// Signs `req` with `creds` at time `now`, in the region of `creds`, and
/// returns the headers to add to the request: `x-amz-date`,
/// `x-amz-content-sha256`, `x-amz-security-token` (only with a session
/// token) and `authorization`.
///
/// The signed headers are `host`, the request's `headers`, `x-amz-date`,
/// `x-amz-content-sha256` and `x-amz-security-token` (when present). The
/// request must be sent with exactly `req.host` as its `Host` header.
pub fn sign(
    creds: &AwsCredentials,
    req: &SignRequest<'_>,
    now: SystemTime,
) -> Vec<(&'static str, String)> {
    debug_assert!(
        req.headers.iter().all(|(n, _)| {
            let n = n.to_ascii_lowercase();
            n != "host" && n != "authorization" && !n.starts_with("x-amz-")
        }),
        "sign() adds host and x-amz-* headers itself"
    );
    let amz_date = format_amz_date(now);
    let payload_hash = hex::encode(Sha256::digest(req.payload));

    let mut headers: Vec<(&str, &str)> = Vec::with_capacity(req.headers.len() + 4);
    headers.push(("host", req.host));
    headers.extend_from_slice(req.headers);
    headers.push(("x-amz-date", &amz_date));
    headers.push(("x-amz-content-sha256", &payload_hash));
    if let Some(token) = &creds.session_token {
        headers.push(("x-amz-security-token", token));
    }
    let auth = authorization(
        creds,
        req.service,
        req.method,
        req.path_and_query,
        &headers,
        &payload_hash,
        &amz_date,
    );

    let mut out = vec![
        ("x-amz-date", amz_date.clone()),
        ("x-amz-content-sha256", payload_hash.clone()),
    ];
    if let Some(token) = &creds.session_token {
        out.push(("x-amz-security-token", token.clone()));
    }
    out.push(("authorization", auth));
    out
}

/// The `Authorization` header value for a request whose signed headers are
/// exactly `headers` (which must include `host` and `x-amz-date`, the latter
/// equal to `amz_date`), with the body's hex SHA-256 `payload_hash`.
pub fn authorization(
    creds: &AwsCredentials,
    service: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
    amz_date: &str,
) -> String {
    let (canonical, signed_headers) =
        canonical_request(service, method, path_and_query, headers, payload_hash);
    // The scope's date is the day of the timestamp: its first 8 characters.
    let date = amz_date.get(..8).unwrap_or(amz_date);
    let scope = format!("{date}/{}/{service}/aws4_request", creds.region);
    let to_sign = string_to_sign(amz_date, &scope, &canonical);
    let key = signing_key(&creds.secret_access_key, date, &creds.region, service);
    let signature = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        creds.access_key_id
    )
}

/// The canonical request and the `;`-joined signed header names.
fn canonical_request(
    service: &str,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    payload_hash: &str,
) -> (String, String) {
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));

    // Lowercase names, trimmed values with inner runs of spaces collapsed;
    // a stable sort keeps repeated names in their given order, and their
    // values are joined with commas.
    let mut canon: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), collapse_spaces(v)))
        .collect();
    canon.sort_by(|a, b| a.0.cmp(&b.0));
    let mut merged: Vec<(String, String)> = Vec::with_capacity(canon.len());
    for (name, value) in canon {
        match merged.last_mut() {
            Some((last, joined)) if *last == name => {
                joined.push(',');
                joined.push_str(&value);
            }
            _ => merged.push((name, value)),
        }
    }

    let mut canonical_headers = String::new();
    for (name, value) in &merged {
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(value);
        canonical_headers.push('\n');
    }
    let signed_headers = merged
        .iter()
        .map(|(n, _)| n.as_str())
        .collect::<Vec<_>>()
        .join(";");

    let request = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        canonical_uri(path, service),
        canonical_query(query),
    );
    (request, signed_headers)
}

/// The canonical URI of a path as sent on the wire. Every service except
/// S3 URI-encodes each segment again (so `%3A` becomes `%253A`); S3 signs
/// the sent path unchanged.
fn canonical_uri(path: &str, service: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    if service == "s3" {
        return path.to_owned();
    }
    path.split('/')
        .map(|segment| uri_encode(segment, true))
        .collect::<Vec<_>>()
        .join("/")
}

/// The canonical query: each name and value decoded, then URI-encoded with
/// the strict SigV4 rules (so already-encoded and raw queries sign alike),
/// sorted by name and then value.
fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode_bytes(&percent_decode(name), true),
                uri_encode_bytes(&percent_decode(value), true),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// The string to sign: algorithm, timestamp, scope and the hex SHA-256 of
/// the canonical request, one per line.
fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    )
}

/// The signing key: HMAC-SHA256 chained over date, region, service and
/// `aws4_request`, starting from `"AWS4" + secret`.
fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac_sha256(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac_sha256(&k_date, region.as_bytes());
    let k_service = hmac_sha256(&k_region, service.as_bytes());
    hmac_sha256(&k_service, b"aws4_request")
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Trims a header value and collapses inner runs of spaces to one space.
fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// URI-encodes `s` the SigV4 way: every byte but the unreserved characters
/// `A-Z a-z 0-9 - _ . ~` becomes `%XX` (uppercase hex); `/` is kept when
/// `encode_slash` is false. Use it with `encode_slash = true` for one path
/// segment, such as a Bedrock model id.
pub fn uri_encode(s: &str, encode_slash: bool) -> String {
    uri_encode_bytes(s.as_bytes(), encode_slash)
}

fn uri_encode_bytes(bytes: &[u8], encode_slash: bool) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let keep = b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (b == b'/' && !encode_slash);
        if keep {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// Decodes `%XX` escapes; anything else (including a malformed `%`) is
/// kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|c| hex_value(*c)),
                bytes.get(i + 2).and_then(|c| hex_value(*c)),
            )
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Formats a time as SigV4's ISO 8601 basic timestamp, `YYYYMMDDTHHMMSSZ`
/// (UTC). Times before the Unix epoch are clamped to it.
pub fn format_amz_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a count of days since
/// 1970-01-01. Works in 400-year eras (146,097 days each) counted from
/// 0000-03-01, so that the leap day falls at the end of each "year".
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 719,468 days separate 0000-03-01 from 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    // Year of the era, correcting for the leap days of 4-, 100- and
    // 400-year cycles that precede this day.
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March (0) to February (11); 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    // The credentials of AWS's published SigV4 test suite (2015 edition)
    // and of its signing examples.
    fn suite_creds(session_token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(str::to_owned),
            region: "us-east-1".into(),
        }
    }

    const SUITE_DATE: &str = "20150830T123600Z";
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const SUITE_SCOPE: &str = "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

    /// Signs one case of the test suite: host and x-amz-date plus `extra`
    /// headers, empty body, service "service".
    fn suite_case(method: &str, path: &str, extra: &[(&str, &str)]) -> String {
        let mut headers = vec![("Host", "example.amazonaws.com")];
        headers.extend_from_slice(extra);
        headers.push(("X-Amz-Date", SUITE_DATE));
        authorization(
            &suite_creds(None),
            "service",
            method,
            path,
            &headers,
            EMPTY_SHA256,
            SUITE_DATE,
        )
    }

    fn expected(signed: &str, signature: &str) -> String {
        format!(
            "AWS4-HMAC-SHA256 Credential={SUITE_SCOPE}, SignedHeaders={signed}, Signature={signature}"
        )
    }

    #[test]
    fn suite_get_vanilla() {
        assert_eq!(
            suite_case("GET", "/", &[]),
            expected(
                "host;x-amz-date",
                "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn suite_get_vanilla_canonical_request_and_string_to_sign() {
        // get-vanilla.creq and get-vanilla.sts of the suite.
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", SUITE_DATE),
        ];
        let (creq, signed) = canonical_request("service", "GET", "/", &headers, EMPTY_SHA256);
        assert_eq!(
            creq,
            "GET\n/\n\nhost:example.amazonaws.com\nx-amz-date:20150830T123600Z\n\nhost;x-amz-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(signed, "host;x-amz-date");
        assert_eq!(
            string_to_sign(SUITE_DATE, "20150830/us-east-1/service/aws4_request", &creq),
            "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/service/aws4_request\nbb579772317eb040ac9ed261061d46c1f17a8133879d6129b6e1c25292927e63"
        );
    }

    #[test]
    fn suite_post_vanilla() {
        assert_eq!(
            suite_case("POST", "/", &[]),
            expected(
                "host;x-amz-date",
                "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
            )
        );
    }

    #[test]
    fn suite_query_sorted_by_name() {
        // get-vanilla-query-order-key-case: /?Param2=value2&Param1=value1
        assert_eq!(
            suite_case("GET", "/?Param2=value2&Param1=value1", &[]),
            expected(
                "host;x-amz-date",
                "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
            )
        );
        // post-vanilla-query
        assert_eq!(
            suite_case("POST", "/?Param1=value1", &[]),
            expected(
                "host;x-amz-date",
                "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"
            )
        );
    }

    #[test]
    fn suite_query_encoding() {
        let unreserved = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        assert_eq!(
            suite_case("GET", &format!("/?{unreserved}={unreserved}"), &[]),
            expected(
                "host;x-amz-date",
                "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"
            )
        );
        // get-vanilla-utf8-query: the name U+1234 signs as %E1%88%B4, raw or
        // already encoded.
        let want = expected(
            "host;x-amz-date",
            "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04",
        );
        assert_eq!(suite_case("GET", "/?\u{1234}=bar", &[]), want);
        assert_eq!(suite_case("GET", "/?%E1%88%B4=bar", &[]), want);
    }

    #[test]
    fn suite_path_encoding() {
        // get-utf8: the path /U+1234 signs as /%E1%88%B4.
        assert_eq!(
            suite_case("GET", "/\u{1234}", &[]),
            expected(
                "host;x-amz-date",
                "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"
            )
        );
        // get-unreserved
        assert_eq!(
            suite_case(
                "GET",
                "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                &[]
            ),
            expected(
                "host;x-amz-date",
                "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"
            )
        );
        // normalize-path/get-space
        assert_eq!(
            suite_case("GET", "/example space/", &[]),
            expected(
                "host;x-amz-date",
                "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"
            )
        );
    }

    #[test]
    fn suite_header_values_trimmed_and_duplicates_joined() {
        // get-header-value-trim
        assert_eq!(
            suite_case(
                "GET",
                "/",
                &[("My-Header1", " value1"), ("My-Header2", " \"a   b   c\"")]
            ),
            expected(
                "host;my-header1;my-header2;x-amz-date",
                "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"
            )
        );
        // get-header-key-duplicate: values joined in the order given.
        assert_eq!(
            suite_case(
                "GET",
                "/",
                &[
                    ("My-Header1", "value2"),
                    ("My-Header1", "value2"),
                    ("My-Header1", "value1")
                ]
            ),
            expected(
                "host;my-header1;x-amz-date",
                "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"
            )
        );
    }

    #[test]
    fn suite_session_token_signed() {
        // post-sts-token/post-sts-header-before: the token is a signed header.
        let token = "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA==";
        let headers = [
            ("Host", "example.amazonaws.com"),
            ("X-Amz-Date", SUITE_DATE),
            ("X-Amz-Security-Token", token),
        ];
        assert_eq!(
            authorization(
                &suite_creds(Some(token)),
                "service",
                "POST",
                "/",
                &headers,
                EMPTY_SHA256,
                SUITE_DATE
            ),
            expected(
                "host;x-amz-date;x-amz-security-token",
                "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"
            )
        );
    }

    #[test]
    fn iam_list_users_example() {
        // The GET ListUsers example of AWS's "create a signed request" guide.
        let headers = [
            (
                "Content-Type",
                "application/x-www-form-urlencoded; charset=utf-8",
            ),
            ("Host", "iam.amazonaws.com"),
            ("X-Amz-Date", SUITE_DATE),
        ];
        assert_eq!(
            authorization(
                &suite_creds(None),
                "iam",
                "GET",
                "/?Action=ListUsers&Version=2010-05-08",
                &headers,
                EMPTY_SHA256,
                SUITE_DATE
            ),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn derived_signing_key_example() {
        // "Examples of how to derive a signing key for Signature Version 4".
        let key = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            hex::encode(key),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn sign_matches_s3_get_object_example() {
        // The S3 "GET Object" example, which signs x-amz-content-sha256 as
        // `sign` does: GET /test.txt with Range, empty body.
        let creds = AwsCredentials {
            access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
            region: "us-east-1".into(),
        };
        let req = SignRequest {
            service: "s3",
            method: "GET",
            host: "examplebucket.s3.amazonaws.com",
            path_and_query: "/test.txt",
            headers: &[("range", "bytes=0-9")],
            payload: b"",
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_369_353_600); // 2013-05-24T00:00:00Z
        let headers = sign(&creds, &req, now);
        assert_eq!(
            headers,
            vec![
                ("x-amz-date", "20130524T000000Z".to_owned()),
                ("x-amz-content-sha256", EMPTY_SHA256.to_owned()),
                (
                    "authorization",
                    "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn sign_adds_session_token_and_signs_it() {
        let creds = suite_creds(Some("TOKEN"));
        let req = SignRequest {
            service: "bedrock",
            method: "POST",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            path_and_query: "/model/m/converse",
            headers: &[("content-type", "application/json")],
            payload: b"{}",
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let headers = sign(&creds, &req, now);
        let names: Vec<&str> = headers.iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "x-amz-date",
                "x-amz-content-sha256",
                "x-amz-security-token",
                "authorization"
            ]
        );
        assert_eq!(headers[2].1, "TOKEN");
        assert_eq!(
            headers[1].1,
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert!(headers[3].1.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
        ));
    }

    #[test]
    fn non_s3_paths_are_encoded_twice() {
        // What travels on the wire is %3A; what is signed is %253A.
        assert_eq!(
            uri_encode("anthropic.claude-3-5-sonnet-20240620-v1:0", true),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(
            canonical_uri(
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
                "bedrock"
            ),
            "/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/converse"
        );
        assert_eq!(
            canonical_uri("/bucket/a%3Ab", "s3"),
            "/bucket/a%3Ab",
            "S3 signs the sent path as is"
        );
        assert_eq!(canonical_uri("", "bedrock"), "/");
        assert_eq!(uri_encode("a/b c", false), "a/b%20c");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }

    #[test]
    fn canonical_query_edge_cases() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a"), "a=&b=2");
        assert_eq!(canonical_query("a=2&a=1"), "a=1&a=2");
        assert_eq!(canonical_query("x=a+b%2fc"), "x=a%2Bb%2Fc");
        assert_eq!(canonical_query("x=%zz"), "x=%25zz");
    }

    #[test]
    fn amz_dates() {
        let at = |s: u64| format_amz_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "19700101T000000Z");
        assert_eq!(at(1_440_938_160), "20150830T123600Z");
        assert_eq!(at(951_868_799), "20000229T235959Z");
        assert_eq!(at(951_868_800), "20000301T000000Z");
        assert_eq!(at(1_709_164_800), "20240229T000000Z");
        assert_eq!(at(4_107_542_400), "21000301T000000Z");
        assert_eq!(at(4_107_542_399), "21000228T235959Z");
        assert_eq!(
            format_amz_date(UNIX_EPOCH - Duration::from_secs(5)),
            "19700101T000000Z"
        );
    }
}
