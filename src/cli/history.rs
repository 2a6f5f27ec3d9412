//! The version commands, `log`, `restore` and `get --version`: a key's history and conflicts,
//! one call each to the node's API.

use std::io::IsTerminal;
use std::path::Path;

use crate::api::client::ApiClient;

use super::files::Dest;
use super::transfer::{progress, to_stdout};
use super::{output, Error, Result};

/// `dfs log KEY [--json]`: every version of the key this node knows, oldest first.
pub(super) async fn log(api: &ApiClient, key: &str, json: bool) -> Result<()> {
    let log = api.log(key).await?;
    if json {
        return output::json(&log);
    }
    output::log(&log);
    Ok(())
}

/// A version id as `dfs log` prints it, or a prefix of 8 or more of its hex digits; anything
/// else is a usage error (exit code 2) before the node is asked.
fn check_version(version: &str) -> Result<()> {
    let ok = (8..=64).contains(&version.len()) && version.bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "bad version {version:?}: give a version id as `dfs log KEY` prints it, or 8 or more of its first hex digits"
    )))
}

/// `dfs restore KEY VERSION [--json]`: makes a version current again.
pub(super) async fn restore(api: &ApiClient, key: &str, version: &str, json: bool) -> Result<()> {
    check_version(version)?;
    let stat = api.restore(key, version).await?;
    if json {
        return output::json(&stat);
    }
    output::restored(&stat);
    Ok(())
}

/// `dfs get KEY --version V [-o PATH] [--json]`: one version's content, to standard output or
/// into `PATH` (through a temp file renamed once complete).
pub(super) async fn get_version(
    api: &ApiClient,
    key: &str,
    version: &str,
    dest: Dest,
    json: bool,
) -> Result<()> {
    check_version(version)?;
    let res = api.get_version(key, version).await?;
    let len = res.content_length();
    let header = |name: &str| {
        res.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string())
    };
    let content_id = header("etag").unwrap_or_default();
    let time: Option<u64> = header(crate::api::TIME_HEADER).and_then(|v| v.parse().ok());
    let version_id = header(crate::api::VERSION_HEADER).unwrap_or_else(|| version.to_string());
    let body = res.bytes_stream();
    match dest {
        Dest::Stdout { .. } if json => Err(Error::Usage(
            "--json prints a summary of a download into a file: give -o FILE".into(),
        )),
        Dest::Stdout { .. } => {
            let bar = progress(len, std::io::stdout().is_terminal(), &format!("get {key}"));
            let result = to_stdout(body, len, &bar).await;
            bar.finish_and_clear();
            result
        }
        Dest::File(path) => {
            let bar = progress(len, true, &format!("get {key} {version}"));
            let tmp = path.with_file_name(format!(
                ".{}.dfs-version",
                path.file_name().and_then(|n| n.to_str()).unwrap_or("get")
            ));
            let written = write_to(body, &tmp, &bar).await;
            bar.finish_and_clear();
            let size = match written {
                Ok(size) if len.is_none_or(|n| n == size) => size,
                Ok(size) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Error::Failed(format!(
                        "transfer failed: got {size} of {} bytes",
                        len.unwrap_or_default()
                    )));
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            std::fs::rename(&tmp, &path)
                .map_err(|e| Error::Failed(format!("cannot write {}: {e}", path.display())))?;
            if json {
                // The summary of `get -o --json`, and the version's id.
                output::json(&serde_json::json!({
                    "key": key,
                    "path": path.display().to_string(),
                    "size": size,
                    "content_id": content_id,
                    "version": version_id,
                    "time": time,
                    "resumed_from": 0,
                }))?;
            }
            Ok(())
        }
    }
}

/// Writes a response body into a new file at `path`, fsynced; returns its length.
async fn write_to(
    mut body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    path: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<u64> {
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;
    let cannot = |e: std::io::Error| Error::Failed(format!("cannot write {}: {e}", path.display()));
    let mut file = tokio::fs::File::create(path).await.map_err(cannot)?;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::Failed(format!("transfer failed: {e}")))?;
        file.write_all(&chunk).await.map_err(cannot)?;
        total += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().await.map_err(cannot)?;
    Ok(total)
}
