//! token-rate-limit: fixed-window limits on tokens and requests.
//!
//! On request, each limit reserves what the request may cost: one request,
//! or an estimate of its tokens (prompt characters / `chars_per_token`,
//! plus `max_tokens` or `default_completion_tokens` for the answer). A
//! reservation that would pass a limit rejects the request with 429 and
//! `retry-after`, and undoes the reservations already made. After the
//! response, the estimate is replaced by the usage the provider reported
//! (streams included); a failed request gives its tokens back. A stream
//! the client left early is settled with the usage the gateway charged it
//! (what was generated until then), not given back.
//!
//! Windows are aligned to the clock (a minute window resets on the
//! minute), so every gateway sharing the counters (Redis) agrees on them.
//!
//! Keyed by a header or the model, the key's value comes from the client,
//! and each new value opens new counters (with a fresh budget). So each
//! API key may open at most `max_values_per_key` values per limit and
//! window; a request with one more value is rejected with 429. Values
//! already open in the window keep working.

use portcullis_policy_sdk::host::{self, counters};
use portcullis_policy_sdk::{
    ConfigError, Header, Policy, PolicyInfo, Rejection, Request, RequestVerdict, Response,
    ResponseMode, export_policy, serde_json, settings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Metric {
    Requests,
    TotalTokens,
    PromptTokens,
    CompletionTokens,
}

#[derive(Debug, Clone, Deserialize)]
struct Limit {
    metric: Metric,
    limit: i64,
    window: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyBy {
    ApiKey,
    /// The key's application (`caller`); a proxy's own key counts as an
    /// application of one (its key id).
    Application,
    /// The key's subscription (`caller`); what admin keys a plan's
    /// quotas by. A proxy's own key counts by its key id.
    Subscription,
    Proxy,
    Model,
    Header,
}

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    limits: Vec<Limit>,
    key: KeyBy,
    #[serde(default)]
    header: Option<String>,
    #[serde(default = "default_completion")]
    default_completion_tokens: i64,
    #[serde(default = "default_cpt")]
    chars_per_token: f64,
    #[serde(default = "default_max_values")]
    max_values_per_key: i64,
}

fn default_max_values() -> i64 {
    1000
}

fn default_completion() -> i64 {
    256
}

fn default_cpt() -> f64 {
    4.0
}

/// A window length in milliseconds.
fn window_ms(w: &str) -> Option<u64> {
    Some(match w {
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "month" => 30 * 86_400_000,
        _ => {
            let split = w.find(|c: char| !c.is_ascii_digit())?;
            let (n, unit) = w.split_at(split);
            let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
            n * match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            }
        }
    })
}

/// A duration the way OpenAI's `x-ratelimit-reset-*` headers write it
/// (`20ms`, `1s`, `6m0s`, `1h2m3s`).
pub fn format_reset(ms: u64) -> String {
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let h = ms / 3_600_000;
    let m = (ms % 3_600_000) / 60_000;
    let s = (ms % 60_000) as f64 / 1000.0;
    let s = format!("{s:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// One reservation made on request, corrected on completion.
#[derive(Clone)]
struct Reservation {
    metric: Metric,
    counter: String,
    amount: i64,
    ttl_ms: u64,
}

#[derive(Clone)]
pub struct TokenRateLimit {
    s: Settings,
    windows: Vec<u64>,
    reserved: Vec<Reservation>,
}

impl TokenRateLimit {
    fn key(&self, req: &Request) -> String {
        let caller;
        let value = match self.s.key {
            KeyBy::ApiKey => req.key_id.as_str(),
            KeyBy::Application => {
                caller = host::application_id();
                caller.as_deref().unwrap_or(&req.key_id)
            }
            KeyBy::Subscription => {
                caller = host::subscription_id();
                caller.as_deref().unwrap_or(&req.key_id)
            }
            KeyBy::Proxy => "",
            KeyBy::Model => req.model.as_str(),
            KeyBy::Header => self
                .s
                .header
                .as_deref()
                .and_then(|h| req.header(h))
                .unwrap_or("(none)"),
        };
        format!("{}|{:?}|{value}", req.proxy_id, self.s.key)
    }

    /// Whether the key's value comes from the client (header or model).
    fn client_keyed(&self) -> bool {
        matches!(self.s.key, KeyBy::Header | KeyBy::Model)
    }

    /// What the client-chosen part of the key is, for messages.
    fn value_name(&self) -> String {
        match (&self.s.key, &self.s.header) {
            (KeyBy::Header, Some(h)) => format!("values of the `{h}` header"),
            _ => "model names".to_owned(),
        }
    }

    /// Undoes this request's reservations and rejects it with 429.
    fn reject(
        &mut self,
        what: &str,
        message: String,
        reset_ms: u64,
        requests: &Option<Shown>,
        tokens: &Option<Shown>,
    ) -> RequestVerdict {
        for r in self.reserved.drain(..) {
            counters::add(&r.counter, -r.amount, r.ttl_ms);
        }
        let mut r = Rejection::new(429, what, message)
            .with_code("rate_limit_exceeded")
            .with_header("retry-after", reset_ms.div_ceil(1000).to_string());
        r.headers.extend(headers(requests, tokens));
        RequestVerdict::Reject(r)
    }

    fn estimate(&self, req: &Request, metric: Metric) -> i64 {
        let chars: usize = req.texts().map(|t| t.chars().count()).sum();
        let prompt = (chars as f64 / self.s.chars_per_token).ceil() as i64 + 1;
        let completion = req
            .max_tokens
            .map(i64::from)
            .unwrap_or(self.s.default_completion_tokens);
        match metric {
            Metric::Requests => 1,
            Metric::PromptTokens => prompt,
            Metric::CompletionTokens => completion,
            Metric::TotalTokens => prompt + completion,
        }
    }
}

/// Header state of the tightest limit of one family (requests or tokens).
#[derive(Clone)]
struct Shown {
    limit: i64,
    remaining: i64,
    reset_ms: u64,
}

fn tighter(slot: &mut Option<Shown>, s: Shown) {
    if slot.as_ref().is_none_or(|cur| s.remaining < cur.remaining) {
        *slot = Some(s);
    }
}

fn headers(requests: &Option<Shown>, tokens: &Option<Shown>) -> Vec<Header> {
    let mut out = Vec::new();
    for (family, shown) in [("requests", requests), ("tokens", tokens)] {
        if let Some(s) = shown {
            out.push(Header::new(
                format!("x-ratelimit-limit-{family}"),
                s.limit.to_string(),
            ));
            out.push(Header::new(
                format!("x-ratelimit-remaining-{family}"),
                s.remaining.max(0).to_string(),
            ));
            out.push(Header::new(
                format!("x-ratelimit-reset-{family}"),
                format_reset(s.reset_ms),
            ));
        }
    }
    out
}

impl Policy for TokenRateLimit {
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {
        let s: Settings = settings(value)?;
        let mut windows = Vec::new();
        for (i, l) in s.limits.iter().enumerate() {
            windows.push(window_ms(&l.window).ok_or_else(|| {
                ConfigError::new(
                    format!("/limits/{i}/window"),
                    format!("`{}` is not a window", l.window),
                )
            })?);
        }
        if s.key == KeyBy::Header && s.header.is_none() {
            return Err(ConfigError::new("/header", "required when key is `header`"));
        }
        Ok(TokenRateLimit {
            s,
            windows,
            reserved: Vec::new(),
        })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            on_request: true,
            response: ResponseMode::Skip,
            on_complete: true,
        }
    }

    fn on_request(&mut self, req: &Request) -> RequestVerdict {
        let now = host::now_ms();
        let key = self.key(req);
        let mut requests = None;
        let mut tokens = None;
        for (i, limit) in self.s.limits.clone().iter().enumerate() {
            let window = self.windows[i];
            let bucket = now / window;
            let reset_ms = (bucket + 1) * window - now;
            let counter = format!("{key}|{i}|{bucket}");
            let amount = self.estimate(req, limit.metric);
            // The counter lives a little past its window so late
            // corrections still find it.
            let ttl_ms = reset_ms + 5_000;
            if self.client_keyed() && counters::get(&counter).ttl_ms == 0 {
                // A value new in this window opens a counter: count it
                // against the caller's API key.
                let opened = format!("{}|values|{}|{i}|{bucket}", req.proxy_id, req.key_id);
                let cap = self.s.max_values_per_key;
                if !counters::try_add(&opened, 1, cap, ttl_ms).allowed {
                    let message = format!(
                        "Rate limit reached: this API key used {cap} distinct {} in this {} window (max_values_per_key). Try again in {}.",
                        self.value_name(),
                        limit.window,
                        format_reset(reset_ms)
                    );
                    return self.reject("requests", message, reset_ms, &requests, &tokens);
                }
            }
            let state = counters::try_add(&counter, amount, limit.limit, ttl_ms);
            let shown = Shown {
                limit: limit.limit,
                remaining: limit.limit - state.value,
                reset_ms,
            };
            let family_is_requests = limit.metric == Metric::Requests;
            if !state.allowed {
                if family_is_requests {
                    tighter(&mut requests, shown);
                } else {
                    tighter(&mut tokens, shown);
                }
                let what = if family_is_requests {
                    "requests"
                } else {
                    "tokens"
                };
                let message = format!(
                    "Rate limit reached: {} {what} per {} (used {}, this request needs {amount}). Try again in {}.",
                    limit.limit,
                    limit.window,
                    state.value,
                    format_reset(reset_ms)
                );
                return self.reject(what, message, reset_ms, &requests, &tokens);
            }
            self.reserved.push(Reservation {
                metric: limit.metric,
                counter,
                amount,
                ttl_ms,
            });
            if family_is_requests {
                tighter(&mut requests, shown);
            } else {
                tighter(&mut tokens, shown);
            }
        }
        RequestVerdict::Continue(headers(&requests, &tokens))
    }

    fn on_complete(&mut self, resp: &Response) {
        for r in self.reserved.drain(..) {
            let actual = match (r.metric, &resp.usage) {
                (Metric::Requests, _) => continue,
                (m, Some(u)) => {
                    (match m {
                        Metric::PromptTokens => u.prompt_tokens,
                        Metric::CompletionTokens => u.completion_tokens,
                        _ => u.total_tokens,
                    }) as i64
                }
                // No usage: a failed request costs nothing; a success
                // without usage (untracked stream) keeps the estimate.
                (_, None) if resp.status != 200 => 0,
                (_, None) => continue,
            };
            let delta = actual - r.amount;
            if delta != 0 {
                counters::add(&r.counter, delta, r.ttl_ms);
            }
        }
    }
}

export_policy!(TokenRateLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::testing::{self, Harness, header};
    use portcullis_policy_sdk::{Usage, serde_json::json};

    const MANIFEST: &str = include_str!("../policy.json");

    #[test]
    fn request_limit_trips_and_resets() {
        testing::set_now_ms(1_000_000);
        let mut h = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "requests", "limit": 2, "window": "10s"}]}),
        )
        .unwrap();
        let req = Request::user("m", "hello");
        for left in ["1", "0"] {
            let RequestVerdict::Continue(hs) = h.request(&req) else {
                panic!("allowed")
            };
            assert_eq!(header(&hs, "x-ratelimit-remaining-requests"), Some(left));
            assert_eq!(header(&hs, "x-ratelimit-limit-requests"), Some("2"));
            assert_eq!(header(&hs, "x-ratelimit-reset-requests"), Some("10s"));
        }
        let RequestVerdict::Reject(r) = h.request(&req) else {
            panic!("limited")
        };
        assert_eq!(r.status, 429);
        assert_eq!(r.code.as_deref(), Some("rate_limit_exceeded"));
        assert_eq!(r.error_type, "requests");
        assert_eq!(header(&r.headers, "retry-after"), Some("10"));
        testing::advance_ms(10_000);
        assert!(
            matches!(h.request(&req), RequestVerdict::Continue(_)),
            "new window"
        );
    }

    #[test]
    fn tokens_are_reserved_then_corrected() {
        testing::set_now_ms(5_000_000);
        let mut h = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "total_tokens", "limit": 100, "window": "minute"}],
                   "default_completion_tokens": 50}),
        )
        .unwrap();
        // 12 chars -> 3 + 1 prompt tokens, + 50 completion = 54 reserved.
        let req = Request::user("m", "hello world!");
        let RequestVerdict::Continue(hs) = h.request(&req) else {
            panic!()
        };
        assert_eq!(header(&hs, "x-ratelimit-remaining-tokens"), Some("46"));
        // The provider used 10 tokens: 44 are given back.
        h.complete(&Response::text("m", "hi", Some(Usage::new(4, 6))));
        let RequestVerdict::Continue(hs) = h.request(&req) else {
            panic!()
        };
        assert_eq!(header(&hs, "x-ratelimit-remaining-tokens"), Some("36"));
        // A failed request gives its whole reservation back.
        let mut failed = Response::text("m", "", None);
        failed.status = 502;
        h.complete(&failed);
        let RequestVerdict::Continue(hs) = h.request(&req) else {
            panic!()
        };
        assert_eq!(header(&hs, "x-ratelimit-remaining-tokens"), Some("36"));
        // 90 - 54 = 36 left: the next reservation of 54 does not fit, and
        // is undone, so the counter stays.
        let RequestVerdict::Reject(r) = h.request(&req) else {
            panic!()
        };
        assert_eq!(r.error_type, "tokens");
        assert_eq!(
            header(&r.headers, "x-ratelimit-remaining-tokens"),
            Some("36")
        );
    }

    #[test]
    fn a_subscription_quota_is_shared_by_its_keys() {
        testing::set_now_ms(11_000_000);
        let mut h = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "requests", "limit": 1, "window": "minute"}], "key": "subscription"}),
        )
        .unwrap();
        let mut req = Request::user("m", "hello");
        testing::set_caller(Some("app_1"), Some("sub_1"));
        req.key_id = "key_a".into();
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        // Another key under the same subscription: its quota is spent.
        req.key_id = "key_b".into();
        assert!(matches!(h.request(&req), RequestVerdict::Reject(_)));
        // Another subscription has its own.
        testing::set_caller(Some("app_1"), Some("sub_2"));
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        // A proxy's own key counts by its key id.
        testing::set_caller(None, None);
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
    }

    #[test]
    fn keys_separate_callers() {
        testing::set_now_ms(9_000_000);
        let mut h = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "requests", "limit": 1, "window": "minute"}], "key": "header", "header": "x-user"}),
        )
        .unwrap();
        let mut a = Request::user("m", "x");
        a.headers.push(Header::new("x-user", "alice"));
        let mut b = a.clone();
        b.headers[0].value = "bob".into();
        assert!(matches!(h.request(&a), RequestVerdict::Continue(_)));
        assert!(matches!(h.request(&b), RequestVerdict::Continue(_)));
        assert!(matches!(h.request(&a), RequestVerdict::Reject(_)));
    }

    #[test]
    fn a_caller_cannot_open_unlimited_header_values() {
        testing::set_now_ms(12_000_000);
        let mut h = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "requests", "limit": 5, "window": "minute"}],
                   "key": "header", "header": "x-user", "max_values_per_key": 3}),
        )
        .unwrap();
        let with = |user: &str, key: &str| {
            let mut r = Request::user("m", "x");
            r.key_id = key.into();
            r.headers.push(Header::new("x-user", user));
            r
        };
        for u in ["u1", "u2", "u3"] {
            assert!(matches!(
                h.request(&with(u, "k1")),
                RequestVerdict::Continue(_)
            ));
        }
        let RequestVerdict::Reject(r) = h.request(&with("u4", "k1")) else {
            panic!("a fourth value is refused")
        };
        assert_eq!(r.status, 429);
        assert!(r.message.contains("`x-user`"), "{}", r.message);
        assert!(header(&r.headers, "retry-after").is_some());
        // Values already open keep working; another API key has its own allowance.
        assert!(matches!(
            h.request(&with("u1", "k1")),
            RequestVerdict::Continue(_)
        ));
        assert!(matches!(
            h.request(&with("u4", "k2")),
            RequestVerdict::Continue(_)
        ));
        // A new window starts over.
        testing::advance_ms(60_000);
        assert!(matches!(
            h.request(&with("u4", "k1")),
            RequestVerdict::Continue(_)
        ));
        // Keyed by model: each model name is a value.
        let mut m = Harness::<TokenRateLimit>::with_defaults(
            MANIFEST,
            json!({"limits": [{"metric": "requests", "limit": 5, "window": "minute"}],
                   "key": "model", "max_values_per_key": 2}),
        )
        .unwrap();
        assert!(matches!(
            m.request(&Request::user("a", "x")),
            RequestVerdict::Continue(_)
        ));
        assert!(matches!(
            m.request(&Request::user("b", "x")),
            RequestVerdict::Continue(_)
        ));
        let RequestVerdict::Reject(r) = m.request(&Request::user("c", "x")) else {
            panic!("a third model is refused")
        };
        assert!(r.message.contains("model names"), "{}", r.message);
    }

    #[test]
    fn bad_settings_name_their_pointer() {
        let e = Harness::<TokenRateLimit>::new(json!({"limits": [{"metric": "requests", "limit": 1, "window": "fortnight"}], "key": "api_key"}))
            .err()
            .unwrap();
        assert_eq!(e.pointer, "/limits/0/window");
        let e = Harness::<TokenRateLimit>::new(json!({"limits": [{"metric": "requests", "limit": 1, "window": "1m"}], "key": "header"}))
            .err()
            .unwrap();
        assert_eq!(e.pointer, "/header");
    }

    #[test]
    fn reset_format_matches_openai() {
        assert_eq!(format_reset(20), "20ms");
        assert_eq!(format_reset(1_000), "1s");
        assert_eq!(format_reset(1_500), "1.5s");
        assert_eq!(format_reset(360_000), "6m0s");
        assert_eq!(format_reset(3_723_000), "1h2m3s");
    }
}
