//! The built-in policies, built to WebAssembly components and embedded by
//! the build script (`build.rs`): the hub publishes them at start from
//! any directory.

include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));

/// The built-in policies as the hub seeds them.
pub fn policies() -> Vec<portcullis_hub::seed::BuiltPolicy> {
    BUILTIN_POLICIES
        .iter()
        .map(
            |(_, manifest, module)| portcullis_hub::seed::BuiltPolicy::Embedded {
                manifest,
                module,
            },
        )
        .collect()
}
