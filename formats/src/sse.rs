//! An incremental Server-Sent Events parser and writer.
//!
//! Upstream bytes arrive in arbitrary pieces: an event can be split across
//! reads, and several events can come in one read. The parser keeps the
//! incomplete tail and yields whole events only. It scans each byte once
//! (a line dripped one byte per read costs linear work, not quadratic),
//! and bounds what it holds: a line longer than [`MAX_LINE_BYTES`] or an
//! event larger than [`MAX_EVENT_BYTES`] ends the stream with an error.

use bytes::{BufMut, BytesMut};

use crate::error::GatewayError;

/// Longest SSE line kept (8 MiB). Provider chunks are one JSON object per
/// `data:` line, far below this even with inline images.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// Largest event (its `event:` and `data:` lines together), 16 MiB.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// One SSE event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
}

/// A provider stream the parser refuses to hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("the provider sent a stream line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("the provider sent a stream event larger than {0} bytes")]
    EventTooLarge(usize),
}

impl From<SseError> for GatewayError {
    /// A provider protocol error (502, counted against the provider).
    fn from(e: SseError) -> Self {
        GatewayError::upstream_protocol(e.to_string())
    }
}

/// Incremental SSE parser (handles `\n`, `\r\n` and `\r` line endings).
#[derive(Debug)]
pub struct SseParser {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned without finding a line end.
    scanned: usize,
    event: Option<String>,
    data: Option<String>,
    max_line: usize,
    max_event: usize,
    /// Set once a limit was passed: the rest of the stream is ignored.
    failed: bool,
    /// Bytes examined in total (tests check the scan is linear).
    examined: u64,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limits(MAX_LINE_BYTES, MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser with other limits than the defaults.
    pub fn with_limits(max_line: usize, max_event: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            scanned: 0,
            event: None,
            data: None,
            max_line,
            max_event,
            failed: false,
            examined: 0,
        }
    }

    /// Feeds bytes and appends every completed event to `out`. Past a
    /// limit it returns the error (once: the stream is over, and later
    /// input is ignored); events completed before it are still in `out`.
    pub fn feed(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.failed {
            return Ok(());
        }
        self.buf.extend_from_slice(bytes);
        let result = self.scan(out);
        if result.is_err() {
            self.failed = true;
            self.buf = Vec::new();
            self.event = None;
            self.data = None;
        }
        result
    }

    fn scan(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        let mut start = 0;
        let mut i = self.scanned;
        while i < self.buf.len() {
            self.examined += 1;
            let b = self.buf[i];
            if b == b'\n' || b == b'\r' {
                // A lone '\r' at the end may be the first half of "\r\n":
                // wait for the next read to decide.
                if b == b'\r' && i + 1 == self.buf.len() {
                    break;
                }
                let line_end = i;
                i += if b == b'\r' && self.buf[i + 1] == b'\n' {
                    2
                } else {
                    1
                };
                if line_end - start > self.max_line {
                    return Err(SseError::LineTooLong(self.max_line));
                }
                let line = String::from_utf8_lossy(&self.buf[start..line_end]).into_owned();
                start = i;
                self.line(&line, out)?;
            } else {
                i += 1;
            }
        }
        if i - start > self.max_line {
            return Err(SseError::LineTooLong(self.max_line));
        }
        self.buf.drain(..start);
        self.scanned = i - start;
        Ok(())
    }

    /// Flushes an event left without its terminating blank line.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if self.failed {
            return Ok(());
        }
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            self.buf.clear();
            self.scanned = 0;
            self.line(&line, out)?;
        }
        self.dispatch(out);
        Ok(())
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line.starts_with(':') {
            return Ok(()); // comment / keep-alive
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // id, retry: not needed by any provider adapter
        }
        let held =
            self.event.as_ref().map_or(0, String::len) + self.data.as_ref().map_or(0, String::len);
        if held > self.max_event {
            return Err(SseError::EventTooLarge(self.max_event));
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if let Some(data) = self.data.take() {
            out.push(SseEvent { event, data });
        }
    }
}

/// Appends `data: <json>\n\n`.
pub fn write_data(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 8);
    out.put_slice(b"data: ");
    out.put_slice(data);
    out.put_slice(b"\n\n");
}

/// Appends `event: <name>\ndata: <json>\n\n`.
pub fn write_event(out: &mut BytesMut, event: &str, data: &[u8]) {
    out.reserve(event.len() + data.len() + 16);
    out.put_slice(b"event: ");
    out.put_slice(event.as_bytes());
    out.put_slice(b"\n");
    write_data(out, data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in input.chunks(piece) {
            p.feed(c, &mut out).unwrap();
        }
        p.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn a_dripped_line_is_scanned_once() {
        // 200 KB of one data line, one byte per read: every byte is
        // examined once (a rescan from the start would examine ~20 GB).
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let line = format!("data: {}\n\n", "x".repeat(200_000));
        for b in line.as_bytes().chunks(1) {
            p.feed(b, &mut out).unwrap();
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.len(), 200_000);
        assert_eq!(p.examined, line.len() as u64);
    }

    #[test]
    fn a_line_past_the_limit_ends_the_stream_with_an_error() {
        let mut p = SseParser::with_limits(100, 1000);
        let mut out = Vec::new();
        p.feed(b"data: {\"a\":1}\n\ndata: ", &mut out).unwrap();
        // Still incomplete, but already longer than a line may be.
        let e = p.feed(&[b'x'; 200], &mut out).unwrap_err();
        assert_eq!(e, SseError::LineTooLong(100));
        assert_eq!(out.len(), 1, "the event before the long line is kept");
        // Reported once; nothing more is parsed or held afterwards.
        assert_eq!(p.feed(b"\n\ndata: 2\n\n", &mut out), Ok(()));
        assert_eq!(p.finish(&mut out), Ok(()));
        assert_eq!(out.len(), 1);
        assert!(p.buf.is_empty());
        let g: GatewayError = e.into();
        assert_eq!(g.status, 502);
        assert_eq!(g.kind, crate::error::ErrorKind::UpstreamProtocol);
    }

    #[test]
    fn a_complete_long_line_in_one_read_is_refused_too() {
        let mut p = SseParser::with_limits(100, 1000);
        let input = format!("data: {}\n\n", "y".repeat(150));
        let e = p.feed(input.as_bytes(), &mut Vec::new()).unwrap_err();
        assert_eq!(e, SseError::LineTooLong(100));
    }

    #[test]
    fn an_event_of_many_short_lines_past_the_limit_is_refused() {
        let mut p = SseParser::with_limits(100, 1000);
        let mut out = Vec::new();
        let mut result = Ok(());
        for _ in 0..100 {
            result = p.feed(format!("data: {}\n", "z".repeat(50)).as_bytes(), &mut out);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(SseError::EventTooLarge(1000)));
        assert!(out.is_empty());
    }

    #[test]
    fn events_split_anywhere_parse_the_same() {
        let input = b"event: message_start\ndata: {\"a\":1}\n\n: ping\n\ndata: {\"b\":2}\r\n\r\ndata: [DONE]\n\n";
        let whole = parse_in_pieces(input, input.len());
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: None,
                    data: "{\"b\":2}".into()
                },
                SseEvent {
                    event: None,
                    data: "[DONE]".into()
                },
            ]
        );
        for n in 1..input.len() {
            assert_eq!(parse_in_pieces(input, n), whole, "piece size {n}");
        }
    }

    #[test]
    fn multi_line_data_is_joined() {
        let out = parse_in_pieces(b"data: a\ndata: b\n\n", 3);
        assert_eq!(out[0].data, "a\nb");
    }

    #[test]
    fn unterminated_last_event_is_flushed() {
        let out = parse_in_pieces(b"data: {\"x\":1}", 4);
        assert_eq!(out.len(), 1);
    }
}
