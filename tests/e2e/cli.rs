//! The command line: config validation.

use crate::harness::{TempDir, run_cli, run_cli_env};

#[test]
fn validate_accepts_examples_and_names_the_bad_field() {
    let root = env!("CARGO_MANIFEST_DIR");
    for ex in ["examples/gateway.yaml", "examples/multi-provider.yaml"] {
        let env = [("OPENAI_API_KEY", "sk-x"), ("APP_KEY", "pk-x")];
        let (code, out, err) = run_cli_env(
            &["gateway", "--validate", "--config", &format!("{root}/{ex}")],
            &env,
        );
        assert_eq!(code, 0, "{ex}: {out}{err}");
        assert!(out.contains(": ok ("), "{out}");
    }
    let dir = TempDir::new();
    let bad = dir.0.join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - name: p\n    type: openai\n    base_url: http://127.0.0.1:9/v1\nproxies:\n  - name: x\n    routes:\n      - provider: p\n        modle: gpt\n",
    )
    .unwrap();
    let (code, _out, err) = run_cli(&["gateway", "--validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("proxies[0].routes[0].modle"), "{err}");
    // A missing secret is named too.
    let (code, _out, err) = run_cli(&[
        "gateway",
        "--validate",
        "--config",
        &format!("{root}/examples/gateway.yaml"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("providers[0].api_key_env: environment variable OPENAI_API_KEY is not set"),
        "{err}"
    );
}

#[test]
fn key_hash_is_sha256_hex() {
    let (code, out, _) = run_cli(&["key", "hash", "abc"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
}
