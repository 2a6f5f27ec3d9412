//! What the commands print on stdout: the human text of each answer, or its JSON with `--json`.

use crate::api::json::{FileStat, Id, LogEntry, Peer};

use super::{Error, Result};

/// Prints `value` as pretty JSON (the shapes of [`crate::api::json`]).
pub(super) fn json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Failed(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// The answer to `put`.
pub(super) fn stored(stat: &FileStat) {
    println!(
        "stored {} ({} bytes, content id {})",
        stat.key,
        stat.size,
        stat.content_id.as_deref().unwrap_or("-")
    );
}

/// The answer to `rm`.
pub(super) fn deleted(tombstone: &FileStat) {
    println!("deleted {} (version {})", tombstone.key, tombstone.version);
}

/// `ls`: a table of keys, sizes and states.
pub(super) fn table(files: &[FileStat]) {
    let width = files
        .iter()
        .map(|f| f.key.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(3, 60);
    println!("{:<width$}  {:>12}  STATE", "KEY", "SIZE");
    for f in files {
        let conflicts = match f.conflicts.len() {
            0 => String::new(),
            n => format!(
                "  ({n} conflict{}: dfs log {})",
                if n == 1 { "" } else { "s" },
                f.key
            ),
        };
        println!(
            "{:<width$}  {:>12}  {}{conflicts}",
            f.key,
            f.size,
            f.state()
        );
    }
}

/// `log`: one version a line, oldest first.
pub(super) fn log(entries: &[LogEntry]) {
    println!(
        "{:<16}  {:<24}  {:<9}  {:>12}  {:<8}  AUTHOR",
        "VERSION", "TIME", "STATE", "SIZE", "OP"
    );
    for e in entries {
        println!(
            "{:<16}  {:<24}  {:<9}  {:>12}  {:<8}  {}",
            &e.version_id[..e.version_id.len().min(16)],
            rfc3339(e.time_ms),
            e.state,
            e.size,
            if e.deleted { "delete" } else { "write" },
            e.author
        );
    }
}

/// Milliseconds since the epoch as `2026-11-25T18:37:19.123Z` (UTC).
pub(super) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// `stat`: one field a line.
pub(super) fn stat(stat: &FileStat) {
    println!("key:        {}", stat.key);
    println!("size:       {}", stat.size);
    println!(
        "content id: {}",
        stat.content_id.as_deref().unwrap_or("- (deleted)")
    );
    println!("version:    {}", stat.version_id);
    println!("written:    {}", rfc3339(stat.version >> 16));
    println!("author:     {}", stat.author);
    println!("state:      {}", stat.state());
    for c in &stat.conflicts {
        println!(
            "conflict:   {} ({}, {} bytes, by {} at {}): dfs get {} --version {}",
            &c.version_id[..c.version_id.len().min(16)],
            if c.deleted { "a delete" } else { "a write" },
            c.size,
            c.author,
            rfc3339(c.version >> 16),
            stat.key,
            &c.version_id[..c.version_id.len().min(16)],
        );
    }
    if stat.damaged > 0 {
        println!(
            "damaged:    {} chunk(s) do not match their hash; a healthy copy is being fetched from peers",
            stat.damaged
        );
    }
}

/// `peers`: each peer's id and agent, then its addresses indented.
pub(super) fn peers(peers: &[Peer]) {
    if peers.is_empty() {
        println!("no connected peers");
    }
    for p in peers {
        let offset = match p.clock_offset_ms {
            Some(ms) => format!("clock {ms:+} ms"),
            None => "clock not measured".into(),
        };
        println!(
            "{}  {}  {offset}",
            p.peer_id,
            p.agent.as_deref().unwrap_or("-")
        );
        for a in &p.addrs {
            println!("  {a}");
        }
    }
}

/// `id`: the peer id, then the listen addresses indented.
pub(super) fn id(id: &Id) {
    println!("peer id: {}", id.peer_id);
    println!(
        "network: {}",
        id.network.as_deref().unwrap_or("(not known yet)")
    );
    println!(
        "role:    {}",
        id.role.map_or("reader (no grant)", |r| r.as_str())
    );
    for a in &id.addrs {
        println!("  {a}");
    }
}
