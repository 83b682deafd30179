//! The kubelet's plugin watcher (grpc-go) dials the registration socket by its
//! path and sends that path as the HTTP/2 `:authority`. hyper's h2 server refuses
//! a request whose authority is not a valid one (`/` is not allowed) with
//! RST_STREAM PROTOCOL_ERROR, so GetInfo never arrives (kubernetes#108254; the
//! kubelet's CSI client got `localhost` as its authority, plugin registration
//! did not). Each registration connection therefore passes through this
//! rewriter: the client's header blocks are decoded (HPACK, with the
//! connection's dynamic table) and sent on as literals, with `:authority:
//! localhost` in place of an invalid one. Every other frame, and the whole
//! server-to-client direction, passes unchanged.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// Header blocks of gRPC calls are tiny; anything this large is not one.
const MAX_BLOCK: usize = 1 << 20;

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("registration connection: {msg}"))
}

/// Whether `value` parses as an HTTP authority (what h2 demands).
fn valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// HPACK integer with an `n`-bit prefix, the first byte's other bits from `first`.
fn encode_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literals without indexing (new names, no Huffman): the
/// server's dynamic table is never touched.
fn encode_literals(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        encode_int(&mut out, 0x00, 7, name.len());
        out.extend_from_slice(name);
        encode_int(&mut out, 0x00, 7, value.len());
        out.extend_from_slice(value);
    }
    out
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The header block fragment of a HEADERS frame (without padding and priority).
fn fragment(flags: u8, payload: &[u8]) -> io::Result<&[u8]> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or_else(|| bad("HEADERS without its pad length"))?;
        pad = n as usize;
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..).ok_or_else(|| bad("HEADERS shorter than its priority"))?;
    }
    p.get(..p.len().checked_sub(pad).ok_or_else(|| bad("padding longer than HEADERS"))?)
        .ok_or_else(|| bad("malformed HEADERS"))
}

/// Decoded header fields: (name, value).
type Fields = Vec<(Vec<u8>, Vec<u8>)>;

struct Rewriter<'a> {
    decoder: fluke_hpack::Decoder<'a>,
}

impl Rewriter<'_> {
    /// The HEADERS frame to send for a complete header block.
    fn headers(&mut self, stream: u32, end_stream: u8, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut headers: Fields = self.decoder.decode(block).map_err(|e| bad(&format!("header block: {e:?}")))?;
        for (name, value) in headers.iter_mut() {
            if name.as_slice() == b":authority" && !valid_authority(value) {
                *value = b"localhost".to_vec();
            }
        }
        Ok(frame(HEADERS, END_HEADERS | end_stream, stream, &encode_literals(&headers)))
    }
}

/// Copies a client's HTTP/2 stream to the server, rewriting header blocks.
pub async fn client_to_server<R, W>(mut from: R, mut to: W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    if &preface != PREFACE {
        return Err(bad("not an HTTP/2 connection"));
    }
    to.write_all(&preface).await?;
    let mut rw = Rewriter { decoder: fluke_hpack::Decoder::new() };
    // (END_STREAM flag, stream, block so far) of a block continued in CONTINUATION frames.
    let mut pending: Option<(u8, u32, Vec<u8>)> = None;
    loop {
        let mut head = [0u8; 9];
        match from.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return to.shutdown().await,
            Err(e) => return Err(e),
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        if len > MAX_BLOCK {
            return Err(bad("frame too large"));
        }
        let mut payload = vec![0u8; len];
        from.read_exact(&mut payload).await?;
        let out = match (kind, pending.take()) {
            (HEADERS, None) => {
                let block = fragment(flags, &payload)?;
                if flags & END_HEADERS != 0 {
                    rw.headers(stream, flags & END_STREAM, block)?
                } else {
                    pending = Some((flags & END_STREAM, stream, block.to_vec()));
                    continue;
                }
            }
            (CONTINUATION, Some((end_stream, s, mut block))) if s == stream => {
                block.extend_from_slice(&payload);
                if block.len() > MAX_BLOCK {
                    return Err(bad("header block too large"));
                }
                if flags & END_HEADERS != 0 {
                    rw.headers(stream, end_stream, &block)?
                } else {
                    pending = Some((end_stream, s, block));
                    continue;
                }
            }
            (_, Some(_)) | (CONTINUATION, None) => return Err(bad("header block interrupted")),
            _ => {
                let mut raw = head.to_vec();
                raw.extend_from_slice(&payload);
                raw
            }
        };
        to.write_all(&out).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal_block(headers: &[(&str, &str)]) -> Vec<u8> {
        let owned: Fields = headers.iter().map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec())).collect();
        encode_literals(&owned)
    }

    async fn rewrite(input: Vec<u8>) -> Vec<u8> {
        let mut out = Vec::new();
        client_to_server(&input[..], &mut out).await.expect("rewrite");
        out
    }

    fn decode_headers_frame(bytes: &[u8]) -> (u8, Fields) {
        assert_eq!(bytes[3], HEADERS);
        let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
        let headers = fluke_hpack::Decoder::new().decode(&bytes[9..9 + len]).expect("valid HPACK");
        (bytes[4], headers)
    }

    #[tokio::test]
    async fn a_socket_path_authority_becomes_localhost_and_the_rest_passes() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let block = literal_block(&[
            (":method", "POST"),
            (":authority", "/var/lib/kubelet/plugins_registry/driver.harvesterhci.io-reg.sock"),
            (":path", "/pluginregistration.Registration/GetInfo"),
        ]);
        // Split over HEADERS + CONTINUATION, with padding, as a client may send it.
        let (a, b) = block.split_at(10);
        let mut padded = vec![3u8];
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | END_STREAM, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        let out = rewrite(input).await;
        assert_eq!(&out[..24], PREFACE);
        assert_eq!(&out[24..33], &frame(0x4, 0, 0, &[])[..]);
        let (flags, headers) = decode_headers_frame(&out[33..]);
        assert_eq!(flags, END_HEADERS | END_STREAM);
        let authority = headers.iter().find(|(n, _)| n == b":authority").map(|(_, v)| v.clone());
        assert_eq!(authority.as_deref(), Some(&b"localhost"[..]));
        assert!(headers.iter().any(|(n, v)| n == b":path" && v == b"/pluginregistration.Registration/GetInfo"));
        assert!(out.ends_with(&frame(0x0, END_STREAM, 1, b"data")));
    }

    #[tokio::test]
    async fn a_valid_authority_is_kept() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 3, &literal_block(&[(":authority", "localhost:50051")])));
        let out = rewrite(input).await;
        let (_, headers) = decode_headers_frame(&out[24..]);
        assert_eq!(headers, vec![(b":authority".to_vec(), b"localhost:50051".to_vec())]);
    }

    #[tokio::test]
    async fn garbage_is_refused_not_passed() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, PADDED | END_HEADERS, 1, &[200, 1, 2]));
        let mut out = Vec::new();
        assert!(client_to_server(&input[..], &mut out).await.is_err());
        let mut out = Vec::new();
        assert!(client_to_server(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], &mut out).await.is_err());
    }

    #[test]
    fn integers_use_the_prefix_then_continuation_bytes() {
        let mut out = Vec::new();
        encode_int(&mut out, 0, 7, 126);
        encode_int(&mut out, 0, 7, 127);
        encode_int(&mut out, 0, 7, 300);
        assert_eq!(out, vec![126, 127, 0, 127, 173, 1]);
    }
}
