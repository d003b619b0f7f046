//! The build script's console step: builds `console/` (a Vite + React
//! single-page app) with npm into `OUT_DIR/console` and writes
//! `console_files.rs`, a table of its files as `include_bytes!`, which
//! `src/console.rs` hands to admin.
//!
//! npm is optional: without it (or when its build fails) the table holds
//! one page that says how to build the console, and the build of the
//! binary goes on, so a machine without Node still builds and runs
//! everything else. `npm ci` runs only when `node_modules` is missing or
//! older than `package-lock.json`; otherwise only `npm run build`.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn build(root: &Path, out: &Path) {
    let src = root.join("console");
    // Only the sources: node_modules and the build output change on every
    // build and would make cargo rerun this script forever.
    for watched in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed={}", src.join(watched).display());
    }
    println!("cargo:rerun-if-env-changed=PORTCULLIS_CONSOLE_SKIP");
    let dist = out.join("console");
    let _ = std::fs::remove_dir_all(&dist);
    let built = if std::env::var_os("PORTCULLIS_CONSOLE_SKIP").is_some() {
        Err("PORTCULLIS_CONSOLE_SKIP is set".to_owned())
    } else if !has_npm() {
        Err("npm is not installed".to_owned())
    } else {
        npm_build(&src, &dist)
    };
    let files = match built {
        Ok(()) => list(&dist),
        Err(why) => {
            if src.join("package.json").is_file() && !why.contains("PORTCULLIS_CONSOLE_SKIP") {
                // One line: cargo reads each line of this script's output
                // as its own instruction.
                let why = why.replace('\n', " | ");
                println!(
                    "cargo:warning=the web console is not built ({why}); admin serves a page saying how to build it"
                );
            }
            std::fs::create_dir_all(&dist).expect("creating the console directory");
            std::fs::write(dist.join("index.html"), placeholder(&why))
                .expect("writing the console placeholder");
            vec![dist.join("index.html")]
        }
    };
    let mut code = String::from(
        "/// The web console's files: path under the console root, contents.\n\
         pub const CONSOLE_FILES: &[(&str, &[u8])] = &[\n",
    );
    for f in &files {
        let rel = f
            .strip_prefix(&dist)
            .expect("under dist")
            .to_str()
            .expect("a UTF-8 path")
            .replace('\\', "/");
        code.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            f.to_str().expect("a UTF-8 path")
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("console_files.rs"), code).expect("writing console_files.rs");
}

fn has_npm() -> bool {
    Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `npm ci` when needed, then `vite build` into `dist`; the error says
/// which step failed with the end of its output.
fn npm_build(src: &Path, dist: &Path) -> Result<(), String> {
    let lock = src.join("package-lock.json");
    // npm writes node_modules/.package-lock.json on every install.
    let installed = src.join("node_modules").join(".package-lock.json");
    let stale = match (modified(&installed), modified(&lock)) {
        (Some(i), Some(l)) => i < l,
        _ => true,
    };
    if stale {
        run(
            Command::new("npm")
                .current_dir(src)
                .args(["ci", "--no-audit", "--no-fund"]),
            "npm ci",
        )?;
    }
    run(
        Command::new("npm")
            .current_dir(src)
            .args(["run", "build", "--", "--outDir"])
            .arg(dist)
            .arg("--emptyOutDir"),
        "npm run build",
    )
}

fn modified(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let o = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if o.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&o.stderr));
    let tail: String = text
        .lines()
        .rev()
        .take(15)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    Err(format!("{what} failed:\n{tail}"))
}

/// Every file under `dir`, sorted.
fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)
            .expect("reading the console build")
            .flatten()
        {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page admin serves at `/` when the console could not be built.
fn placeholder(why: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Portcullis console: not built</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:44rem;margin:3rem auto;padding:0 1rem}}
pre{{background:#8882;padding:.75rem;overflow:auto}}@media(prefers-color-scheme:dark){{body{{background:#111;color:#eee}}}}</style></head>
<body><h1>The Portcullis web console is not built into this binary</h1>
<p>The console is built by npm when the <code>portcullis</code> binary is compiled. This build did not have it:</p>
<pre>{}</pre>
<p>Install Node.js and npm, then build again:</p>
<pre>sudo apt-get install -y nodejs npm
cargo run -- up</pre>
<p>Everything the console does is also available over the REST API (<a href="/api/v1/openapi.json">/api/v1/openapi.json</a>) and the <code>portcullis admin</code> CLI.</p>
</body></html>
"#,
        escape(why)
    )
}
