//! A policy that misbehaves on purpose, for the engine's isolation tests:
//! with `mode: loop` it spins forever, `trap` panics (a wasm trap),
//! `oom` allocates until the memory limit stops it, `ok` adds a header
//! (and `x-fixture-saw`: how many messages and headers, and how many bytes
//! of raw JSON, it was shown).

use portcullis_policy_sdk::{
    ConfigError, Header, Policy, PolicyInfo, Request, RequestVerdict, export_policy, serde_json,
};

#[derive(Clone)]
pub struct Fixture {
    mode: String,
}

impl Policy for Fixture {
    fn init(settings: serde_json::Value) -> Result<Self, ConfigError> {
        let mode = settings["mode"].as_str().unwrap_or("ok").to_owned();
        Ok(Fixture { mode })
    }

    fn info(&self) -> PolicyInfo {
        PolicyInfo::request_only()
    }

    fn on_request(&mut self, req: &Request) -> RequestVerdict {
        match self.mode.as_str() {
            "loop" => {
                // Opaque to the optimiser, so the loop is really executed.
                let mut n: u64 = req.model.len() as u64;
                loop {
                    n = std::hint::black_box(n.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            }
            "trap" => panic!("fixture policy trapping on purpose"),
            "oom" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hog);
                }
            }
            _ => RequestVerdict::Continue(vec![
                Header::new("x-fixture", "ok"),
                Header::new(
                    "x-fixture-saw",
                    format!(
                        "messages={} headers={} raw={}",
                        req.messages.len(),
                        req.headers.len(),
                        req.raw.len()
                    ),
                ),
            ]),
        }
    }
}

export_policy!(Fixture);
