//! Conditional requests (RFC 9110, section 13) on a file: `If-Match`, `If-None-Match` and
//! `If-Range`, evaluated against the file's entity tag (its quoted content id).

use axum::http::{header, HeaderMap};

/// What the preconditions of a `GET` or `HEAD` decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Answer normally; `honour_range` is false when an `If-Range` names another version, so
    /// that the whole current file is sent (`200`), never a part of it.
    Proceed { honour_range: bool },
    /// `304 Not Modified`: `If-None-Match` names the current version.
    NotModified,
    /// `412 Precondition Failed`: `If-Match` does not name the current version.
    Failed,
}

/// Evaluates the preconditions in the order of RFC 9110 section 13.2.2. `etag` is the file's
/// strong entity tag, quoted (`"<content id hex>"`). Headers that are not valid text fail to
/// match, like a tag of another version. There is no `Last-Modified`, so the date conditions
/// (`If-Modified-Since`, `If-Unmodified-Since`) are ignored and an `If-Range` date never
/// matches.
pub fn evaluate(headers: &HeaderMap, etag: &str) -> Decision {
    let text = |name| {
        headers
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.to_str().unwrap_or(""))
    };
    if let Some(h) = text(header::IF_MATCH) {
        if !list_matches(h, etag, true) {
            return Decision::Failed;
        }
    }
    if let Some(h) = text(header::IF_NONE_MATCH) {
        if list_matches(h, etag, false) {
            return Decision::NotModified;
        }
    }
    let honour_range = match text(header::IF_RANGE) {
        None => true,
        // A strong comparison: a weak tag (or a date) never matches.
        Some(h) => h.trim() == etag,
    };
    Decision::Proceed { honour_range }
}

/// True when a list of entity tags (`"a", W/"b"`) or `*` names `etag`: strongly (both tags
/// strong and equal) when `strong`, else weakly (the opaque tags equal).
fn list_matches(header: &str, etag: &str, strong: bool) -> bool {
    let header = header.trim();
    if header == "*" {
        return true;
    }
    header.split(',').map(str::trim).any(|tag| {
        if strong {
            tag == etag
        } else {
            tag.strip_prefix("W/").unwrap_or(tag) == etag
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const TAG: &str = "\"abc\"";

    fn with(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn if_none_match_with_the_current_tag_is_not_modified() {
        for v in ["\"abc\"", "W/\"abc\"", "\"old\", \"abc\"", "*"] {
            let h = with(&[(header::IF_NONE_MATCH, v)]);
            assert_eq!(evaluate(&h, TAG), Decision::NotModified, "{v}");
        }
        let h = with(&[(header::IF_NONE_MATCH, "\"old\"")]);
        assert_eq!(evaluate(&h, TAG), Decision::Proceed { honour_range: true });
    }

    #[test]
    fn if_match_with_a_stale_tag_fails() {
        let h = with(&[(header::IF_MATCH, "\"old\"")]);
        assert_eq!(evaluate(&h, TAG), Decision::Failed);
        let h = with(&[(header::IF_MATCH, "W/\"abc\"")]);
        assert_eq!(evaluate(&h, TAG), Decision::Failed, "strong comparison");
        for v in ["\"abc\"", "*", "\"x\", \"abc\""] {
            let h = with(&[(header::IF_MATCH, v)]);
            assert_eq!(
                evaluate(&h, TAG),
                Decision::Proceed { honour_range: true },
                "{v}"
            );
        }
    }

    #[test]
    fn if_range_with_another_tag_or_a_date_ignores_the_range() {
        for (v, honour) in [
            ("\"abc\"", true),
            ("\"old\"", false),
            ("W/\"abc\"", false),
            ("Wed, 21 Oct 2015 07:28:00 GMT", false),
        ] {
            let h = with(&[(header::IF_RANGE, v)]);
            assert_eq!(
                evaluate(&h, TAG),
                Decision::Proceed {
                    honour_range: honour
                },
                "{v}"
            );
        }
    }
}
