//! AWS Signature Version 4 request signing, for Bedrock, through
//! `aws-sigv4`, the signer of the AWS SDK for Rust (the gateway's own
//! implementation was replaced by it: it produced byte-identical
//! signatures, docs/benchmarks.md "AWS signing").
//!
//! [`sign`] takes a request as it will be sent (method, `Host`, the path and
//! query exactly as they go on the wire, the headers to sign and the body)
//! and returns the headers to add: `x-amz-date`, `x-amz-content-sha256`,
//! `x-amz-security-token` (when the credentials carry a session token) and
//! `authorization`.
//!
//! One detail decides whether AWS computes the same signature: the
//! canonical URI is the URI-encoding of every path segment *of the path as
//! sent*. For every service but S3 that means a path that is already
//! percent-encoded is encoded a second time: a Bedrock model id
//! `anthropic.claude-3-5-sonnet-20240620-v1:0` travels as `...-v1%3A0` and
//! is signed as `...-v1%253A0` (`aws-sigv4`'s default). S3 signs the sent
//! path as is.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

use super::AwsCredentials;
use crate::error::GatewayError;

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

/// The headers [`sign`] adds, in the order it returns them.
const ADDED: [&str; 4] = [
    "x-amz-date",
    "x-amz-content-sha256",
    "x-amz-security-token",
    "authorization",
];

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
) -> Result<Vec<(&'static str, String)>, GatewayError> {
    let failed = |e: &dyn std::fmt::Display| GatewayError::internal(format!("AWS signing: {e}"));
    let identity: Identity = Credentials::new(
        &creds.access_key_id,
        &creds.secret_access_key,
        creds.session_token.clone(),
        None,
        "portcullis",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    if req.service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&creds.region)
        .name(req.service)
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| failed(&e))?
        .into();
    let url = format!("https://{}{}", req.host, req.path_and_query);
    let headers = std::iter::once(("host", req.host)).chain(req.headers.iter().copied());
    let signable =
        SignableRequest::new(req.method, &url, headers, SignableBody::Bytes(req.payload))
            .map_err(|e| failed(&e))?;
    let (instructions, _) = aws_sigv4::http_request::sign(signable, &params)
        .map_err(|e| failed(&e))?
        .into_parts();
    let mut out: Vec<(&'static str, String)> = instructions
        .headers()
        .filter_map(|(name, value)| {
            ADDED
                .iter()
                .find(|a| a.eq_ignore_ascii_case(name))
                .map(|a| (*a, value.to_owned()))
        })
        .collect();
    out.sort_by_key(|(name, _)| ADDED.iter().position(|a| a == name));
    Ok(out)
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn suite_creds(session_token: Option<&str>) -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: session_token.map(str::to_owned),
            region: "us-east-1".into(),
        }
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
        let headers = sign(&creds, &req, now).unwrap();
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
        let headers = sign(&creds, &req, now).unwrap();
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
    fn a_bedrock_model_id_is_signed_encoded_twice() {
        // The signature the gateway's own SigV4 implementation computed for
        // this request (its canonical URI held `...-v1%253A0`), which
        // aws-sigv4 must reproduce byte for byte.
        let body = vec![b'x'; 1024];
        let req = SignRequest {
            service: "bedrock",
            method: "POST",
            host: "bedrock-runtime.us-east-1.amazonaws.com",
            path_and_query: "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
            headers: &[("content-type", "application/json")],
            payload: &body,
        };
        let now = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
        let headers = sign(&suite_creds(None), &req, now).unwrap();
        assert_eq!(
            headers.last().unwrap().1,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260921/us-east-1/bedrock/aws4_request, SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date, Signature=408bd0795aa581b91e2b4b957e3e513653c0a3cc49244122c7165d6393b457a9"
        );
    }

    #[test]
    fn path_segments_are_uri_encoded() {
        assert_eq!(
            uri_encode("anthropic.claude-3-5-sonnet-20240620-v1:0", true),
            "anthropic.claude-3-5-sonnet-20240620-v1%3A0"
        );
        assert_eq!(uri_encode("a/b c", false), "a/b%20c");
        assert_eq!(uri_encode("a/b", true), "a%2Fb");
    }
}
