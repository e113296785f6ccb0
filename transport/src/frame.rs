//! Length-prefixed postcard frames.
//!
//! A frame is `[u32 header_len][postcard header][u32 payload_len][payload]`
//! (big-endian lengths). Both lengths are checked against their limits
//! *before* any buffer is allocated, so a hostile length costs nothing.
//! The payload is kept apart from the header so that a large payload is
//! handed to QUIC without being copied into a bigger buffer first.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest accepted header (paths, type name, trace context): 64 KiB.
pub const MAX_HEADER: u32 = 64 * 1024;

/// Default largest accepted payload: 64 MiB.
pub const DEFAULT_MAX_PAYLOAD: u64 = 64 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended cleanly before a frame started.
    #[error("stream ended")]
    Eof,
    /// The stream failed or ended in the middle of a frame.
    #[error("stream error: {0}")]
    Io(#[from] std::io::Error),
    /// The header length exceeds [`MAX_HEADER`].
    #[error("header of {size} bytes exceeds limit {max}")]
    HeaderTooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The payload length exceeds the configured limit.
    #[error("payload of {size} bytes exceeds limit {max}")]
    PayloadTooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The header bytes are not a valid postcard encoding of the expected type.
    #[error("malformed header: {0}")]
    Malformed(#[from] postcard::Error),
}

/// QUIC stream error codes used when a frame is refused.
pub mod codes {
    /// Frame (header or payload) larger than allowed.
    pub const TOO_LARGE: u32 = 0x10;
    /// Header could not be decoded.
    pub const MALFORMED: u32 = 0x11;
    /// The stream is no longer wanted (deadline passed, shutting down).
    pub const CANCELLED: u32 = 0x12;
}

impl FrameError {
    /// The QUIC error code to reset/stop the stream with.
    pub fn code(&self) -> u32 {
        match self {
            FrameError::HeaderTooLarge { .. } | FrameError::PayloadTooLarge { .. } => {
                codes::TOO_LARGE
            }
            FrameError::Malformed(_) => codes::MALFORMED,
            FrameError::Eof | FrameError::Io(_) => codes::CANCELLED,
        }
    }

    /// The wire-level error this becomes for the caller.
    pub fn to_remote(&self) -> crate::RemoteError {
        match self {
            FrameError::HeaderTooLarge { size, max }
            | FrameError::PayloadTooLarge { size, max } => crate::RemoteError::TooLarge {
                size: *size,
                max: *max,
            },
            other => crate::RemoteError::BadFrame(other.to_string()),
        }
    }
}

/// Encodes a frame as chunks ready for `SendStream::write_all_chunks`:
/// the prefix (lengths and header) and the payload, not copied.
pub fn encode<H: Serialize>(header: &H, payload: Bytes) -> Result<[Bytes; 2], postcard::Error> {
    let head = postcard::to_stdvec(header)?;
    let head_len = u32::try_from(head.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let pay_len = u32::try_from(payload.len()).map_err(|_| postcard::Error::SerializeBufferFull)?;
    let mut prefix = Vec::with_capacity(8 + head.len());
    prefix.extend_from_slice(&head_len.to_be_bytes());
    prefix.extend_from_slice(&head);
    prefix.extend_from_slice(&pay_len.to_be_bytes());
    Ok([Bytes::from(prefix), payload])
}

/// Encodes a frame into one buffer (tests, small control frames).
pub fn encode_vec<H: Serialize>(header: &H, payload: &[u8]) -> Result<Vec<u8>, postcard::Error> {
    let [a, b] = encode(header, Bytes::copy_from_slice(payload))?;
    let mut v = a.to_vec();
    v.extend_from_slice(&b);
    Ok(v)
}

async fn read_len<R: AsyncRead + Unpin>(r: &mut R, first: bool) -> Result<u32, FrameError> {
    let mut b = [0u8; 4];
    if first {
        // Distinguish "no frame at all" (clean end) from a truncated one.
        let n = r.read(&mut b[..1]).await?;
        if n == 0 {
            return Err(FrameError::Eof);
        }
        r.read_exact(&mut b[1..]).await?;
    } else {
        r.read_exact(&mut b).await?;
    }
    Ok(u32::from_be_bytes(b))
}

/// Reads the raw header bytes of a frame and the announced payload length,
/// already checked against `max_payload`. The payload is still on the stream.
pub async fn read_raw_header<R: AsyncRead + Unpin>(
    r: &mut R,
    max_payload: u64,
) -> Result<(Vec<u8>, u32), FrameError> {
    let head_len = read_len(r, true).await?;
    if head_len > MAX_HEADER {
        return Err(FrameError::HeaderTooLarge {
            size: head_len.into(),
            max: MAX_HEADER.into(),
        });
    }
    let mut head = vec![0u8; head_len as usize];
    r.read_exact(&mut head).await?;
    let pay_len = read_len(r, false).await?;
    if u64::from(pay_len) > max_payload {
        return Err(FrameError::PayloadTooLarge {
            size: pay_len.into(),
            max: max_payload,
        });
    }
    Ok((head, pay_len))
}

/// Reads and decodes the header of a frame; see [`read_raw_header`].
pub async fn read_header<H: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max_payload: u64,
) -> Result<(H, u32), FrameError> {
    let (head, len) = read_raw_header(r, max_payload).await?;
    Ok((postcard::from_bytes(&head)?, len))
}

/// Reads a whole frame: header, then exactly the announced payload into one buffer.
pub async fn read_frame<H: DeserializeOwned, R: AsyncRead + Unpin>(
    r: &mut R,
    max_payload: u64,
) -> Result<(H, Vec<u8>), FrameError> {
    let (header, len) = read_header(r, max_payload).await?;
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await?;
    Ok((header, payload))
}

/// Appends chunks from `r` to `buf` until it holds `n` bytes, never taking
/// more than `cap` bytes in total (the largest frame allowed).
async fn fill(
    r: &mut quinn::RecvStream,
    buf: &mut Vec<u8>,
    n: usize,
    cap: usize,
) -> Result<(), FrameError> {
    while buf.len() < n {
        let room = cap.saturating_sub(buf.len()).max(1);
        match r.read_chunk(room, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) if buf.is_empty() => return Err(FrameError::Eof),
            Ok(None) => {
                return Err(FrameError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "stream ended inside a frame",
                )));
            }
            Err(e) => return Err(FrameError::Io(e.into())),
        }
    }
    Ok(())
}

/// Reads one frame from a QUIC stream chunk by chunk (usually one chunk for a
/// small frame, instead of one read per field). Lengths are checked as soon
/// as they arrive; the payload buffer is sized only after its check, and no
/// more than one maximal frame is ever buffered.
pub async fn read_stream_frame<H: DeserializeOwned>(
    r: &mut quinn::RecvStream,
    max_payload: u64,
) -> Result<(H, Vec<u8>), FrameError> {
    let cap = usize::try_from(u64::from(MAX_HEADER) + 8 + max_payload).unwrap_or(usize::MAX);
    let mut buf = Vec::new();
    fill(r, &mut buf, 4, cap).await?;
    let head_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if head_len > MAX_HEADER {
        return Err(FrameError::HeaderTooLarge {
            size: head_len.into(),
            max: MAX_HEADER.into(),
        });
    }
    let head_end = 4 + head_len as usize;
    fill(r, &mut buf, head_end + 4, cap).await?;
    let header: H = postcard::from_bytes(&buf[4..head_end])?;
    let pay_len = u32::from_be_bytes([
        buf[head_end],
        buf[head_end + 1],
        buf[head_end + 2],
        buf[head_end + 3],
    ]);
    if u64::from(pay_len) > max_payload {
        return Err(FrameError::PayloadTooLarge {
            size: pay_len.into(),
            max: max_payload,
        });
    }
    let start = head_end + 4;
    let len = pay_len as usize;
    if buf.len() >= start + len {
        // Small frame: it all came in the chunks read so far.
        return Ok((header, buf[start..start + len].to_vec()));
    }
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&buf[start..]);
    drop(buf);
    fill(r, &mut payload, len, len).await?;
    payload.truncate(len);
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Hello;
    use abi_protocol::NodeId;

    fn hello() -> Hello {
        Hello {
            version: 1,
            node: NodeId::new("node-a").expect("valid id"),
            incarnation: 7,
        }
    }

    #[tokio::test]
    async fn round_trip() {
        let bytes = encode_vec(&hello(), b"payload").expect("encode");
        let (h, p): (Hello, Vec<u8>) = read_frame(&mut &bytes[..], 1024).await.expect("read");
        assert_eq!(h, hello());
        assert_eq!(p, b"payload");
    }

    #[tokio::test]
    async fn oversize_header_refused_before_reading_it() {
        // Announce 4 GiB of header and supply nothing: must fail on the length alone.
        let bytes = u32::MAX.to_be_bytes();
        let err = read_frame::<Hello, _>(&mut &bytes[..], 1024)
            .await
            .expect_err("must refuse");
        assert!(matches!(err, FrameError::HeaderTooLarge { .. }), "{err}");
        assert_eq!(err.code(), codes::TOO_LARGE);
    }

    #[tokio::test]
    async fn oversize_payload_refused_before_allocation() {
        let mut bytes = encode_vec(&hello(), b"").expect("encode");
        // Rewrite the payload length to 1 GiB; no payload bytes follow.
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&(1u32 << 30).to_be_bytes());
        let err = read_frame::<Hello, _>(&mut &bytes[..], 1024)
            .await
            .expect_err("must refuse");
        match err {
            FrameError::PayloadTooLarge { size, max } => {
                assert_eq!(size, 1 << 30);
                assert_eq!(max, 1024);
            }
            other => panic!("unexpected {other}"),
        }
    }

    #[tokio::test]
    async fn malformed_header_is_an_error() {
        let mut bytes = 3u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0xff, 0xff, 0xff]);
        bytes.extend_from_slice(&0u32.to_be_bytes());
        let err = read_frame::<Hello, _>(&mut &bytes[..], 1024)
            .await
            .expect_err("must refuse");
        assert!(matches!(err, FrameError::Malformed(_)), "{err}");
    }

    #[tokio::test]
    async fn truncated_frame_vs_clean_end() {
        let empty: &[u8] = &[];
        let err = read_frame::<Hello, _>(&mut &empty[..], 1024)
            .await
            .expect_err("eof");
        assert!(matches!(err, FrameError::Eof));
        let bytes = encode_vec(&hello(), b"abcdef").expect("encode");
        let cut = &bytes[..bytes.len() - 2];
        let err = read_frame::<Hello, _>(&mut &cut[..], 1024)
            .await
            .expect_err("truncated");
        assert!(matches!(err, FrameError::Io(_)), "{err}");
    }
}
