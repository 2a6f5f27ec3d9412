//! Parsing of the HTTP `Range` request header (a single byte range) against a file's size.

/// What a `Range` header asks for, once resolved against the file size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Half-open byte range `[start, end)` within the file, not empty.
    Satisfiable(u64, u64),
    /// The range lies outside the file (HTTP 416).
    Unsatisfiable,
}

/// Why a `Range` header was refused (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad range {0:?}: expected bytes=START-END, bytes=START- or bytes=-LENGTH")]
pub struct BadRange(pub String);

/// Resolves `header` (`bytes=a-b`, `bytes=a-` or `bytes=-n`; `b` inclusive) against `size`.
/// Only one range is supported; a list of ranges is refused as a bad range.
pub fn parse(header: &str, size: u64) -> Result<Range, BadRange> {
    let bad = || BadRange(header.to_string());
    let spec = header.trim().strip_prefix("bytes=").ok_or_else(bad)?.trim();
    let (first, last) = spec.split_once('-').ok_or_else(bad)?;
    let num = |s: &str| -> Result<Option<u64>, BadRange> {
        let s = s.trim();
        if s.is_empty() {
            Ok(None)
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse().map(Some).map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    match (num(first)?, num(last)?) {
        (Some(a), Some(b)) if a > b => Err(bad()),
        (Some(a), _) if a >= size => Ok(Range::Unsatisfiable),
        (Some(a), Some(b)) => Ok(Range::Satisfiable(a, b.saturating_add(1).min(size))),
        (Some(a), None) => Ok(Range::Satisfiable(a, size)),
        (None, Some(0)) => Ok(Range::Unsatisfiable),
        (None, Some(_)) if size == 0 => Ok(Range::Unsatisfiable),
        (None, Some(n)) => Ok(Range::Satisfiable(size.saturating_sub(n), size)),
        (None, None) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Range::*;

    #[test]
    fn ranges_resolve_against_the_size() {
        assert_eq!(parse("bytes=0-0", 10), Ok(Satisfiable(0, 1)));
        assert_eq!(parse("bytes=2-5", 10), Ok(Satisfiable(2, 6)));
        assert_eq!(parse("bytes=2-100", 10), Ok(Satisfiable(2, 10)));
        assert_eq!(parse("bytes=4-", 10), Ok(Satisfiable(4, 10)));
        assert_eq!(parse("bytes=-3", 10), Ok(Satisfiable(7, 10)));
        assert_eq!(parse("bytes=-30", 10), Ok(Satisfiable(0, 10)));
        assert_eq!(parse("bytes=10-", 10), Ok(Unsatisfiable));
        assert_eq!(parse("bytes=10-20", 10), Ok(Unsatisfiable));
        assert_eq!(parse("bytes=-0", 10), Ok(Unsatisfiable));
        assert_eq!(parse("bytes=0-", 0), Ok(Unsatisfiable));
        assert_eq!(parse("bytes=-1", 0), Ok(Unsatisfiable));
    }

    #[test]
    fn malformed_ranges_are_refused() {
        for h in [
            "bytes=5-2",
            "bytes=-",
            "bytes=a-b",
            "items=0-1",
            "bytes=0-1,3-4",
            "bytes=+1-2",
            "bytes=99999999999999999999999-",
        ] {
            assert!(parse(h, 10).is_err(), "{h}");
        }
    }
}
