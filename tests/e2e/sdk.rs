//! Compatibility proven with the official OpenAI Python client.
//! `.ci/run` installs it (`pip install -r tests/python/requirements.txt`).

use serde_json::Value;

use crate::{KEY, setup};

#[tokio::test]
async fn official_openai_python_client_works_through_the_gateway() {
    let (_mock, gw) = setup("").await;
    let base = format!("{}/openai", gw.url);
    let v = run_client(&[&base, KEY, "gpt-5-mini"]).await;
    let expected = "Mock reply from openai model gpt-5-mini: Hello from Python";
    assert_eq!(v["plain"], expected);
    assert_eq!(v["streamed"], expected);
    assert_eq!(v["plain_total"], v["stream_total"]);
    assert!(v["plain_total"].as_u64().unwrap() > 0);
    assert_eq!(v["tool_name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(v["tool_args"].as_str().unwrap()).unwrap()["input"],
        "Weather in Rome"
    );
    assert_eq!(
        v["models"],
        serde_json::json!(["openai:gpt-5-mini", "openai:gpt-4o-mini"])
    );
    assert_eq!(v["auth_error"]["status"], 401);
    assert_eq!(v["auth_error"]["code"], "invalid_api_key");
    assert!(v["embedding_len"].as_u64().unwrap() > 0);

    // client.completions.create (legacy), plain and streamed with its usage
    // chunk, and client.moderations.create.
    let c = &v["completions"];
    assert_eq!(c["plain"], expected);
    assert_eq!(c["streamed"], expected);
    assert_eq!(c["finish"], "stop");
    assert_eq!(
        (c["prompt"].as_u64(), c["total"].as_u64()),
        (Some(3), Some(12))
    );
    assert_eq!(c["stream_total"], c["total"]);
    assert_eq!(v["moderations"], serde_json::json!([true, false]));
    assert_eq!(v["moderation_violence"], true);

    // client.responses.create, plain and with stream=True, and the
    // client's stream helper: forwarded as they came to this OpenAI route.
    assert_responses(&v["responses"], expected);

    // The same calls through the gateway's translation, to Anthropic.
    let base = format!("{}/anthropic", gw.url);
    let v = run_client(&[&base, KEY, "claude-sonnet-4-5", "responses"]).await;
    assert_responses(
        &v["responses"],
        "Mock reply from anthropic model claude-sonnet-4-5: Hello from Python",
    );
}

/// What the client saw of its Responses API calls.
fn assert_responses(r: &Value, expected: &str) {
    // client.responses.create, plain and with stream=True, and the
    // client's stream helper.
    assert_eq!(r["plain"], expected);
    assert_eq!(r["streamed"], expected);
    assert_eq!(r["helper"], expected);
    let usage = &r["usage"];
    let (input, output) = (
        usage["input"].as_u64().unwrap(),
        usage["output"].as_u64().unwrap(),
    );
    assert!(input > 0 && output > 0, "{usage}");
    assert_eq!(usage["total"], input + output);
    assert_eq!(
        (usage["cached"].as_u64(), usage["reasoning"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(r["stream_total"], usage["total"]);
    assert_eq!(r["helper_total"], usage["total"]);
    assert_eq!(r["tool_name"], "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(r["tool_args"].as_str().unwrap()).unwrap()["input"],
        "Weather in Rome"
    );
}

/// Runs tests/python/openai_client.py with `args`; what it printed.
async fn run_client(args: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the OpenAI Python client failed (is it installed? pip install -r tests/python/requirements.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
