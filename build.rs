//! Builds the built-in policies (`policies/*`) to WebAssembly components
//! and embeds them in the `portcullis` binary, so `portcullis up --demo`
//! and the hub publish them from any directory, and `cargo install --path .`
//! gives a binary that does everything the README shows.
//!
//! The components are built by a nested `cargo build --release --target
//! wasm32-wasip2` into a target directory of their own (`policy-build`
//! beside the outer build's profile directories): the outer build holds
//! the lock of its own directories, and the components are the same for
//! debug and release builds of the binary, so they are built once. The
//! wasm target is added with rustup when it is missing (rustup adds the
//! targets of `rust-toolchain.toml` only when it installs a toolchain).
//!
//! It also builds the web console (`console/`, docs/console.md) with npm
//! and embeds its files; see `console::build`.

#[path = "build_console.rs"]
mod console;

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets it"));
    for watched in [
        "policies",
        "sdk/policy",
        "sdk/types",
        "sdk/wit",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    println!("cargo:rerun-if-changed=.cargo/config.toml");

    let mut policies: Vec<String> = std::fs::read_dir(root.join("policies"))
        .expect("the policies directory")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("policy.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    policies.sort();

    ensure_target();
    // OUT_DIR is <target>/<profile>/build/<package>-<hash>/out.
    let target_dir = out
        .ancestors()
        .nth(4)
        .map(|t| t.join("policy-build"))
        .unwrap_or_else(|| out.join("policy-build"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .current_dir(&root)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(&target_dir);
    for p in &policies {
        build.args(["-p", &format!("portcullis-policy-{p}")]);
    }
    // What cargo hands this script for the outer build must not leak into
    // the nested one: an empty CARGO_ENCODED_RUSTFLAGS would override the
    // policies' stack size in .cargo/config.toml.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
        "RUSTC",
        "RUSTC_LINKER",
        "RUSTDOC",
    ] {
        build.env_remove(var);
    }
    let output = build
        .output()
        .expect("running cargo for the built-in policies");
    if !output.status.success() {
        panic!(
            "building the built-in policies for {TARGET} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    let built = target_dir.join(TARGET).join("release");
    let mut code = String::from(
        "/// The built-in policies: name, manifest (`policy.json`), component.\n\
         pub const BUILTIN_POLICIES: &[(&str, &str, &[u8])] = &[\n",
    );
    for p in &policies {
        let manifest = root.join("policies").join(p).join("policy.json");
        let module = built.join(format!("portcullis_policy_{}.wasm", p.replace('-', "_")));
        assert!(module.is_file(), "{} was not built", module.display());
        code.push_str(&format!(
            "    ({p:?}, include_str!({:?}), include_bytes!({:?})),\n",
            path_str(&manifest),
            path_str(&module)
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("builtin_policies.rs"), code).expect("writing builtin_policies.rs");

    console::build(&root, &out);
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// Adds the wasm target with rustup when the toolchain lacks it; without
/// rustup, stops with the one command that fixes it.
fn ensure_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let libdir = Command::new(&rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let installed = libdir.as_deref().is_some_and(|d| {
        std::fs::read_dir(d)
            .map(|mut it| {
                it.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-")))
            })
            .unwrap_or(false)
    });
    if installed {
        return;
    }
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .is_ok_and(|s| s.success());
    if !added {
        panic!(
            "the built-in policies are WebAssembly components and need the {TARGET} target: \
             run `rustup target add {TARGET}` and build again"
        );
    }
}
