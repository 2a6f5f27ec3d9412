//! The chunk transfer protocol, `/dfs/chunks/1`: bulk chunk bytes on a raw libp2p stream, many
//! chunks per stream, flow-controlled by the stream itself (no request-response round trip, no
//! CBOR around 1 MiB byte strings).
//!
//! # Participants
//! A *requester* (a node fetching content) opens a stream to a *responder* (a peer that has it).
//!
//! # Requests
//! The requester writes request frames and closes its write side when it has nothing more to
//! ask. A frame is `count: u16 big-endian` (1 to [`MAX_HASHES_PER_REQUEST`]) followed by
//! `count` 32-byte BLAKE3 chunk hashes. It may write the next frame before the answers to the
//! previous one have arrived (pipelining); the responder reads it when it is ready.
//!
//! # Responses
//! For every requested hash, in request order, the responder writes one reply:
//! - `0x00`, `len: u32 big-endian` (1 to [`MAX_CHUNK_LEN`]), then `len` bytes of the chunk;
//! - `0x01`: the responder does not have this chunk;
//! - `0x02`, `len: u16 big-endian` (at most [`MAX_ERROR_LEN`]), then a UTF-8 message: the
//!   request was refused or malformed; the responder closes the stream after it.
//!
//! When the requester has closed its side and every request is answered, the responder closes
//! the stream. A malformed frame gets an error reply and the stream is closed.
//!
//! # Trust
//! The responder does not re-verify what it serves (it verified every chunk when it stored it);
//! the requester checks every chunk against its hash (and its expected length) before writing it,
//! so a lying or damaged peer is caught within one chunk.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::record::{Hash, CHUNK_SIZE};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dfs/chunks/1");
/// Most hashes in one request frame.
pub const MAX_HASHES_PER_REQUEST: usize = 64;
/// Largest chunk in a reply.
pub const MAX_CHUNK_LEN: usize = CHUNK_SIZE;
/// Longest error message in a reply.
pub const MAX_ERROR_LEN: usize = 1024;
/// A responder closes a stream on which no request frame arrives for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A requester gives up on a stream whose next reply does not start within this time.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams a responder serves at once for one peer; more are refused with an error reply.
pub const MAX_STREAMS_PER_PEER: usize = 8;
/// Streams a responder serves at once in all.
pub const MAX_STREAMS: usize = 64;

/// Reply status bytes.
pub const CHUNK: u8 = 0x00;
pub const NOT_FOUND: u8 = 0x01;
pub const ERROR: u8 = 0x02;

/// What a frame on the wire broke.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("request frame of {0} hashes (1 to {MAX_HASHES_PER_REQUEST} allowed)")]
    BadCount(usize),
    #[error("unknown reply status {0:#04x}")]
    BadStatus(u8),
    #[error("chunk of {0} bytes (1 to {MAX_CHUNK_LEN} allowed)")]
    BadLength(usize),
    #[error("error message of {0} bytes (at most {MAX_ERROR_LEN} allowed)")]
    BadMessage(usize),
}

/// The header of one reply; a chunk's bytes follow a [`Reply::Chunk`] on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Chunk { len: usize },
    NotFound,
    Error { message: String },
}

/// Writes one request frame (1 to [`MAX_HASHES_PER_REQUEST`] hashes).
pub async fn write_request<W: AsyncWrite + Unpin>(w: &mut W, hashes: &[Hash]) -> io::Result<()> {
    assert!(!hashes.is_empty() && hashes.len() <= MAX_HASHES_PER_REQUEST);
    let mut frame = Vec::with_capacity(2 + 32 * hashes.len());
    frame.extend_from_slice(&(hashes.len() as u16).to_be_bytes());
    for h in hashes {
        frame.extend_from_slice(&h.0);
    }
    w.write_all(&frame).await?;
    w.flush().await
}

/// Reads one request frame; `Ok(None)` when the requester closed its side between frames.
pub async fn read_request<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<Hash>>, FrameError> {
    let mut count = [0u8; 2];
    let n = r.read(&mut count[..1]).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut count[1..]).await?;
    let count = u16::from_be_bytes(count) as usize;
    if count == 0 || count > MAX_HASHES_PER_REQUEST {
        return Err(FrameError::BadCount(count));
    }
    let mut bytes = vec![0u8; 32 * count];
    r.read_exact(&mut bytes).await?;
    Ok(Some(
        bytes
            .chunks_exact(32)
            .map(|c| Hash(c.try_into().expect("32-byte slice")))
            .collect(),
    ))
}

/// Writes a chunk reply: header and bytes.
pub async fn write_chunk<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> io::Result<()> {
    debug_assert!(!data.is_empty() && data.len() <= MAX_CHUNK_LEN);
    let mut header = [0u8; 5];
    header[0] = CHUNK;
    header[1..].copy_from_slice(&(data.len() as u32).to_be_bytes());
    w.write_all(&header).await?;
    w.write_all(data).await
}

/// Writes a not-found reply.
pub async fn write_not_found<W: AsyncWrite + Unpin>(w: &mut W) -> io::Result<()> {
    w.write_all(&[NOT_FOUND]).await
}

/// Writes an error reply (the message is cut to [`MAX_ERROR_LEN`] bytes).
pub async fn write_error<W: AsyncWrite + Unpin>(w: &mut W, message: &str) -> io::Result<()> {
    let mut end = message.len().min(MAX_ERROR_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = vec![ERROR];
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&message.as_bytes()[..end]);
    w.write_all(&out).await?;
    w.flush().await
}

/// Reads the header of the next reply. After [`Reply::Chunk`] the caller reads `len` bytes.
pub async fn read_reply<R: AsyncRead + Unpin>(r: &mut R) -> Result<Reply, FrameError> {
    let mut status = [0u8; 1];
    r.read_exact(&mut status).await?;
    match status[0] {
        CHUNK => {
            let mut len = [0u8; 4];
            r.read_exact(&mut len).await?;
            let len = u32::from_be_bytes(len) as usize;
            if len == 0 || len > MAX_CHUNK_LEN {
                return Err(FrameError::BadLength(len));
            }
            Ok(Reply::Chunk { len })
        }
        NOT_FOUND => Ok(Reply::NotFound),
        ERROR => {
            let mut len = [0u8; 2];
            r.read_exact(&mut len).await?;
            let len = u16::from_be_bytes(len) as usize;
            if len > MAX_ERROR_LEN {
                return Err(FrameError::BadMessage(len));
            }
            let mut text = vec![0u8; len];
            r.read_exact(&mut text).await?;
            Ok(Reply::Error {
                message: String::from_utf8_lossy(&text).into_owned(),
            })
        }
        other => Err(FrameError::BadStatus(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::Cursor;

    #[test]
    fn frames_round_trip_and_match_the_spec_bytes() {
        futures::executor::block_on(async {
            let h = Hash([0xaa; 32]);
            let mut out = Vec::new();
            write_request(&mut out, &[h]).await.unwrap();
            assert_eq!(out[..2], [0x00, 0x01]);
            assert_eq!(out.len(), 34);
            let mut r = Cursor::new(out);
            assert_eq!(read_request(&mut r).await.unwrap(), Some(vec![h]));
            assert_eq!(read_request(&mut r).await.unwrap(), None);

            let mut out = Vec::new();
            write_chunk(&mut out, b"hello").await.unwrap();
            write_not_found(&mut out).await.unwrap();
            write_error(&mut out, "busy").await.unwrap();
            assert_eq!(
                hex::encode(&out),
                "000000000568656c6c6f01020004".to_string() + &hex::encode("busy")
            );
            let mut r = Cursor::new(out);
            assert_eq!(read_reply(&mut r).await.unwrap(), Reply::Chunk { len: 5 });
            let mut body = [0u8; 5];
            r.read_exact(&mut body).await.unwrap();
            assert_eq!(&body, b"hello");
            assert_eq!(read_reply(&mut r).await.unwrap(), Reply::NotFound);
            assert_eq!(
                read_reply(&mut r).await.unwrap(),
                Reply::Error {
                    message: "busy".into()
                }
            );
        });
    }

    #[test]
    fn malformed_frames_are_refused() {
        futures::executor::block_on(async {
            let mut r = Cursor::new(vec![0u8, 0]);
            assert!(matches!(
                read_request(&mut r).await,
                Err(FrameError::BadCount(0))
            ));
            let mut r = Cursor::new(vec![0u8, 65]);
            assert!(matches!(
                read_request(&mut r).await,
                Err(FrameError::BadCount(65))
            ));
            // Truncated: a count of one hash but only 3 bytes of it.
            let mut r = Cursor::new(vec![0u8, 1, 1, 2, 3]);
            assert!(matches!(read_request(&mut r).await, Err(FrameError::Io(_))));
            let mut r = Cursor::new(vec![CHUNK, 0, 0x10, 0, 1]);
            assert!(matches!(
                read_reply(&mut r).await,
                Err(FrameError::BadLength(_))
            ));
            let mut r = Cursor::new(vec![CHUNK, 0, 0, 0, 0]);
            assert!(matches!(
                read_reply(&mut r).await,
                Err(FrameError::BadLength(0))
            ));
            let mut r = Cursor::new(vec![7u8]);
            assert!(matches!(
                read_reply(&mut r).await,
                Err(FrameError::BadStatus(7))
            ));
        });
    }
}
