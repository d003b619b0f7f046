//! Compiled policy modules kept on disk between runs.
//!
//! Compiling the four built-ins with cranelift takes about half a second
//! and leaves the compiler's code and heap resident (about 30 MB of a
//! guarded gateway's 52 MB idle, measured in docs/benchmarks.md). A
//! restarted gateway instead maps the machine code it compiled before:
//! files named by the module's SHA-256 and by a tag of this build's
//! engine, so a module is never taken for another, nor code compiled by
//! another wasmtime version or with other settings (wasmtime also checks
//! the file's header and refuses a mismatch).
//!
//! Machine code is trusted as it is loaded, so the directory must belong
//! to the gateway's user and be writable by no one else: it is created
//! 0700 and refused when group or others may write to it or another user
//! owns it. A file that cannot be loaded (truncated, from an older build)
//! is compiled again and replaced; files are written whole (a temporary
//! name, then a rename), so a crash never leaves half a file.
//!
//! Files are mapped, not read: only the code a request runs becomes
//! resident, and pages stay shared with the page cache. The price is that
//! a file truncated in place under a running gateway faults it (SIGBUS);
//! the gateway itself only ever replaces files by renaming, which leaves
//! the mapped ones intact, and deleting files is always safe.

use std::hash::{Hash, Hasher};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

/// Files of other builds are removed once this old.
const STALE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

/// Creates `dir` (0700) when missing, and checks that only this user
/// can write to it.
pub(crate) fn prepare(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(format!(
            "{} belongs to another user (uid {}); compiled policy code is run as it is loaded, so the directory must be the gateway's own",
            dir.display(),
            meta.uid()
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(format!(
            "{} may be written by other users (mode {:o}); compiled policy code is run as it is loaded: chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        ));
    }
    Ok(())
}

/// A directory of compiled modules for one engine configuration.
#[derive(Debug)]
pub(crate) struct CompiledDir {
    dir: PathBuf,
    /// This engine's compatibility tag (part of every file name).
    tag: String,
}

impl CompiledDir {
    /// Creates (0700) and checks `dir` for `engine`; removes compiled
    /// files of other builds that were not used for a week.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<CompiledDir, String> {
        prepare(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        env!("CARGO_PKG_VERSION").hash(&mut h);
        let compiled = CompiledDir {
            dir: dir.to_owned(),
            tag: format!("{:016x}", h.finish()),
        };
        compiled.remove_stale();
        Ok(compiled)
    }

    fn path(&self, sha256: &[u8; 32]) -> PathBuf {
        let hex: String = sha256.iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{hex}-{}.cwasm", self.tag))
    }

    /// The module compiled earlier, if this build can use it.
    #[allow(unsafe_code)]
    pub(crate) fn load(&self, engine: &Engine, sha256: &[u8; 32]) -> Option<Component> {
        let path = self.path(sha256);
        if !path.exists() {
            return None;
        }
        // SAFETY: the file was written by `store` of an engine with the
        // same compatibility tag, in a directory only this user can write
        // (checked in `open`); wasmtime checks its header too.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %format!("{e:#}"), "compiled policy module not usable; compiling again");
                None
            }
        }
    }

    /// Keeps `component` (compiled from the module `sha256`) for the next
    /// start. Failing to write only costs that start a compilation.
    pub(crate) fn store(&self, sha256: &[u8; 32], component: &Component) {
        let path = self.path(sha256);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let written = component
            .serialize()
            .map_err(|e| format!("{e:#}"))
            .and_then(|bytes| std::fs::write(&tmp, bytes).map_err(|e| e.to_string()))
            .and_then(|()| std::fs::rename(&tmp, &path).map_err(|e| e.to_string()));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(file = %path.display(), error = %e, "could not keep a compiled policy module");
        }
    }

    /// Removes files of other builds (another tag) unused for a week.
    fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.ends_with(&format!("-{}.cwasm", self.tag));
            if ours || !(name.ends_with(".cwasm") || name.contains(".tmp")) {
                continue;
            }
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_AFTER);
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}
