//! Bulk catch-up of records, `/dfs/catchup/1`: when anti-entropy finds that two record sets
//! differ in many leaves (a fresh, restored or long-offline node), the initiator asks for the
//! heads of every differing leaf at once and the responder streams them back on one raw stream,
//! flow-controlled by the stream itself, instead of 512-record exchanges capped per session.
//!
//! # Request
//! The requester writes one frame: [`BITMAP_LEN`] bytes, a bitmap of the 4096 sync leaves
//! (leaf `l` is bit `7 - l % 8` of byte `l / 8`: most significant bit first), then closes its
//! write side. At least one bit must be set.
//!
//! # Response
//! The responder writes frames `len: u32 big-endian` then `len` bytes (1 to
//! [`MAX_FRAME_LEN`]): one CBOR array of records (the heads of some keys, each key's heads whole
//! within one frame), in key-hash order over the requested leaves. A frame with `len = 0` ends
//! the answer: every requested head was sent. The responder then closes the stream. A stream
//! that ends without it was cut short (what arrived still counts).
//!
//! # Trust
//! Everything received is checked as any record is: a frame longer than [`MAX_FRAME_LEN`], a
//! record outside the requested leaves, a frame that does not decode, or records that do not
//! verify end the stream; the requester also bounds the records and the time of one answer.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::protocols::sync::LEAVES;
use crate::record::Record;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/dfs/catchup/1");
/// Bytes of the leaf bitmap of a request (4096 bits).
pub const BITMAP_LEN: usize = LEAVES / 8;
/// Largest frame of records (its CBOR bytes).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;
/// A responder fills a frame up to this many encoded bytes (a key's heads may take it past
/// this, never past [`MAX_FRAME_LEN`]).
pub const FRAME_TARGET: usize = 256 * 1024;
/// Streams a responder serves at once for one peer; more are closed at once.
pub const MAX_STREAMS_PER_PEER: usize = 1;
/// Streams a responder serves at once in all.
pub const MAX_STREAMS: usize = 4;
/// Either side gives up when the next frame (or the request) does not arrive, or cannot be
/// written, within this time.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);
/// A requester stops reading one answer after this long in all (the next session continues).
pub const MAX_ANSWER_TIME: Duration = Duration::from_secs(600);

/// What a frame on the wire broke.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("frame of {0} bytes (at most {MAX_FRAME_LEN} allowed)")]
    TooLong(usize),
    #[error("a request names no leaf")]
    NoLeaf,
    #[error("frame does not decode: {0}")]
    Decode(String),
}

/// A set of sync leaves, as the request's bitmap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaves(pub [u8; BITMAP_LEN]);

impl Leaves {
    pub fn new(leaves: impl IntoIterator<Item = u16>) -> Leaves {
        let mut bits = [0u8; BITMAP_LEN];
        for l in leaves {
            let l = l as usize % LEAVES;
            bits[l / 8] |= 0x80 >> (l % 8);
        }
        Leaves(bits)
    }

    pub fn contains(&self, leaf: u16) -> bool {
        let l = leaf as usize;
        l < LEAVES && self.0[l / 8] & (0x80 >> (l % 8)) != 0
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// The leaves in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..LEAVES as u16).filter(|l| self.contains(*l))
    }
}

/// Writes the request and closes the write side.
pub async fn write_request<W: AsyncWrite + Unpin>(w: &mut W, leaves: &Leaves) -> io::Result<()> {
    w.write_all(&leaves.0).await?;
    w.flush().await?;
    w.close().await
}

/// Reads the request.
pub async fn read_request<R: AsyncRead + Unpin>(r: &mut R) -> Result<Leaves, FrameError> {
    let mut bits = [0u8; BITMAP_LEN];
    r.read_exact(&mut bits).await?;
    let leaves = Leaves(bits);
    if leaves.is_empty() {
        return Err(FrameError::NoLeaf);
    }
    Ok(leaves)
}

/// Writes one frame of already encoded records (a CBOR array), or the end (`None`).
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, cbor: Option<&[u8]>) -> io::Result<()> {
    let bytes = cbor.unwrap_or_default();
    debug_assert!(bytes.len() <= MAX_FRAME_LEN);
    w.write_all(&(bytes.len() as u32).to_be_bytes()).await?;
    w.write_all(bytes).await
}

/// Reads one frame: `Some(records)`, or `None` for the end frame.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<Option<Vec<Record>>, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 {
        return Ok(None);
    }
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLong(len));
    }
    let mut bytes = vec![0u8; len];
    r.read_exact(&mut bytes).await?;
    super::decode_cbor::<Vec<Record>>(&bytes, MAX_FRAME_LEN)
        .map(Some)
        .map_err(|e| FrameError::Decode(e.to_string()))
}

/// Encodes records as one frame's CBOR array: a definite-length array header followed by the
/// records' own encodings.
pub fn encode_frame(records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(Vec::len).sum::<usize>() + 9);
    let n = records.len() as u64;
    // CBOR major type 4 (array), shortest length encoding.
    match n {
        0..=23 => out.push(0x80 | n as u8),
        24..=0xff => out.extend([0x98, n as u8]),
        0x100..=0xffff => {
            out.push(0x99);
            out.extend((n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0x9a);
            out.extend((n as u32).to_be_bytes());
        }
        _ => {
            out.push(0x9b);
            out.extend(n.to_be_bytes());
        }
    }
    for r in records {
        out.extend_from_slice(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_is_msb_first() {
        let l = Leaves::new([0, 9, 4095]);
        assert_eq!(l.0[0], 0x80);
        assert_eq!(l.0[1], 0x40);
        assert_eq!(l.0[511], 0x01);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![0, 9, 4095]);
    }

    #[test]
    fn frames_round_trip() {
        futures::executor::block_on(async {
            let mut buf = Vec::new();
            write_frame(&mut buf, Some(&encode_frame(&[])))
                .await
                .unwrap();
            write_frame(&mut buf, None).await.unwrap();
            assert_eq!(buf, [0, 0, 0, 1, 0x80, 0, 0, 0, 0]);
            let mut r = &buf[..];
            assert_eq!(read_frame(&mut r).await.unwrap(), Some(vec![]));
            assert_eq!(read_frame(&mut r).await.unwrap(), None);
            let mut long = &[0x00u8, 0x10, 0x00, 0x01][..];
            assert!(matches!(
                read_frame(&mut long).await,
                Err(FrameError::TooLong(_))
            ));
        });
    }
}
