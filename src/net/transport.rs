//! The transport of a dfs node: TCP, optionally wrapped in libp2p's private-network layer
//! (`pnet`, a pre-shared key in the IPFS `swarm.key` format), then noise and yamux, the whole
//! handshake bounded by [`HANDSHAKE_TIMEOUT`]. Handshake failures are classified so that the
//! event loop can say in one line why a connection failed (above all: "the peer does not hold
//! this network's swarm key"), on both sides, fast.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::Either;
use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::timeout::TransportTimeoutError;
use libp2p::core::transport::Boxed;
use libp2p::core::upgrade::{NegotiationError, Version};
use libp2p::core::Transport as _;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::{identity::Keypair, noise, tcp, yamux, PeerId};

/// Longest time from an accepted (or dialled) TCP socket to a ready connection (private-network
/// nonces, multistream-select, noise, yamux). Honest peers need a few round trips; a socket
/// that never completes the handshake holds a pending slot at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The first byte every libp2p peer sends (after the private-network layer, if any): the
/// length (19) of multistream-select's header `/multistream/1.0.0\n`. Decrypted with another
/// key, or when one side runs a private network and the other does not, it is something else
/// (255 times in 256), so the mismatch is caught on the first byte instead of after a timeout,
/// and the connection is closed at once, which the other side sees too.
const MULTISTREAM_HEADER_LEN: u8 = 19;

/// Unique phrases of the failures [`FirstByte`] and the private-network layer report; they are
/// found again in the chain of the failed connection's errors (some of libp2p's wrappers hide
/// their inner error's type, none hides its text).
const SWARM_KEY: &str = "the peer does not hold this network's swarm key";
const NOT_LIBP2P: &str = "the peer does not speak libp2p's handshake";
const PNET_CLOSED: &str = "the peer closed the connection during the private-network handshake";

/// A swarm key: the 32-byte pre-shared key of a private network.
pub type SwarmKey = PreSharedKey;

/// Why a connection could not be set up, as the event loop reports it.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{SWARM_KEY}")]
    SwarmKey,
    #[error(
        "{NOT_LIBP2P} (if it runs a private network, start this node with the same --swarm-key)"
    )]
    NotLibp2p,
    #[error("{PNET_CLOSED}: it does not hold this network's swarm key, or refused the connection")]
    PrivateClosed,
    #[error("the handshake timed out after {0:?}")]
    Timeout(Duration),
    #[error("the handshake timed out after {0:?} (does the peer hold this network's swarm key?)")]
    PrivateTimeout(Duration),
    #[error("{0}")]
    Other(Box<dyn std::error::Error + Send + Sync>),
}

/// Reads a swarm key file (`/key/swarm/psk/1.0.0/`, `/base16/`, 64 hex digits).
pub fn read_swarm_key(path: &Path) -> Result<SwarmKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the swarm key {}: {e}", path.display()))?;
    parse_swarm_key(&text).map_err(|e| format!("swarm key {}: {e}", path.display()))
}

/// Parses the text of a swarm key file.
pub fn parse_swarm_key(text: &str) -> Result<SwarmKey, String> {
    text.trim_start().parse::<PreSharedKey>().map_err(|e| {
        use libp2p::pnet::KeyParseError as E;
        match e {
            E::InvalidKeyFile => "not a swarm key file (expected three lines: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)".into(),
            E::InvalidKeyType => "the first line must be /key/swarm/psk/1.0.0/".into(),
            E::InvalidKeyEncoding => "the second line must be /base16/ (the only encoding supported)".into(),
            E::InvalidKeyLength => "the key must be 64 hex digits (32 bytes)".into(),
            E::InvalidKeyChar(_) => "the key has a character that is not a hex digit".into(),
        }
    })
}

/// A new random swarm key, as the text of a key file.
pub fn new_swarm_key() -> String {
    let mut bytes = [0u8; 32];
    rand::Rng::fill(&mut rand::rngs::OsRng, &mut bytes);
    PreSharedKey::new(bytes).to_key_file()
}

/// The transport of a node with identity `key`, in the private network of `swarm_key` if any.
pub fn build(
    key: &Keypair,
    swarm_key: Option<SwarmKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, noise::Error> {
    let noise = noise::Config::new(key)?;
    let private = swarm_key.is_some();
    let tcp = dns(|| tcp::tokio::Transport::new(tcp::Config::default().nodelay(true)));
    let base = tcp.and_then(move |socket, _| async move {
        match swarm_key {
            None => Ok(Either::Right(FirstByte::new(socket, false))),
            Some(psk) => {
                let out = PnetConfig::new(psk).handshake(socket).await.map_err(|e| {
                    io::Error::other(format!("{PNET_CLOSED} (nonce exchange: {e})"))
                })?;
                Ok::<_, io::Error>(Either::Left(FirstByte::new(out, true)))
            }
        }
    });
    Ok(base
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux::Config::default())
        .timeout(HANDSHAKE_TIMEOUT)
        .map_err(move |e| io::Error::other(classify(e, private)))
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}

/// TCP behind a DNS resolver, so that `/dns4/…`, `/dns6/…` and `/dns/…` addresses can be
/// dialled: the system's resolver configuration (the hosts file first, so `localhost` resolves
/// offline), or, where the system has none, a resolver that knows the hosts file alone.
fn dns<T>(tcp: impl Fn() -> T) -> libp2p::dns::tokio::Transport<T> {
    use libp2p::dns::{tokio::Transport, ResolverConfig, ResolverOpts};
    match Transport::system(tcp()) {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "no system resolver configuration; resolving from the hosts file only");
            Transport::custom(
                tcp(),
                ResolverConfig::from_name_servers(Vec::new()),
                ResolverOpts::default(),
            )
        }
    }
}

/// Finds the [`ConnectError`] a failed connection carries, if any (the transport wraps every
/// failure of its handshake in one).
pub fn connect_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(c) = e.downcast_ref::<ConnectError>() {
            return Some(c);
        }
        if let Some(c) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| connect_error(inner))
        {
            return Some(c);
        }
        next = e.source();
    }
    None
}

/// Classifies a failed handshake.
fn classify<E: std::error::Error + Send + Sync + 'static>(
    error: TransportTimeoutError<E>,
    private: bool,
) -> ConnectError {
    match error {
        TransportTimeoutError::Timeout if private => {
            ConnectError::PrivateTimeout(HANDSHAKE_TIMEOUT)
        }
        TransportTimeoutError::Timeout => ConnectError::Timeout(HANDSHAKE_TIMEOUT),
        TransportTimeoutError::TimerError(e) => ConnectError::Other(Box::new(e)),
        TransportTimeoutError::Other(e) => {
            if says(&e, SWARM_KEY) {
                ConnectError::SwarmKey
            } else if says(&e, NOT_LIBP2P) {
                ConnectError::NotLibp2p
            } else if says(&e, PNET_CLOSED) {
                ConnectError::PrivateClosed
            } else if private && (has_negotiation_failure(&e) || has::<noise::Error>(&e)) {
                // Past the private-network layer, bytes that are not libp2p's handshake
                // (multistream-select or noise fails) mean another key; some wrappers report
                // the first byte's check only as "handshake failed".
                ConnectError::SwarmKey
            } else {
                ConnectError::Other(Box::new(e))
            }
        }
    }
}

/// True if an error of the chain of `error` says `phrase`.
fn says(error: &(dyn std::error::Error + 'static), phrase: &str) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.to_string().contains(phrase) {
            return true;
        }
        next = e.source();
    }
    false
}

/// True if multistream-select failed: the bytes were not libp2p's handshake.
fn has_negotiation_failure(error: &(dyn std::error::Error + 'static)) -> bool {
    has::<NegotiationError>(error)
}

/// True if the chain of `error` holds an error of type `T`.
fn has<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<T>().is_some() {
            return true;
        }
        next = e.source();
    }
    false
}

/// A connection's stream with a check of the first byte read (see
/// [`MULTISTREAM_HEADER_LEN`]). The check costs one branch per read afterwards.
struct FirstByte<S> {
    inner: S,
    checked: bool,
    /// Behind the private-network layer: a wrong byte means a wrong key.
    private: bool,
}

impl<S> FirstByte<S> {
    fn new(inner: S, private: bool) -> FirstByte<S> {
        FirstByte {
            inner,
            checked: false,
            private,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.checked && !buf.is_empty() && !this.private {
            // A peer that resets the connection before sending a byte of libp2p's handshake: a
            // private network's node does that to a peer without its key (it reads our
            // handshake as its nonce and hangs up), racing our read of its own nonce.
            if let Poll::Ready(Err(e)) = &result {
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        NOT_LIBP2P,
                    )));
                }
            }
        }
        if !this.checked && !buf.is_empty() {
            if let Poll::Ready(Ok(n)) = result {
                // Behind the private-network layer, a peer that closes right after the nonces
                // refused our key; without it, an early close is the handshake's to report.
                let wrong = if n == 0 {
                    this.private
                } else {
                    buf[0] != MULTISTREAM_HEADER_LEN
                };
                if wrong {
                    let why = if this.private { SWARM_KEY } else { NOT_LIBP2P };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, why)));
                }
                this.checked = true;
            }
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_bad_files_say_why() {
        let text = new_swarm_key();
        assert!(text.starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
        let key = parse_swarm_key(&text).unwrap();
        assert_eq!(key.to_key_file(), text);
        assert_ne!(parse_swarm_key(&new_swarm_key()).unwrap(), key);
        assert!(parse_swarm_key("hello")
            .unwrap_err()
            .contains("three lines"));
        let short = "/key/swarm/psk/1.0.0/\n/base16/\nabcd\n";
        assert!(parse_swarm_key(short)
            .unwrap_err()
            .contains("64 hex digits"));
        let b64 = "/key/swarm/psk/1.0.0/\n/base64/\nabcd\n";
        assert!(parse_swarm_key(b64).unwrap_err().contains("/base16/"));
    }

    #[test]
    fn the_mismatch_is_found_through_noise_and_io_errors() {
        let io = io::Error::new(io::ErrorKind::InvalidData, SWARM_KEY);
        assert!(says(&noise::Error::Io(io), SWARM_KEY));
        let wrapped = io::Error::other(classify::<io::Error>(
            TransportTimeoutError::Other(io::Error::new(io::ErrorKind::InvalidData, SWARM_KEY)),
            true,
        ));
        assert!(matches!(
            connect_error(&wrapped),
            Some(ConnectError::SwarmKey)
        ));
        assert!(matches!(
            connect_error(&io::Error::other(classify::<io::Error>(
                TransportTimeoutError::Timeout,
                false
            ))),
            Some(ConnectError::Timeout(_))
        ));
    }
}
