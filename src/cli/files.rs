//! The file commands, `put`, `get`, `rm`, `ls` and `stat`: one call each to the node's API.

use std::io::IsTerminal;
use std::path::Path;

use futures::StreamExt;

use crate::api::client::ApiClient;

use super::transfer::{progress, save, stdin_stream, to_stdout};
use super::{output, Error, Result};

/// `dfs put PATH|- [--key KEY]`: streams a file (or stdin) to the node; returns the key.
pub(super) async fn put(api: &ApiClient, path: &str, key: Option<String>) -> Result<String> {
    type Chunks = futures::stream::BoxStream<'static, std::io::Result<bytes::Bytes>>;
    let (body, key, len): (Chunks, String, _) = if path == "-" {
        let key = key.ok_or_else(|| {
            Error::Usage("reading from standard input (-) needs --key KEY".into())
        })?;
        (Box::pin(stdin_stream()), key, None)
    } else {
        let cannot = |e: std::io::Error| Error::Failed(format!("cannot read {path}: {e}"));
        let file = tokio::fs::File::open(path).await.map_err(cannot)?;
        let meta = file.metadata().await.map_err(cannot)?;
        if !meta.is_file() {
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
        // A node on this machine reads the file itself: no copy through HTTP. It refuses when
        // it cannot (another user, another container, an older node): then stream it.
        if api.is_local() {
            let absolute = std::path::absolute(path).map_err(cannot)?;
            if let Some(abs) = absolute.to_str() {
                match api.import(&key, abs).await {
                    Ok(stat) => {
                        output::stored(&stat);
                        return Ok(key);
                    }
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
    let bar = progress(len, true, &format!("put {key}"));
    let counter = bar.clone();
    let body = body.inspect(move |c| {
        if let Ok(c) = c {
            counter.inc(c.len() as u64);
        }
    });
    let stat = api.put(&key, reqwest::Body::wrap_stream(body), len).await;
    bar.finish_and_clear();
    output::stored(&stat?);
    Ok(key)
}

/// `dfs put --wait N [--timeout DURATION]`: waits until `n` nodes (this one included) hold
/// the whole file; exit 1 saying how many did when the time is up.
pub(super) async fn wait_holders(
    api: &ApiClient,
    key: &str,
    n: usize,
    timeout: std::time::Duration,
) -> Result<()> {
    let holders = api.holders(key, n, timeout).await?;
    let count = holders.holders.len();
    if count >= n {
        println!("{key} is held by {count} node(s)");
        return Ok(());
    }
    Err(Error::Failed(format!(
        "only {count} of {n} nodes hold {key} after {timeout:?}"
    )))
}

/// `dfs get KEY [-o PATH]`: streams a file to stdout or into `PATH`.
pub(super) async fn get(api: &ApiClient, key: &str, dest: Option<&Path>) -> Result<()> {
    let res = api.get(key).await?;
    let len = res.content_length();
    let show = dest.is_some() || std::io::stdout().is_terminal();
    let bar = progress(len, show, &format!("get {key}"));
    let body = res.bytes_stream();
    let result = match dest {
        None => to_stdout(body, len, &bar).await,
        Some(path) => save(body, path, len, &bar).await,
    };
    bar.finish_and_clear();
    // A body cut short by damage the node could not heal (a chunk after the first): say so.
    if result.is_err() {
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

/// `dfs rm KEY`: deletes a key everywhere.
pub(super) async fn rm(api: &ApiClient, key: &str) -> Result<()> {
    let tombstone = api.delete(key).await?;
    output::deleted(&tombstone);
    Ok(())
}

/// `dfs ls [--json] [--all]`: the keys the node knows (without tombstones unless `all`).
pub(super) async fn ls(api: &ApiClient, json: bool, all: bool) -> Result<()> {
    let mut files = api.list().await?;
    files.retain(|f| all || !f.deleted);
    if json {
        output::json(&files)
    } else {
        output::table(&files);
        Ok(())
    }
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
