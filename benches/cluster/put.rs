//! A large `dfs put` through the CLI (a CLI process streaming the file to a `dfs node` process
//! over the HTTP API), against `cp` + `fsync` of the same file to the same filesystem; then a
//! local `dfs get` of it. Peak RSS of the node and of the CLI processes.
//!
//! One round: `cp PAYLOAD COPY` as a process, then fsync of the copy (the reference), then
//! `dfs put PAYLOAD --key big-N`, timed from spawning the CLI to its exit (the put is
//! acknowledged once the file is durable on the node), then `dfs rm` of the key.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::procs::NodeProc;
use crate::report::Row;
use crate::util::{median, mib_s, size_text, write_payload, MIB};
use crate::Bench;

pub async fn run(b: &mut Bench) {
    let size = b.plan.file_mib * MIB;
    let timeout = b.transfer_timeout();
    let payload = b.dir.join("put-payload");
    write_payload(&payload, size);
    let payload_s = payload.display().to_string();
    let node = NodeProc::start(&b.bin, b.sub("put-node"), &[]).await;
    let idle_rss = node.peak_rss_mib();
    let (mut copy_secs, mut put_secs) = (Vec::new(), Vec::new());
    let mut cli_rss: f64 = 0.0;
    for r in 0..b.plan.rounds {
        copy_secs.push(cp_fsync(&payload, &b.dir.join("put-copy"), timeout).await);
        let key = format!("big-{r}");
        let put = node.cli(&["put", &payload_s, "--key", &key], timeout).await;
        cli_rss = cli_rss.max(put.peak_rss_mib);
        put_secs.push(put.secs);
        println!(
            "    round {r}: cp + fsync {:.0} MiB/s, dfs put {:.0} MiB/s",
            mib_s(size, copy_secs[r]),
            mib_s(size, put.secs)
        );
        if r + 1 < b.plan.rounds {
            node.cli(&["rm", &key], timeout).await;
        }
    }
    let copy_mibs = mib_s(size, median(&copy_secs));
    let put_mibs = mib_s(size, median(&put_secs));
    let ratio = put_mibs / copy_mibs;
    b.report.row(Row {
        figure: format!("dfs put of {} through the CLI", size_text(b.plan.file_mib)),
        measured: format!("{put_mibs:.0} MiB/s"),
        reference: format!(
            "cp + fsync to the same filesystem ({}) {copy_mibs:.0} MiB/s; median of {} rounds each",
            b.dir_kind, b.plan.rounds
        ),
        ratio: Some(ratio),
        target: ">= 0.7 of cp + fsync".into(),
        met: Some(ratio >= 0.7),
    });
    let node_rss_put = node.peak_rss_mib();

    // A local get of the last key, as a figure without a target.
    let out = b.dir.join("put-out");
    let out_s = out.display().to_string();
    let key = format!("big-{}", b.plan.rounds - 1);
    let get = node.cli(&["get", &key, "-o", &out_s], timeout).await;
    let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert_eq!(got, size, "dfs get wrote {got} of {size} bytes");
    let _ = std::fs::remove_file(&out);
    let get_mibs = mib_s(size, get.secs);
    b.report.row(Row {
        figure: format!(
            "dfs get of {} through the CLI, local",
            size_text(b.plan.file_mib)
        ),
        measured: format!("{get_mibs:.0} MiB/s"),
        reference: "every chunk verified on read".into(),
        ratio: None,
        target: "-".into(),
        met: None,
    });
    b.report.section(
        "put",
        json!({"bytes": size, "copy_secs": copy_secs, "put_secs": put_secs,
               "copy_mib_s": copy_mibs, "put_mib_s": put_mibs, "ratio": ratio,
               "get_mib_s": get_mibs, "filesystem": b.dir_kind,
               "rss_mib": {"idle_node": idle_rss, "node_after_puts": node_rss_put,
                           "cli_put": cli_rss, "cli_get": get.peak_rss_mib}}),
    );
    b.rss("put: node", node.stop().await);
    b.rss("put: CLI put", cli_rss);
    b.rss("get: CLI get", get.peak_rss_mib);
    let _ = std::fs::remove_file(&payload);
    let _ = std::fs::remove_dir_all(b.dir.join("put-node"));
}

/// `cp FROM TO` as a process, then fsync of `TO`; returns the seconds of both.
async fn cp_fsync(from: &std::path::Path, to: &std::path::Path, timeout: Duration) -> f64 {
    let _ = std::fs::remove_file(to);
    let t = Instant::now();
    let status = tokio::time::timeout(
        timeout,
        tokio::process::Command::new("cp")
            .arg(from)
            .arg(to)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .status(),
    )
    .await
    .expect("cp did not finish in time")
    .expect("run cp");
    assert!(status.success(), "cp failed: {status}");
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .expect("fsync the copy");
    let secs = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(to);
    secs
}
