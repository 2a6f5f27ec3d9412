//! The request-response codec of `/dfs/fetch/2` and `/dfs/sync/1`: one CBOR value per message,
//! ending at the end of the stream, decoded strictly. libp2p's own `cbor` codec truncates a
//! message at its size limit and ignores bytes after the value; this one refuses a message
//! longer than the limit, a truncated value and trailing bytes alike, so that what the
//! specification says fails does fail.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::{de::DeserializeOwned, Serialize};

/// A strict CBOR codec with a size limit for each direction.
pub struct Codec<Req, Resp> {
    request_limit: u64,
    response_limit: u64,
    types: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> Codec<Req, Resp> {
    pub fn new(request_limit: u64, response_limit: u64) -> Self {
        Codec {
            request_limit,
            response_limit,
            types: PhantomData,
        }
    }
}

impl<Req, Resp> Clone for Codec<Req, Resp> {
    fn clone(&self) -> Self {
        Codec::new(self.request_limit, self.response_limit)
    }
}

/// Decodes exactly one CBOR value that spans all of `bytes`. Strict: the bytes must be one
/// complete CBOR item, checked before the typed decoding, which alone would take a truncated
/// map such as `{"time":` (no value) for the unit variant `"time"`.
pub fn decode_exact<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
    let one_item = |rest: &[u8]| {
        if rest.is_empty() {
            Ok(())
        } else {
            Err(bad(format!("{} bytes after the CBOR value", rest.len())))
        }
    };
    let mut rest = bytes;
    ciborium::from_reader::<serde::de::IgnoredAny, _>(&mut rest)
        .map_err(|e| bad(format!("bad CBOR: {e}")))?;
    one_item(rest)?;
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest).map_err(|e| bad(format!("bad CBOR: {e}")))?;
    one_item(rest)?;
    Ok(value)
}

/// Reads the whole stream, failing if it holds more than `limit` bytes.
async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    io.take(limit + 1).read_to_end(&mut bytes).await?;
    if bytes.len() as u64 > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message larger than the limit of {limit} bytes"),
        ));
    }
    Ok(bytes)
}

async fn write_bytes<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req, Resp> libp2p::request_response::Codec for Codec<Req, Resp>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_exact(&read_bounded(io, self.request_limit).await?)
    }

    async fn read_response<T>(&mut self, _: &Self::Protocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_exact(&read_bounded(io, self.response_limit).await?)
    }

    async fn write_request<T>(&mut self, _: &Self::Protocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, super::encode_cbor(&req)).await
    }

    async fn write_response<T>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, super::encode_cbor(&res)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::fetch::Request;

    #[test]
    fn decoding_is_strict() {
        let good = crate::protocols::encode_cbor(&Request::Record { key: "k".into() });
        assert_eq!(
            decode_exact::<Request>(&good).unwrap(),
            Request::Record { key: "k".into() }
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode_exact::<Request>(&trailing).is_err());
        assert!(decode_exact::<Request>(&good[..good.len() - 1]).is_err());
        assert!(decode_exact::<Request>(&[]).is_err());
        // A map whose value is missing is not the unit variant it names (`{"time":`).
        let truncated = [0xa1, 0x64, b't', b'i', b'm', b'e'];
        assert!(decode_exact::<crate::protocols::fetch::Request>(&truncated).is_err());
        let unit = [0x64, b't', b'i', b'm', b'e'];
        assert_eq!(
            decode_exact::<crate::protocols::fetch::Request>(&unit).unwrap(),
            crate::protocols::fetch::Request::Time
        );
    }
}
