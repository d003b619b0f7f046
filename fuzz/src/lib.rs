//! What the fuzz targets share: each target in `fuzz_targets/` is one call
//! into this file, so a target's name says which parser it feeds and this
//! file says how (docs/fuzzing.md).
//!
//! The targets drive the entry points the gateway calls on outside input
//! and, where it is cheap, render what parsed the way the gateway would
//! next (a client request towards every provider, a provider's answer
//! towards every client format). They assert nothing about valid input
//! beyond "no panic, no hang", except where an invariant obviously holds:
//! a stream parser must read the same events whether its input arrives in
//! one read or in two.

use std::sync::LazyLock;

use bytes::BytesMut;
use portcullis_config::{
    FileConfig, ProviderKind, build_telemetry, check_positive, effective_base_url, egress_allows,
    model_list_base_url, models, names, parse_file, proxy_rules, url_origin,
};
use portcullis_formats::eventstream::{EventMessage, EventStreamDecoder};
use portcullis_formats::inbound::{ClientFormat, check_model, client_format, openai, responses};
use portcullis_formats::providers::forwarded::ForwardedStream;
use portcullis_formats::providers::{
    self, AwsCredentials, Provider, ProviderSettings, StreamEvent, UpstreamCall, forwarded,
};
use portcullis_formats::sse::{SseEvent, SseParser};
use portcullis_types::gateway_config::InboundKind;
use portcullis_types::managed::ManagedConfig;
use portcullis_types::policy::{
    PolicyManifest, PolicyRef, PolicyVersion, PublishRequest, valid_policy_name, valid_sha256_hex,
};
use portcullis_types::{ChatRequest, FinishReason, Usage};

/// Every client format: one per inbound kind, and OpenAI's Responses.
fn client_formats() -> [&'static dyn ClientFormat; 4] {
    [
        client_format(InboundKind::Openai),
        client_format(InboundKind::Anthropic),
        client_format(InboundKind::Gemini),
        &responses::Responses,
    ]
}

const PROVIDERS: [ProviderKind; 4] = [
    ProviderKind::Openai,
    ProviderKind::Anthropic,
    ProviderKind::Gemini,
    ProviderKind::Bedrock,
];

/// One adapter per provider kind, built once as the gateway builds them at
/// configuration load (Bedrock with credentials, since it signs).
fn adapter(kind: ProviderKind) -> &'static dyn Provider {
    static ADAPTERS: LazyLock<Vec<(ProviderKind, std::sync::Arc<dyn Provider>)>> =
        LazyLock::new(|| {
            PROVIDERS
                .iter()
                .map(|&kind| {
                    let settings = ProviderSettings {
                        base_path: "/v1".into(),
                        host: "provider.test".into(),
                        api_version: Some("2024-10-21".into()),
                        aws: Some(AwsCredentials {
                            access_key_id: "AKIDEXAMPLE".into(),
                            secret_access_key: "secret".into(),
                            session_token: None,
                            region: "us-east-1".into(),
                        }),
                        ..ProviderSettings::default()
                    };
                    (kind, providers::build(kind, settings))
                })
                .collect()
        });
    let (_, adapter) = ADAPTERS
        .iter()
        .find(|(k, _)| *k == kind)
        .expect("every fuzzed provider kind has an adapter");
    adapter.as_ref()
}

fn call(model: &str, stream: bool) -> UpstreamCall<'_> {
    UpstreamCall {
        model,
        api_key: Some("sk-fuzz"),
        stream,
        track_usage: true,
    }
}

/// A client request body in the `kind` format, as a proxy receives it on
/// its chat endpoint. What parses is checked as the
/// gateway checks a model name and turned into every provider's request;
/// what does not is rendered as the client's error.
pub fn inbound(kind: InboundKind, body: &[u8]) {
    inbound_chat(client_format(kind), chat_path_of(kind), body);
    if kind == InboundKind::Openai
        && let Ok(req) = openai::parse_embeddings(body)
    {
        for provider in [ProviderKind::Openai, ProviderKind::Gemini] {
            let _ = adapter(provider).embeddings_request(&req, &call(&req.model, false));
        }
    }
    // The OpenAI bodies the gateway forwards: legacy completions and
    // moderations, to the providers that take them and to one that
    // refuses.
    if kind == InboundKind::Openai {
        if let Ok(req) = openai::parse_completions(body) {
            let _ = check_model(&req.model);
            let _ = (req.prompt.texts(), req.wants_stream_usage());
            for provider in [ProviderKind::Openai, ProviderKind::Anthropic] {
                let _ = adapter(provider).completions_request(&req, &call(&req.model, req.stream));
            }
        }
        if let Ok(req) = openai::parse_moderations(body) {
            let _ = (check_model(req.routed_model()), req.texts());
            for provider in [ProviderKind::Openai, ProviderKind::Gemini] {
                let _ =
                    adapter(provider).moderations_request(&req, &call(req.routed_model(), false));
            }
        }
    }
}

/// An OpenAI Responses body, as a proxy receives it on `/responses`:
/// driven as the other client formats are.
pub fn inbound_responses(body: &[u8]) {
    inbound_chat(&responses::Responses, "/responses", body);
}

/// A body for `format`'s chat endpoint at `rest`: what parses goes through
/// the model check to every provider's request, what does not is
/// rendered as the client's error.
fn inbound_chat(format: &dyn ClientFormat, rest: &str, body: &[u8]) {
    let path = format
        .chat_path(rest)
        .expect("the fuzzed path is the format's chat endpoint");
    match format.parse(body, &path) {
        Ok(req) => {
            let _ = check_model(&req.model);
            for provider in PROVIDERS {
                let _ = adapter(provider).chat_request(&req, &call(&req.model, req.stream));
            }
            let _ = format.stream_encoder(&req);
        }
        Err(e) => {
            let _ = format.render_error(&e);
        }
    }
}

/// The path each client format's chat endpoint has (Gemini's names the
/// model and whether the answer streams).
fn chat_path_of(kind: InboundKind) -> &'static str {
    match kind {
        InboundKind::Openai => "/chat/completions",
        InboundKind::Anthropic => "/messages",
        InboundKind::Gemini => "/models/gemini-2.5-flash:generateContent",
    }
}

/// A provider's whole (non-streamed) answer: parsed as a 2xx chat answer
/// and rendered in every client format, read as an error body, and as an
/// embeddings answer where the provider has embeddings.
pub fn provider_response(kind: ProviderKind, body: &[u8]) {
    let provider = adapter(kind);
    if let Ok(resp) = provider.chat_response(body, &call("fuzz-model", false)) {
        for format in client_formats() {
            let _ = format.render_response(&resp);
        }
    }
    let _ = provider.error_response(429, body);
    let _ = provider.embeddings_response(body, &call("fuzz-model", false));
    // A page of the provider's model list (discovery), and the request for
    // the next page with whatever cursor it gave.
    if let Ok(page) = provider.models_page(body)
        && let Some(next) = page.next
    {
        let _ = provider.models_request(Some("fuzz-key"), Some(&next));
    }
    if kind == ProviderKind::Openai {
        let _ = forwarded::completions_answer(kind, body);
        let _ = forwarded::responses_answer(kind, body);
    }
}

/// The request every client stream encoder is made for.
static STREAM_REQUEST: LazyLock<ChatRequest> = LazyLock::new(|| {
    serde_json::from_str(
        r#"{"model":"fuzz-model","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"hi"}]}"#,
    )
    .expect("the stream request is a valid chat request")
});

/// A provider's streamed answer, in two reads split in the middle (so
/// frames and lines are cut), then the events re-encoded as each client
/// format's stream, as the gateway relays them. Bedrock's frames get their
/// CRCs made right first, so mutated events reach its decoder.
pub fn provider_stream(kind: ProviderKind, body: &[u8]) {
    let provider = adapter(kind);
    let mut decoder = provider.stream_decoder(&call("fuzz-model", true));
    let mut events = Vec::new();
    let body = match kind {
        ProviderKind::Bedrock => fix_frame_crcs(body),
        _ => body.to_vec(),
    };
    let (first, second) = body.split_at(body.len() / 2);
    decoder.feed(first, &mut events);
    decoder.feed(second, &mut events);
    decoder.finish(&mut events);
    let _ = decoder.is_complete();
    if kind == ProviderKind::Openai {
        for show_usage in [false, true] {
            forwarded_stream(
                forwarded::CompletionsStream::new(kind, show_usage),
                first,
                second,
            );
        }
        forwarded_stream(forwarded::ResponsesStream::new(kind), first, second);
    }

    for format in client_formats() {
        let mut encoder = format.stream_encoder(&STREAM_REQUEST);
        let mut out = BytesMut::new();
        let mut usage: Option<Usage> = None;
        let mut finish: Option<FinishReason> = None;
        for event in &events {
            match event {
                StreamEvent::Chunk(chunk) => {
                    if let Some(u) = &chunk.usage {
                        usage.get_or_insert_with(Usage::default).merge_max(u);
                    }
                    if let Some(f) = chunk.choices.iter().rev().find_map(|c| c.finish_reason) {
                        finish = Some(f);
                    }
                    let mut chunk = chunk.clone();
                    chunk.usage = None;
                    encoder.chunk(&chunk, &mut out);
                }
                StreamEvent::Error(e) => encoder.error(e, &mut out),
            }
        }
        encoder.finish(usage.as_ref(), finish, &mut out);
    }
}

/// A stream relayed as the gateway forwards it (a legacy completions
/// stream, a Responses API stream), in two reads: what it relays is SSE
/// that parses again into no more events than it read.
fn forwarded_stream(mut stream: impl ForwardedStream, first: &[u8], second: &[u8]) {
    let mut out = BytesMut::new();
    let fed = stream
        .feed(first, &mut out)
        .and_then(|()| stream.feed(second, &mut out))
        .and_then(|()| stream.finish(&mut out));
    let _ = (
        fed,
        stream.take_texts(),
        stream.usage(),
        stream.is_complete(),
    );
    let (relayed, err) = sse_events(SseParser::default, &[&out]);
    assert!(err.is_none(), "relayed SSE must parse: {err:?}");
    let (read, _) = sse_events(SseParser::default, &[first, second]);
    assert!(relayed.len() <= read.len(), "the relay adds no events");
}

/// Runs an SSE parser over `data` in the given reads.
fn sse_events(parser: fn() -> SseParser, reads: &[&[u8]]) -> (Vec<SseEvent>, Option<String>) {
    let mut p = parser();
    let mut out = Vec::new();
    for read in reads {
        if let Err(e) = p.feed(read, &mut out) {
            return (out, Some(e.to_string()));
        }
    }
    let err = p.finish(&mut out).err().map(|e| e.to_string());
    (out, err)
}

/// The SSE parser, with its default limits and with small ones (so the
/// limits are reached): one read or two must give the same events and the
/// same error.
pub fn sse(data: &[u8]) {
    let (first, second) = data.split_at(data.len() / 2);
    let parsers: [fn() -> SseParser; 2] = [SseParser::default, || SseParser::with_limits(64, 256)];
    for parser in parsers {
        let whole = sse_events(parser, &[data]);
        let split = sse_events(parser, &[first, second]);
        assert_eq!(whole, split, "one read and two reads disagree");
    }
}

/// `data` with each event-stream frame's CRCs made right, so mutations of
/// a frame's headers and payload reach the code behind the checksums. A
/// frame is taken at its announced length while that fits; the rest is
/// left as it is.
pub fn fix_frame_crcs(data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while out.len() - at >= 16 {
        let total = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]) as usize;
        if total < 16 || total > out.len() - at {
            break;
        }
        let prelude = crc32fast::hash(&out[at..at + 8]);
        out[at + 8..at + 12].copy_from_slice(&prelude.to_be_bytes());
        let end = at + total;
        let message = crc32fast::hash(&out[at..end - 4]);
        out[end - 4..end].copy_from_slice(&message.to_be_bytes());
        at = end;
    }
    out
}

/// Decodes event-stream messages from `reads`, up to the first error.
fn event_messages(reads: &[&[u8]]) -> (Vec<EventMessage>, bool) {
    let mut decoder = EventStreamDecoder::new();
    let mut messages = Vec::new();
    for read in reads {
        decoder.feed(read);
        loop {
            match decoder.next_message() {
                Ok(Some(m)) => messages.push(m),
                Ok(None) => break,
                Err(_) => return (messages, true),
            }
        }
    }
    (messages, false)
}

/// The AWS event-stream decoder, on the input as it is and with its CRCs
/// made right: one read or two must give the same messages.
pub fn eventstream(data: &[u8]) {
    for input in [data.to_vec(), fix_frame_crcs(data)] {
        let (first, second) = input.split_at(input.len() / 2);
        let whole = event_messages(&[&input]);
        let split = event_messages(&[first, second]);
        assert_eq!(whole, split, "one read and two reads disagree");
        for m in &whole.0 {
            let _ = m.header(":event-type");
        }
    }
}

/// The checks of a parsed configuration that need no I/O: those of the
/// config crate, the proxy rules admin and the gateway share, and the URL
/// and allow-list helpers the gateway applies to providers.
pub fn check_file_config(file: &FileConfig) {
    let _ = check_positive(file);
    let _ = build_telemetry(&file.telemetry);
    for p in &file.providers {
        if let Some(url) = effective_base_url(p.kind, p.base_url.as_deref(), p.region.as_deref())
            && let Some((_, host, port)) = url_origin(&url)
        {
            let _ = egress_allows(&file.egress_allow, &host, port);
        }
        let _ = model_list_base_url(p.kind, p.base_url.as_deref(), p.region.as_deref());
        let _ = models::check_provider_models(
            p.kind,
            &p.models,
            p.discover_models.as_ref(),
            &p.aliases,
            "providers[0]",
        );
    }
    for pf in &file.proxies {
        let _ = proxy_rules::check(pf);
        let _ = proxy_rules::strategy(pf);
        for rf in &pf.routes {
            let _ = proxy_rules::route_name(rf);
        }
        let id = pf.id.clone().unwrap_or_else(|| names::slugify(&pf.name));
        let context = pf.context.clone().unwrap_or_else(|| format!("/{id}"));
        let _ = names::valid_context(&names::normalise_context(&context));
    }
}

/// The gateway's configuration file (YAML), parsed and checked.
pub fn gateway_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = parse_file(text) {
        check_file_config(&file);
    }
}

/// What admin hands a managed gateway (JSON), parsed and its configuration
/// checked.
pub fn managed_config(data: &[u8]) {
    if let Ok(mc) = serde_json::from_slice::<ManagedConfig>(data) {
        check_file_config(&mc.config);
    }
}

/// A policy manifest (`manifest.json`), a publish request to the hub and
/// a version as the hub serves it, with the checks on their fields that
/// live beside the types.
pub fn policy_manifest(data: &[u8]) {
    if let Ok(m) = serde_json::from_slice::<PolicyManifest>(data) {
        let _ = valid_policy_name(&m.name);
        if let Some(sha) = &m.sha256 {
            let _ = valid_sha256_hex(sha);
        }
        let _ = PolicyRef::parse(&format!("{}@{}", m.name, m.version));
    }
    let _ = serde_json::from_slice::<PublishRequest>(data);
    if let Ok(v) = serde_json::from_slice::<PolicyVersion>(data) {
        let _ = v.module_sha256();
    }
}
