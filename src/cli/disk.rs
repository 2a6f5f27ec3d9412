//! When a disk goes bad: `dfs repair` (a stopped node's damaged index, rebuilt from the chunks
//! on disk and, once the node runs, from its peers) and the parsers of `dfs node`'s scrub flags.

use std::path::PathBuf;
use std::time::Duration;

use crate::api::client::default_data_dir;
use crate::datadir::DataDir;
use crate::store::{self, StoreError};

use super::{Error, Result};

pub(super) const REPAIR_HELP: &str = "\
Examples:
  dfs repair --data-dir ~/dfs1            after `dfs node` refused to start: \"the index ... is damaged\"
  dfs repair --data-dir ~/dfs1 --force    rebuild an index that opens but is known to be wrong

Run it on a stopped node. It renames the index to index.redb.damaged-<time> (nothing is
deleted), verifies every chunk file against its hash (good ones are kept in store/orphans/,
damaged ones go to store/damaged/) and creates an empty index. Then start the node as usual: it
gets its records back from its peers (anti-entropy) and takes the kept chunks instead of
downloading them again. Records and small files that no peer has are lost with the index.";

/// `dfs repair [--data-dir DIR] [--force]`.
pub(super) fn repair(data_dir: Option<PathBuf>, force: bool) -> Result<()> {
    let dir = DataDir::new(data_dir.unwrap_or_else(default_data_dir));
    let store_dir = dir.store();
    if !store_dir.is_dir() {
        return Err(Error::Usage(format!(
            "{} holds no store; give the data dir of a node with --data-dir",
            dir.path().display()
        )));
    }
    let running = |_| {
        Error::Failed(format!(
            "a node is running on {}; stop it before repairing its store",
            dir.path().display()
        ))
    };
    match store::diagnose(&store_dir) {
        Ok(None) if !force => {
            println!(
                "the index {} is healthy: nothing to repair (--force rebuilds it anyway)",
                store_dir.join(store::INDEX_FILE).display()
            );
            return Ok(());
        }
        Ok(None) => println!("the index is healthy; rebuilding it anyway (--force)"),
        Ok(Some(reason)) => println!("the index is damaged: {reason}"),
        Err(StoreError::Locked(p)) => return Err(running(p)),
        Err(e) => return Err(Error::Failed(format!("cannot examine the store: {e}"))),
    }
    let report = store::repair(&store_dir).map_err(|e| match e {
        StoreError::Locked(p) => running(p),
        e => Error::Failed(format!("repair failed: {e}")),
    })?;
    if let Some(old) = &report.old_index {
        println!("moved the old index to {}", old.display());
    }
    println!(
        "kept {} verified chunk files ({} bytes) in {} for the node to reuse",
        report.adopted,
        report.adopted_bytes,
        store_dir.join(store::ORPHANS_DIR).display()
    );
    if report.damaged > 0 {
        println!(
            "moved {} damaged chunk files to {}",
            report.damaged,
            store_dir.join(store::DAMAGED_DIR).display()
        );
    }
    println!(
        "created an empty index; start the node (with its usual --bootstrap): it gets the records back from its peers"
    );
    Ok(())
}

/// A duration such as `24h`, `90m`, `30s`, `500ms`, `2d` or `0` (a bare number is seconds).
pub(super) fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 24h, 90m, 30s or 500ms"))?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?}: use ms, s, m, h or d"
            ))
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// A byte count such as `16M`, `512K`, `1G` or `1000` (binary units; an optional `iB`/`B`).
pub(super) fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count such as 16M, 512K or 1G"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}: use K, M, G or T")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_byte_counts_parse() {
        assert_eq!(parse_bytes("2T"), Ok(2 << 40));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("1w").is_err() && parse_duration("h").is_err());
        assert_eq!(parse_bytes("16M"), Ok(16 << 20));
        assert_eq!(parse_bytes("512KiB"), Ok(512 << 10));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("0"), Ok(0));
        assert!(parse_bytes("16P").is_err() && parse_bytes("").is_err());
    }
}
