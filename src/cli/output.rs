//! What the commands print on stdout: the human text of each answer, or its JSON with `--json`.

use crate::api::json::{FileStat, Id, Peer};

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
        println!("{:<width$}  {:>12}  {}", f.key, f.size, f.state());
    }
}

/// `stat`: one field a line.
pub(super) fn stat(stat: &FileStat) {
    println!("key:        {}", stat.key);
    println!("size:       {}", stat.size);
    println!(
        "content id: {}",
        stat.content_id.as_deref().unwrap_or("- (deleted)")
    );
    println!("version:    {}", stat.version);
    println!("author:     {}", stat.author);
    println!("state:      {}", stat.state());
    if stat.damaged > 0 {
        println!(
            "damaged:    {} chunk(s) do not match their hash; a healthy copy is being fetched from peers",
            stat.damaged
        );
    }
    if let Some(holders) = &stat.holders {
        if holders.is_empty() {
            println!("holders:    none known");
        } else {
            println!("holders:    {} ({})", holders.len(), holders.join(", "));
        }
    }
}

/// `peers`: each peer's id and agent, then its addresses indented.
pub(super) fn peers(peers: &[Peer]) {
    if peers.is_empty() {
        println!("no connected peers");
    }
    for p in peers {
        println!("{}  {}", p.peer_id, p.agent.as_deref().unwrap_or("-"));
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
