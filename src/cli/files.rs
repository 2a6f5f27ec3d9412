//! The file commands, `put`, `get`, `rm`, `ls` and `stat`: one call each to the node's API.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use futures::StreamExt;

use crate::api::client::ApiClient;
use crate::api::json::FileStat;
use crate::record::printable;

use super::transfer::{progress, save, stdin_stream, to_stdout};
use super::{output, Error, Result};

/// `dfs put PATH|- [--key KEY] [--json]`: streams a file (or stdin) to the node; returns the
/// key.
pub(super) async fn put(
    api: &ApiClient,
    path: &str,
    key: Option<String>,
    json: bool,
) -> Result<String> {
    let stat = put_one(api, path, key, true).await?;
    if json {
        output::json(&stat)?;
    } else {
        output::stored(&stat);
    }
    Ok(stat.key)
}

/// Stores one file (or stdin) and returns its new Stat; `show` allows a progress bar.
pub(super) async fn put_one(
    api: &ApiClient,
    path: &str,
    key: Option<String>,
    show: bool,
) -> Result<FileStat> {
    type Chunks = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;
    let (body, key, len): (Chunks, String, _) = if path == "-" {
        let key = key.ok_or_else(|| {
            Error::Usage("reading from standard input (-) needs --key KEY".into())
        })?;
        super::checked(&key)?;
        (Box::pin(stdin_stream()), key, None)
    } else {
        let cannot = |e: std::io::Error| Error::Failed(format!("cannot read {path}: {e}"));
        let file = tokio::fs::File::open(path).await.map_err(cannot)?;
        let meta = file.metadata().await.map_err(cannot)?;
        if !meta.is_file() {
            if meta.is_dir() {
                return Err(Error::Usage(format!(
                    "{path} is a directory: `dfs put -r {path}` stores every file under it"
                )));
            }
            return Err(Error::Failed(format!("{path} is not a regular file")));
        }
        let key = match key {
            Some(k) => k,
            None => Path::new(path)
                .file_name()
                .and_then(|n| n.to_str())
                .map(str::to_string)
                .ok_or_else(|| {
                    Error::Usage(format!("cannot make a key of {path}; give one with --key"))
                })?,
        };
        super::checked(&key)?;
        // A node on this machine reads the file itself: no copy through HTTP. It refuses when
        // it cannot (another user, another container, an older node): then stream it.
        if api.is_local() {
            let absolute = std::path::absolute(path).map_err(cannot)?;
            if let Some(abs) = absolute.to_str() {
                match api.import(&key, abs).await {
                    Ok(stat) => return Ok(stat),
                    Err(crate::api::client::Error::Rejected { status, message })
                        if matches!(status.as_u16(), 403 | 404 | 405 | 422) =>
                    {
                        tracing::debug!(%status, %message, "the node cannot read the file; streaming it");
                    }
                    Err(crate::api::client::Error::NotFound { message }) => {
                        tracing::debug!(%message, "the node has no import; streaming the file");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let chunks = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
        (Box::pin(chunks), key, Some(meta.len()))
    };
    let bar = progress(len, show, &format!("put {key}"));
    let counter = bar.clone();
    let body = body.inspect(move |c| {
        if let Ok(c) = c {
            counter.inc(c.len() as u64);
        }
    });
    let stat = api.put(&key, reqwest::Body::wrap_stream(body), len).await;
    bar.finish_and_clear();
    Ok(stat?)
}

/// `dfs put --wait N [--timeout DURATION]`: waits until `n` nodes (this one included) hold
/// the whole file; exit 1 saying how many did when the time is up.
pub(super) async fn wait_holders(
    api: &ApiClient,
    key: &str,
    n: usize,
    timeout: std::time::Duration,
    json: bool,
) -> Result<()> {
    let holders = api.holders(key, n, timeout).await?;
    let count = holders.holders.len();
    if count >= n {
        // With --json, standard output holds the Stat alone.
        if json {
            eprintln!("{key} is held by {count} node(s)");
        } else {
            println!("{key} is held by {count} node(s)");
        }
        return Ok(());
    }
    Err(Error::Failed(format!(
        "only {count} of {n} nodes hold {key} after {timeout:?}"
    )))
}

/// Where `get` writes.
pub(super) enum Dest {
    /// Standard output; `asked` when given as `-o -` (then even binary goes to a terminal).
    Stdout {
        asked: bool,
    },
    File(PathBuf),
}

impl Dest {
    /// `-o PATH`; `-o -` is standard output, as for `put -`. A directory gets the key's last
    /// segment as the file name (`-o .` as `cp` and `curl -O` users expect); a path whose
    /// directory does not exist is a usage error before anything is downloaded.
    pub(super) fn of(output: Option<PathBuf>, key: &str) -> Result<Dest> {
        Ok(match output {
            None => Dest::Stdout { asked: false },
            Some(p) if p == std::path::Path::new("-") => Dest::Stdout { asked: true },
            Some(p) if p.is_dir() => {
                // A checked key's last segment is a file name: never empty, `.` or `..`.
                let name = key.rsplit('/').next().unwrap_or(key);
                Dest::File(p.join(name))
            }
            Some(p) => {
                let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
                if let Some(dir) = parent.filter(|d| !d.is_dir()) {
                    return Err(Error::Usage(format!(
                        "cannot write {}: the directory {} does not exist",
                        p.display(),
                        dir.display()
                    )));
                }
                Dest::File(p)
            }
        })
    }
}

/// `dfs get KEY [-o PATH] [--json]`: streams a file to stdout or into `PATH`.
pub(super) async fn get(api: &ApiClient, key: &str, dest: Dest, json: bool) -> Result<()> {
    let asked = match dest {
        Dest::File(path) => {
            let result = explain_missing(api, key, save(api, key, &path, true).await).await;
            let fetched = explain_damage(api, key, result).await?;
            return if json { output::json(&fetched) } else { Ok(()) };
        }
        Dest::Stdout { .. } if json => {
            return Err(Error::Usage(
                "--json prints a summary of a download into a file: give -o FILE".into(),
            ))
        }
        Dest::Stdout { asked } => asked,
    };
    let res = explain_missing(api, key, api.get(key).await.map_err(Error::from)).await?;
    let len = res.content_length();
    let terminal = std::io::stdout().is_terminal();
    let bar = progress(len, terminal, &format!("get {key}"));
    let mut body = res.bytes_stream();
    let first = body.next().await;
    if terminal && !asked {
        if let Some(Ok(chunk)) = &first {
            if looks_binary(chunk) {
                return Err(Error::Usage(format!(
                    "{key} looks binary: not writing it to a terminal; use -o FILE, -o - or a pipe (| cat)"
                )));
            }
        }
    }
    let body = futures::stream::iter(first).chain(body);
    let result = to_stdout(body, len, &bar).await;
    bar.finish_and_clear();
    explain_damage(api, key, result).await
}

/// True when the start of a file is not text: a NUL byte, or bytes that are not UTF-8 (a
/// character cut at the end of the sample is fine).
pub(super) fn looks_binary(start: &[u8]) -> bool {
    let sample = &start[..start.len().min(8192)];
    if sample.contains(&0) {
        return true;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => false,
        Err(e) => e.error_len().is_some(),
    }
}

/// A failed download whose cause is damage the node could not heal (a body cut short after the
/// first chunk): says so.
/// A key that is not found because it was deleted: say so, and how to get it back.
async fn explain_missing<T>(api: &ApiClient, key: &str, result: Result<T>) -> Result<T> {
    if matches!(
        result,
        Err(Error::Api(crate::api::client::Error::NotFound { .. }))
    ) {
        if let Ok(stat) = api.stat(key).await {
            if stat.deleted {
                return Err(Error::Failed(format!(
                    "{key} was deleted (by {} at {}); `dfs log {key}` lists its versions and `dfs restore {key} VERSION` brings one back",
                    stat.author,
                    output::rfc3339(stat.time),
                )));
            }
        }
    }
    result
}

async fn explain_damage<T>(api: &ApiClient, key: &str, result: Result<T>) -> Result<T> {
    if matches!(result, Err(Error::Failed(_))) {
        if let Ok(stat) = api.stat(key).await {
            if stat.damaged > 0 {
                return Err(Error::Failed(format!(
                    "integrity error: {} chunk(s) of {key} do not match their hash on this node, and no peer supplied a healthy copy",
                    stat.damaged
                )));
            }
        }
    }
    result
}

/// `dfs rm KEY [--json]`: deletes a key everywhere.
pub(super) async fn rm(api: &ApiClient, key: &str, json: bool) -> Result<()> {
    let tombstone = api.delete(key).await?;
    if json {
        return output::json(&tombstone);
    }
    output::deleted(&tombstone);
    Ok(())
}

/// `dfs ls [PREFIX] [--json] [--all]`: the keys the node knows (without tombstones unless
/// `all`), only those starting with `prefix` if given.
pub(super) async fn ls(api: &ApiClient, prefix: Option<&str>, json: bool, all: bool) -> Result<()> {
    let mut deleted = 0usize;
    let mut listing = output::Listing::new(json);
    api.list_each(prefix, |f| {
        if !all && f.deleted {
            deleted += 1;
            return true;
        }
        listing.push(f)
    })
    .await?;
    let under = prefix.map_or(String::new(), |p| format!(" under {}", printable(p)));
    let empty = match deleted {
        0 if prefix.is_some() => format!("no files{under}"),
        0 => "no files yet: `dfs put FILE` stores one".to_string(),
        n => format!("no files{under} ({n} deleted: `dfs ls --all` lists them)"),
    };
    listing.when_empty(empty).finish()
}

/// `dfs stat KEY [--json]`: one key's metadata.
pub(super) async fn stat(api: &ApiClient, key: &str, json: bool) -> Result<()> {
    let stat = api.stat_with_holders(key).await?;
    if json {
        return output::json(&stat);
    }
    output::stat(&stat);
    Ok(())
}
