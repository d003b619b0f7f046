//! budget: spend budgets in currency per API key or proxy over a period.
//!
//! A request first reserves `reserve` against each budget (with no reserve
//! it only checks the budget is not spent yet); a budget the reservation
//! would pass rejects the request with 429 `insufficient_quota` and undoes
//! the reservations already made. After the response the reservation is
//! replaced by what the request really cost: its final usage at the price
//! of the model the route called, which the gateway computes
//! (`metering::cost`, streams included). A model without a price costs 0.
//!
//! Amounts are counted in millionths of the currency, in the gateway's
//! counters (in process, or Redis shared by every replica). Periods are
//! aligned to the clock (UTC), so replicas agree on them: a day resets at
//! midnight, a month on the first.

use portcullis_policy_sdk::host::{self, counters};
use portcullis_policy_sdk::{
    ConfigError, Header, Policy, PolicyInfo, Rejection, Request, RequestVerdict, Response,
    ResponseMode, export_policy, serde_json, settings,
};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Budget {
    amount: f64,
    period: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Per {
    ApiKey,
    /// The key's application; a proxy's own key counts as an application
    /// of one (its key id).
    Application,
    /// The key's subscription (application and proxy); a proxy's own key
    /// counts alone.
    Subscription,
    Proxy,
}

#[derive(Debug, Clone, Deserialize)]
struct Settings {
    budgets: Vec<Budget>,
    per: Per,
    reserve: f64,
}

/// A period: fixed-length windows, or calendar months.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Period {
    Fixed(u64),
    Month,
}

fn period(p: &str) -> Option<Period> {
    Some(Period::Fixed(match p {
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "month" => return Some(Period::Month),
        _ => {
            let split = p.find(|c: char| !c.is_ascii_digit())?;
            let (n, unit) = p.split_at(split);
            let n: u64 = n.parse().ok().filter(|n| *n > 0)?;
            n * match unit {
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            }
        }
    }))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil (year, month) of a day since 1970-01-01.
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m)
}

impl Period {
    /// The window `now_ms` falls in (an id) and the milliseconds until
    /// the next one starts.
    fn bucket(self, now_ms: u64) -> (u64, u64) {
        match self {
            Period::Fixed(len) => {
                let b = now_ms / len;
                (b, (b + 1) * len - now_ms)
            }
            Period::Month => {
                let (y, m) = civil_month((now_ms / 86_400_000) as i64);
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let next = days_from_civil(ny, nm, 1) as u64 * 86_400_000;
                ((y * 12 + m - 1) as u64, next.saturating_sub(now_ms))
            }
        }
    }
}

/// Currency to the counters' millionths.
fn micros(amount: f64) -> i64 {
    (amount * 1_000_000.0).round() as i64
}

/// One reservation made on request, settled on completion.
#[derive(Clone)]
struct Reservation {
    counter: String,
    amount: i64,
    ttl_ms: u64,
}

#[derive(Clone)]
pub struct BudgetPolicy {
    s: Settings,
    periods: Vec<Period>,
    reserved: Vec<Reservation>,
}

/// The `x-budget-*` headers of the tightest budget.
struct Shown {
    limit: i64,
    remaining: i64,
    reset_ms: u64,
}

fn headers(shown: &Option<Shown>) -> Vec<Header> {
    let Some(s) = shown else {
        return Vec::new();
    };
    let money = |m: i64| format!("{:.6}", m as f64 / 1_000_000.0);
    vec![
        Header::new("x-budget-limit", money(s.limit)),
        Header::new("x-budget-remaining", money(s.remaining.max(0))),
        Header::new("x-budget-reset", s.reset_ms.div_ceil(1000).to_string()),
    ]
}

impl Policy for BudgetPolicy {
    fn init(value: serde_json::Value) -> Result<Self, ConfigError> {
        let s: Settings = settings(value)?;
        let mut periods = Vec::new();
        for (i, b) in s.budgets.iter().enumerate() {
            periods.push(period(&b.period).ok_or_else(|| {
                ConfigError::new(
                    format!("/budgets/{i}/period"),
                    format!("`{}` is not a period", b.period),
                )
            })?);
            if !(b.amount.is_finite() && b.amount > 0.0) {
                return Err(ConfigError::new(
                    format!("/budgets/{i}/amount"),
                    "must be a number above 0",
                ));
            }
        }
        if !(s.reserve.is_finite() && s.reserve >= 0.0) {
            return Err(ConfigError::new(
                "/reserve",
                "must be a number of at least 0",
            ));
        }
        Ok(BudgetPolicy {
            s,
            periods,
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
        let whose = match self.s.per {
            Per::ApiKey => req.key_id.clone(),
            Per::Application => host::application_id().unwrap_or_else(|| req.key_id.clone()),
            Per::Subscription => host::subscription_id().unwrap_or_else(|| req.key_id.clone()),
            Per::Proxy => String::new(),
        };
        let reserve = micros(self.s.reserve);
        let mut shown: Option<Shown> = None;
        for (i, b) in self.s.budgets.clone().iter().enumerate() {
            let (bucket, reset_ms) = self.periods[i].bucket(now);
            let counter = format!("{}|{:?}|{whose}|{i}|{bucket}", req.proxy_id, self.s.per);
            let limit = micros(b.amount);
            // Lives a little past its period so late settlements find it.
            let ttl_ms = reset_ms + 60_000;
            let state = if reserve > 0 {
                counters::try_add(&counter, reserve, limit, ttl_ms)
            } else {
                let s = counters::get(&counter);
                host::CounterState {
                    allowed: s.value < limit,
                    ..s
                }
            };
            let here = Shown {
                limit,
                remaining: limit - state.value,
                reset_ms,
            };
            if shown.as_ref().is_none_or(|s| here.remaining < s.remaining) {
                shown = Some(here);
            }
            if !state.allowed {
                for r in self.reserved.drain(..) {
                    counters::add(&r.counter, -r.amount, r.ttl_ms);
                }
                let spent = state.value as f64 / 1_000_000.0;
                let message = format!(
                    "Budget spent: {spent:.4} of {} per {} ({}). It resets in {} s.",
                    b.amount,
                    b.period,
                    match self.s.per {
                        Per::ApiKey => "for this API key",
                        Per::Application => "for this application",
                        Per::Subscription => "for this subscription",
                        Per::Proxy => "for this proxy",
                    },
                    reset_ms.div_ceil(1000)
                );
                let mut r = Rejection::new(429, "insufficient_quota", message)
                    .with_code("insufficient_quota")
                    .with_header("retry-after", reset_ms.div_ceil(1000).to_string());
                r.headers.extend(headers(&shown));
                return RequestVerdict::Reject(r);
            }
            if reserve > 0 {
                self.reserved.push(Reservation {
                    counter,
                    amount: reserve,
                    ttl_ms,
                });
            } else {
                self.reserved.push(Reservation {
                    counter,
                    amount: 0,
                    ttl_ms,
                });
            }
        }
        RequestVerdict::Continue(headers(&shown))
    }

    fn on_complete(&mut self, _resp: &Response) {
        // What the gateway computed; a model without a price costs 0.
        let cost = micros(host::cost().unwrap_or(0.0));
        for r in self.reserved.drain(..) {
            let delta = cost - r.amount;
            if delta != 0 {
                counters::add(&r.counter, delta, r.ttl_ms);
            }
        }
    }
}

export_policy!(BudgetPolicy);

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy_sdk::serde_json::json;
    use portcullis_policy_sdk::testing::{self, Harness, header};

    const MANIFEST: &str = include_str!("../policy.json");

    #[test]
    fn months_are_calendar_months() {
        // 2026-12-04T10:00:00Z
        let now = days_from_civil(2026, 12, 4) as u64 * 86_400_000 + 36_000_000;
        let (bucket, reset) = Period::Month.bucket(now);
        assert_eq!(bucket, (2026 * 12 + 11) as u64);
        let next = days_from_civil(2027, 1, 1) as u64 * 86_400_000;
        assert_eq!(reset, next - now);
        assert_eq!(civil_month(days_from_civil(2024, 2, 29)), (2024, 2));
        assert_eq!(period("30m"), Some(Period::Fixed(1_800_000)));
        assert_eq!(period("fortnight"), None);
    }

    #[test]
    fn a_budget_is_settled_with_the_real_cost_and_trips() {
        testing::set_now_ms(1_000_000);
        let mut h = Harness::<BudgetPolicy>::with_defaults(
            MANIFEST,
            json!({"budgets": [{"amount": 0.01, "period": "10s"}], "reserve": 0.004}),
        )
        .unwrap();
        let req = Request::user("m", "hello");
        // Reserve 0.004, then settle at a cost of 0.003.
        let RequestVerdict::Continue(hs) = h.request(&req) else {
            panic!("allowed")
        };
        assert_eq!(header(&hs, "x-budget-limit"), Some("0.010000"));
        assert_eq!(header(&hs, "x-budget-remaining"), Some("0.006000"));
        testing::set_cost(Some(0.003));
        h.complete(&Response::text("m", "hi", None));
        // 0.003 spent: two more reservations of 0.004 pass, the third not.
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        h.complete(&Response::text("m", "hi", None));
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        h.complete(&Response::text("m", "hi", None));
        let RequestVerdict::Reject(r) = h.request(&req) else {
            panic!("budget spent")
        };
        assert_eq!(r.status, 429);
        assert_eq!(r.code.as_deref(), Some("insufficient_quota"));
        assert_eq!(header(&r.headers, "x-budget-reset"), Some("10"));
        // A new period.
        testing::advance_ms(10_000);
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        testing::set_cost(None);
    }

    #[test]
    fn an_application_budget_is_shared_by_its_keys() {
        testing::set_now_ms(7_000_000);
        let mut h = Harness::<BudgetPolicy>::with_defaults(
            MANIFEST,
            json!({"budgets": [{"amount": 1, "period": "day"}], "per": "application"}),
        )
        .unwrap();
        let mut req = Request::user("m", "hello");
        testing::set_caller(Some("app_1"), Some("sub_1"));
        req.key_id = "key_a".into();
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        testing::set_cost(Some(1.0));
        h.complete(&Response::text("m", "hi", None));
        // Another key of the same application: its budget is spent.
        req.key_id = "key_b".into();
        assert!(matches!(h.request(&req), RequestVerdict::Reject(_)));
        // A proxy's own key is an application of one.
        testing::set_caller(None, None);
        assert!(matches!(h.request(&req), RequestVerdict::Continue(_)));
        testing::set_cost(None);
    }

    #[test]
    fn bad_settings_name_their_field() {
        let e = Harness::<BudgetPolicy>::with_defaults(
            MANIFEST,
            json!({"budgets": [{"amount": 1, "period": "fortnight"}]}),
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("period"), "{e}");
    }
}
