//! `GET /spend`: what requests spent, from what managed gateways report
//! in their heartbeats (requests, tokens and cost per gateway, proxy, key,
//! model and UTC day, and by the hour admin received them), summed over a
//! range of days and grouped as asked;
//! JSON, or CSV with `format=csv`. A developer sees the spend of the
//! proxies it owns.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ApiResult, Query};

/// Query of `GET /spend`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpendQuery {
    /// Comma-separated: `proxy`, `key`, `application`, `model`, `day`,
    /// `hour` (UTC, `2026-12-04T13:00`; the last eight days only),
    /// `gateway` (default `proxy`).
    pub group_by: Option<String>,
    /// First day, `YYYY-MM-DD` (default: 30 days before `to`).
    pub from: Option<String>,
    /// Last day, included (default: today, UTC).
    pub to: Option<String>,
    /// Only this proxy.
    pub proxy: Option<String>,
    /// Only the keys of this application (id).
    pub application: Option<String>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A grouping: its name in `group_by`, the columns it selects and groups
/// by, and the names they get in the answer.
const GROUPS: &[(&str, &[(&str, &str)])] = &[
    ("proxy", &[("s.proxy_id", "proxy_id")]),
    (
        "key",
        &[
            ("s.key_id", "key_id"),
            ("COALESCE(k.name, ak.name)", "key_name"),
        ],
    ),
    // The key's application; a proxy's own key has none (null).
    (
        "application",
        &[
            ("ak.application_id", "application_id"),
            ("a.name", "application_name"),
        ],
    ),
    ("model", &[("s.model", "model")]),
    ("day", &[("s.day", "day")]),
    ("hour", &[("s.hour", "hour")]),
    ("gateway", &[("s.gateway_id", "gateway_id")]),
];

fn day(field: &str, text: &str) -> ApiResult<String> {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| ApiError::invalid(field, "must be a day such as 2026-12-01"))
}

/// `GET /spend`.
pub async fn query(
    State(st): State<AppState>,
    caller: Caller,
    Query(q): Query<SpendQuery>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(ApiError::invalid("format", "must be `json` or `csv`")),
    };
    let to = match &q.to {
        Some(t) => day("to", t)?,
        None => chrono::Utc::now().format("%Y-%m-%d").to_string(),
    };
    let from = match &q.from {
        Some(f) => day("from", f)?,
        None => (chrono::NaiveDate::parse_from_str(&to, "%Y-%m-%d").map_err(ApiError::internal)?
            - chrono::Days::new(30))
        .format("%Y-%m-%d")
        .to_string(),
    };
    if from > to {
        return Err(ApiError::invalid("from", "is after `to`"));
    }
    let mut columns: Vec<(&str, &str)> = Vec::new();
    for name in q.group_by.as_deref().unwrap_or("proxy").split(',') {
        let name = name.trim();
        let Some((_, cols)) = GROUPS.iter().find(|(n, _)| *n == name) else {
            return Err(ApiError::invalid(
                "group_by",
                format!(
                    "`{name}` is not one of proxy, key, application, model, day, hour, gateway"
                ),
            ));
        };
        for c in *cols {
            if !columns.contains(c) {
                columns.push(*c);
            }
        }
    }
    let select = columns
        .iter()
        .map(|(c, a)| format!("{c} AS {a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let group = columns
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", ");
    // Hours come from their own table (kept eight days); every other
    // grouping from the daily one, which is kept for good.
    let table = if columns.iter().any(|(c, _)| *c == "s.hour") {
        "spend_hours"
    } else {
        "spend"
    };
    let mut sql = format!(
        "SELECT {select}, CAST(SUM(s.requests) AS BIGINT) AS requests, \
         CAST(SUM(s.input_tokens) AS BIGINT) AS input_tokens, \
         CAST(SUM(s.output_tokens) AS BIGINT) AS output_tokens, SUM(s.cost) AS cost \
         FROM {table} s LEFT JOIN proxies p ON p.id = s.proxy_id LEFT JOIN api_keys k ON k.id = s.key_id \
         LEFT JOIN application_keys ak ON ak.id = s.key_id \
         LEFT JOIN applications a ON a.id = ak.application_id \
         WHERE s.day >= $1 AND s.day <= $2"
    );
    let mut binds = vec![from.clone(), to.clone()];
    if let Some(p) = &q.proxy {
        binds.push(p.clone());
        sql.push_str(&format!(" AND s.proxy_id = ${}", binds.len()));
    }
    if let Some(a) = &q.application {
        binds.push(a.clone());
        sql.push_str(&format!(" AND ak.application_id = ${}", binds.len()));
    }
    if let Some((cond, value)) = caller.visible_proxies(binds.len() + 1) {
        binds.push(value);
        sql.push_str(&format!(" AND {cond}"));
    }
    sql.push_str(&format!(" GROUP BY {group} ORDER BY {group}"));
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    let rows = query.fetch_all(&st.pool).await?;
    let mut items = Vec::new();
    for r in &rows {
        let mut item = serde_json::Map::new();
        for (_, name) in &columns {
            item.insert(
                (*name).to_owned(),
                json!(r.try_get::<Option<String>, _>(*name)?),
            );
        }
        item.insert("requests".into(), json!(r.try_get::<i64, _>("requests")?));
        item.insert(
            "input_tokens".into(),
            json!(r.try_get::<i64, _>("input_tokens")?),
        );
        item.insert(
            "output_tokens".into(),
            json!(r.try_get::<i64, _>("output_tokens")?),
        );
        item.insert("cost".into(), json!(r.try_get::<f64, _>("cost")?));
        items.push(Value::Object(item));
    }
    if csv {
        let mut names: Vec<&str> = columns.iter().map(|(_, n)| *n).collect();
        names.extend(["requests", "input_tokens", "output_tokens", "cost"]);
        let mut out = names.join(",");
        out.push('\n');
        for item in &items {
            let line: Vec<String> = names
                .iter()
                .map(|n| match &item[*n] {
                    Value::String(s) => csv_field(s),
                    Value::Null => String::new(),
                    v => v.to_string(),
                })
                .collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"spend.csv\"",
                ),
            ],
            out,
        )
            .into_response());
    }
    Ok(Json(json!({
        "from": from,
        "to": to,
        "currency": portcullis_config::pricing::shipped().currency,
        "items": items,
    }))
    .into_response())
}

/// A CSV field, quoted when it holds a comma, a quote or a line break
/// (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
