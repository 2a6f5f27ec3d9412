//! Pins the wire encoding of every protocol message to the test vectors in docs/PROTOCOL.md, so
//! the specification and the code cannot drift apart.

use dfs::protocols::{fetch, peers, records, sync};
use dfs::record::{content_id, Hash, Record};

fn cbor4ii<T: serde::Serialize>(v: &T) -> String {
    hex::encode(cbor4ii::serde::to_vec(Vec::new(), v).unwrap())
}

fn author() -> Vec<u8> {
    // The peer id of the ed25519 key whose secret is 32 bytes of 0x01.
    let key = libp2p::identity::Keypair::ed25519_from_bytes([1u8; 32]).unwrap();
    key.public().to_peer_id().to_bytes()
}

fn record() -> Record {
    Record {
        key: "hello.txt".into(),
        cid: Some(content_id(5, &[Hash::of(b"hello")])),
        size: 5,
        time: 0x0000_0190_0000_0000,
        author: author(),
    }
}

#[test]
fn content_id_vector() {
    assert_eq!(
        Hash::of(b"hello").to_hex(),
        "ea8f163db38682925e4491c5e58d4bb3506ef8c14eb78a86e908c5624a67200f"
    );
    assert_eq!(
        content_id(5, &[Hash::of(b"hello")]).to_hex(),
        "516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab1"
    );
    assert_eq!(
        content_id(0, &[]).to_hex(),
        "afa2c34989bc3003e93d311bcdc4f5334ecfd4ad3e68562c4c2003da2a6dca41"
    );
}

#[test]
fn message_vectors() {
    assert_eq!(
        cbor4ii(&fetch::Response::Record { record: record() }),
        "a1667265636f7264a1667265636f7264a5636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        "fetch record resp"
    );
    assert_eq!(
        hex::encode(records::encode(&record())),
        "a5636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        "record message"
    );
    let tomb = Record {
        cid: None,
        size: 0,
        ..record()
    };
    assert_eq!(
        hex::encode(records::encode(&tomb)),
        "a5636b65796968656c6c6f2e74787463636964f66473697a65006474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c",
        "tombstone message"
    );
    let a = peers::Announcement {
        peer_id: libp2p::PeerId::from_bytes(&author()).unwrap(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        time: 1_700_000_000_000,
    };
    assert_eq!(
        hex::encode(peers::encode(&a)),
        "a367706565725f696458260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6561646472738148047f000001060fa16474696d651b0000018bcfe56800",
        "announcement"
    );
    assert_eq!(
        cbor4ii(&fetch::Request::Record {
            key: "hello.txt".into()
        }),
        "a1667265636f7264a1636b65796968656c6c6f2e747874",
        "fetch record req"
    );
    assert_eq!(
        cbor4ii(&fetch::Request::Manifest { cid: Hash([0xaa; 32]), offset: 0 }),
        "a1686d616e6966657374a2636369645820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa666f666673657400",
        "fetch manifest req"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::Manifest { total: 1, offset: 0, chunks: vec![Hash([0xcc; 32])] }),
        "a1686d616e6966657374a365746f74616c01666f666673657400666368756e6b73815820cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc",
        "fetch manifest resp"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::NotFound),
        "696e6f745f666f756e64",
        "fetch notfound"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::Error {
            message: "x".into()
        }),
        "a1656572726f72a1676d6573736167656178",
        "fetch error"
    );
    assert_eq!(cbor4ii(&sync::Request::Root), "64726f6f74", "sync root req");
    assert_eq!(
        cbor4ii(&sync::Response::Root { root: 1, count: 2 }),
        "a164726f6f74a264726f6f740165636f756e7402",
        "sync root resp"
    );
    assert_eq!(
        cbor4ii(&sync::Request::Leaves { branches: vec![3] }),
        "a1666c6561766573a1686272616e636865738103",
        "sync leaves req"
    );
    assert_eq!(
        cbor4ii(&sync::Response::Entries {
            entries: vec![vec![(1, 2)]]
        }),
        "a167656e7472696573a167656e74726965738181820102",
        "sync entries resp"
    );
    assert_eq!(
        cbor4ii(&sync::Request::Exchange {
            push: vec![],
            want: vec![7]
        }),
        "a16865786368616e6765a26470757368806477616e748107",
        "sync exchange req"
    );
}

/// The frames of `/dfs/chunks/1` (binary, not CBOR), as given in PROTOCOL.md.
#[test]
fn chunk_stream_frames() {
    use dfs::protocols::chunks;
    futures::executor::block_on(async {
        let mut out = Vec::new();
        chunks::write_request(&mut out, &[Hash([0xbb; 32])])
            .await
            .unwrap();
        assert_eq!(
            hex::encode(&out),
            format!("0001{}", "bb".repeat(32)),
            "request"
        );
        let mut out = Vec::new();
        chunks::write_chunk(&mut out, b"hello").await.unwrap();
        assert_eq!(hex::encode(&out), "000000000568656c6c6f", "chunk reply");
        let mut out = Vec::new();
        chunks::write_not_found(&mut out).await.unwrap();
        assert_eq!(hex::encode(&out), "01", "not-found reply");
        let mut out = Vec::new();
        chunks::write_error(&mut out, "busy").await.unwrap();
        assert_eq!(hex::encode(&out), "02000462757379", "error reply");
    });
}
