//! The cost of anti-entropy, with two nodes in this process sharing many records: bytes per
//! session when nothing differs, then bytes, records and settle time for one differing record.

use std::time::{Duration, Instant};

use dfs::node::Client;
use dfs::record::Record;
use serde_json::json;

use crate::inproc::{addr, start, wait_until};
use crate::report::Row;
use crate::Bench;

pub async fn run(bench: &mut Bench) {
    let keys = bench.plan.sync_keys;
    // a owns the network and signs every record; b joins it by ticket, without dialling a
    // until both stores hold the records.
    let now = dfs::record::wall_ms() << 16;
    let dir_a = bench.sub("ae-a");
    let a = start(dir_a.clone(), vec![], None).await;
    let owner = dfs::identity::load_or_create(&dir_a).unwrap();
    let mut ticket = a.client().invite(false).await.unwrap();
    ticket.addrs.clear();
    let b = start(bench.sub("ae-b"), vec![], Some(ticket)).await;
    let records: std::sync::Arc<Vec<Record>> = std::sync::Arc::new(
        (0..keys as u64)
            .map(|i| signed(&owner, &format!("key-{i}"), now + i, 1_000_000 + i))
            .collect(),
    );
    for node in [&a, &b] {
        let store = node.client().store().clone();
        let records = records.clone();
        tokio::task::spawn_blocking(move || {
            for batch in records.chunks(10_000) {
                store.apply_batch(batch.to_vec()).unwrap();
            }
        })
        .await
        .unwrap();
    }
    let (ac, bc) = (a.client(), b.client());
    for c in [&ac, &bc] {
        assert_eq!(c.store().record_count(), keys as u64, "every record counts");
    }
    bc.dial(addr(&a).await).await.unwrap();
    wait_until(|| ac.sync_stats().snapshot()[0] >= 1 && bc.sync_stats().snapshot()[0] >= 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = |c: &Client| {
        let s = c.sync_stats().snapshot();
        (s[0], s[2] + s[3], s[4] + s[5])
    };
    let (sa, ba, ra) = total(&ac);
    let equal_bytes = ba as f64 / sa.max(1) as f64;
    bench.report.row(Row {
        figure: format!("anti-entropy, {keys} keys, nothing differing"),
        measured: format!("{equal_bytes:.0} bytes per session, {ra} records"),
        reference: format!("{keys} records of ~60 bytes = {} KiB", keys * 60 / 1024),
        ratio: None,
        target: "a small constant (< 1 KiB)".into(),
        met: Some(equal_bytes < 1024.0 && ra == 0),
    });
    let before = (total(&ac), total(&bc));
    let extra = signed(&owner, "one-more", now + keys as u64 + 1, 2_000_000_000);
    ac.store().apply(extra).unwrap();
    let t = Instant::now();
    wait_until(|| bc.store().record("one-more").unwrap().is_some()).await;
    let settle = t.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = (total(&ac), total(&bc));
    let bytes = (after.0 .1 - before.0 .1) + (after.1 .1 - before.1 .1);
    // Each record is counted once by its sender and once by its receiver.
    let records = ((after.0 .2 - before.0 .2) + (after.1 .2 - before.1 .2)) / 2;
    bench.report.row(Row {
        figure: format!("anti-entropy, {keys} keys, one differing"),
        measured: format!(
            "{bytes} bytes, {records} records, settled in {} ms",
            settle.as_millis()
        ),
        reference: "one record ~60 bytes".into(),
        ratio: None,
        target: "about one record (<= 2)".into(),
        met: Some(records <= 2),
    });
    bench.report.section(
        "anti_entropy",
        json!({"keys": keys, "equal_bytes_per_session": equal_bytes, "one_diff_bytes": bytes,
               "one_diff_records": records, "one_diff_settle_ms": settle.as_millis() as u64}),
    );
    drop((ac, bc));
    a.shutdown().await;
    b.shutdown().await;
}

/// A tombstone record signed by `key` (numbered far above the node's own sequence numbers).
fn signed(key: &libp2p::identity::Keypair, name: &str, time: u64, seq: u64) -> Record {
    let mut r = Record {
        key: name.into(),
        cid: None,
        size: 0,
        time,
        author: Vec::new(),
        seq,
        seen: Vec::new(),
        sig: Vec::new(),
    };
    r.sign(key);
    r
}
