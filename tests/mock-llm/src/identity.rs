//! The identity endpoints providers' credentials come from, so a gateway
//! can fetch and refresh them without the internet:
//!
//! - Entra ID's OAuth2 token endpoint, client credentials grant
//!   (`POST /{tenant}/oauth2/v2.0/token`);
//! - Google's OAuth2 token endpoint, JWT bearer grant (`POST /token`): the
//!   assertion's RS256 signature is checked against the test service
//!   account's key (`testdata/test-service-account.json`);
//! - AWS STS's query API (`POST /`: `AssumeRole`,
//!   `AssumeRoleWithWebIdentity`), answering XML;
//! - EC2 instance metadata, IMDSv2 (`PUT /latest/api/token`, then
//!   `GET /latest/meta-data/iam/security-credentials/[role]`).
//!
//! Every credential issued is remembered with its expiry, and the provider
//! endpoints refuse a credential of this mock's making that it did not
//! issue or that has expired (`check_bearer`, `check_aws`), so a test
//! proves that a gateway uses the refreshed credential. `POST
//! /_mock/identity` sets the lifetime of what is issued and can make the
//! token endpoints fail; `GET /_mock/identity` lists what was issued.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The prefix of the bearer tokens this mock issues.
pub const TOKEN_PREFIX: &str = "mock-oauth-";
/// The prefix of the temporary AWS access key ids this mock issues.
pub const AWS_KEY_PREFIX: &str = "ASIAMOCK";
/// The role IMDS reports for the instance.
pub const IMDS_ROLE: &str = "portcullis-mock-role";

/// The test-only service account whose JWTs `POST /token` accepts.
pub const TEST_SERVICE_ACCOUNT: &str = include_str!("../testdata/test-service-account.json");

/// What the identity endpoints issue, and whether they fail.
#[derive(Debug)]
pub(crate) struct Identity {
    /// Lifetime of issued tokens and keys.
    lifetime: Duration,
    /// Token endpoints (all four) answer errors while set.
    fail: bool,
    issued: Vec<Issued>,
    imds_tokens: Vec<(String, SystemTime)>,
    next: u64,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            lifetime: Duration::from_secs(3600),
            fail: false,
            issued: Vec::new(),
            imds_tokens: Vec::new(),
            next: 0,
        }
    }
}

/// One credential issued.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Issued {
    /// `entra`, `google`, `sts` or `imds`.
    pub by: &'static str,
    /// The bearer token, or the AWS access key id.
    pub id: String,
    #[serde(skip)]
    pub session_token: Option<String>,
    /// Unix seconds.
    pub expires_at: u64,
    /// Unix milliseconds: when it was issued and when it expires, so a
    /// test can tell a refresh came before the expiry.
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
    #[serde(skip)]
    expires: SystemTime,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Body of `POST /_mock/identity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct IdentitySettings {
    /// Lifetime of what is issued from now on, in seconds.
    pub lifetime_s: Option<u64>,
    /// Makes every token endpoint fail (true) or work again (false).
    pub fail: Option<bool>,
}

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// ISO 8601 UTC, as STS and IMDS write expirations.
fn iso8601(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Identity {
    pub(crate) fn configure(&mut self, s: IdentitySettings) {
        if let Some(l) = s.lifetime_s {
            self.lifetime = Duration::from_secs(l);
        }
        if let Some(f) = s.fail {
            self.fail = f;
        }
    }

    pub(crate) fn issued(&self) -> Vec<Issued> {
        self.issued.clone()
    }

    fn issue(&mut self, by: &'static str, aws: bool) -> Issued {
        self.next += 1;
        let n = self.next;
        let now = SystemTime::now();
        let expires = now + self.lifetime;
        let (id, session_token) = if aws {
            (
                format!("{AWS_KEY_PREFIX}{n:012}"),
                Some(format!("mock-session-{by}-{n}")),
            )
        } else {
            (format!("{TOKEN_PREFIX}{by}-{n}"), None)
        };
        let issued = Issued {
            by,
            id,
            session_token,
            expires_at: unix_s(expires),
            issued_at_ms: unix_ms(now),
            expires_at_ms: unix_ms(expires),
            expires,
        };
        self.issued.push(issued.clone());
        issued
    }

    /// Whether `token` is one this mock issued and still valid; tokens of
    /// other shapes (static test keys) are not this module's to judge.
    pub(crate) fn check_bearer(&self, token: &str) -> Result<(), &'static str> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(());
        }
        match self.issued.iter().find(|i| i.id == token) {
            None => Err("unknown"),
            Some(i) if i.expires <= SystemTime::now() => Err("expired"),
            Some(_) => Ok(()),
        }
    }

    /// The same for a SigV4 access key id and its session token.
    pub(crate) fn check_aws(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<(), &'static str> {
        if !access_key_id.starts_with(AWS_KEY_PREFIX) {
            return Ok(());
        }
        match self.issued.iter().find(|i| i.id == access_key_id) {
            None => Err("unknown"),
            Some(i) if i.session_token.as_deref() != session_token => Err("unknown"),
            Some(i) if i.expires <= SystemTime::now() => Err("expired"),
            Some(_) => Ok(()),
        }
    }

    /// `POST /{tenant}/oauth2/v2.0/token`: Entra ID's client credentials
    /// grant. Errors are Entra's JSON (`error`, `error_description` with
    /// an AADSTS code).
    pub(crate) fn entra_token(&mut self, tenant: &str, body: &[u8]) -> Response {
        let form = parse_form(body);
        let entra_error = |status: StatusCode, error: &str, description: &str| {
            (
                status,
                axum::Json(json!({
                    "error": error,
                    "error_description": description,
                    "error_codes": [description.split(':').next().unwrap_or("").trim_start_matches("AADSTS").parse::<u64>().unwrap_or(0)],
                    "timestamp": iso8601(SystemTime::now()).replace('T', " "),
                    "trace_id": "00000000-0000-0000-0000-000000000000",
                    "correlation_id": "00000000-0000-0000-0000-000000000000",
                })),
            )
                .into_response()
        };
        if self.fail {
            return entra_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "AADSTS90033: A transient error has occurred. Please try again.",
            );
        }
        if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "AADSTS70003: The app requested an unsupported grant type.",
            );
        }
        if form.get("client_id").is_none_or(|c| c.is_empty()) {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS900144: The request body must contain the following parameter: 'client_id'.",
            );
        }
        if form.get("client_secret").is_none_or(|c| c.is_empty()) {
            return entra_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided.",
            );
        }
        if !form.get("scope").is_some_and(|s| s.ends_with("/.default")) {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_scope",
                "AADSTS1002012: The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
            );
        }
        if tenant.is_empty() {
            return entra_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "AADSTS900023: Specified tenant identifier is neither a valid DNS name, nor a valid external domain.",
            );
        }
        let issued = self.issue("entra", false);
        axum::Json(json!({
            "token_type": "Bearer",
            "expires_in": self.lifetime.as_secs(),
            "ext_expires_in": self.lifetime.as_secs(),
            "access_token": issued.id,
        }))
        .into_response()
    }

    /// `POST /token`: Google's JWT bearer grant for service accounts.
    pub(crate) fn google_token(&mut self, body: &[u8]) -> Response {
        let form = parse_form(body);
        let google_error = |status: StatusCode, error: &str, description: &str| {
            (
                status,
                axum::Json(json!({"error": error, "error_description": description})),
            )
                .into_response()
        };
        if self.fail {
            return google_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "internal_failure",
                "The service is currently unavailable.",
            );
        }
        if form.get("grant_type").map(String::as_str)
            != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        {
            return google_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "Invalid grant_type: ",
            );
        }
        let Some(assertion) = form.get("assertion") else {
            return google_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "Missing required parameter: assertion",
            );
        };
        if let Err(why) = verify_assertion(assertion) {
            return google_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
        }
        let issued = self.issue("google", false);
        axum::Json(json!({
            "access_token": issued.id,
            "expires_in": self.lifetime.as_secs(),
            "token_type": "Bearer",
        }))
        .into_response()
    }

    /// `POST /`: STS's query API, `AssumeRole` (signed with the caller's
    /// keys) and `AssumeRoleWithWebIdentity` (unsigned, with the token).
    pub(crate) fn sts(&mut self, authorization: Option<&str>, body: &[u8]) -> Response {
        let form = parse_form(body);
        let action = form.get("Action").cloned().unwrap_or_default();
        if self.fail {
            return sts_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "Receiver",
                "ServiceUnavailable",
                "Service is unable to handle request.",
            );
        }
        let Some(role_arn) = form
            .get("RoleArn")
            .filter(|r| r.starts_with("arn:aws:iam::"))
        else {
            return sts_error(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ValidationError",
                "1 validation error detected: Value at 'roleArn' failed to satisfy constraint: Member must have length greater than or equal to 20",
            );
        };
        let session = form.get("RoleSessionName").cloned().unwrap_or_default();
        if session.is_empty() {
            return sts_error(
                StatusCode::BAD_REQUEST,
                "Sender",
                "ValidationError",
                "1 validation error detected: Value null at 'roleSessionName' failed to satisfy constraint: Member must not be null",
            );
        }
        let extra = match action.as_str() {
            "AssumeRole" => {
                // The caller signs with the keys it assumes the role with.
                if !authorization.is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256 Credential=")) {
                    return sts_error(
                        StatusCode::FORBIDDEN,
                        "Sender",
                        "MissingAuthenticationToken",
                        "Request is missing Authentication Token",
                    );
                }
                String::new()
            }
            "AssumeRoleWithWebIdentity" => {
                if form
                    .get("WebIdentityToken")
                    .is_none_or(|t| t.trim().is_empty())
                {
                    return sts_error(
                        StatusCode::BAD_REQUEST,
                        "Sender",
                        "InvalidIdentityToken",
                        "Couldn't retrieve verification key from your identity provider",
                    );
                }
                "<SubjectFromWebIdentityToken>system:serviceaccount:portcullis:gateway</SubjectFromWebIdentityToken><Audience>sts.amazonaws.com</Audience><Provider>oidc.mock.local</Provider>".to_owned()
            }
            other => {
                return sts_error(
                    StatusCode::BAD_REQUEST,
                    "Sender",
                    "InvalidAction",
                    &format!("Could not find operation {other} for version 2011-06-15"),
                );
            }
        };
        let issued = self.issue("sts", true);
        let role_name = role_arn.rsplit('/').next().unwrap_or("role");
        let xml = format!(
            "<{action}Response xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <{action}Result>\n    {extra}\n    <AssumedRoleUser>\n      <AssumedRoleId>AROAMOCK0000000000000:{session}</AssumedRoleId>\n      <Arn>arn:aws:sts::123456789012:assumed-role/{role_name}/{session}</Arn>\n    </AssumedRoleUser>\n    <Credentials>\n      <AccessKeyId>{}</AccessKeyId>\n      <SecretAccessKey>mock-secret-{}</SecretAccessKey>\n      <SessionToken>{}</SessionToken>\n      <Expiration>{}</Expiration>\n    </Credentials>\n  </{action}Result>\n  <ResponseMetadata>\n    <RequestId>00000000-0000-0000-0000-000000000000</RequestId>\n  </ResponseMetadata>\n</{action}Response>\n",
            issued.id,
            issued.id,
            issued.session_token.as_deref().unwrap_or_default(),
            iso8601(issued.expires),
        );
        (StatusCode::OK, [("content-type", "text/xml")], xml).into_response()
    }

    /// `PUT /latest/api/token`: an IMDSv2 session token.
    pub(crate) fn imds_token(&mut self, ttl: Option<&str>) -> Response {
        let Some(ttl) = ttl
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| (1..=21_600).contains(t))
        else {
            return (StatusCode::BAD_REQUEST, "").into_response();
        };
        self.next += 1;
        let token = format!("mock-imds-session-{}", self.next);
        self.imds_tokens
            .push((token.clone(), SystemTime::now() + Duration::from_secs(ttl)));
        (
            StatusCode::OK,
            [("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string())],
            token,
        )
            .into_response()
    }

    /// `GET /latest/meta-data/iam/security-credentials/[role]`, with an
    /// IMDSv2 session token.
    pub(crate) fn imds_credentials(&mut self, token: Option<&str>, role: &str) -> Response {
        let now = SystemTime::now();
        if !token.is_some_and(|t| self.imds_tokens.iter().any(|(k, exp)| k == t && *exp > now)) {
            return (StatusCode::UNAUTHORIZED, "").into_response();
        }
        if role.is_empty() {
            return (StatusCode::OK, IMDS_ROLE).into_response();
        }
        if role != IMDS_ROLE {
            return (StatusCode::NOT_FOUND, "").into_response();
        }
        if self.fail {
            return (StatusCode::INTERNAL_SERVER_ERROR, "").into_response();
        }
        let issued = self.issue("imds", true);
        axum::Json(json!({
            "Code": "Success",
            "LastUpdated": iso8601(now),
            "Type": "AWS-HMAC",
            "AccessKeyId": issued.id,
            "SecretAccessKey": format!("mock-secret-{}", issued.id),
            "Token": issued.session_token,
            "Expiration": iso8601(issued.expires),
        }))
        .into_response()
    }
}

fn sts_error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let xml = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  <Error>\n    <Type>{kind}</Type>\n    <Code>{code}</Code>\n    <Message>{message}</Message>\n  </Error>\n  <RequestId>00000000-0000-0000-0000-000000000000</RequestId>\n</ErrorResponse>\n"
    );
    (status, [("content-type", "text/xml")], xml).into_response()
}

/// An `application/x-www-form-urlencoded` body; the first value of a name
/// wins.
fn parse_form(body: &[u8]) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(body);
    let mut out = BTreeMap::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(crate::exchange::percent_decode(k, true))
            .or_insert_with(|| crate::exchange::percent_decode(v, true));
    }
    out
}

/// Checks a service account's JWT as Google does: RS256 over
/// `header.claims`, signed with the key of the test service account,
/// issued by it, for the cloud-platform scope, not expired.
fn verify_assertion(jwt: &str) -> Result<(), &'static str> {
    let mut parts = jwt.split('.');
    let (Some(header), Some(claims), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    };
    // JWTs leave base64url's padding out, but some client libraries keep
    // it (gcp_auth does) and Google takes both.
    let decode = |s: &str| {
        URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map_err(|_| "Invalid JWT Signature.")
    };
    let header: Value =
        serde_json::from_slice(&decode(header)?).map_err(|_| "Invalid JWT Signature.")?;
    if header["alg"] != "RS256" {
        return Err("Invalid JWT Signature.");
    }
    let signature = decode(sig)?;
    let signed = &jwt[..jwt.len() - sig.len() - 1];
    let key = test_public_key().ok_or("Invalid JWT Signature.")?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| "Invalid JWT Signature.")?;
    let claims: Value =
        serde_json::from_slice(&decode(claims)?).map_err(|_| "Invalid JWT Signature.")?;
    let account: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).unwrap_or_default();
    if claims["iss"] != account["client_email"] {
        return Err("Invalid JWT: the issuer is not the service account.");
    }
    let scopes = claims["scope"].as_str().unwrap_or_default();
    if !scopes
        .split(' ')
        .any(|s| s == "https://www.googleapis.com/auth/cloud-platform")
    {
        return Err("Invalid OAuth scope or ID token audience provided.");
    }
    let now = unix_s(SystemTime::now());
    let exp = claims["exp"].as_u64().unwrap_or(0);
    let iat = claims["iat"].as_u64().unwrap_or(0);
    if exp <= now || iat > now + 300 || exp.saturating_sub(iat) > 3600 {
        return Err(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.",
        );
    }
    Ok(())
}

/// The public half (PKCS#1 DER) of the test service account's key.
fn test_public_key() -> Option<Vec<u8>> {
    use ring::signature::KeyPair;
    let account: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).ok()?;
    let pem = account["private_key"].as_str()?;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(b64).ok()?;
    let pair = ring::signature::RsaKeyPair::from_pkcs8(&der).ok()?;
    Some(pair.public_key().as_ref().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(1_440_938_160)),
            "2015-08-30T12:36:00Z"
        );
        assert_eq!(
            iso8601(UNIX_EPOCH + Duration::from_secs(951_825_599)),
            "2000-02-29T11:59:59Z"
        );
    }

    #[test]
    fn issued_tokens_expire_and_unknown_ones_are_refused() {
        let mut id = Identity::default();
        id.configure(IdentitySettings {
            lifetime_s: Some(0),
            fail: None,
        });
        let t = id.issue("entra", false);
        assert_eq!(id.check_bearer(&t.id), Err("expired"));
        assert_eq!(id.check_bearer("mock-oauth-entra-999"), Err("unknown"));
        assert_eq!(id.check_bearer("sk-static"), Ok(()));
        id.configure(IdentitySettings {
            lifetime_s: Some(60),
            fail: None,
        });
        let k = id.issue("sts", true);
        assert_eq!(id.check_aws(&k.id, k.session_token.as_deref()), Ok(()));
        assert_eq!(id.check_aws(&k.id, Some("other")), Err("unknown"));
        assert_eq!(id.check_aws("AKIDSTATIC", None), Ok(()));
    }

    /// A JWT signed with the test service account's key, as a client
    /// library makes it.
    fn signed_jwt(claims: Value) -> String {
        signed_jwt_with(claims, &URL_SAFE_NO_PAD)
    }

    fn signed_jwt_with(claims: Value, b64: &impl Engine) -> String {
        let account: Value = serde_json::from_str(TEST_SERVICE_ACCOUNT).unwrap();
        let pem = account["private_key"].as_str().unwrap();
        let der: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let pair = ring::signature::RsaKeyPair::from_pkcs8(&STANDARD.decode(der).unwrap()).unwrap();
        let head = b64.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let body = b64.encode(claims.to_string());
        let signed = format!("{head}.{body}");
        let mut sig = vec![0; pair.public().modulus_len()];
        pair.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signed.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{signed}.{}", b64.encode(sig))
    }

    #[test]
    fn google_token_takes_a_jwt_of_the_test_account() {
        let now = unix_s(SystemTime::now());
        let claims = |scope: &str, exp: u64| {
            json!({"iss": "gateway@portcullis-test.iam.gserviceaccount.com", "scope": scope,
                "aud": "http://127.0.0.1/token", "iat": now, "exp": exp})
        };
        let good = signed_jwt(claims(
            "https://www.googleapis.com/auth/cloud-platform",
            now + 3600,
        ));
        assert_eq!(verify_assertion(&good), Ok(()));
        let padded = signed_jwt_with(
            claims("https://www.googleapis.com/auth/cloud-platform", now + 3600),
            &base64::engine::general_purpose::URL_SAFE,
        );
        assert!(padded.contains('='));
        assert_eq!(
            verify_assertion(&padded),
            Ok(()),
            "padded base64url (gcp_auth's) is taken"
        );
        let form = format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={good}"
        );
        let mut id = Identity::default();
        assert_eq!(id.google_token(form.as_bytes()).status(), 200);
        assert_eq!(id.issued()[0].by, "google");
        let expired = signed_jwt(claims(
            "https://www.googleapis.com/auth/cloud-platform",
            now - 1,
        ));
        assert!(verify_assertion(&expired).is_err());
        let other_scope = signed_jwt(claims("https://www.googleapis.com/auth/drive", now + 60));
        assert!(verify_assertion(&other_scope).is_err());
        let tampered = good.replacen('.', ".e30", 1);
        assert!(verify_assertion(&tampered).is_err());
    }

    #[test]
    fn failing_endpoints_answer_errors() {
        let mut id = Identity::default();
        id.configure(IdentitySettings {
            lifetime_s: None,
            fail: Some(true),
        });
        let form = b"grant_type=client_credentials&client_id=c&client_secret=s&scope=https%3A%2F%2Fcognitiveservices.azure.com%2F.default";
        assert_eq!(id.entra_token("t", form).status(), 503);
        id.configure(IdentitySettings {
            lifetime_s: None,
            fail: Some(false),
        });
        assert_eq!(id.entra_token("t", form).status(), 200);
        assert_eq!(
            id.entra_token(
                "t",
                b"grant_type=client_credentials&client_id=c&scope=x/.default"
            )
            .status(),
            401
        );
    }

    #[test]
    fn a_jwt_not_signed_by_the_test_key_is_refused() {
        assert!(test_public_key().is_some(), "the test key parses");
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"iss":"x"}"#);
        let forged = format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode([0u8; 256]));
        assert_eq!(verify_assertion(&forged), Err("Invalid JWT Signature."));
    }
}
