//! What the commands print on stdout: the human text of each answer, or its JSON with `--json`.
//! Text shows sizes in binary units (`1.5 MiB`) and versions as the time they carry.

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
        "stored {} ({}, content id {}, version {})",
        stat.key,
        size(stat.size),
        stat.content_id
            .as_deref()
            .map_or("-", |c| &c[..c.len().min(12)]),
        version(stat.version)
    );
}

/// The answer to `rm`.
pub(super) fn deleted(tombstone: &FileStat) {
    println!(
        "deleted {} (version {})",
        tombstone.key,
        version(tombstone.version)
    );
}

/// `ls`: a table of keys, sizes and states.
pub(super) fn table(files: &[FileStat]) {
    let width = files
        .iter()
        .map(|f| f.key.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(3, 60);
    let now = crate::record::wall_ms();
    println!(
        "{:<width$}  {:>10}  {:<12}  STATE",
        "KEY", "SIZE", "MODIFIED"
    );
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
            "{:<width$}  {:>10}  {:<12}  {}{conflicts}",
            f.key,
            size(f.size),
            ago(crate::record::physical_ms(f.version), now),
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
            size(e.size),
            if e.deleted { "delete" } else { "write" },
            e.author
        );
    }
}

/// `stat`: one field a line.
pub(super) fn stat(stat: &FileStat) {
    println!("key:        {}", stat.key);
    println!("size:       {} ({} bytes)", size(stat.size), stat.size);
    println!(
        "content id: {}",
        stat.content_id.as_deref().unwrap_or("- (deleted)")
    );
    println!(
        "version:    {} ({})",
        version(stat.version),
        ago(
            crate::record::physical_ms(stat.version),
            crate::record::wall_ms()
        )
    );
    println!("version id: {}", stat.version_id);
    println!("author:     {}", stat.author);
    println!("state:      {}", stat.state());
    for c in &stat.conflicts {
        let short = &c.version_id[..c.version_id.len().min(16)];
        // A concurrent write reads by its id; a concurrent delete has nothing to read.
        let (what, how) = if c.deleted {
            ("a delete".to_string(), format!("dfs log {}", stat.key))
        } else {
            (
                format!("a write of {}", size(c.size)),
                format!("dfs get {} --version {short}", stat.key),
            )
        };
        println!(
            "conflict:   {short} ({what} by {} at {}): {how}",
            c.author,
            rfc3339(c.version >> 16),
        );
    }
    if !stat.conflicts.is_empty() {
        println!(
            "            (written concurrently; a new put or `dfs restore` of the key resolves it)"
        );
    }
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
    if let Some(placed) = &stat.placed {
        if placed.is_empty() {
            println!("placed on:  no member is up");
        } else {
            println!("placed on:  {} ({})", placed.len(), placed.join(", "));
        }
    }
}

/// `peers`: each peer's id and agent, then its addresses indented.
pub(super) fn peers(peers: &[Peer]) {
    if peers.is_empty() {
        println!("no connected peers");
    }
    for p in peers {
        let offset = match p.clock_offset_ms {
            Some(ms) if ms.unsigned_abs() >= 60_000 => {
                let s = ms.unsigned_abs().div_ceil(1000);
                let dir = if ms > 0 { "ahead" } else { "behind" };
                format!("clock {} min {} s {dir} (off!)", s / 60, s % 60)
            }
            Some(ms) if ms.unsigned_abs() > 500 => format!("clock {ms:+} ms (off!)"),
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

/// A size in binary units: `512 B`, `1.5 KiB`, `3.0 MiB`.
pub(super) fn size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A version (hybrid logical clock value) in a compact form: the UTC time it carries, to the
/// millisecond, and `+n` when its counter is not 0 (several versions in one millisecond).
pub(super) fn version(v: u64) -> String {
    let counter = v & 0xffff;
    let time = rfc3339(crate::record::physical_ms(v));
    if counter == 0 {
        time
    } else {
        format!("{time}+{counter}")
    }
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC: `2026-11-25T18:40:01.123Z`.
pub(super) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        ms % 1000
    )
}

/// How long before `now` (both in milliseconds since the epoch) `then` was: `just now`,
/// `42 s ago`, `3 min ago`, `5 h ago`, `12 days ago`; older than 60 days, the date.
pub(super) fn ago(then: u64, now: u64) -> String {
    let Some(secs) = now.checked_sub(then).map(|d| d / 1000) else {
        return "in the future".into();
    };
    match secs {
        0..=4 => "just now".into(),
        5..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86_399 => format!("{} h ago", secs / 3600),
        86_400..=5_183_999 => format!("{} days ago", secs / 86_400),
        _ => rfc3339(then)[..10].to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(3 * 1024 * 1024 + 5), "3.0 MiB");
        assert_eq!(size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn times_read_as_rfc3339_and_ages() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_286_401_000), "2026-11-21T18:40:01.000Z");
        let now = 1_795_286_401_000;
        assert_eq!(ago(now, now), "just now");
        assert_eq!(ago(now - 42_000, now), "42 s ago");
        assert_eq!(ago(now - 180_000, now), "3 min ago");
        assert_eq!(ago(now - 5 * 3_600_000, now), "5 h ago");
        assert_eq!(ago(now - 90 * 86_400_000, now), "2026-08-23");
        assert_eq!(ago(now + 10_000, now), "in the future");
    }

    #[test]
    fn versions_show_their_time_and_counter() {
        let ms = 951_782_400_123u64;
        assert_eq!(version(ms << 16), "2000-02-29T00:00:00.123Z");
        assert_eq!(version((ms << 16) | 2), "2000-02-29T00:00:00.123Z+2");
    }
}
