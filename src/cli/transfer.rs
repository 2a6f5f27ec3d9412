//! Moving file bodies for `put` and `get`: standard input as a stream, progress bars, and copying
//! a download to stdout or into a file (through its resumable partial file, renamed into place
//! once verified).

use std::io::IsTerminal;
use std::path::Path;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncWriteExt;

use crate::api::client::{self, error_chain, ApiClient};

use super::partial::{Partial, Sidecar, Verifier};
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
    bar.set_message(crate::record::printable(what).into_owned());
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

/// Standard output, written from a blocking section (tokio's stdout is not enabled).
struct Sink(std::io::Stdout);

impl Sink {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        tokio::task::block_in_place(|| std::io::Write::write_all(&mut self.0.lock(), data))
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        tokio::task::block_in_place(|| std::io::Write::flush(&mut self.0))
    }
}

/// Copies a response body to standard output, checking its length.
pub(super) async fn to_stdout(
    body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    len: Option<u64>,
    bar: &ProgressBar,
) -> Result<()> {
    copy(body, Sink(std::io::stdout()), len, bar).await
}

/// Copies a response body into `out`, checking its length.
async fn copy(
    mut body: impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin,
    mut out: Sink,
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
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
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

/// What `get -o FILE` did: its `--json` summary.
#[derive(Debug, Clone, serde::Serialize)]
pub(super) struct Fetched {
    pub key: String,
    pub path: String,
    pub size: u64,
    pub content_id: String,
    /// The version's id (as in a Stat); `null` from a node that does not send it.
    pub version: Option<String>,
    /// The version's time (as in a Stat).
    pub time: Option<u64>,
    /// Bytes kept from an interrupted earlier run (0 when the download started afresh).
    pub resumed_from: u64,
}

/// Downloads `key` into `path` through its partial file (see [`super::partial`]): continues a
/// part left by an interrupted run when it is of the same version, checks the whole against
/// the content id, then renames it into place. Ctrl-C keeps the part and says how to resume.
pub(super) async fn save(api: &ApiClient, key: &str, path: &Path, show: bool) -> Result<Fetched> {
    let partial = Partial::of(path);
    let cannot =
        |p: &Path, e: std::io::Error| Error::Failed(format!("cannot write {}: {e}", p.display()));
    // A part that fails the check is dropped and the download made again, once.
    for attempt in 0..2 {
        let resume = partial.resume_point(key);
        let (res, from) = match &resume {
            // A complete part (interrupted while it was being synced) still asks for its last
            // byte: a 206 confirms the version is current.
            Some((sidecar, have)) => match api
                .get_from(key, (*have).min(sidecar.size - 1), &sidecar.etag)
                .await
            {
                Ok(res) if res.status() == reqwest::StatusCode::PARTIAL_CONTENT => {
                    (res, (*have).min(sidecar.size - 1))
                }
                Ok(res) => (res, 0),
                Err(client::Error::Rejected { status, .. })
                    if status == reqwest::StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    (api.get(key).await?, 0)
                }
                Err(e) => return Err(e.into()),
            },
            None => (api.get(key).await?, 0),
        };
        let header = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let etag = header("etag")
            .ok_or_else(|| Error::Failed(format!("the node sent {key} without an ETag")))?;
        let version = header(crate::api::VERSION_HEADER);
        let time = header(crate::api::TIME_HEADER).and_then(|v| v.parse().ok());
        let size = from + res.content_length().unwrap_or(0);
        if from == 0 {
            if resume.is_some() {
                eprintln!("{key} changed since the interrupted download; starting over");
            }
            partial
                .record(&Sidecar {
                    key: key.to_string(),
                    etag: etag.clone(),
                    size,
                })
                .map_err(|e| cannot(&partial.sidecar, e))?;
        } else {
            eprintln!(
                "resuming {} at {from} of {size} bytes",
                partial.dest.display()
            );
        }
        let data = partial.data.clone();
        let opened = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(from == 0)
                .open(&data)?;
            let mut verifier = Verifier::default();
            verifier.read_prefix(&mut file, from)?;
            file.set_len(from)?;
            Ok((file, verifier))
        })
        .await
        .map_err(|e| Error::Failed(e.to_string()))?;
        let (file, mut verifier) = opened.map_err(|e| cannot(&partial.data, e))?;
        let mut file = tokio::fs::File::from_std(file);
        let bar = progress(Some(size), show, &format!("get {key}"));
        bar.set_position(from);
        let mut body = res.bytes_stream();
        let mut written = from;
        // Made once: a Ctrl-C that arrives while a chunk is being written is not missed.
        let mut interrupted = std::pin::pin!(tokio::signal::ctrl_c());
        let copied: Result<()> = async {
            loop {
                // One step (the next chunk and its write) races Ctrl-C, so that the Ctrl-C is
                // seen here, whatever the step waits for. Nothing awaits after it: the caller's
                // own Ctrl-C handler would win. A write in flight completes on its blocking
                // thread as the runtime shuts down.
                let step = async {
                    match body.next().await {
                        None => Ok(None),
                        Some(Err(e)) => Err(Error::Failed(format!(
                            "transfer failed: {}",
                            error_chain(&e)
                        ))),
                        Some(Ok(chunk)) => {
                            file.write_all(&chunk)
                                .await
                                .map_err(|e| cannot(&partial.data, e))?;
                            Ok(Some(chunk))
                        }
                    }
                };
                let chunk = tokio::select! {
                    biased;
                    _ = &mut interrupted => {
                        super::exit_on_second_interrupt();
                        bar.finish_and_clear();
                        return Err(Error::Interrupted(format!(
                            "interrupted: kept {} ({written} of {size} bytes); run the same command again to resume",
                            partial.data.display()
                        )));
                    }
                    chunk = step => chunk?,
                };
                let Some(chunk) = chunk else { break };
                verifier.update(&chunk);
                written += chunk.len() as u64;
                bar.inc(chunk.len() as u64);
            }
            Ok(())
        }
        .await;
        bar.finish_and_clear();
        if let Err(e) = copied {
            if !matches!(e, Error::Interrupted(_)) {
                let _ = file.flush().await;
            }
            return Err(e);
        }
        if written != size {
            let _ = file.flush().await;
            return Err(Error::Failed(format!(
                "transfer failed: got {written} of {size} bytes; run the same command again to resume"
            )));
        }
        file.sync_all()
            .await
            .map_err(|e| cannot(&partial.data, e))?;
        drop(file);
        let content_id = verifier.finish();
        if format!("\"{content_id}\"") != etag {
            partial.discard();
            if from > 0 && attempt == 0 {
                eprintln!(
                    "the kept part of {key} did not match its content id; downloading it again"
                );
                continue;
            }
            return Err(Error::Failed(format!(
                "integrity error: {key} as received does not match its content id"
            )));
        }
        partial.finish().map_err(|e| cannot(path, e))?;
        return Ok(Fetched {
            key: key.to_string(),
            path: path.display().to_string(),
            size,
            content_id,
            version,
            time,
            resumed_from: from,
        });
    }
    unreachable!("the second attempt returns")
}
