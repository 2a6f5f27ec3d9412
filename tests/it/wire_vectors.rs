//! Pins the wire encoding of every protocol message to the test vectors in docs/PROTOCOL.md, so
//! the specification and the code cannot drift apart.

use dfs::protocols::{fetch, peers, records, sync};
use dfs::record::{content_id, Hash, Record};

/// A message as the node writes it on the wire (`/dfs/fetch/2`, `/dfs/sync/1`), in hex; and
/// the same bytes read back strictly, as the node reads them.
fn cbor4ii<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
    v: &T,
) -> String {
    let bytes = dfs::protocols::encode_cbor(v);
    let back: T = dfs::protocols::codec::decode_exact(&bytes).unwrap();
    assert_eq!(&back, v);
    let independent = cbor4ii::serde::to_vec(Vec::new(), v).unwrap();
    assert_eq!(bytes, independent, "ciborium and cbor4ii agree");
    hex::encode(bytes)
}

/// The ed25519 key whose secret is 32 bytes of 0x01.
fn key() -> libp2p::identity::Keypair {
    libp2p::identity::Keypair::ed25519_from_bytes([1u8; 32]).unwrap()
}

fn author() -> Vec<u8> {
    key().public().to_peer_id().to_bytes()
}

/// The record of "hello.txt", seq 1, replacing nothing, signed by [`key`].
fn record() -> Record {
    let mut r = Record {
        key: "hello.txt".into(),
        cid: Some(content_id(5, &[Hash::of(b"hello")])),
        size: 5,
        time: 0x0000_0190_0000_0000,
        author: Vec::new(),
        seq: 1,
        seen: Vec::new(),
        sig: Vec::new(),
    };
    r.sign(&key());
    r
}

/// Record format 3: a signed record, a tombstone that replaces it, a tampered copy, a write by
/// another author that saw the first, a grant, and the requests that carry membership and time.
#[test]
fn trust_vectors() {
    let r = record();
    assert_eq!(hex::encode(records::encode(&r)), "a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607", "signed record");
    assert_eq!(hex::encode(r.signed_bytes()), "6466732f7265636f72642f3300a7636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e80", "signed bytes");
    assert_eq!(
        r.version().to_hex(),
        "0918c1dace02fc0fea981cbf6da6a312f91447064c08fcd18cc2a9628e734e75",
        "version id"
    );
    assert_eq!(r.fingerprint(), 0x0918c1dace02fc0f, "fingerprint");
    assert_eq!(records::decode(&records::encode(&r)).unwrap(), r);
    let mut tomb = Record {
        cid: None,
        size: 0,
        seq: 2,
        sig: Vec::new(),
        ..r.clone()
    };
    tomb.sign(&key());
    assert!(
        tomb.saw(&r),
        "an author's later version replaces its earlier one"
    );
    assert_eq!(hex::encode(records::encode(&tomb)), "a8636b65796968656c6c6f2e74787463636964f66473697a65006474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657102647365656e80637369675840aecf5b9dda8ad18fa8135c9011a2d01bdd04927cd64aadbaba4feff1b8624e4b88ee4d68d0451e118fcacb16a23ab4bb2b18a49f6e7ef052b38efc1440ab6c0e", "tombstone");
    let tampered = hex::decode("a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65066474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607").unwrap();
    assert!(
        records::decode(&tampered).is_err(),
        "a tampered record is refused"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::Record { record: r.clone() }),
        "a1667265636f7264a1667265636f7264a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607",
        "fetch record resp"
    );
    let grant = dfs::trust::Grant::decode(&hex::decode("a8676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835677375626a65637458260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b39464726f6c6566777269746572666375746f6666006474696d651b00000190000000006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c63736571026373696758407e8b7cbd86e25f98f4d7a9162b71d42aafa26dec97c7ee6c6973c8ef2e8584ac1d3504c5d6aeaccfc7e4df300c08004b4217c06c769a9f6ffa929a10b20c920d").unwrap()).unwrap();
    assert_eq!(
        grant.network,
        "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
    );
    assert_eq!(grant.issuer, author());
    assert_eq!(
        grant.subject_peer().unwrap().to_string(),
        "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
    );
    assert_eq!(grant.role, dfs::trust::Role::Writer);
    assert_eq!(
        grant.id().to_hex(),
        "5e029b663dd38dd2c1705cb7e214a60d8324a63fff476bc4982500a588f4cc12"
    );
    assert_eq!(cbor4ii(&fetch::Request::Network), "676e6574776f726b");
    assert_eq!(cbor4ii(&fetch::Request::Time), "6474696d65");
    assert_eq!(
        cbor4ii(&fetch::Response::Time {
            ms: 1_700_000_000_000
        }),
        "a16474696d65a1626d731b0000018bcfe56800"
    );
    // A write by another author (secret 32 bytes of 0x02) that saw the first record.
    let later = records::decode(&hex::decode("a8636b65796968656c6c6f2e747874636369645820e1174b4b6d4fa0500f3c0a13452c78ace67f9164306874cf14676614a68929496473697a65056474696d651b000001900000000166617574686f7258260024080112208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3946373657101647365656e818258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c016373696758403029239d3c014fa0f309158a05b5314cd9317be1dad13c0788dd39b58ecff222af1611732e31c526454fe4c1d609b293bbafdf8abe63260b7a57c3f1933c2809").unwrap()).unwrap();
    assert_eq!(later.seen, vec![dfs::record::Dot(author(), 1)]);
    assert_eq!(
        later.author_peer().unwrap().to_string(),
        "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
    );
    assert_eq!(
        later.version().to_hex(),
        "47acfdda23c15f4d8b5c8e6a94baeef457efd8066cb41961a9605906c205978d"
    );
    assert!(later.saw(&r) && !later.saw(&tomb) && !r.saw(&later));
    assert_eq!(
        cbor4ii(&fetch::Response::Network { id: grant.network.clone(), settings: None }),
        "a1676e6574776f726ba16269647834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835"
    );
    assert_eq!(
        cbor4ii(&sync::Request::Grants { digest: Hash([0xdd; 32]) }),
        "a1666772616e7473a1666469676573745820dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
    );
    assert_eq!(
        cbor4ii(&sync::Response::Root { root: 1, count: 2, grants: Some(Hash([0xdd; 32])) }),
        "a164726f6f74a364726f6f740165636f756e7402666772616e74735820dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
    );
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
        "a1667265636f7264a1667265636f7264a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607",
        "fetch record resp"
    );
    assert_eq!(
        hex::encode(records::encode(&record())),
        "a8636b65796968656c6c6f2e747874636369645820516301b6db4d5a8115ce6b37ab38935fa719fb3aced4a5184eaba7904e992ab16473697a65056474696d651b000001900000000066617574686f7258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373657101647365656e806373696758403b8dcb482b541d5c0b8700c50edf1611f78e477bba85a8fde6c0ef06ff60c93eb65e9ba4a9edd90776d6948d89ecf44a62777dad9cbe4e0681683a58d9048607",
        "record message"
    );
    let a = peers::Announcement {
        peer_id: libp2p::PeerId::from_bytes(&author()).unwrap(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        time: 1_700_000_000_000,
        capacity: None,
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
        cbor4ii(&fetch::Request::Has {
            cid: Hash([0xaa; 32])
        }),
        "a163686173a1636369645820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "fetch has req"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::Has {
            complete: true,
            keeps: None
        }),
        "a163686173a168636f6d706c657465f5",
        "fetch has resp"
    );
    assert_eq!(
        cbor4ii(&fetch::Response::Has {
            complete: true,
            keeps: Some(true)
        }),
        "a163686173a268636f6d706c657465f5656b65657073f5",
        "fetch has resp with keeps"
    );
    assert_eq!(
        cbor4ii(&fetch::Request::Prove {
            cid: Hash([0xaa; 32]),
            nonce: Hash([0xbb; 32]),
            chunks: vec![0, 2],
        }),
        "a16570726f7665a3636369645820aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa656e6f6e63655820bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb666368756e6b73820002",
        "fetch prove req"
    );
    let prover = libp2p::identity::Keypair::ed25519_from_bytes([1u8; 32])
        .unwrap()
        .public()
        .to_peer_id()
        .to_bytes();
    let proof = fetch::proof_of(&Hash([0xbb; 32]), &prover, [&b"hello"[..]]);
    assert_eq!(
        cbor4ii(&fetch::Response::Proof { hash: proof }),
        "a16570726f6f66a164686173685820c72acee329887928e2d340362ffa77d30a4f0ff1dfe89c2c44c9e5284924be03",
        "fetch proof resp"
    );
    let with_capacity = peers::Announcement {
        capacity: Some(1 << 40),
        ..a.clone()
    };
    assert_eq!(
        hex::encode(peers::encode(&with_capacity)),
        "a467706565725f696458260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6561646472738148047f000001060fa16474696d651b0000018bcfe568006863617061636974791b0000010000000000",
        "announcement with capacity"
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
        cbor4ii(&sync::Response::Root {
            root: 1,
            count: 2,
            grants: None
        }),
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

/// The network's settings (signed by the owner, the key of 0x01 bytes) and placement: the order
/// of three members for a content id, equal capacities and not.
#[test]
fn settings_and_placement_vectors() {
    use dfs::placement::{place, Candidate, Replicas, DEFAULT_CAPACITY};
    use dfs::trust::settings::Settings;
    let s = Settings::new(&key(), Replicas::Count(3), 1_700_000_000_000);
    assert_eq!(hex::encode(s.encode()), "a5676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835687265706c69636173036474696d651b0000018bcfe568006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c6373696758404c0b71f233f44c0865bd84eecc6d51ce48e85947693b77954e4afd2d74cdabc5f3bbdbdd15c627a5eea1d8613ff9cd33fb38982e96d612a7dce853ac18458a0c", "settings");
    assert_eq!(hex::encode(s.signed_bytes()), "6466732f73657474696e67732f3100a4676e6574776f726b7834313244334b6f6f574b3939566f56784e4537587a79427758457a573778684b37477076383572394633563366794b53554b504835687265706c69636173036474696d651b0000018bcfe568006669737375657258260024080112208a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", "settings signed bytes");
    let peer = |b: u8| {
        libp2p::identity::Keypair::ed25519_from_bytes([b; 32])
            .unwrap()
            .public()
            .to_peer_id()
    };
    let (p1, p2, p3) = (peer(1), peer(2), peer(3));
    let cid = Hash([0xaa; 32]);
    let equal: Vec<Candidate> = [p1, p2, p3]
        .iter()
        .map(|p| Candidate::new(*p, DEFAULT_CAPACITY))
        .collect();
    let names =
        |v: Vec<libp2p::PeerId>| -> Vec<String> { v.iter().map(|p| p.to_string()).collect() };
    assert_eq!(
        names(place(&cid, &equal, 3)),
        vec![
            "12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba",
            "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq",
            "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5"
        ],
        "equal capacities"
    );
    let weighted = vec![
        Candidate::new(p1, 64 * DEFAULT_CAPACITY),
        Candidate::new(p2, DEFAULT_CAPACITY),
        Candidate::new(p3, DEFAULT_CAPACITY),
    ];
    assert_eq!(
        names(place(&cid, &weighted, 3)),
        vec![
            "12D3KooWK99VoVxNE7XzyBwXEzW7xhK7Gpv85r9F3V3fyKSUKPH5",
            "12D3KooWRndVhVZPCiQwHBBBdg769GyrPUW13zxwqQyf9r3ANaba",
            "12D3KooWJWoaqZhDaoEFshF7Rh1bpY9ohihFhzcW6d69Lr2NASuq"
        ],
        "p1 with 64 times the capacity"
    );
    // The draws themselves (h, then the score), as PROTOCOL.md gives them.
    let draws: Vec<(String, f64)> = [&equal[2], &equal[1], &equal[0], &weighted[0]]
        .iter()
        .map(|c| {
            let (score, h) = c.draw(&cid);
            (format!("{h:016x}"), score)
        })
        .collect();
    assert_eq!(draws[0].0, "ee9a0dbe8610dc9b");
    assert_eq!(draws[1].0, "b0af43192b229027");
    assert_eq!(draws[2].0, "74c17cf9a01c65aa");
    assert_eq!(draws[0].1, 14549.276362532477);
    assert_eq!(draws[1].1, 2761.5137117618174);
    assert_eq!(draws[2].1, 1304.3044795381018);
    assert_eq!(draws[3].1, 83475.48669043851);
}

#[test]
fn catchup_stream_frames() {
    use dfs::protocols::catchup;
    futures::executor::block_on(async {
        let mut out = Vec::new();
        catchup::write_request(&mut out, &catchup::Leaves::new([0, 9, 4095]))
            .await
            .unwrap();
        assert_eq!(
            hex::encode(&out),
            format!("8040{}01", "00".repeat(509)),
            "request"
        );
        let mut out = Vec::new();
        catchup::write_frame(&mut out, Some(&catchup::encode_frame(&[])))
            .await
            .unwrap();
        assert_eq!(hex::encode(&out), "0000000180", "empty frame");
        let mut out = Vec::new();
        catchup::write_frame(&mut out, None).await.unwrap();
        assert_eq!(hex::encode(&out), "00000000", "end");
        let one = dfs::protocols::encode_cbor(&record());
        let mut out = Vec::new();
        catchup::write_frame(
            &mut out,
            Some(&catchup::encode_frame(std::slice::from_ref(&one))),
        )
        .await
        .unwrap();
        assert_eq!(
            hex::encode(&out),
            format!("000000ca81{}", hex::encode(&one)),
            "a frame of one record"
        );
        let mut read = &out[..];
        let records = catchup::read_frame(&mut read).await.unwrap().unwrap();
        assert_eq!(records, vec![record()]);
    });
}
