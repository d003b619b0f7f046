//! What requests spent, for admin: requests, tokens and cost per proxy,
//! key (its id), model and UTC day, summed between two heartbeats of a
//! managed gateway, which hand them to admin (`Heartbeat::spend`) and put
//! them back if admin did not take them.
//!
//! Off until a consumer turns it on (the managed agent): a gateway run from
//! a file reports to no one, and its sums would only grow. The request
//! path pays one lock and one hash-map update per request with a key; the
//! map is bounded (past [`MAX_ROWS`] rows new combinations are dropped and
//! counted in the log) so a long admin outage cannot grow it without end.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use portcullis_types::managed::SpendRecord;

/// Rows kept between two reports at most.
pub const MAX_ROWS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Row {
    proxy: String,
    key: Arc<str>,
    model: String,
    /// Days since the Unix epoch (UTC).
    day: i64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sums {
    requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cost: f64,
}

/// The sums since the last report.
#[derive(Debug, Default)]
pub struct SpendLedger {
    on: AtomicBool,
    rows: Mutex<HashMap<Row, Sums>>,
    dropped: AtomicU64,
}

/// What one request spent.
pub struct Spent<'a> {
    pub proxy: &'a str,
    pub key: &'a Arc<str>,
    pub model: &'a str,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// `None` when the model has no price.
    pub cost: Option<f64>,
}

fn today() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86_400) as i64)
        .unwrap_or(0)
}

impl SpendLedger {
    /// Starts recording (a managed gateway's agent reports the sums).
    pub fn enable(&self) {
        self.on.store(true, Ordering::Relaxed);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Row, Sums>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one request.
    pub fn record(&self, s: Spent<'_>) {
        if !self.on.load(Ordering::Relaxed) {
            return;
        }
        self.add(
            Row {
                proxy: s.proxy.to_owned(),
                key: s.key.clone(),
                model: s.model.to_owned(),
                day: today(),
            },
            Sums {
                requests: 1,
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                cost: s.cost.unwrap_or(0.0),
            },
        );
    }

    fn add(&self, row: Row, s: Sums) {
        let mut map = self.map();
        let len = map.len();
        match map.get_mut(&row) {
            Some(t) => {
                t.requests += s.requests;
                t.input_tokens += s.input_tokens;
                t.output_tokens += s.output_tokens;
                t.cost += s.cost;
            }
            None if len < MAX_ROWS => {
                map.insert(row, s);
            }
            None => {
                if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        rows = MAX_ROWS,
                        "spend not reported for too long; new combinations of proxy, key, model and day are dropped until admin takes the sums"
                    );
                }
            }
        }
    }

    /// Takes the sums since the last call, as the heartbeat sends them.
    pub fn take(&self) -> Vec<SpendRecord> {
        let rows = std::mem::take(&mut *self.map());
        self.dropped.store(0, Ordering::Relaxed);
        rows.into_iter()
            .map(|(r, s)| SpendRecord {
                proxy_id: r.proxy,
                key_id: r.key.to_string(),
                model: r.model,
                day: chrono::DateTime::from_timestamp(r.day * 86_400, 0)
                    .map(|d| d.format("%Y-%m-%d").to_string())
                    .unwrap_or_default(),
                requests: s.requests,
                input_tokens: s.input_tokens,
                output_tokens: s.output_tokens,
                cost: s.cost,
            })
            .collect()
    }

    /// Puts back sums a heartbeat failed to deliver.
    pub fn restore(&self, records: Vec<SpendRecord>) {
        for r in records {
            let day = chrono::NaiveDate::parse_from_str(&r.day, "%Y-%m-%d")
                .map(|d| {
                    d.and_hms_opt(0, 0, 0)
                        .unwrap_or_default()
                        .and_utc()
                        .timestamp()
                        / 86_400
                })
                .unwrap_or_else(|_| today());
            self.add(
                Row {
                    proxy: r.proxy_id,
                    key: Arc::from(r.key_id),
                    model: r.model,
                    day,
                },
                Sums {
                    requests: r.requests,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cost: r.cost,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_per_row_are_taken_and_put_back_whole() {
        let l = SpendLedger::default();
        let key: Arc<str> = Arc::from("key_1");
        let spent = |cost| Spent {
            proxy: "p",
            key: &key,
            model: "m",
            input_tokens: 10,
            output_tokens: 5,
            cost,
        };
        l.record(spent(Some(1.0)));
        assert!(l.take().is_empty(), "off until enabled");
        l.enable();
        l.record(spent(Some(1.0)));
        l.record(spent(None));
        let taken = l.take();
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].requests, taken[0].input_tokens, taken[0].cost),
            (2, 20, 1.0)
        );
        assert!(l.take().is_empty());
        l.restore(taken.clone());
        l.record(spent(Some(0.5)));
        let again = l.take();
        assert_eq!(
            (again[0].requests, again[0].cost, &again[0].day),
            (3, 1.5, &taken[0].day)
        );
    }
}
