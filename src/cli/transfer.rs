//! Moving file bodies for `put` and `get`: standard input as a stream, progress bars, and copying
//! a download to stdout or into a file (a temp file renamed into place on success).

use std::io::IsTerminal;
use std::path::Path;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::api::client::error_chain;

use super::{Error, Result};

/// Transfers smaller than this never show a progress bar.
const PROGRESS_MIN: u64 = 4 << 20;

/// A progress bar on stderr, or a hidden one when `show` is false or the transfer is short.
pub(super) fn progress(len: Option<u64>, show: bool, what: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() || len.is_some_and(|n| n < PROGRESS_MIN) {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                .expect("valid template"),
        ),
    };
    bar.set_message(what.to_string());
    bar
}

/// Standard input as a stream of chunks, read on its own thread (tokio's stdin is not enabled).
pub(super) fn stdin_stream() -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        loop {
            let mut buf = vec![0u8; 256 * 1024];
            let item = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    Ok(bytes::Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            if tx.blocking_send(item).is_err() || failed {
                break;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) })
}

/// Where `get` writes: standard output (written from a blocking section, as tokio's stdout is
/// not enabled) or a file.
enum Sink<'a> {
    Stdout(std::io::Stdout),
    File(&'a mut tokio::fs::File),
}

impl Sink<'_> {
    fn is_stdout(&self) -> bool {
        matches!(self, Sink::Stdout(_))
    }

    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => {
                tokio::task::block_in_place(|| std::io::Write::write_all(&mut out.lock(), data))
            }
            Sink::File(f) => f.write_all(data).await,
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout(out) => tokio::task::block_in_place(|| std::io::Write::flush(out)),
            Sink::File(f) => f.flush().await,
        }
    }
}

/// Copies a response body to standard output, checking its length.
pub(super) async fn to_stdout(
    body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    len: Option<u64>,
    bar: &ProgressBar,
) -> Result<()> {
    copy(body, Sink::Stdout(std::io::stdout()), len, bar).await
}

/// Copies a response body into `out`, checking its length.
async fn copy(
    mut body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    mut out: Sink<'_>,
    len: Option<u64>,
    bar: &ProgressBar,
) -> Result<()> {
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk =
            chunk.map_err(|e| Error::Failed(format!("transfer failed: {}", error_chain(&e))))?;
        match out.write_all(&chunk).await {
            Ok(()) => {}
            // The reader of a pipe went away (`dfs get big | head`): stop quietly, as cat does.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe && out.is_stdout() => {
                return Ok(())
            }
            Err(e) => return Err(write_error(e)),
        }
        total += chunk.len() as u64;
        bar.inc(chunk.len() as u64);
    }
    out.flush().await.map_err(write_error)?;
    if let Some(n) = len.filter(|n| *n != total) {
        return Err(Error::Failed(format!(
            "transfer failed: got {total} of {n} bytes"
        )));
    }
    Ok(())
}

fn write_error(e: std::io::Error) -> Error {
    Error::Failed(format!("cannot write the output: {e}"))
}

/// Writes a response body to a temp file next to `path`, then renames it into place.
pub(super) async fn save(
    body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    path: &Path,
    len: Option<u64>,
    bar: &ProgressBar,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let cannot = |e: std::io::Error| Error::Failed(format!("cannot write {}: {e}", path.display()));
    let tmp = tempfile::Builder::new()
        .prefix(".dfs-get-")
        .tempfile_in(dir)
        .map_err(cannot)?;
    let mut file = tokio::fs::File::from_std(tmp.reopen().map_err(cannot)?);
    copy(body, Sink::File(&mut file), len, bar).await?;
    file.sync_all().await.map_err(cannot)?;
    drop(file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(cannot)?;
    }
    tmp.persist(path).map_err(|e| cannot(e.error))?;
    Ok(())
}
