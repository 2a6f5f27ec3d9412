//! A member's records whose content nobody serves, against `dfs node` processes: the victim
//! owns a network; a liar joins with a ticket, stops, has its store seeded with records signed
//! by its own key (live files of 1 MiB that exist nowhere), and starts again; the victim catches
//! them up and tries to fetch their content from the liar, which has none. Meanwhile an honest
//! writer puts 1 MiB files. Measured: the victim's peak RSS while it holds the records, its RSS
//! after the liar left, and how long an honest put takes to reach it.
//! `DFS_BENCH_UNSERVABLE` sets the number of records (60,000 in the full run).

use std::path::Path;
use std::time::{Duration, Instant};

use dfs::record::{content_id, Hash, Record};
use serde_json::json;

use crate::procs::{NodeProc, POLL};
use crate::report::Row;
use crate::Bench;

/// Longest the victim may take to hold every record before the run fails.
const DEADLINE: Duration = Duration::from_secs(600);
/// Honest puts timed while the records are pending.
const HONEST_PUTS: usize = 5;

pub async fn run(b: &mut Bench) {
    let n = crate::env_number("DFS_BENCH_UNSERVABLE")
        .map(|n| n.max(1) as usize)
        .unwrap_or(if b.plan.quick { 5_000 } else { 60_000 });
    let victim = NodeProc::start(&b.bin, b.sub("h-victim"), &[]).await;
    let addr = victim.addr().await;
    let liar_ticket = ticket(&victim).await;
    let honest_ticket = ticket(&victim).await;
    let join = |t: &str| vec!["--join".to_string(), t.to_string()];
    // The liar joins once (its data dir takes the ticket's key and grant), then stops.
    let liar_dir = b.sub("h-liar");
    let liar = NodeProc::start_with(&b.bin, liar_dir.clone(), &[], &join(&liar_ticket)).await;
    liar.stop().await;
    let t = Instant::now();
    let dir = liar_dir.clone();
    tokio::task::spawn_blocking(move || seed(&dir, n))
        .await
        .expect("seeding");
    eprintln!(
        "unservable: seeded {n} records in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let honest = NodeProc::start_with(&b.bin, b.sub("h-honest"), &[], &join(&honest_ticket)).await;
    let before = victim.rss_mib();
    let liar = NodeProc::start_in(&b.bin, liar_dir, &[addr], &[]).await;
    let t = Instant::now();
    let deadline = t + DEADLINE;
    loop {
        let records = victim
            .get_json("/v1/id")
            .await
            .and_then(|v| v["records"].as_u64())
            .unwrap_or(0);
        if records >= n as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the victim holds {records} of {n} records after {DEADLINE:?}"
        );
        tokio::time::sleep(POLL * 10).await;
    }
    let caught_up = t.elapsed().as_secs_f64();
    // Honest 1 MiB puts while the victim tries the liar's records.
    let http = reqwest::Client::new();
    let mut honest_s = Vec::new();
    for i in 0..HONEST_PUTS {
        let key = format!("honest-{i}");
        let body: Vec<u8> = (0..(1usize << 20))
            .map(|j| (j as u64 * 31 + i as u64) as u8)
            .collect();
        let t = Instant::now();
        let r = http
            .put(format!("{}/v1/files/{key}", honest.url))
            .bearer_auth(&honest.token)
            .body(body)
            .send()
            .await
            .expect("an honest put");
        assert!(r.status().is_success(), "honest put: {}", r.status());
        victim.wait_local(&key, Duration::from_secs(120)).await;
        honest_s.push(t.elapsed().as_secs_f64());
    }
    honest_s.sort_by(f64::total_cmp);
    let worst = *honest_s.last().expect("puts");
    let peak = victim.peak_rss_mib();
    // The liar leaves; what stays of the victim's memory.
    liar.stop().await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = victim.rss_mib();
    let met = peak < 200.0 && after < 200.0 && worst < 2.0;
    b.report.row(Row {
        figure: format!("a member's {n} records whose content nobody serves"),
        measured: format!(
            "victim peak RSS {peak:.0} MiB ({before:.0} before, {after:.0} 10 s after the liar left); honest 1 MiB put reaches it in {:.2} s median, {worst:.2} s worst; records caught up in {caught_up:.1} s",
            crate::util::median(&honest_s)
        ),
        reference: "before the budgets of issue 21: 815 MiB, honest files not replicated after 30 s (60,000 records)".into(),
        ratio: None,
        target: "RSS < 200 MiB during and after, honest put < 2 s".into(),
        met: Some(met),
    });
    b.report.section(
        "unservable",
        json!({"records": n, "victim_peak_rss_mib": peak, "victim_rss_before_mib": before,
               "victim_rss_after_mib": after, "honest_put_s": honest_s, "catch_up_s": caught_up}),
    );
    b.rss("unservable victim", peak);
    honest.stop().await;
    victim.stop().await;
}

/// A writer ticket from `node` (`POST /v1/invite`).
async fn ticket(node: &NodeProc) -> String {
    let r = reqwest::Client::new()
        .post(format!("{}/v1/invite", node.url))
        .bearer_auth(&node.token)
        .send()
        .await
        .expect("invite");
    assert!(r.status().is_success(), "invite: {}", r.status());
    let v: serde_json::Value = r.json().await.expect("an invite answer");
    v["ticket"].as_str().expect("a ticket").to_string()
}

/// Writes `n` live records signed by the data dir's identity into its store: 1 MiB files whose
/// content exists nowhere.
fn seed(dir: &Path, n: usize) {
    let key = dfs::identity::load_or_create(dir).expect("identity");
    let store = dfs::store::Store::open(&dfs::datadir::DataDir::new(dir).store(), key.clone())
        .expect("open the liar's store");
    let now = dfs::record::wall_ms() << 16;
    for start in (0..n).step_by(5_000) {
        let batch: Vec<Record> = (start..(start + 5_000).min(n))
            .map(|i| {
                let chunk = Hash::of(&(i as u64).to_be_bytes());
                let mut r = Record {
                    key: format!("junk/{i}"),
                    cid: Some(content_id(1 << 20, &[chunk])),
                    size: 1 << 20,
                    time: now + i as u64,
                    author: Vec::new(),
                    seq: 1_000_000 + i as u64,
                    seen: Vec::new(),
                    sig: Vec::new(),
                };
                r.sign(&key);
                r
            })
            .collect();
        store.apply_batch(batch).expect("seed a batch");
    }
}
