//! A streamed answer on its way from the provider to the client: provider
//! events decoded, passed through the policies, re-encoded in the client's
//! format and written as soon as each piece is ready, with the tokens
//! counted on the way.
//!
//! The relay's one bit of state that matters is whether the response
//! header has gone out. It goes with the first piece of the answer, not
//! before: until then a failed stream is a plain HTTP error and another
//! route may still take the request; after it, a failure can only be an
//! error event at the end of the stream.

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pingora::connectors::http::Connector;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;
use pingora::upstreams::peer::HttpPeer;
use portcullis_types::{ChatRequest, FinishReason, Usage};

use super::attempt::OpenAnswer;
use super::context::RequestCtx;
use super::egress::write_piece;
use crate::accounting::{WordCount, charged_stream_usage};
use crate::error::GatewayError;
use crate::inbound::{ClientFormat, StreamEncoder};
use crate::policy::ChainRun;
use crate::providers::{StreamDecoder, StreamEvent};
use crate::upstream;

pub(super) struct StreamRelay<'a> {
    req: &'a ChatRequest,
    /// Whether the proxy counts stream tokens (untracked proxies show a
    /// client the usage it asked for, but do not count it).
    track: bool,
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    /// The response header, until it goes out with the first piece.
    header: Option<ResponseHeader>,
    usage: Option<Usage>,
    /// What the provider generated so far, for the charge of a stream
    /// the client leaves before the provider's usage arrives.
    generated: WordCount,
    finish_reason: Option<FinishReason>,
    events: Vec<StreamEvent>,
    /// Encoded for the client, not written yet.
    out: BytesMut,
    failed: Option<GatewayError>,
}

impl<'a> StreamRelay<'a> {
    pub(super) fn new(
        format: &dyn ClientFormat,
        req: &'a ChatRequest,
        decoder: Box<dyn StreamDecoder>,
        header: ResponseHeader,
        track: bool,
    ) -> Self {
        StreamRelay {
            req,
            track,
            decoder,
            encoder: format.stream_encoder(req),
            header: Some(header),
            usage: None,
            generated: WordCount::default(),
            finish_reason: None,
            events: Vec::new(),
            out: BytesMut::new(),
            failed: None,
        }
    }

    /// Relays the stream to its end. `Err` only when nothing reached the
    /// client, so the caller may still try another route.
    pub(super) async fn run(
        mut self,
        connector: &Connector,
        session: &mut Session,
        ctx: &mut RequestCtx,
        open: OpenAnswer,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        let OpenAnswer {
            peer,
            mut ex,
            started,
        } = open;
        loop {
            let read = ex.session.read_response_body().await;
            let ended = self.take(read, &peer);
            self.pass(ctx, policies);
            if self.failed.is_some() {
                break;
            }
            if !self.out.is_empty() && !self.flush(session, ctx, false).await {
                // The client went away: dropping the provider session
                // stops the provider.
                self.charge_departed(ctx, policies, started);
                return Ok(());
            }
            if ended {
                break;
            }
        }
        ctx.tally.upstream_time = Some(started.elapsed());
        if self.failed.is_none() {
            // Read to its end: the connection goes back to the pool, as a
            // buffered answer's does (streams used to open one each).
            upstream::release(connector, &peer, ex).await;
        }
        self.finish(session, ctx, policies).await
    }

    /// Decodes what one read of the provider's body gave; true once the
    /// body has ended (or broken).
    fn take(&mut self, read: pingora::Result<Option<Bytes>>, peer: &HttpPeer) -> bool {
        match read {
            Ok(Some(bytes)) => {
                self.decoder.feed(&bytes, &mut self.events);
                false
            }
            Ok(None) => {
                self.decoder.finish(&mut self.events);
                true
            }
            Err(e) => {
                self.decoder.finish(&mut self.events);
                self.failed = Some(upstream::exchange_error(peer, &e));
                true
            }
        }
    }

    /// Passes decoded events through the policies into the client's
    /// encoding, counting usage and the first token.
    fn pass(&mut self, ctx: &mut RequestCtx, policies: &mut Option<ChainRun>) {
        for ev in self.events.drain(..) {
            match ev {
                StreamEvent::Chunk(mut chunk) => {
                    if let Some(u) = chunk.usage.take() {
                        self.usage.get_or_insert_with(Usage::default).merge_max(&u);
                    }
                    self.generated.feed_chunk(&chunk);
                    if let Some(fr) = chunk.choices.iter().find_map(|c| c.finish_reason) {
                        self.finish_reason = Some(fr);
                    }
                    if ctx.tally.response_model.is_none() && !chunk.model.is_empty() {
                        ctx.tally.response_model = Some(chunk.model.clone());
                    }
                    if chunk.choices.is_empty() {
                        continue;
                    }
                    if ctx.tally.first_token.is_none() {
                        ctx.tally.first_token = Some(ctx.request.started.elapsed());
                    }
                    // Policies may rewrite the chunk's text, or hold the
                    // whole stream back (output guardrails).
                    let send = match policies.as_mut() {
                        None => true,
                        Some(run) => run.on_chunk(&mut chunk).unwrap_or_else(|e| {
                            self.failed.get_or_insert(e);
                            false
                        }),
                    };
                    if send {
                        self.encoder.chunk(&chunk, &mut self.out);
                    }
                }
                StreamEvent::Error(e) => {
                    self.failed.get_or_insert(e);
                }
            }
        }
    }

    /// Writes what is encoded, after the header if it has not gone out;
    /// false when the client was gone.
    async fn flush(&mut self, session: &mut Session, ctx: &mut RequestCtx, end: bool) -> bool {
        let piece = self.out.split().freeze();
        let header = self.header.take();
        if header.is_some() {
            ctx.tally.status = 200;
        }
        write_piece(session, header, piece, end).await
    }

    /// A client that left mid-stream is charged what the provider
    /// generated so far.
    fn charge_departed(
        &self,
        ctx: &mut RequestCtx,
        policies: &mut Option<ChainRun>,
        started: Instant,
    ) {
        let charged = charged_stream_usage(self.usage.as_ref(), self.req, &self.generated);
        ctx.tally.client_left();
        if let Some(run) = policies.as_mut() {
            let model = ctx.tally.response_model.clone().unwrap_or_default();
            run.complete(
                ctx.tally.status,
                None,
                true,
                Some(&charged),
                &model,
                ctx.tally.price,
            );
        }
        ctx.tally.usage = self.track.then_some(charged);
        ctx.tally.upstream_time = Some(started.elapsed());
    }

    /// The provider's stream is over: the policies' end of stream, then the
    /// client's (its end, or an error event).
    async fn finish(
        mut self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        policies: &mut Option<ChainRun>,
    ) -> Result<(), GatewayError> {
        if self.failed.is_none() && !self.decoder.is_complete() {
            self.failed = Some(GatewayError::upstream_protocol(
                "the provider closed the stream before it was complete",
            ));
        }
        if let (None, Some(run)) = (&self.failed, policies.as_mut()) {
            match run.finish_stream(self.usage.as_ref(), self.finish_reason) {
                Ok(extra) => {
                    for c in &extra {
                        self.encoder.chunk(c, &mut self.out);
                    }
                    if let Some(h) = self.header.as_mut() {
                        for (k, v) in run.response_headers() {
                            let _ = h.insert_header(k.clone(), v.as_str());
                        }
                    }
                }
                Err(e) => self.failed = Some(e),
            }
        }
        if let (Some(e), Some(_)) = (&self.failed, &self.header) {
            return Err(e.clone()); // nothing reached the client
        }
        match &self.failed {
            Some(e) => {
                ctx.tally.error = Some(e.kind);
                self.encoder.error(e, &mut self.out);
            }
            None => self
                .encoder
                .finish(self.usage.as_ref(), self.finish_reason, &mut self.out),
        }
        if let Some(run) = policies.as_mut() {
            let status = self.failed.as_ref().map(|e| e.status).unwrap_or(200);
            let model = ctx.tally.response_model.clone().unwrap_or_default();
            run.complete(
                status,
                None,
                true,
                self.usage.as_ref(),
                &model,
                ctx.tally.price,
            );
        }
        ctx.tally.usage = if self.track { self.usage.take() } else { None };
        // The whole answer was generated (and, held back, charged above):
        // a client that leaves now only changes how the request is counted.
        if !self.flush(session, ctx, true).await && self.failed.is_none() {
            ctx.tally.client_left();
        }
        Ok(())
    }
}
