//! Everything from the network or a user is untrusted: arbitrary bytes fed to every decoder
//! (records, grants, announcements, fetch and sync messages, chunk frames, tickets, the API's
//! `Range` header) never panic and never yield a record that was not signed as it is; any
//! single-byte change to a signed record or grant is refused; and a running node's API answers
//! arbitrary requests with client errors, never a server error, and keeps running.

use crate::common;

use std::time::Duration;

use common::*;
use dfs::protocols::{codec::decode_exact, fetch, members, peers, records, sync};
use dfs::record::{content_id, Hash, Record};
use dfs::trust::{Grant, Role, Ticket};
use proptest::prelude::*;

fn key(n: u8) -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes([n; 32]).unwrap()
}

fn signed_record() -> Record {
    let mut r = Record {
        key: "hello.txt".into(),
        cid: Some(content_id(5, &[Hash::of(b"hello")])),
        size: 5,
        time: 0x0000_0190_0000_0000,
        author: Vec::new(),
        seq: 1,
        seen: vec![dfs::record::Dot(libp2p::PeerId::random().to_bytes(), 7)],
        sig: Vec::new(),
    };
    r.sign(&key(1));
    r
}

fn signed_grant() -> Grant {
    let mut g = Grant {
        network: key(1).public().to_peer_id().to_string(),
        subject: key(2).public().to_peer_id().to_bytes(),
        role: Role::Writer,
        cutoff: 0,
        time: 0x0000_0190_0000_0000,
        issuer: Vec::new(),
        seq: 2,
        sig: Vec::new(),
        held: None,
    };
    g.sign(&key(1));
    g
}

fn read_frame(bytes: &[u8]) {
    let mut r = bytes;
    let _ = futures::executor::block_on(dfs::protocols::chunks::read_request(&mut r));
    let mut r = bytes;
    let _ = futures::executor::block_on(dfs::protocols::chunks::read_reply(&mut r));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(r) = records::decode(&bytes) {
            // Whatever decodes is a record its author signed as it is.
            prop_assert!(r.verify().is_ok());
        }
        if let Ok(g) = members::decode(&bytes) {
            prop_assert!(g.verify().is_ok());
        }
        let _ = peers::decode(&bytes, None);
        let _ = decode_exact::<fetch::Request>(&bytes);
        let _ = decode_exact::<fetch::Response>(&bytes);
        let _ = decode_exact::<sync::Request>(&bytes);
        let _ = decode_exact::<sync::Response>(&bytes);
        read_frame(&bytes);
        let _ = Ticket::decode(&String::from_utf8_lossy(&bytes));
        let _ = dfs::api::range::parse(&String::from_utf8_lossy(&bytes), 1 << 30);
    }

    /// A changed byte is refused, or it changed only the encoding (a map key sent as a byte
    /// string instead of text, a hash as an array of integers) and decodes to the very record
    /// that was signed: what counts is signed, whatever the encoding.
    #[test]
    fn any_single_byte_change_to_a_signed_record_is_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let original = signed_record();
        let bytes = records::encode(&original);
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        let mut changed = bytes.clone();
        changed[i] = to;
        if let Ok(decoded) = records::decode(&changed) {
            prop_assert_eq!(decoded, original);
        }
    }

    #[test]
    fn any_single_byte_change_to_a_signed_grant_is_refused(at in any::<prop::sample::Index>(), to in any::<u8>()) {
        let original = signed_grant();
        let bytes = members::encode(&original);
        let i = at.index(bytes.len());
        prop_assume!(bytes[i] != to);
        let mut changed = bytes.clone();
        changed[i] = to;
        if let Ok(decoded) = members::decode(&changed) {
            prop_assert_eq!(decoded, original);
        }
    }


    #[test]
    fn truncated_or_extended_messages_fail(cut in 1usize..40, extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let request = fetch::Request::Manifest { cid: Hash([0xaa; 32]), offset: 3 };
        let bytes = dfs::protocols::encode_cbor(&request);
        prop_assert_eq!(decode_exact::<fetch::Request>(&bytes).unwrap(), request);
        let cut = cut.min(bytes.len());
        prop_assert!(decode_exact::<fetch::Request>(&bytes[..bytes.len() - cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(decode_exact::<fetch::Request>(&longer).is_err());
    }
}

/// A tiny deterministic generator (xorshift), so the API fuzz is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next() % items.len() as u64) as usize]
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() % (max as u64 + 1)) as usize;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_answers_arbitrary_requests_without_a_server_error() {
    let node = TestNode::start(vec![]).await;
    put(&node.client, "a file", b"some bytes".to_vec()).await;
    let token = "t".repeat(64);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client: dfs::node::Client = (*node.client).clone();
    let server = tokio::spawn(dfs::api::serve(
        listener,
        client,
        token.clone(),
        futures::future::pending(),
    ));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let methods = ["GET", "PUT", "DELETE", "POST", "HEAD", "PATCH"];
    let paths = [
        "/v1/files/",
        "/v1/files/a%20file",
        "/v1/files/%ff%fe",
        "/v1/files/%00",
        "/v1/stat/",
        "/v1/import/x",
        "/v1/members/",
        "/v1/members/12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
        "/v1/members/not-a-peer",
        "/v1/invite",
        "/v1/id",
        "/v1/peers",
        "/v1/files",
        "/v1/nothing",
    ];
    let headers = [
        "range",
        "if-range",
        "if-none-match",
        "content-length",
        "content-type",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..300 {
        let method = reqwest::Method::from_bytes(rng.pick(&methods).as_bytes()).unwrap();
        let mut path = rng.pick(&paths).to_string();
        if rng.next().is_multiple_of(2) {
            for b in rng.bytes(12) {
                path.push_str(&format!("%{b:02x}"));
            }
        }
        let mut req = http.request(method.clone(), format!("{url}{path}"));
        if !rng.next().is_multiple_of(8) {
            req = req.bearer_auth(&token);
        }
        for _ in 0..rng.next() % 3 {
            let value: String = rng
                .bytes(24)
                .iter()
                .map(|b| (b' ' + b % 94) as char)
                .collect();
            if *rng.pick(&headers) == "content-length" {
                continue; // reqwest sets it from the body
            }
            req = req.header(*rng.pick(&headers), value);
        }
        if matches!(method.as_str(), "PUT" | "POST" | "PATCH") {
            let body = if rng.next().is_multiple_of(2) {
                rng.bytes(64)
            } else {
                serde_json::to_vec(&serde_json::json!({"role": "writer", "admin": rng.next().is_multiple_of(2), "path": "/etc/hostname"})).unwrap()
            };
            req = req.body(body);
        }
        let res = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(
            !res.status().is_server_error()
                || res.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE,
            "round {round}: {method} {path} got {}",
            res.status()
        );
    }
    let health = http.get(format!("{url}/v1/health")).send().await.unwrap();
    assert!(health.status().is_success());
    // (The fuzz may have deleted "a file" legitimately; the node still stores and serves.)
    put(&node.client, "after the fuzz", b"still here".to_vec()).await;
    assert_eq!(
        get(&node.client, "after the fuzz").await.unwrap(),
        b"still here"
    );
    server.abort();
}
