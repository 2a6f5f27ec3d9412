//! The version commands, `log`, `restore` and `get --version`: a key's history and conflicts,
//! one call each to the node's API.

use std::io::IsTerminal;
use std::path::Path;

use crate::api::client::ApiClient;

use super::transfer::{progress, save, to_stdout};
use super::{output, Result};

/// `dfs log KEY [--json]`: every version of the key this node knows, oldest first.
pub(super) async fn log(api: &ApiClient, key: &str, json: bool) -> Result<()> {
    let log = api.log(key).await?;
    if json {
        return output::json(&log);
    }
    output::log(&log);
    Ok(())
}

/// `dfs restore KEY VERSION [--json]`: makes a version current again.
pub(super) async fn restore(api: &ApiClient, key: &str, version: &str, json: bool) -> Result<()> {
    let stat = api.restore(key, version).await?;
    if json {
        return output::json(&stat);
    }
    println!(
        "restored {} ({} bytes, content id {}) as version {}",
        stat.key,
        stat.size,
        stat.content_id.as_deref().unwrap_or("-"),
        &stat.version_id[..stat.version_id.len().min(16)]
    );
    Ok(())
}

/// `dfs get KEY --version V [-o PATH]`: one version's content.
pub(super) async fn get_version(
    api: &ApiClient,
    key: &str,
    version: &str,
    dest: Option<&Path>,
) -> Result<()> {
    let res = api.get_version(key, version).await?;
    let len = res.content_length();
    let show = dest.is_some() || std::io::stdout().is_terminal();
    let bar = progress(len, show, &format!("get {key} {version}"));
    let body = res.bytes_stream();
    let result = match dest {
        None => to_stdout(body, len, &bar).await,
        Some(path) => save(body, path, len, &bar).await,
    };
    bar.finish_and_clear();
    result
}
