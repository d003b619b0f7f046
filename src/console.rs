//! The web console, built from `console/` by the build script
//! (`build_console.rs`) and embedded here; admin serves it at `/`.

include!(concat!(env!("OUT_DIR"), "/console_files.rs"));
