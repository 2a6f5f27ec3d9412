//! The reference of the fetch figures: a bare libp2p stream (TCP + noise + yamux, the swarm
//! built exactly as dfs builds its own) between two processes, both re-executions of this bench
//! binary in a hidden mode. The receiver times from accepting the stream to its end and prints
//! the seconds on stdout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use dfs::record::CHUNK_SIZE;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, StreamProtocol, Swarm};
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;

/// Hidden argument: run as the receiving process.
pub const RECV_ARG: &str = "--bare-recv";
/// Hidden argument: run as the sending process (`--bare-send ADDR BYTES`).
pub const SEND_ARG: &str = "--bare-send";

const PROTO: StreamProtocol = StreamProtocol::new("/dfs-bench/bare/1");

/// A swarm with the transport of `src/net/transport.rs` and only the stream behaviour.
fn swarm() -> Swarm<libp2p_stream::Behaviour> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default().nodelay(true),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .expect("transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build()
}

/// The runtime `dfs` itself uses: multi-threaded, one worker per core.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Receiving process: prints its full multiaddr, accepts one stream, reads it to its end and
/// prints `BYTES SECONDS` (from the stream's acceptance to its end), then acknowledges.
pub fn recv_main() {
    runtime().block_on(async {
        let mut swarm = swarm();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr"))
            .expect("listen");
        let listen = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let id = *swarm.local_peer_id();
        let mut incoming = swarm
            .behaviour()
            .new_control()
            .accept(PROTO)
            .expect("accept");
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        println!("{}", listen.with(Protocol::P2p(id)));
        // Read on a worker thread, as a node's tasks do (not on block_on's own thread, which
        // would cost a cross-thread wake-up per frame and handicap the reference).
        tokio::spawn(async move {
            let (_, mut stream) = incoming.next().await.expect("an incoming stream");
            let t = Instant::now();
            let mut buf = vec![0u8; CHUNK_SIZE];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf).await.expect("read the bare stream");
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let secs = t.elapsed().as_secs_f64();
            println!("{total} {secs}");
            let _ = stream.write_all(b"k").await;
            let _ = stream.close().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
        .await
        .expect("the reading task");
    });
}

/// Sending process: dials `addr`, opens one stream, writes `bytes` in chunks of the dfs chunk
/// size, closes it and waits for the receiver's acknowledgement.
pub fn send_main(addr: &str, bytes: u64) {
    runtime().block_on(async {
        let mut swarm = swarm();
        let addr: Multiaddr = addr.parse().expect("the receiver's multiaddr");
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("{addr} does not end in /p2p/<peer id>");
        };
        let mut control = swarm.behaviour().new_control();
        swarm.dial(addr).expect("dial");
        tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut stream = loop {
            match control.open_stream(peer, PROTO).await {
                Ok(s) => break s,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cannot open a bare stream: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        tokio::spawn(async move {
            let chunk = vec![0x5Au8; CHUNK_SIZE];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                stream
                    .write_all(&chunk[..n])
                    .await
                    .expect("write the bare stream");
                left -= n as u64;
            }
            stream.close().await.expect("close the bare stream");
            let _ = stream.read(&mut [0u8; 1]).await;
        })
        .await
        .expect("the writing task");
    });
}

/// One transfer of `bytes` between two fresh processes; returns the receiver's seconds. A
/// round that does not complete within `timeout` (seen once in a CI run on a loaded machine:
/// the pair hung, with nothing logged) is said and run again, at most twice; the third hang
/// fails the benchmark.
pub async fn round(bytes: u64, timeout: Duration) -> f64 {
    for attempt in 1..=3 {
        match tokio::time::timeout(timeout, attempt_round(bytes)).await {
            Ok(secs) => return secs,
            Err(_) => eprintln!(
                "    the bare stream did not complete within {timeout:?} (attempt {attempt} of 3)"
            ),
        }
    }
    panic!("the bare stream did not complete within {timeout:?}, three times");
}

async fn attempt_round(bytes: u64) -> f64 {
    let exe = std::env::current_exe().expect("the bench binary's path");
    let mut recv = Command::new(&exe)
        .arg(RECV_ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bare receiver");
    let mut lines = tokio::io::BufReader::new(recv.stdout.take().expect("piped stdout")).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the bare receiver did not start within 30 s")
        .expect("read the bare receiver")
        .expect("the bare receiver exited at start");
    let mut send = Command::new(&exe)
        .args([SEND_ARG, &addr, &bytes.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start the bare sender");
    let line = lines
        .next_line()
        .await
        .expect("read the bare receiver")
        .expect("the bare receiver exited without a result");
    let mut fields = line.split_whitespace();
    let got: u64 = fields.next().and_then(|v| v.parse().ok()).expect("bytes");
    let secs: f64 = fields.next().and_then(|v| v.parse().ok()).expect("seconds");
    assert_eq!(got, bytes, "the bare receiver got {got} of {bytes} bytes");
    let _ = tokio::time::timeout(Duration::from_secs(10), send.wait()).await;
    let _ = send.kill().await;
    let _ = recv.kill().await;
    secs
}
