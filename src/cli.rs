//! The command line: clap definitions and the runners of each command. `dfs node` and
//! `dfs demo` run nodes; every other command is a thin call to a running node's local API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use libp2p::Multiaddr;
use tokio::io::AsyncWriteExt;

use crate::api::client::{self, default_data_dir, error_chain, ApiClient};
use crate::api::json::FileStat;
use crate::datadir::DataDir;
use crate::node::{Config, Node};

/// Transfers smaller than this never show a progress bar.
const PROGRESS_MIN: u64 = 4 << 20;
/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

const MAIN_EXAMPLES: &str = "\
Examples:
  dfs demo                                    a local 3-node cluster: put, replicate, get, rm
  dfs node --data-dir ~/dfs1 --listen /ip4/0.0.0.0/tcp/4001
  dfs node --data-dir ~/dfs2 --listen /ip4/0.0.0.0/tcp/4002 --api 127.0.0.1:5002 \\
           --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
  dfs put --data-dir ~/dfs1 photo.jpg
  dfs get --data-dir ~/dfs2 photo.jpg -o copy.jpg

Exit codes: 0 success, 1 operation failed (not found, rejected), 2 usage or connection error.";

/// A decentralized file store on rust-libp2p.
#[derive(Debug, Parser)]
#[command(name = "dfs", bin_name = "dfs", version, after_help = MAIN_EXAMPLES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a peer: join the network and serve the local API.
    #[command(after_help = "\
Examples:
  dfs node --data-dir /tmp/n1 --listen /ip4/127.0.0.1/tcp/4001
  dfs node --data-dir /tmp/n2 --listen /ip4/127.0.0.1/tcp/4002 --api 127.0.0.1:5002 \\
           --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...

The node writes its API URL to <data dir>/api once ready (removed on exit) and its API token
to <data dir>/api-token. Logs go to stderr; set RUST_LOG (default: info).")]
    Node(NodeArgs),
    /// Store a file under a key (the key defaults to the file name).
    #[command(after_help = "\
Examples:
  dfs put report.pdf
  dfs put ./build/app.tar.gz --key releases/app-1.0.tar.gz
  tar c dir | dfs put - --key dir.tar")]
    Put {
        /// The file to store, or `-` for standard input (then --key is required).
        path: String,
        /// The key to store it under (default: the file name).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Read a file: local, else fetched from the network. Writes to stdout unless -o.
    #[command(after_help = "\
Examples:
  dfs get report.pdf -o report.pdf
  dfs get logs.txt | grep error")]
    Get {
        /// The key (any UTF-8 name, at most 1 KiB; never a path on disk).
        key: String,
        /// Write to this file (atomically: a temp file renamed on success).
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key everywhere (a tombstone that spreads to every node).
    #[command(after_help = "Example:\n  dfs rm report.pdf")]
    Rm {
        /// The key (any UTF-8 name, at most 1 KiB; never a path on disk).
        key: String,
        #[command(flatten)]
        target: Target,
    },
    /// List the keys this node knows, with size and state (local, remote, deleted).
    #[command(after_help = "\
Examples:
  dfs ls
  dfs ls --all --json

State: local (content stored here), remote (known, content still arriving), deleted.")]
    Ls {
        /// Print JSON: a list of stat objects (see `dfs stat --help`).
        #[arg(long)]
        json: bool,
        /// Include deleted keys (tombstones).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show one key's metadata.
    #[command(after_help = "\
Examples:
  dfs stat report.pdf
  dfs stat report.pdf --json

JSON: {\"key\", \"size\", \"content_id\" (hex, null when deleted), \"version\", \"author\",
       \"local\", \"deleted\"}")]
    Stat {
        /// The key (any UTF-8 name, at most 1 KiB; never a path on disk).
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the connected peers and their addresses.
    #[command(after_help = "\
Examples:
  dfs peers
  dfs peers --json     [{\"peer_id\", \"addrs\", \"agent\"}, ...]")]
    Peers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Show this node's peer id and listen addresses (give one to --bootstrap).
    #[command(after_help = "\
Examples:
  dfs id
  dfs id --json        {\"peer_id\", \"addrs\"}")]
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Run a local cluster in this process: put a file, watch it replicate, get it, delete it.
    #[command(after_help = "\
Examples:
  dfs demo
  dfs demo --nodes 5")]
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(2..=20))]
        nodes: u16,
    },
}

/// Which node a client command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Data dir of the node (its `api` and `api-token` files) [default: the platform data dir]
    #[arg(long, env = "DFS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The node's API, as HOST:PORT or URL (instead of <data dir>/api).
    #[arg(long, env = "DFS_API", value_name = "HOST:PORT")]
    api: Option<String>,
    /// The API token (instead of <data dir>/api-token).
    #[arg(long, env = "DFS_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory of all state: identity, store, api and api-token files [default: the platform
    /// data dir]
    #[arg(long, env = "DFS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on for peers (repeatable) [default: /ip4/0.0.0.0/tcp/4001]
    #[arg(
        long,
        env = "DFS_LISTEN",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    listen: Vec<Multiaddr>,
    /// A known peer to join through (repeatable), e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...
    #[arg(
        long,
        env = "DFS_BOOTSTRAP",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    bootstrap: Vec<Multiaddr>,
    /// Address of the local HTTP API; port 0 picks a free port.
    #[arg(long, env = "DFS_API", value_name = "HOST:PORT", default_value = crate::api::DEFAULT_ADDR)]
    api: String,
    /// Name of the network; nodes of different networks never exchange data.
    #[arg(
        long,
        env = "DFS_NETWORK",
        value_name = "NAME",
        default_value = "default"
    )]
    network: String,
    /// Allow the API on a non-loopback address (anyone who can reach it and has the token
    /// controls the node).
    #[arg(long)]
    api_allow_remote: bool,
    #[arg(long, hide = true)]
    announce_interval_ms: Option<u64>,
    #[arg(long, hide = true)]
    sync_interval_ms: Option<u64>,
}

/// Why a command failed; [`Error::exit_code`] gives its exit code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage or environment (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// A call to the node failed.
    #[error(transparent)]
    Api(#[from] client::Error),
    /// The operation failed (exit code 1).
    #[error("{0}")]
    Failed(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::Api(e) if e.is_connection() => 2,
            Error::Api(_) | Error::Failed(_) => 1,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> Result<()> {
    let default_log = match cli.command {
        Command::Node(_) => "info",
        _ => "warn",
    };
    init_logging(default_log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(run_command(cli.command))
}

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn run_command(command: Command) -> Result<()> {
    match command {
        Command::Node(args) => run_node(args).await,
        Command::Demo { nodes } => crate::demo::run(nodes.into())
            .await
            .map_err(|e| Error::Failed(format!("demo failed: {e:#}"))),
        Command::Put { path, key, target } => put(&target.connect()?, &path, key).await,
        Command::Get {
            key,
            output,
            target,
        } => get(&target.connect()?, &key, output.as_deref()).await,
        Command::Rm { key, target } => {
            let tombstone = target.connect()?.delete(&key).await?;
            println!("deleted {} (version {})", tombstone.key, tombstone.version);
            Ok(())
        }
        Command::Ls { json, all, target } => {
            let mut files = target.connect()?.list().await?;
            files.retain(|f| all || !f.deleted);
            if json {
                print_json(&files)
            } else {
                print_table(&files);
                Ok(())
            }
        }
        Command::Stat { key, json, target } => {
            let stat = target.connect()?.stat(&key).await?;
            if json {
                return print_json(&stat);
            }
            println!("key:        {}", stat.key);
            println!("size:       {}", stat.size);
            println!(
                "content id: {}",
                stat.content_id.as_deref().unwrap_or("- (deleted)")
            );
            println!("version:    {}", stat.version);
            println!("author:     {}", stat.author);
            println!("state:      {}", stat.state());
            Ok(())
        }
        Command::Peers { json, target } => {
            let peers = target.connect()?.peers().await?;
            if json {
                return print_json(&peers);
            }
            if peers.is_empty() {
                println!("no connected peers");
            }
            for p in peers {
                println!("{}  {}", p.peer_id, p.agent.as_deref().unwrap_or("-"));
                for a in p.addrs {
                    println!("  {a}");
                }
            }
            Ok(())
        }
        Command::Id { json, target } => {
            let id = target.connect()?.id().await?;
            if json {
                return print_json(&id);
            }
            println!("peer id: {}", id.peer_id);
            for a in id.addrs {
                println!("  {a}");
            }
            Ok(())
        }
    }
}

impl Target {
    fn connect(&self) -> Result<ApiClient> {
        let dir = self.data_dir.clone().unwrap_or_else(default_data_dir);
        Ok(ApiClient::discover(
            self.api.as_deref(),
            &dir,
            self.token.clone(),
        )?)
    }
}

fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Failed(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn print_table(files: &[FileStat]) {
    let width = files
        .iter()
        .map(|f| f.key.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(3, 60);
    println!("{:<width$}  {:>12}  STATE", "KEY", "SIZE");
    for f in files {
        println!("{:<width$}  {:>12}  {}", f.key, f.size, f.state());
    }
}

/// A progress bar on stderr, or a hidden one when `show` is false or the transfer is short.
fn progress(len: Option<u64>, show: bool, what: &str) -> ProgressBar {
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
fn stdin_stream() -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
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

async fn put(api: &ApiClient, path: &str, key: Option<String>) -> Result<()> {
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
    let stat = stat?;
    println!(
        "stored {} ({} bytes, content id {})",
        stat.key,
        stat.size,
        stat.content_id.as_deref().unwrap_or("-")
    );
    Ok(())
}

async fn get(api: &ApiClient, key: &str, output: Option<&Path>) -> Result<()> {
    let res = api.get(key).await?;
    let len = res.content_length();
    let show = output.is_some() || std::io::stdout().is_terminal();
    let bar = progress(len, show, &format!("get {key}"));
    let body = res.bytes_stream();
    let result = match output {
        None => copy(body, Sink::Stdout(std::io::stdout()), len, &bar).await,
        Some(path) => save(body, path, len, &bar).await,
    };
    bar.finish_and_clear();
    result
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
async fn save(
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

async fn run_node(args: NodeArgs) -> Result<()> {
    let api_addr = resolve(&args.api).await?;
    if !api_addr.ip().is_loopback() {
        if !args.api_allow_remote {
            return Err(Error::Usage(format!(
                "the API address {api_addr} is not loopback; add --api-allow-remote to allow it"
            )));
        }
        tracing::warn!(addr = %api_addr, "the API listens on a non-loopback address");
    }
    let dir = args.data_dir.unwrap_or_else(default_data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| {
        Error::Usage(format!(
            "cannot create data dir {}: {e}; choose another with --data-dir",
            dir.display()
        ))
    })?;
    let data_dir = DataDir::new(&dir);
    let token = crate::api::load_or_create_token(&data_dir).map_err(|e| {
        Error::Usage(format!(
            "cannot use data dir {}: the API token file: {e}",
            dir.display()
        ))
    })?;
    let mut config = Config::new(dir.clone());
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.bootstrap = args.bootstrap;
    config.network = args.network;
    if let Some(ms) = args.announce_interval_ms {
        config.announce_interval = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.sync_interval_ms {
        config.sync_interval = Duration::from_millis(ms.max(1));
    }
    let listener = tokio::net::TcpListener::bind(api_addr).await.map_err(|e| {
        Error::Usage(format!(
            "cannot listen for the API on {}: {e}; choose another address with --api",
            args.api
        ))
    })?;
    let api_addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut node = Node::start(config)
        .await
        .map_err(|e| Error::Usage(format!("cannot start the node: {e}")))?;
    let client = node.client();
    if let Ok(info) = client.info().await {
        let addrs: Vec<String> = info.addrs.iter().map(|a| a.to_string()).collect();
        tracing::info!(peer_id = %info.peer_id, addrs = ?addrs, "node started");
    }

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(crate::api::serve(listener, client, token, async {
        let _ = stop_rx.await;
    }));
    let url = format!("http://{api_addr}");
    let api_file = data_dir.api_file();
    let written = crate::api::write_api_file(&data_dir, &url);
    let mut result =
        written.map_err(|e| Error::Usage(format!("cannot write {}: {e}", api_file.display())));
    if result.is_ok() {
        tracing::info!(%url, "API ready");
        tokio::select! {
            signal = shutdown_signal() => tracing::info!(signal, "shutting down"),
            _ = node.wait() => {
                result = Err(Error::Failed("the node stopped unexpectedly".into()));
            }
            r = &mut server => {
                let cause = match r {
                    Ok(Ok(())) => "stopped".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                result = Err(Error::Failed(format!("the API server failed: {cause}")));
            }
        }
        // Remove the api file only if it is still ours.
        if std::fs::read_to_string(&api_file).is_ok_and(|s| s.trim() == url) {
            if let Err(e) = std::fs::remove_file(&api_file) {
                tracing::warn!(cause = %e, "cannot remove the api file");
            }
        }
    }
    let _ = stop_tx.send(());
    if !server.is_finished()
        && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
            .await
            .is_err()
    {
        tracing::warn!("requests still running after the grace period; closing them");
        server.abort();
    }
    node.shutdown().await;
    tracing::info!("stopped");
    result
}

/// Resolves the `--api` address (`HOST:PORT`) to the first socket address.
async fn resolve(api: &str) -> Result<SocketAddr> {
    let bad =
        |why: String| Error::Usage(format!("bad --api address {api:?}: {why}; use HOST:PORT"));
    tokio::net::lookup_host(api)
        .await
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("it resolves to no address".into()))
}

/// Resolves on SIGINT or SIGTERM, with the signal's name.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Reports a command line that clap refused: one line on stderr, exit code 2 (help and version
/// print in full, exit code 0).
pub fn usage_error(e: clap::Error) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("error: {message} (see dfs --help)");
    2
}
