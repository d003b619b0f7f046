//! The AWS event-stream binary framing (`application/vnd.amazon.eventstream`).
//!
//! Bedrock's `ConverseStream` and `InvokeModelWithResponseStream` answer with
//! this framing instead of SSE. The gateway decodes it with this decoder,
//! kept instead of `aws-smithy-eventstream`'s because it decodes a Bedrock
//! stream in half the time (docs/benchmarks.md, "AWS event streams"); the
//! mock LLM encodes with `aws-smithy-eventstream`, and the tests check this
//! decoder against that encoder.
//!
//! One message on the wire is:
//!
//! ```text
//! total length: u32 BE | headers length: u32 BE | prelude CRC32: u32 BE
//! headers (headers length bytes) | payload | message CRC32: u32 BE
//! ```
//!
//! The prelude CRC covers the first 8 bytes, the message CRC covers every
//! byte before it (including the prelude CRC). Both are CRC-32 (IEEE).
//! A header is `name length: u8 | name | value type: u8 | value`; value type 7
//! is a UTF-8 string with a `u16` BE length. Bedrock only sends string
//! headers, so [`EventMessage`] keeps only those and skips the other types
//! by their sizes.

use std::fmt;

/// Bytes of the prelude: total length, headers length, prelude CRC.
const PRELUDE_LEN: usize = 12;
/// Bytes of the trailing message CRC.
const MESSAGE_CRC_LEN: usize = 4;
/// The smallest valid message: a prelude and a message CRC, nothing else.
const MIN_MESSAGE_LEN: usize = PRELUDE_LEN + MESSAGE_CRC_LEN;
/// Largest message the AWS implementations accept (16 MiB).
const MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Largest headers section the AWS implementations accept (128 KiB).
const MAX_HEADERS_LEN: usize = 128 * 1024;

/// Header value type codes of the event-stream format.
mod header_type {
    pub const BOOL_TRUE: u8 = 0;
    pub const BOOL_FALSE: u8 = 1;
    pub const BYTE: u8 = 2;
    pub const SHORT: u8 = 3;
    pub const INTEGER: u8 = 4;
    pub const LONG: u8 = 5;
    pub const BYTE_ARRAY: u8 = 6;
    pub const STRING: u8 = 7;
    pub const TIMESTAMP: u8 = 8;
    pub const UUID: u8 = 9;
}

/// One decoded event-stream message: its string headers, in wire order, and
/// its raw payload (JSON for Bedrock).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EventMessage {
    /// String headers (`:event-type`, `:message-type`, ...). Headers of other
    /// value types are skipped when decoding.
    pub headers: Vec<(String, String)>,
    /// The payload bytes.
    pub payload: Vec<u8>,
}

impl EventMessage {
    /// The value of the first header called `name` (exact match; event-stream
    /// header names are case-sensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why a byte stream is not valid event-stream framing. Every error is
/// terminal: the decoder cannot find the next message boundary afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventStreamError {
    /// The CRC of the 8 prelude bytes does not match the prelude CRC.
    PreludeCrcMismatch {
        /// CRC carried by the frame.
        expected: u32,
        /// CRC computed over the received bytes.
        actual: u32,
    },
    /// The CRC of the whole message does not match the trailing CRC.
    MessageCrcMismatch {
        /// CRC carried by the frame.
        expected: u32,
        /// CRC computed over the received bytes.
        actual: u32,
    },
    /// The prelude announces impossible lengths (shorter than a prelude plus
    /// CRC, headers longer than the message, or above the format's limits).
    InvalidLength {
        /// Announced total message length.
        total_len: u32,
        /// Announced headers length.
        headers_len: u32,
    },
    /// A header runs past the end of the headers section.
    TruncatedHeader,
    /// A header uses a value type code outside 0..=9.
    UnsupportedHeaderType(u8),
    /// A header name or string value is not UTF-8.
    InvalidUtf8,
}

impl fmt::Display for EventStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PreludeCrcMismatch { expected, actual } => write!(
                f,
                "event-stream prelude CRC mismatch: frame says {expected:#010x}, computed {actual:#010x}"
            ),
            Self::MessageCrcMismatch { expected, actual } => write!(
                f,
                "event-stream message CRC mismatch: frame says {expected:#010x}, computed {actual:#010x}"
            ),
            Self::InvalidLength {
                total_len,
                headers_len,
            } => write!(
                f,
                "event-stream prelude has invalid lengths: total {total_len}, headers {headers_len}"
            ),
            Self::TruncatedHeader => {
                f.write_str("event-stream header runs past the headers section")
            }
            Self::UnsupportedHeaderType(t) => {
                write!(f, "event-stream header has unsupported value type {t}")
            }
            Self::InvalidUtf8 => {
                f.write_str("event-stream header name or string value is not UTF-8")
            }
        }
    }
}

impl std::error::Error for EventStreamError {}

/// Incremental decoder: feed it bytes as they arrive from the network, then
/// call [`EventStreamDecoder::next_message`] until it returns `Ok(None)`.
///
/// Bounded and linear: a message announcing more than 16 MiB is refused
/// from its 12-byte prelude, an incomplete message costs a prelude check
/// per call, and consumed messages are dropped from the buffer once per
/// `feed` (not once per message, which would move the rest of a large read
/// again for each small message in it).
#[derive(Debug, Default)]
pub struct EventStreamDecoder {
    /// Bytes received; those before `start` were already returned.
    buffer: Vec<u8>,
    start: usize,
}

impl EventStreamDecoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes; they may split messages anywhere.
    pub fn feed(&mut self, data: &[u8]) {
        self.buffer.drain(..self.start);
        self.start = 0;
        self.buffer.extend_from_slice(data);
    }

    /// Bytes buffered that do not yet form a whole message. Non-zero at the
    /// end of a stream means the stream was cut mid-message.
    pub fn buffered_len(&self) -> usize {
        self.buffer.len() - self.start
    }

    /// The next complete message, `Ok(None)` if more bytes are needed, or an
    /// error if the framing is corrupt (after which the stream is unusable).
    pub fn next_message(&mut self) -> Result<Option<EventMessage>, EventStreamError> {
        let buf = &self.buffer[self.start..];
        if buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total_len = read_u32(&buf[0..4]);
        let headers_len = read_u32(&buf[4..8]);
        let prelude_crc = read_u32(&buf[8..12]);

        // Check the prelude CRC before trusting the lengths: a corrupt length
        // must not make us wait forever for bytes that will never come.
        let actual = crc32fast::hash(&buf[0..8]);
        if actual != prelude_crc {
            return Err(EventStreamError::PreludeCrcMismatch {
                expected: prelude_crc,
                actual,
            });
        }
        let total = total_len as usize;
        let headers = headers_len as usize;
        if !(MIN_MESSAGE_LEN..=MAX_MESSAGE_LEN).contains(&total)
            || headers > MAX_HEADERS_LEN
            || headers > total - MIN_MESSAGE_LEN
        {
            return Err(EventStreamError::InvalidLength {
                total_len,
                headers_len,
            });
        }
        if buf.len() < total {
            return Ok(None);
        }

        let crc_at = total - MESSAGE_CRC_LEN;
        let message_crc = read_u32(&buf[crc_at..total]);
        let actual = crc32fast::hash(&buf[..crc_at]);
        if actual != message_crc {
            return Err(EventStreamError::MessageCrcMismatch {
                expected: message_crc,
                actual,
            });
        }

        let headers_end = PRELUDE_LEN + headers;
        let parsed = parse_headers(&buf[PRELUDE_LEN..headers_end])?;
        let payload = buf[headers_end..crc_at].to_vec();
        self.start += total;
        Ok(Some(EventMessage {
            headers: parsed,
            payload,
        }))
    }
}

fn read_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(word)
}

/// Parses a headers section, keeping string headers and skipping the others.
fn parse_headers(mut bytes: &[u8]) -> Result<Vec<(String, String)>, EventStreamError> {
    let mut headers = Vec::new();
    while !bytes.is_empty() {
        let name_len = usize::from(bytes[0]);
        let name = take(&mut bytes, 1 + name_len)?;
        let name = std::str::from_utf8(&name[1..]).map_err(|_| EventStreamError::InvalidUtf8)?;
        let value_type = take(&mut bytes, 1)?[0];
        let fixed_len = match value_type {
            header_type::BOOL_TRUE | header_type::BOOL_FALSE => Some(0),
            header_type::BYTE => Some(1),
            header_type::SHORT => Some(2),
            header_type::INTEGER => Some(4),
            header_type::LONG | header_type::TIMESTAMP => Some(8),
            header_type::UUID => Some(16),
            header_type::BYTE_ARRAY | header_type::STRING => None,
            other => return Err(EventStreamError::UnsupportedHeaderType(other)),
        };
        match fixed_len {
            Some(len) => {
                take(&mut bytes, len)?;
            }
            None => {
                let len_bytes = take(&mut bytes, 2)?;
                let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
                let value = take(&mut bytes, len)?;
                if value_type == header_type::STRING {
                    let value =
                        std::str::from_utf8(value).map_err(|_| EventStreamError::InvalidUtf8)?;
                    headers.push((name.to_owned(), value.to_owned()));
                }
            }
        }
    }
    Ok(headers)
}

/// Splits `n` bytes off the front of `bytes`.
fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], EventStreamError> {
    if bytes.len() < n {
        return Err(EventStreamError::TruncatedHeader);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

/// Test helper: one message with string headers, framed by the AWS SDK's
/// encoder (`aws-smithy-eventstream`), the reference this decoder is
/// checked against.
#[cfg(test)]
pub(crate) fn encode_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
    let mut message = Message::new(payload.to_vec());
    for (name, value) in headers {
        message = message.add_header(Header::new(
            name.to_string(),
            HeaderValue::String(value.to_string().into()),
        ));
    }
    let mut out = Vec::new();
    aws_smithy_eventstream::frame::write_message_to(&message, &mut out)
        .expect("a message with string headers encodes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bedrock_headers(event: &str) -> Vec<(&str, &str)> {
        vec![
            (":event-type", event),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ]
    }

    #[test]
    fn empty_message_matches_the_aws_test_vector() {
        // aws-c-event-stream's `empty_message` vector.
        let expected = [
            0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98,
            0xc8, 0xff,
        ];
        assert_eq!(encode_message(&[], b""), expected);
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&expected);
        assert_eq!(
            decoder.next_message().unwrap(),
            Some(EventMessage::default())
        );
        assert_eq!(decoder.next_message().unwrap(), None);
    }

    #[test]
    fn round_trip_keeps_headers_and_payload() {
        let payload = br#"{"contentBlockIndex":0,"delta":{"text":"Hello "}}"#;
        let frame = encode_message(&bedrock_headers("contentBlockDelta"), payload);
        assert_eq!(read_u32(&frame[0..4]) as usize, frame.len());

        let mut decoder = EventStreamDecoder::default();
        decoder.feed(&frame);
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(message.header(":event-type"), Some("contentBlockDelta"));
        assert_eq!(message.header(":content-type"), Some("application/json"));
        assert_eq!(message.header(":message-type"), Some("event"));
        assert_eq!(message.header(":missing"), None);
        assert_eq!(message.headers.len(), 3);
        assert_eq!(message.payload, payload);
        assert_eq!(decoder.next_message().unwrap(), None);
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn split_feeds_at_every_byte_boundary() {
        let first = encode_message(&bedrock_headers("messageStart"), br#"{"role":"assistant"}"#);
        let second = encode_message(
            &bedrock_headers("messageStop"),
            br#"{"stopReason":"end_turn"}"#,
        );
        let stream = [first.clone(), second.clone()].concat();

        for split in 0..=stream.len() {
            let mut decoder = EventStreamDecoder::new();
            let mut got = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                decoder.feed(part);
                while let Some(message) = decoder.next_message().unwrap() {
                    got.push(message.header(":event-type").unwrap().to_owned());
                }
            }
            assert_eq!(got, ["messageStart", "messageStop"], "split at {split}");
            assert_eq!(decoder.buffered_len(), 0);
        }

        // One byte at a time: a message appears exactly when its last byte does.
        let mut decoder = EventStreamDecoder::new();
        let mut completed_at = Vec::new();
        for (i, byte) in stream.iter().enumerate() {
            decoder.feed(std::slice::from_ref(byte));
            if decoder.next_message().unwrap().is_some() {
                completed_at.push(i + 1);
            }
        }
        assert_eq!(completed_at, [first.len(), stream.len()]);
    }

    #[test]
    fn many_messages_in_one_read_are_consumed_without_moving_the_rest() {
        let frame = encode_message(&bedrock_headers("contentBlockDelta"), b"{}");
        let mut read = frame.repeat(10_000);
        read.extend_from_slice(&frame[..5]); // and the start of one more
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&read);
        let mut n = 0;
        while decoder.next_message().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 10_000);
        // Consumed messages stay until the next feed drops them at once.
        assert_eq!(decoder.buffer.len(), read.len());
        assert_eq!(decoder.buffered_len(), 5);
        decoder.feed(&frame[5..]);
        assert_eq!(decoder.buffer.len(), frame.len());
        assert!(decoder.next_message().unwrap().is_some());
        assert_eq!(decoder.buffered_len(), 0);
    }

    #[test]
    fn a_message_announcing_more_than_16_mib_is_refused_from_its_prelude() {
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&(MAX_MESSAGE_LEN as u32 + 1).to_be_bytes());
        prelude.extend_from_slice(&0u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&prelude);
        assert!(matches!(
            decoder.next_message(),
            Err(EventStreamError::InvalidLength { .. })
        ));
    }

    #[test]
    fn corrupted_payload_fails_the_message_crc() {
        let mut frame = encode_message(&bedrock_headers("metadata"), br#"{"usage":{}}"#);
        let last_payload_byte = frame.len() - 5;
        frame[last_payload_byte] ^= 0x01;
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&frame);
        assert!(matches!(
            decoder.next_message(),
            Err(EventStreamError::MessageCrcMismatch { .. })
        ));
    }

    #[test]
    fn corrupted_length_fails_the_prelude_crc_without_waiting() {
        let mut frame = encode_message(&bedrock_headers("metadata"), b"{}");
        // A larger announced length would otherwise make the decoder wait.
        frame[2] ^= 0x10;
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&frame[..PRELUDE_LEN]);
        assert!(matches!(
            decoder.next_message(),
            Err(EventStreamError::PreludeCrcMismatch { .. })
        ));
    }

    #[test]
    fn impossible_lengths_are_rejected() {
        // Headers length larger than the message, with a valid prelude CRC.
        let mut prelude = Vec::new();
        prelude.extend_from_slice(&16u32.to_be_bytes());
        prelude.extend_from_slice(&1u32.to_be_bytes());
        let crc = crc32fast::hash(&prelude);
        prelude.extend_from_slice(&crc.to_be_bytes());
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&prelude);
        assert_eq!(
            decoder.next_message(),
            Err(EventStreamError::InvalidLength {
                total_len: 16,
                headers_len: 1
            })
        );
        assert!(
            decoder
                .next_message()
                .unwrap_err()
                .to_string()
                .contains("total 16")
        );
    }

    /// Builds a frame by hand so it can carry header types the encoder never
    /// writes.
    fn frame_with_raw_headers(headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let total = PRELUDE_LEN + headers.len() + payload.len() + MESSAGE_CRC_LEN;
        let mut out = Vec::new();
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out.extend_from_slice(headers);
        out.extend_from_slice(payload);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    fn raw_header(name: &str, value_type: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![name.len() as u8];
        out.extend_from_slice(name.as_bytes());
        out.push(value_type);
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn non_string_headers_are_skipped_by_size() {
        let mut headers = Vec::new();
        headers.extend(raw_header("t", header_type::BOOL_TRUE, &[]));
        headers.extend(raw_header("f", header_type::BOOL_FALSE, &[]));
        headers.extend(raw_header("byte", header_type::BYTE, &[0xff]));
        headers.extend(raw_header("short", header_type::SHORT, &[0x01, 0x02]));
        headers.extend(raw_header(
            ":event-type",
            header_type::STRING,
            b"\x00\x0cmessageStart",
        ));
        headers.extend(raw_header("int", header_type::INTEGER, &[1, 2, 3, 4]));
        headers.extend(raw_header("long", header_type::LONG, &[1; 8]));
        headers.extend(raw_header(
            "bytes",
            header_type::BYTE_ARRAY,
            &[0, 3, 9, 9, 9],
        ));
        headers.extend(raw_header("ts", header_type::TIMESTAMP, &[2; 8]));
        headers.extend(raw_header("id", header_type::UUID, &[3; 16]));
        headers.extend(raw_header(
            ":message-type",
            header_type::STRING,
            b"\x00\x05event",
        ));
        let frame = frame_with_raw_headers(&headers, b"{}");

        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&frame);
        let message = decoder.next_message().unwrap().unwrap();
        assert_eq!(
            message.headers,
            [
                (":event-type".to_owned(), "messageStart".to_owned()),
                (":message-type".to_owned(), "event".to_owned()),
            ]
        );
        assert_eq!(message.payload, b"{}");
    }

    #[test]
    fn unknown_header_type_and_truncated_header_are_errors() {
        let frame = frame_with_raw_headers(&raw_header("x", 42, &[]), b"");
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&frame);
        assert_eq!(
            decoder.next_message(),
            Err(EventStreamError::UnsupportedHeaderType(42))
        );

        // A string header announcing 5 bytes but carrying 2.
        let frame =
            frame_with_raw_headers(&raw_header("x", header_type::STRING, b"\x00\x05ab"), b"");
        let mut decoder = EventStreamDecoder::new();
        decoder.feed(&frame);
        assert_eq!(
            decoder.next_message(),
            Err(EventStreamError::TruncatedHeader)
        );
    }
}
