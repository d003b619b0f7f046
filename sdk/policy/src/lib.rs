//! The Portcullis policy SDK: write a gateway policy as a Rust type.
//!
//! A policy implements [`Policy`] and is exported with [`export_policy!`];
//! built for `wasm32-wasip2`, the crate becomes a component of the
//! `portcullis:policy/policy-world@0.1.0` world (`sdk/wit/policy.wit`),
//! which the gateway runs sandboxed on every request. The generated WIT
//! types (`Request`, `RequestVerdict`, ...) are re-exported here with a
//! few constructors.
//!
//! Host capabilities (counters, cache, clock, log, metrics, embeddings,
//! host-compiled regexes and JSON schemas) are in [`host`]. Built natively
//! (for `cargo test`), the same functions run against an in-process test
//! host, so a policy is unit-tested without a gateway: see [`testing`].
//!
//! ```ignore
//! use portcullis_policy_sdk::*;
//!
//! #[derive(Clone)]
//! struct Shout;
//! impl Policy for Shout {
//!     fn init(_settings: serde_json::Value) -> Result<Self, ConfigError> { Ok(Shout) }
//!     fn info(&self) -> PolicyInfo { PolicyInfo::request_only() }
//!     fn on_request(&mut self, req: &Request) -> RequestVerdict {
//!         RequestVerdict::Continue(vec![Header::new("x-shout", &req.model)])
//!     }
//! }
//! export_policy!(Shout);
//! ```

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy-world",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_policy_world",
        default_bindings_module: "portcullis_policy_sdk::__bindings",
        additional_derives: [PartialEq],
    });
}

pub mod host;
pub mod testing;
mod types;
pub use types::settings;

#[doc(hidden)]
pub use bindings as __bindings;
#[doc(hidden)]
pub use bindings::__export_policy_world;
pub use bindings::exports::portcullis::policy::policy::Guest as __Guest;
pub use bindings::portcullis::policy::types::{
    Chunk, ChunkVerdict, ConfigError, DirectResponse, Header, InboundFormat, Level, Message,
    PolicyInfo, Rejection, Request, RequestEdit, RequestVerdict, Response, ResponseEdit,
    ResponseMode, ResponseVerdict, Role, Span, Usage,
};
pub use serde_json;

/// A policy: settings in, verdicts out. Every request starts from the
/// value `init` built (the gateway keeps instances warm between requests,
/// and the SDK restores a clone of that value at the start of each one),
/// so fields may carry state from `on_request` to `on_response` and
/// `on_complete` of the same request, and nothing from one request is
/// seen by the next. Keep per-request state in fields, not in globals.
pub trait Policy: Clone + Sized + 'static {
    /// Builds the policy from its settings (the manifest's defaults merged
    /// with the attachment's, already validated against the schema).
    /// A bad value is a [`ConfigError`] naming its JSON pointer.
    fn init(settings: serde_json::Value) -> Result<Self, ConfigError>;

    /// Which phases the policy needs; fixed when the chain is built.
    fn info(&self) -> PolicyInfo;

    /// Before the provider is called.
    fn on_request(&mut self, _req: &Request) -> RequestVerdict {
        RequestVerdict::Continue(Vec::new())
    }

    /// A whole response before the client sees it.
    fn on_response(&mut self, _resp: &Response) -> ResponseVerdict {
        ResponseVerdict::Continue(Vec::new())
    }

    /// One piece of streamed text (response mode `stream`).
    fn on_chunk(&mut self, _chunk: &Chunk) -> ChunkVerdict {
        ChunkVerdict::Continue
    }

    /// The stream ended: text still held back, per choice.
    fn on_stream_end(&mut self) -> Vec<Chunk> {
        Vec::new()
    }

    /// After the response was delivered (or the provider failed).
    fn on_complete(&mut self, _resp: &Response) {}
}

/// Exports a [`Policy`] type as the component's `policy` interface.
#[macro_export]
macro_rules! export_policy {
    ($ty:ty) => {
        const _: () = {
            ::std::thread_local! {
                static POLICY: ::std::cell::RefCell<::std::option::Option<$ty>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
                static TEMPLATE: ::std::cell::RefCell<::std::option::Option<$crate::__Template<$ty>>> =
                    const { ::std::cell::RefCell::new(::std::option::Option::None) };
            }
            struct __PortcullisExport;
            fn __with<R>(f: impl FnOnce(&mut $ty) -> R, default: R) -> R {
                POLICY.with_borrow_mut(|p| match p.as_mut() {
                    Some(p) => f(p),
                    None => default,
                })
            }
            impl $crate::__Guest for __PortcullisExport {
                fn init(
                    settings: ::std::string::String,
                ) -> ::std::result::Result<$crate::PolicyInfo, $crate::ConfigError> {
                    let (p, info) = TEMPLATE
                        .with_borrow_mut(|t| $crate::__init_cached::<$ty>(t, settings))?;
                    POLICY.with_borrow_mut(|slot| *slot = Some(p));
                    Ok(info)
                }
                fn on_request(req: $crate::Request) -> $crate::RequestVerdict {
                    __with(
                        |p| $crate::Policy::on_request(p, &req),
                        $crate::__not_initialised(),
                    )
                }
                fn on_response(resp: $crate::Response) -> $crate::ResponseVerdict {
                    __with(
                        |p| $crate::Policy::on_response(p, &resp),
                        $crate::ResponseVerdict::Reject($crate::__not_initialised_rejection()),
                    )
                }
                fn on_chunk(c: $crate::Chunk) -> $crate::ChunkVerdict {
                    __with(
                        |p| $crate::Policy::on_chunk(p, &c),
                        $crate::ChunkVerdict::Reject($crate::__not_initialised_rejection()),
                    )
                }
                fn on_stream_end() -> ::std::vec::Vec<$crate::Chunk> {
                    __with(|p| $crate::Policy::on_stream_end(p), ::std::vec::Vec::new())
                }
                fn on_complete(resp: $crate::Response) {
                    __with(|p| $crate::Policy::on_complete(p, &resp), ())
                }
            }
            // Exported only in the component: native builds (unit tests)
    // link as ordinary libraries, where the WIT export names are
            // not valid symbols.
            #[cfg(target_arch = "wasm32")]
            $crate::__export_policy_world!(__PortcullisExport with_types_in $crate::__bindings);
        };
    };
}

/// The value `init` built and the settings it was built from.
#[doc(hidden)]
pub struct __Template<P> {
    settings: String,
    policy: P,
    info: PolicyInfo,
}

/// `init` on a warm instance: the host calls it at the start of every
/// request with the same settings, so the first value is cloned rather
/// than the settings parsed again.
#[doc(hidden)]
pub fn __init_cached<P: Policy>(
    template: &mut Option<__Template<P>>,
    settings: String,
) -> Result<(P, PolicyInfo), ConfigError> {
    if let Some(t) = template.as_ref() {
        if t.settings == settings {
            return Ok((t.policy.clone(), t.info.clone()));
        }
    }
    let p = __init::<P>(&settings)?;
    let info = p.info();
    *template = Some(__Template {
        settings,
        policy: p.clone(),
        info: info.clone(),
    });
    Ok((p, info))
}

#[doc(hidden)]
pub fn __init<P: Policy>(settings: &str) -> Result<P, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(settings)
        .map_err(|e| ConfigError::new("", format!("settings are not JSON: {e}")))?;
    P::init(value)
}

#[doc(hidden)]
pub fn __not_initialised_rejection() -> Rejection {
    // The host always calls `init` first; reaching this is a host bug, and
    // failing the request is the safe answer.
    Rejection::new(500, "server_error", "policy called before init")
}

#[doc(hidden)]
pub fn __not_initialised() -> RequestVerdict {
    RequestVerdict::Reject(__not_initialised_rejection())
}
