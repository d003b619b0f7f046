//! How the CLI prints admin's answers: an aligned table by default (as
//! kubectl and gh do), JSON with `--output json`, and errors as their
//! message and field instead of a raw body.

use serde_json::{Map, Value};

/// `--output`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns; one row per item, or one line per field.
    #[default]
    Table,
    /// The answer as admin sent it, pretty-printed.
    Json,
}

/// Widest cell shown; longer values are cut with `…`.
const MAX_CELL: usize = 48;
/// Columns shown for a list; `--output json` has everything.
const MAX_COLUMNS: usize = 7;

/// `value` as the user asked for it.
pub fn render(value: &Value, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string_pretty(value).unwrap_or_default(),
        Format::Table => match rows_of(value) {
            Some(rows) => list(rows),
            None => match value {
                Value::Object(fields) => fields_table(fields),
                other => cell(other, usize::MAX),
            },
        },
    }
}

/// The items of a list answer: an array, or `{"items": [...]}` /
/// `{"data": [...]}`.
fn rows_of(value: &Value) -> Option<&Vec<Value>> {
    match value {
        Value::Array(a) => Some(a),
        Value::Object(o) => ["items", "data"]
            .iter()
            .find_map(|k| o.get(*k).and_then(Value::as_array)),
        _ => None,
    }
}

fn list(rows: &[Value]) -> String {
    if rows.is_empty() {
        return "No items.".into();
    }
    // Columns: the fields that hold a value a cell can show, in the order
    // they first appear, `id` and `name` first.
    let mut columns: Vec<&str> = Vec::new();
    for row in rows {
        if let Value::Object(o) = row {
            for (k, v) in o {
                if shows_in_a_cell(v) && !columns.contains(&k.as_str()) {
                    columns.push(k);
                }
            }
        }
    }
    columns.sort_by_key(|c| match *c {
        "id" => 0,
        "name" => 1,
        _ => 2,
    });
    columns.truncate(MAX_COLUMNS);
    if columns.is_empty() {
        // Plain values (a list of strings).
        return rows
            .iter()
            .map(|v| cell(v, usize::MAX))
            .collect::<Vec<_>>()
            .join("\n");
    }
    let header: Vec<String> = columns.iter().map(|c| c.to_uppercase()).collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| {
                    row.get(*c)
                        .map(|v| cell(v, MAX_CELL))
                        .unwrap_or_else(|| "-".into())
                })
                .collect()
        })
        .collect();
    aligned(&header, &body)
}

fn fields_table(fields: &Map<String, Value>) -> String {
    let body: Vec<Vec<String>> = fields
        .iter()
        .map(|(k, v)| vec![k.clone(), cell(v, usize::MAX)])
        .collect();
    aligned(&[], &body)
}

fn shows_in_a_cell(v: &Value) -> bool {
    match v {
        Value::Object(_) => false,
        Value::Array(a) => a.iter().all(|x| !x.is_object() && !x.is_array()),
        _ => true,
    }
}

fn cell(v: &Value, max: usize) -> String {
    let text = match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => a
            .iter()
            .map(|x| cell(x, usize::MAX))
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    };
    let text = text.replace(['\n', '\t'], " ");
    if text.chars().count() > max {
        let cut: String = text.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        text
    }
}

fn aligned(header: &[String], body: &[Vec<String>]) -> String {
    let columns = header.len().max(body.first().map_or(0, Vec::len));
    let mut widths = vec![0; columns];
    for row in std::iter::once(header).chain(body.iter().map(Vec::as_slice)) {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |row: &[String]| {
        let mut out = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                out.push_str(c);
            } else {
                out.push_str(c);
                out.push_str(&" ".repeat(widths[i] - c.chars().count() + 2));
            }
        }
        out.trim_end().to_owned()
    };
    let mut lines = Vec::new();
    if !header.is_empty() {
        lines.push(line(header));
    }
    lines.extend(body.iter().map(|r| line(r)));
    lines.join("\n")
}

/// A failed request, for a person: admin's `{"error":{code,message,field}}`
/// as its message and field; anything else as the status and the body.
pub fn error(status: reqwest::StatusCode, body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let err = parsed.as_ref().and_then(|v| v.get("error"));
    match err.and_then(|e| e.get("message")).and_then(Value::as_str) {
        Some(message) => {
            let mut out = format!("error: {message}");
            if let Some(field) = err.and_then(|e| e.get("field")).and_then(Value::as_str) {
                out.push_str(&format!("\n  field: {field}"));
            }
            if let Some(code) = err.and_then(|e| e.get("code")).and_then(Value::as_str) {
                out.push_str(&format!("\n  code:  {code} ({status})"));
            } else {
                out.push_str(&format!("\n  status: {status}"));
            }
            out
        }
        None if body.trim().is_empty() => format!("error: {status}"),
        None => format!("error: {status}\n{}", body.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_list_is_an_aligned_table_with_id_and_name_first() {
        let v = json!({"items": [
            {"name": "openai", "id": "openai", "type": "openai", "credentials": {"api_key": true}, "models": ["gpt-4o", "gpt-5-mini"]},
            {"name": "claude", "id": "anthropic-1", "type": "anthropic", "credentials": {}, "models": []}
        ], "total": 2});
        let out = render(&v, Format::Table);
        assert_eq!(
            out,
            "ID           NAME    TYPE       MODELS\n\
             openai       openai  openai     gpt-4o,gpt-5-mini\n\
             anthropic-1  claude  anthropic"
        );
        assert_eq!(render(&json!([]), Format::Table), "No items.");
    }

    #[test]
    fn one_object_is_a_field_per_line_and_json_is_the_answer() {
        let v =
            json!({"id": "k1", "key": "pc-123", "expires_at": null, "scopes": {"models": ["a"]}});
        assert_eq!(
            render(&v, Format::Table),
            "id          k1\nkey         pc-123\nexpires_at  -\nscopes      {\"models\":[\"a\"]}"
        );
        let json = render(&v, Format::Json);
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), v);
    }

    #[test]
    fn long_cells_are_cut() {
        let long = "x".repeat(100);
        let out = render(&json!([{"id": long}]), Format::Table);
        let row = out.lines().nth(1).unwrap();
        assert_eq!(row.chars().count(), MAX_CELL);
        assert!(row.ends_with('…'));
    }

    #[test]
    fn errors_show_the_message_and_the_field() {
        let body = r#"{"error":{"code":"invalid","message":"must contain a letter or digit","field":"name"}}"#;
        assert_eq!(
            error(reqwest::StatusCode::UNPROCESSABLE_ENTITY, body),
            "error: must contain a letter or digit\n  field: name\n  code:  invalid (422 Unprocessable Entity)"
        );
        assert_eq!(
            error(reqwest::StatusCode::BAD_GATEWAY, "upstream down"),
            "error: 502 Bad Gateway\nupstream down"
        );
    }
}
