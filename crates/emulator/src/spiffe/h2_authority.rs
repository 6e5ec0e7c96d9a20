//! Lets gRPC clients that send a socket path as `:authority` talk to the Workload API.
//!
//! Over a unix socket, grpcio (py-spiffe), grpc-java and other clients put the (percent-encoded)
//! socket path into the HTTP/2 `:authority` pseudo-header. `h2`, under hyper and tonic, refuses
//! such a request as malformed (`RST_STREAM(PROTOCOL_ERROR)`); Go's gRPC sends `localhost` and
//! Go servers accept anything, which is why a real SPIRE agent works with every client.
//!
//! [`wrap`] sits between the accepted socket and the HTTP/2 server: frames from the client pass
//! through unchanged except header blocks (`HEADERS` + `CONTINUATION`), which are decoded with
//! the connection's HPACK context (`loona-hpack`), get an invalid `:authority` replaced by
//! `localhost`, and are re-encoded as literals that never touch the server's dynamic table.
//! Padding and priority fields of `HEADERS` are dropped (HTTP/2 priorities are advisory).
//! Frames from the server pass through untouched. The peer credentials of the unix socket are
//! kept as tonic's [`UdsConnectInfo`], so caller attestation still works.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream, ReadBuf};
use tokio::net::UnixStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

/// The client connection preface.
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts by default (`SETTINGS_MAX_FRAME_SIZE`).
const MAX_FRAME: usize = 16_384;
/// A header block larger than this is refused (the connection is closed).
const MAX_BLOCK: usize = 256 * 1024;
/// Buffer of the in-process pipe to the HTTP/2 server.
const PIPE_BUFFER: usize = 64 * 1024;

/// The server's end of a wrapped connection.
#[derive(Debug)]
pub(crate) struct Wrapped {
    pipe: DuplexStream,
    info: UdsConnectInfo,
}

impl Connected for Wrapped {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for Wrapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_read(cx, buf)
    }
}

impl AsyncWrite for Wrapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.pipe).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.pipe).poll_shutdown(cx)
    }
}

/// Wraps an accepted connection; the returned stream is what the HTTP/2 server reads. Must be
/// called inside a Tokio runtime (it spawns the two pumps).
pub(crate) fn wrap(stream: UnixStream) -> Wrapped {
    let info = UdsConnectInfo {
        peer_addr: stream.peer_addr().ok().map(Arc::new),
        peer_cred: stream.peer_cred().ok(),
    };
    let (server_side, shim_side) = tokio::io::duplex(PIPE_BUFFER);
    let (client_read, mut client_write) = stream.into_split();
    let (mut shim_read, shim_write) = tokio::io::split(shim_side);
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut shim_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    });
    tokio::spawn(async move {
        if let Err(e) = pump(client_read, shim_write).await {
            tracing::debug!(error = %e, "Workload API connection closed");
        }
    });
    Wrapped {
        pipe: server_side,
        info,
    }
}

/// Client → server: frames, with header blocks rewritten.
async fn pump<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    if &preface != PREFACE {
        // Not HTTP/2 with prior knowledge: let the server answer it as it sees fit.
        tokio::io::copy(&mut from, &mut to).await?;
        return to.shutdown().await;
    }
    let mut decoder = loona_hpack::Decoder::new();
    // The header block being collected: stream id, END_STREAM, fragments so far.
    let mut pending: Option<(u32, bool, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let (kind, flags) = (head[3], head[4]);
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_BLOCK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let fragment = match (kind, &mut pending) {
            (HEADERS, None) => {
                let fragment = header_fragment(&payload, flags)?;
                pending = Some((stream_id, flags & END_STREAM != 0, fragment.to_vec()));
                true
            }
            (CONTINUATION, Some((id, _, block))) if *id == stream_id => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "header block too large",
                    ));
                }
                true
            }
            // Anything else while a block is open is a protocol error the server reports;
            // frames outside header blocks pass through.
            _ => {
                to.write_all(&head).await?;
                to.write_all(&payload).await?;
                false
            }
        };
        if fragment
            && flags & END_HEADERS != 0
            && let Some((id, end_stream, block)) = pending.take()
        {
            let fields = decoder
                .decode(&block)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("HPACK: {e:?}")))?;
            let block = encode_literals(fields.into_iter().map(fix_authority));
            write_header_frames(&mut to, id, end_stream, &block).await?;
        }
        to.flush().await?;
    }
    to.shutdown().await
}

/// The header block fragment of a `HEADERS` payload, without padding and priority.
fn header_fragment(payload: &[u8], flags: u8) -> io::Result<&[u8]> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed HEADERS frame");
    let (mut start, mut end) = (0, payload.len());
    if flags & PADDED != 0 {
        let pad = usize::from(*payload.first().ok_or_else(bad)?);
        start = 1;
        end = end.checked_sub(pad).ok_or_else(bad)?;
    }
    if flags & PRIORITY != 0 {
        start += 5;
    }
    payload.get(start..end).ok_or_else(bad)
}

/// `:authority` values `http` cannot parse become `localhost`; other fields are kept.
fn fix_authority((name, value): (Vec<u8>, Vec<u8>)) -> (Vec<u8>, Vec<u8>) {
    if name == b":authority" && http::uri::Authority::try_from(value.as_slice()).is_err() {
        return (name, b"localhost".to_vec());
    }
    (name, value)
}

/// HPACK "literal header field without indexing — new name" for every field, no Huffman.
fn encode_literals(fields: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0);
        for s in [&name, &value] {
            encode_integer(&mut out, s.len(), 7, 0);
            out.extend_from_slice(s);
        }
    }
    out
}

/// An HPACK integer with an `n`-bit prefix, `high` holding the bits above it.
fn encode_integer(out: &mut Vec<u8>, mut value: usize, n: u32, high: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(high | u8::try_from(value).unwrap_or(0));
        return;
    }
    out.push(high | u8::try_from(max).unwrap_or(0));
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap_or(0) | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap_or(0));
}

/// `HEADERS` (+ `CONTINUATION`s) carrying `block`.
async fn write_header_frames<W: AsyncWrite + Unpin>(
    to: &mut W,
    stream_id: u32,
    end_stream: bool,
    block: &[u8],
) -> io::Result<()> {
    let mut chunks = block.chunks(MAX_FRAME).peekable();
    let mut kind = HEADERS;
    let mut flags = if end_stream { END_STREAM } else { 0 };
    if chunks.peek().is_none() {
        return write_frame(to, HEADERS, flags | END_HEADERS, stream_id, &[]).await;
    }
    while let Some(chunk) = chunks.next() {
        if chunks.peek().is_none() {
            flags |= END_HEADERS;
        }
        write_frame(to, kind, flags, stream_id, chunk).await?;
        kind = CONTINUATION;
        flags = 0;
    }
    Ok(())
}

async fn write_frame<W: AsyncWrite + Unpin>(
    to: &mut W,
    kind: u8,
    flags: u8,
    stream_id: u32,
    payload: &[u8],
) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes();
    let id = stream_id.to_be_bytes();
    to.write_all(&[
        len[1], len[2], len[3], kind, flags, id[0], id[1], id[2], id[3],
    ])
    .await?;
    to.write_all(payload).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_follow_rfc7541_examples() {
        // C.1.1–C.1.3: 10 with a 5-bit prefix, 1337 with a 5-bit prefix, 42 at an octet start.
        let mut out = Vec::new();
        encode_integer(&mut out, 10, 5, 0);
        assert_eq!(out, [0x0a]);
        out.clear();
        encode_integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [0x1f, 0x9a, 0x0a]);
        out.clear();
        encode_integer(&mut out, 42, 8, 0);
        assert_eq!(out, [0x2a]);
    }

    #[test]
    fn rewritten_block_decodes_with_localhost() {
        let block = encode_literals(
            [
                (b":method".to_vec(), b"POST".to_vec()),
                (b":authority".to_vec(), b"tmp%2Fagent.sock".to_vec()),
                (b"x-long".to_vec(), vec![b'a'; 300]),
            ]
            .into_iter()
            .map(fix_authority),
        );
        let fields = loona_hpack::Decoder::new().decode(&block).unwrap();
        assert_eq!(fields[1], (b":authority".to_vec(), b"localhost".to_vec()));
        assert_eq!(fields[2].1.len(), 300);
        // A valid authority is kept.
        let kept = fix_authority((b":authority".to_vec(), b"127.0.0.1:80".to_vec()));
        assert_eq!(kept.1, b"127.0.0.1:80");
    }

    /// A client stream through [`pump`]: SETTINGS and DATA pass verbatim; a padded HEADERS +
    /// CONTINUATION block whose authority was added to the client's dynamic table is rewritten,
    /// and a second block that refers to that table entry by index is rewritten too.
    #[tokio::test]
    async fn pump_rewrites_header_blocks_only() {
        let (mut client, pump_in) = tokio::io::duplex(1 << 16);
        let (pump_out, mut server) = tokio::io::duplex(1 << 16);
        let task = tokio::spawn(pump(pump_in, pump_out));

        let settings = [0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 0x3, 0, 0, 0, 100];
        // Literal with incremental indexing, new name `:authority` (grpcio's first request).
        let mut first = vec![0x40];
        for s in [&b":authority"[..], b"tmp%2Fagent.sock"] {
            encode_integer(&mut first, s.len(), 7, 0);
            first.extend_from_slice(s);
        }
        first.push(0x83); // :method POST (static index 3)
        let (a, b) = first.split_at(5);
        let mut wire = PREFACE.to_vec();
        wire.extend_from_slice(&settings);
        // HEADERS, PADDED (2 bytes of padding), no END_HEADERS, stream 1.
        let len = u8::try_from(1 + a.len() + 2).unwrap();
        wire.extend_from_slice(&[0, 0, len, HEADERS, PADDED, 0, 0, 0, 1, 2]);
        wire.extend_from_slice(a);
        wire.extend_from_slice(&[0, 0]);
        let len = u8::try_from(b.len()).unwrap();
        wire.extend_from_slice(&[0, 0, len, CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        wire.extend_from_slice(b);
        wire.extend_from_slice(&[0, 0, 2, 0x0, END_STREAM, 0, 0, 0, 1, 7, 7]); // DATA
        // Stream 3: the authority by dynamic index 62, END_STREAM.
        wire.extend_from_slice(&[0, 0, 1, HEADERS, END_HEADERS | END_STREAM, 0, 0, 0, 3, 0xbe]);
        client.write_all(&wire).await.unwrap();
        drop(client);
        let mut out = Vec::new();
        server.read_to_end(&mut out).await.unwrap();
        task.await.unwrap().unwrap();

        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..39], settings);
        let mut rest = &out[39..];
        let mut decoder = loona_hpack::Decoder::new();
        let mut frames = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(rest[2]) | usize::from(rest[1]) << 8;
            frames.push((rest[3], rest[4], rest[8], rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert_eq!(
            (frames[0].0, frames[0].1, frames[0].2),
            (HEADERS, END_HEADERS, 1)
        );
        let fields = decoder.decode(&frames[0].3).unwrap();
        assert_eq!(
            fields,
            [
                (b":authority".to_vec(), b"localhost".to_vec()),
                (b":method".to_vec(), b"POST".to_vec())
            ]
        );
        assert_eq!(frames[1], (0x0, END_STREAM, 1, vec![7, 7]));
        assert_eq!(
            (frames[2].0, frames[2].1),
            (HEADERS, END_HEADERS | END_STREAM)
        );
        assert_eq!(
            decoder.decode(&frames[2].3).unwrap(),
            [(b":authority".to_vec(), b"localhost".to_vec())]
        );
    }

    #[test]
    fn padding_and_priority_are_stripped() {
        let payload = [2, 1, 2, 3, 4, 5, 0xaa, 0xbb, 0, 0];
        assert_eq!(
            header_fragment(&payload, PADDED | PRIORITY).unwrap(),
            [0xaa, 0xbb]
        );
        assert!(header_fragment(&[9, 1], PADDED).is_err());
    }
}
