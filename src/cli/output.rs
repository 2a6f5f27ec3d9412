//! What the commands print on stdout: the human text of each answer, or its JSON with `--json`.
//! Text shows sizes in binary units (`1.5 MiB`), versions by the first 16 hex digits of their id
//! (what `--version` and `restore` take back) with the time they were written.

use crate::api::json::{FileStat, Id, LogEntry, Peer};
use crate::record::printable;

use super::{Error, Result};

/// Prints `value` as pretty JSON (the shapes of [`crate::api::json`]).
pub(super) fn json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Failed(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// The answer to `put`.
pub(super) fn stored(stat: &FileStat) {
    println!("stored {}", written(stat));
}

/// The answer to `restore`: as `put`'s.
pub(super) fn restored(stat: &FileStat) {
    println!("restored {}", written(stat));
}

/// A version just written: `KEY (3 B, content id 1a2b…, version 9f8e7d6c5b4a3928 at TIME)`.
fn written(stat: &FileStat) -> String {
    format!(
        "{} ({}, content id {}, version {} at {})",
        printable(&stat.key),
        size(stat.size),
        stat.content_id
            .as_deref()
            .map_or("-", |c| &c[..c.len().min(12)]),
        short(&stat.version),
        rfc3339(stat.time)
    )
}

/// A version id as the CLI shows it: its first 16 hex digits (any unique prefix of 8 or more
/// is accepted back).
pub(super) fn short(version: &str) -> &str {
    // From a node: not trusted to be ASCII.
    version.get(..16).unwrap_or(version)
}

/// The answer to `rm`.
pub(super) fn deleted(tombstone: &FileStat) {
    println!(
        "deleted {} (version {} at {})",
        printable(&tombstone.key),
        short(&tombstone.version),
        rfc3339(tombstone.time)
    );
}

/// The width of the key column: the longest key, within 3 to 60 characters.
fn key_width(files: &[FileStat]) -> usize {
    files
        .iter()
        .map(|f| printable(&f.key).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(3, 60)
}

fn table_header(width: usize) -> String {
    format!(
        "{:<width$}  {:>10}  {:<12}  STATE",
        "KEY", "SIZE", "MODIFIED"
    )
}

fn table_row(f: &FileStat, width: usize, now: u64) -> String {
    let conflicts = match f.conflicts.len() {
        0 => String::new(),
        n => format!(
            "  ({n} conflict{}: dfs log {})",
            if n == 1 { "" } else { "s" },
            printable(&f.key)
        ),
    };
    format!(
        "{:<width$}  {:>10}  {:<12}  {}{conflicts}",
        printable(&f.key),
        size(f.size),
        ago(f.time, now),
        f.state()
    )
}

/// Entries of a listing that set the width of its key column (the table is printed once they
/// are known, so that a listing of any size starts at once and holds no more than them).
const TABLE_HEAD: usize = 1000;

/// `ls` as the entries arrive: the same text as [`table`] (its key column as wide as the
/// longest of the first [`TABLE_HEAD`] keys), or the same JSON as [`json`] of the whole list.
pub(super) struct Listing {
    json: bool,
    head: Vec<FileStat>,
    width: Option<usize>,
    count: usize,
    now: u64,
    out: std::io::BufWriter<std::io::Stdout>,
    error: Option<std::io::Error>,
    /// What the text says when there is nothing to list (instead of a lone header).
    empty: String,
}

impl Listing {
    pub(super) fn new(json: bool) -> Listing {
        Listing {
            json,
            head: Vec::new(),
            width: None,
            count: 0,
            now: crate::record::wall_ms(),
            out: std::io::BufWriter::new(std::io::stdout()),
            error: None,
            empty: "no files".into(),
        }
    }

    /// Sets what the text says when there is nothing to list.
    pub(super) fn when_empty(mut self, text: String) -> Listing {
        self.empty = text;
        self
    }

    /// Prints (or holds) one entry; false once stdout fails (a closed pipe).
    pub(super) fn push(&mut self, f: FileStat) -> bool {
        let written = if self.json {
            self.json_entry(&f)
        } else if let Some(width) = self.width {
            let row = table_row(&f, width, self.now);
            self.line(&row)
        } else {
            self.head.push(f);
            if self.head.len() < TABLE_HEAD {
                return true;
            }
            self.start_table()
        };
        self.count += 1;
        match written {
            Ok(()) => true,
            Err(e) => {
                self.error = Some(e);
                false
            }
        }
    }

    fn line(&mut self, line: &str) -> std::io::Result<()> {
        use std::io::Write;
        writeln!(self.out, "{line}")?;
        // The first lines leave at once; then in blocks.
        if self.count < 2 || self.count.is_multiple_of(256) {
            self.out.flush()?;
        }
        Ok(())
    }

    fn start_table(&mut self) -> std::io::Result<()> {
        let width = key_width(&self.head);
        self.width = Some(width);
        self.line(&table_header(width))?;
        for f in std::mem::take(&mut self.head) {
            let row = table_row(&f, width, self.now);
            self.line(&row)?;
        }
        Ok(())
    }

    fn json_entry(&mut self, f: &FileStat) -> std::io::Result<()> {
        use std::io::Write;
        let pretty = serde_json::to_string_pretty(f).map_err(std::io::Error::other)?;
        let open = if self.count == 0 { "[\n" } else { ",\n" };
        self.out.write_all(open.as_bytes())?;
        for (i, l) in pretty.lines().enumerate() {
            if i > 0 {
                self.out.write_all(b"\n")?;
            }
            write!(self.out, "  {l}")?;
        }
        if self.count < 2 || self.count.is_multiple_of(256) {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Ends the listing: the held entries, the end of the JSON list; the first stdout error.
    pub(super) fn finish(mut self) -> Result<()> {
        use std::io::Write;
        let failed = self.error.take();
        let mut end = || -> std::io::Result<()> {
            if self.json {
                let close: &[u8] = if self.count == 0 { b"[]\n" } else { b"\n]\n" };
                self.out.write_all(close)?;
            } else if self.width.is_none() && self.head.is_empty() {
                writeln!(self.out, "{}", self.empty)?;
            } else if self.width.is_none() {
                self.start_table()?;
            }
            self.out.flush()
        };
        let result = match failed {
            Some(e) => Err(e),
            None => end(),
        };
        result.map_err(|e| Error::Failed(format!("cannot write the listing: {e}")))
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
            short(&e.version),
            rfc3339(e.time),
            e.state,
            size(e.size),
            if e.deleted { "delete" } else { "write" },
            e.author
        );
    }
}

/// `stat`: one field a line.
pub(super) fn stat(stat: &FileStat) {
    println!("key:        {}", printable(&stat.key));
    println!("size:       {} ({} bytes)", size(stat.size), stat.size);
    println!(
        "content id: {}",
        stat.content_id.as_deref().unwrap_or("- (deleted)")
    );
    println!("version:    {}", stat.version);
    println!(
        "time:       {} ({})",
        rfc3339(stat.time),
        ago(stat.time, crate::record::wall_ms())
    );
    println!("author:     {}", stat.author);
    println!("state:      {}", stat.state());
    for c in &stat.conflicts {
        let short = short(&c.version);
        // A concurrent write reads by its id; a concurrent delete has nothing to read.
        let (what, how) = if c.deleted {
            (
                "a delete".to_string(),
                format!("dfs log {}", printable(&stat.key)),
            )
        } else {
            (
                format!("a write of {}", size(c.size)),
                format!("dfs get {} --version {short}", printable(&stat.key)),
            )
        };
        println!(
            "conflict:   {short} ({what} by {} at {}): {how}",
            c.author,
            rfc3339(c.time),
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
            printable(p.agent.as_deref().unwrap_or("-"))
        );
        for a in &p.addrs {
            println!("  {}", printable(a));
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
    // The network's id is its owner's peer id.
    let role = match id.role {
        _ if id.network.as_deref() == Some(id.peer_id.as_str()) => "owner",
        Some(r) => r.as_str(),
        None => "reader (no grant)",
    };
    match &id.writes_refused {
        Some(why) => println!(
            "role:    {role}, but writes are refused: {}",
            printable(why)
        ),
        None => println!("role:    {role}"),
    }
    for a in &id.addrs {
        println!("  {}", printable(a));
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
    fn versions_show_sixteen_hex_digits_of_their_id() {
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(short(&"ab".repeat(32)), "abababababababab");
        assert_eq!(short("abc"), "abc");
    }
}
