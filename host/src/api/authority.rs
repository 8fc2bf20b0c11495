//! A narrow shim in front of h2 on the Unix socket: it replaces an `:authority` that
//! is not a valid URI authority with `localhost`, so that gRPC clients which name the
//! socket path there can call the daemon.
//!
//! gRPC C-core (Python's `grpcio`, Ruby, PHP, C++), grpc-java and others send the
//! socket path as `:authority` on a `unix:` target (C-core percent-encodes it:
//! `tmp%2Fdir%2Fhoneydew.sock`). The `h2` server parses `:authority` strictly as an
//! RFC 3986 authority and resets every such stream with PROTOCOL_ERROR, health and
//! reflection included; no option of h2, hyper or tonic relaxes that (hyperium/h2 PR
//! 487 would, unmerged). gRPC itself says a Unix socket's authority is `localhost`,
//! which is what grpc-go and tonic's own client send. So this module sits between the
//! Unix stream and h2, on the bytes the client sends, and rewrites only what h2 would
//! refuse: every other frame, and every byte the server sends, passes unchanged.
//!
//! Header blocks (HEADERS and CONTINUATION frames) are HPACK-compressed against the
//! client's dynamic table, so the shim decodes every block with its own [`Decoder`]
//! (kept in step with the client's encoder) and re-encodes it as literals that never
//! enter the server's dynamic table, so that h2's decoder needs no state the client
//! set. Each re-encoded block is sent in frames of at most 16 KiB, the size every
//! HTTP/2 peer accepts. A malformed frame or block ends the connection, as h2 would.
//! The shim owns no other HTTP/2 state: flow control, settings and stream states stay
//! h2's. TCP connections do not go through it (their clients send a host and port).
//!
//! A gRPC channel sends one authority for its whole life, so the first header block
//! decides: when its `:authority` is one h2 accepts (tonic, grpc-go, grpcurl with
//! `-authority`), that block goes on byte for byte and the connection becomes a plain
//! pass-through, reads going straight into h2's buffer; the shim then costs nothing.
//! Only a connection whose first block needed rewriting keeps decoding and re-encoding
//! every block (it must: the client's table and h2's diverge from that block on).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use loona_hpack::Decoder;
use loona_hpack::encoder::encode_integer_into;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// What a client sends first on an HTTP/2 connection with prior knowledge.
const CONNECTION_PREFACE_BYTES: usize = 24;
/// A frame's header: length (24 bits), type, flags, stream id (32 bits).
const FRAME_HEADER_BYTES: usize = 9;
const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;
/// The largest frame payload every HTTP/2 peer accepts (SETTINGS_MAX_FRAME_SIZE's
/// initial value, which can only be raised).
const SAFE_FRAME_PAYLOAD_BYTES: usize = 16 * 1024;
/// The largest compressed header block buffered; gRPC headers are a few hundred bytes.
const MAX_HEADER_BLOCK_BYTES: usize = 1024 * 1024;
/// What a Unix socket's authority is, for gRPC.
const UNIX_AUTHORITY: &[u8] = b"localhost";

/// Why the shim ended a connection.
#[derive(Debug, thiserror::Error)]
enum ShimError {
    #[error("malformed http/2 frame from the client: {0}")]
    Frame(&'static str),
    #[error("header block of more than {MAX_HEADER_BLOCK_BYTES} bytes from the client")]
    BlockTooLarge,
    #[error("cannot decode a header block from the client: {0}")]
    Hpack(String),
}

/// What the shim does with a connection's header blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// No header block seen yet: the first one decides.
    Deciding,
    /// The first block's authority was acceptable: every byte passes unchanged.
    PassThrough,
    /// The first block's authority was rewritten: every block is re-encoded.
    Rewriting,
}

/// The client's bytes, rewritten as they pass: see the module documentation.
struct AuthorityRewriter {
    mode: Mode,
    /// Bytes of the connection preface still to pass unchanged.
    preface_left: usize,
    /// Payload bytes of the current non-header frame still to pass unchanged.
    passthrough_left: usize,
    /// A header block whose END_HEADERS has not come yet.
    pending: Option<PendingBlock>,
    decoder: Decoder<'static>,
}

struct PendingBlock {
    stream_id: [u8; 4],
    end_stream: bool,
    fragment: Vec<u8>,
    /// The block's frames as received, for passing them on unchanged.
    raw: Vec<u8>,
}

impl AuthorityRewriter {
    fn new() -> Self {
        Self {
            mode: Mode::Deciding,
            preface_left: CONNECTION_PREFACE_BYTES,
            passthrough_left: 0,
            pending: None,
            decoder: Decoder::new(),
        }
    }

    /// Moves what can be handled of `input` to `output`, rewritten; leaves an
    /// incomplete header frame in `input` for the next call.
    fn process(&mut self, input: &mut Vec<u8>, output: &mut Vec<u8>) -> Result<(), ShimError> {
        let mut at = 0;
        loop {
            if self.mode == Mode::PassThrough {
                output.extend_from_slice(&input[at..]);
                at = input.len();
                break;
            }
            let rest = &input[at..];
            if rest.is_empty() {
                break;
            }
            let unchanged = self.preface_left.max(self.passthrough_left);
            if unchanged > 0 {
                let taken = unchanged.min(rest.len());
                output.extend_from_slice(&rest[..taken]);
                at += taken;
                if self.preface_left > 0 {
                    self.preface_left -= taken;
                } else {
                    self.passthrough_left -= taken;
                }
                continue;
            }
            if rest.len() < FRAME_HEADER_BYTES {
                break;
            }
            let length = frame_length([rest[0], rest[1], rest[2]]);
            let (kind, flags) = (rest[3], rest[4]);
            let stream_id = [rest[5], rest[6], rest[7], rest[8]];
            if kind != FRAME_HEADERS && kind != FRAME_CONTINUATION {
                if self.pending.is_some() {
                    return Err(ShimError::Frame(
                        "a header block interrupted by another frame",
                    ));
                }
                output.extend_from_slice(&rest[..FRAME_HEADER_BYTES]);
                at += FRAME_HEADER_BYTES;
                self.passthrough_left = length;
                continue;
            }
            if length > MAX_HEADER_BLOCK_BYTES {
                return Err(ShimError::BlockTooLarge);
            }
            let Some(payload) = rest.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + length) else {
                break;
            };
            let frame = &rest[..FRAME_HEADER_BYTES + length];
            self.header_frame(kind, flags, stream_id, payload, frame, output)?;
            at += FRAME_HEADER_BYTES + length;
        }
        input.drain(..at);
        Ok(())
    }

    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream_id: [u8; 4],
        payload: &[u8],
        frame: &[u8],
        output: &mut Vec<u8>,
    ) -> Result<(), ShimError> {
        if kind == FRAME_HEADERS {
            if self.pending.is_some() {
                return Err(ShimError::Frame(
                    "a header block interrupted by another frame",
                ));
            }
            let mut start = 0;
            let mut padding = 0;
            if flags & FLAG_PADDED != 0 {
                padding = usize::from(*payload.first().ok_or(ShimError::Frame("no pad length"))?);
                start = 1;
            }
            if flags & FLAG_PRIORITY != 0 {
                // Stream dependency and weight: advisory, and deprecated; dropped.
                start += 5;
            }
            let end = payload
                .len()
                .checked_sub(padding)
                .filter(|end| *end >= start)
                .ok_or(ShimError::Frame("padding longer than the frame"))?;
            self.pending = Some(PendingBlock {
                stream_id,
                end_stream: flags & FLAG_END_STREAM != 0,
                fragment: payload[start..end].to_vec(),
                raw: if self.mode == Mode::Deciding {
                    frame.to_vec()
                } else {
                    Vec::new()
                },
            });
        } else {
            let pending = self
                .pending
                .as_mut()
                .filter(|pending| pending.stream_id == stream_id)
                .ok_or(ShimError::Frame("a continuation frame without its headers"))?;
            if pending.fragment.len() + payload.len() > MAX_HEADER_BLOCK_BYTES {
                return Err(ShimError::BlockTooLarge);
            }
            pending.fragment.extend_from_slice(payload);
            if self.mode == Mode::Deciding {
                pending.raw.extend_from_slice(frame);
            }
        }
        if flags & FLAG_END_HEADERS != 0 {
            let block = self.pending.take().expect("a pending block");
            self.rewrite_block(block, output)?;
        }
        Ok(())
    }

    /// Decodes `block`, replaces an invalid `:authority`, and writes it re-encoded;
    /// or, for a connection's first block with an acceptable authority, writes it as
    /// received and lets the rest of the connection pass.
    fn rewrite_block(
        &mut self,
        block: PendingBlock,
        output: &mut Vec<u8>,
    ) -> Result<(), ShimError> {
        let mut encoded = Vec::with_capacity(block.fragment.len() * 2);
        let mut rewrote = false;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                let value: &[u8] = if &*name == b":authority"
                    && http::uri::Authority::try_from(&*value).is_err()
                {
                    rewrote = true;
                    UNIX_AUTHORITY
                } else {
                    value.as_ref()
                };
                encode_literal(&name, value, &mut encoded);
            })
            .map_err(|err| ShimError::Hpack(err.to_string()))?;
        if self.mode == Mode::Deciding {
            if !rewrote {
                self.mode = Mode::PassThrough;
                output.extend_from_slice(&block.raw);
                return Ok(());
            }
            self.mode = Mode::Rewriting;
        }

        let mut chunks = encoded.chunks(SAFE_FRAME_PAYLOAD_BYTES).peekable();
        let mut kind = FRAME_HEADERS;
        let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
        if chunks.peek().is_none() {
            write_frame(kind, flags | FLAG_END_HEADERS, block.stream_id, &[], output);
        }
        while let Some(chunk) = chunks.next() {
            let last = chunks.peek().is_none();
            let end_headers = if last { FLAG_END_HEADERS } else { 0 };
            write_frame(kind, flags | end_headers, block.stream_id, chunk, output);
            kind = FRAME_CONTINUATION;
            flags = 0;
        }
        Ok(())
    }
}

/// HPACK "literal header field without indexing, new name", no Huffman coding: the
/// receiver's dynamic table is left as it was.
fn encode_literal(name: &[u8], value: &[u8], output: &mut Vec<u8>) {
    output.push(0x00);
    for text in [name, value] {
        encode_integer_into(text.len(), 7, 0, output).expect("writing to a Vec cannot fail");
        output.extend_from_slice(text);
    }
}

/// A frame's payload length, from its first three bytes (big-endian).
fn frame_length(bytes: [u8; 3]) -> usize {
    let [high, middle, low] = bytes.map(usize::from);
    (high << 16) | (middle << 8) | low
}

fn write_frame(kind: u8, flags: u8, stream_id: [u8; 4], payload: &[u8], output: &mut Vec<u8>) {
    let length = payload.len();
    output.extend_from_slice(&[(length >> 16) as u8, (length >> 8) as u8, length as u8]);
    output.extend_from_slice(&[kind, flags]);
    output.extend_from_slice(&stream_id);
    output.extend_from_slice(payload);
}

/// A Unix stream whose incoming header blocks pass through the rewriter.
pub struct UnixAuthorityShim {
    stream: UnixStream,
    rewriter: AuthorityRewriter,
    /// Read from the client, not yet rewritten (an incomplete header frame).
    received: Vec<u8>,
    /// Rewritten, not yet handed to h2.
    rewritten: Vec<u8>,
    handed: usize,
    ended: bool,
}

impl UnixAuthorityShim {
    /// Wraps an accepted connection.
    pub fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            rewriter: AuthorityRewriter::new(),
            received: Vec::new(),
            rewritten: Vec::new(),
            handed: 0,
            ended: false,
        }
    }
}

impl AsyncRead for UnixAuthorityShim {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.handed < this.rewritten.len() {
                let count = buf.remaining().min(this.rewritten.len() - this.handed);
                buf.put_slice(&this.rewritten[this.handed..this.handed + count]);
                this.handed += count;
                if this.handed == this.rewritten.len() {
                    this.rewritten.clear();
                    this.handed = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.ended {
                return Poll::Ready(Ok(()));
            }
            if this.rewriter.mode == Mode::PassThrough && this.received.is_empty() {
                // Decided: the client's bytes go straight into h2's buffer.
                return Pin::new(&mut this.stream).poll_read(cx, buf);
            }
            let mut chunk = [0u8; SAFE_FRAME_PAYLOAD_BYTES];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                // An incomplete frame at the end is dropped: h2 sees the end either way.
                this.ended = true;
                continue;
            }
            this.received.extend_from_slice(read.filled());
            this.rewriter
                .process(&mut this.received, &mut this.rewritten)
                .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
        }
    }
}

impl AsyncWrite for UnixAuthorityShim {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl Connected for UnixAuthorityShim {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// The headers of every block in `bytes` (preface first), decoded as h2 would.
    fn decoded_blocks(bytes: &[u8]) -> Vec<Vec<(String, String)>> {
        assert_eq!(&bytes[..24], PREFACE);
        let mut decoder = Decoder::new();
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        let mut at = 24;
        while at < bytes.len() {
            let length = frame_length([bytes[at], bytes[at + 1], bytes[at + 2]]);
            assert!(length <= SAFE_FRAME_PAYLOAD_BYTES);
            let (kind, flags) = (bytes[at + 3], bytes[at + 4]);
            let mut payload = &bytes[at + 9..at + 9 + length];
            if kind == FRAME_HEADERS && flags & FLAG_PADDED != 0 {
                let padding = usize::from(payload[0]);
                payload = &payload[1..payload.len() - padding];
            }
            if kind == FRAME_HEADERS && flags & FLAG_PRIORITY != 0 {
                payload = &payload[5..];
            }
            if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION {
                block.extend_from_slice(payload);
                if flags & FLAG_END_HEADERS != 0 {
                    let headers = decoder.decode(&block).unwrap();
                    blocks.push(
                        headers
                            .into_iter()
                            .map(|(n, v)| {
                                (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                            })
                            .collect(),
                    );
                    block.clear();
                }
            }
            at += 9 + length;
        }
        blocks
    }

    fn frame(kind: u8, flags: u8, stream: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::new();
        write_frame(kind, flags, [0, 0, 0, stream], payload, &mut bytes);
        bytes
    }

    /// Runs `input` through a rewriter, `split` bytes at a time.
    fn rewrite(input: &[u8], split: usize) -> Vec<u8> {
        let mut rewriter = AuthorityRewriter::new();
        let (mut pending, mut output) = (Vec::new(), Vec::new());
        for piece in input.chunks(split) {
            pending.extend_from_slice(piece);
            rewriter.process(&mut pending, &mut output).unwrap();
        }
        assert!(pending.is_empty());
        output
    }

    fn request_headers(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/grpc.health.v1.Health/Check"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// Two requests from a client whose encoder indexes (as C-core's does), a DATA
    /// frame between them; the second block refers to the first's table entries.
    fn client_connection(authority: &str) -> Vec<u8> {
        let mut encoder = loona_hpack::Encoder::new();
        let headers = request_headers(authority);
        let block = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let again = encoder.encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        bytes.extend(frame(FRAME_HEADERS, FLAG_END_HEADERS, 1, &block));
        bytes.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
        // The second block split across HEADERS and CONTINUATION, padded.
        let (first, second) = again.split_at(again.len() / 2);
        let mut padded = vec![3];
        padded.extend_from_slice(first);
        padded.extend_from_slice(&[0, 0, 0]);
        bytes.extend(frame(FRAME_HEADERS, FLAG_PADDED, 3, &padded));
        bytes.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 3, second));
        bytes
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_in_every_request() {
        for split in [1, 7, 4096] {
            let output = rewrite(&client_connection("tmp%2Fdir%2Fhoneydew.sock"), split);
            let blocks = decoded_blocks(&output);
            assert_eq!(blocks.len(), 2);
            for block in blocks {
                assert!(
                    block.contains(&(":authority".into(), "localhost".into())),
                    "{block:?}"
                );
                assert!(block.contains(&(":path".into(), "/grpc.health.v1.Health/Check".into())));
            }
        }
    }

    #[test]
    fn a_valid_authority_and_every_other_frame_pass_unchanged() {
        let input = client_connection("localhost:7070");
        let output = rewrite(&input, 5);
        for block in decoded_blocks(&output) {
            assert!(
                block.contains(&(":authority".into(), "localhost:7070".into())),
                "{block:?}"
            );
        }
        let data = frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0");
        assert!(output.windows(data.len()).any(|window| window == data));
        // The first block decided: the whole connection passed byte for byte, so the
        // shim costs well-behaved clients (tonic, grpc-go) nothing.
        assert_eq!(output, input);
    }

    #[test]
    fn a_large_block_is_split_into_frames_every_peer_accepts() {
        let mut headers = request_headers("/run/honeydew.sock");
        headers.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block =
            loona_hpack::Encoder::new().encode(headers.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut input = PREFACE.to_vec();
        for (index, piece) in block.chunks(30_000).enumerate() {
            let kind = if index == 0 {
                FRAME_HEADERS
            } else {
                FRAME_CONTINUATION
            };
            let last = (index + 1) * 30_000 >= block.len();
            input.extend(frame(
                kind,
                if last { FLAG_END_HEADERS } else { 0 },
                1,
                piece,
            ));
        }
        let blocks = decoded_blocks(&rewrite(&input, 1000));
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].contains(&(":authority".into(), "localhost".into())));
        assert!(
            blocks[0]
                .iter()
                .any(|(name, value)| name == "x-big" && value.len() == 40_000)
        );
    }

    #[test]
    fn a_continuation_without_headers_ends_the_connection() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(FRAME_CONTINUATION, FLAG_END_HEADERS, 1, &[0x82]));
        let mut rewriter = AuthorityRewriter::new();
        let err = rewriter.process(&mut input, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("continuation frame without its headers"),
            "{err}"
        );
    }
}
