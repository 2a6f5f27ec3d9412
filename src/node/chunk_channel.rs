//! A blocking [`std::io::Read`] over a bounded channel of byte chunks: how an async producer
//! (an HTTP body) feeds the store's synchronous put without a round trip per network frame.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use tokio::sync::mpsc;

/// Reads the chunks sent on a channel, in order; an `Err` item fails the read. An empty item
/// marks the end of the data: a channel that closes without it (its producer was dropped, say
/// an HTTP request cancelled midway) fails the read, so a cut-off upload is never stored as if
/// it were whole.
pub(crate) struct Reader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    ended: bool,
}

impl Reader {
    pub(crate) fn new(rx: mpsc::Receiver<io::Result<Bytes>>) -> Reader {
        Reader {
            rx,
            current: Bytes::new(),
            ended: false,
        }
    }
}

impl Read for Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) if bytes.is_empty() => self.ended = true,
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(e)) => return Err(e),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the data ended before its end was marked (the upload was cancelled)",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_across_chunks_and_reports_errors() {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from_static(b"hel"))).unwrap();
        tx.try_send(Ok(Bytes::from_static(b"lo"))).unwrap();
        tx.try_send(Err(io::Error::other("cut"))).unwrap();
        drop(tx);
        let mut r = Reader::new(rx);
        let mut out = [0u8; 4];
        assert_eq!(r.read(&mut out).unwrap(), 3);
        assert_eq!(r.read(&mut out).unwrap(), 2);
        assert_eq!(&out[..2], b"lo");
        assert!(r.read(&mut out).is_err());
        // The end marker ends the data; a channel closed without it is a failure.
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(2);
        tx.try_send(Ok(Bytes::from_static(b"x"))).unwrap();
        tx.try_send(Ok(Bytes::new())).unwrap();
        drop(tx);
        let mut r = Reader::new(rx);
        assert_eq!(r.read(&mut out).unwrap(), 1);
        assert_eq!(r.read(&mut out).unwrap(), 0);
        assert_eq!(r.read(&mut out).unwrap(), 0);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(1);
        drop(tx);
        assert!(Reader::new(rx).read(&mut out).is_err());
    }
}
