//! The command line: `dfs node` and `dfs demo` run nodes; every other command is a thin call to a
//! running node's local API. This module parses nothing itself: it holds the entry point, the
//! dispatch of each command to its module, and the error type that gives the exit code.
//!
//! - `args`: the clap definitions (every flag and help text).
//! - `node`: `dfs node`, a peer and its API until a signal; `dfs swarm-key`.
//! - `files`: `put`, `get`, `rm`, `ls` and `stat`.
//! - `peers`: `peers`, `id` and `connect`.
//! - `members`: `invite`, `allow`, `deny` and `members`.
//! - `output`: what the commands print, as text or JSON.
//! - `transfer`: streaming bodies: stdin, progress bars, `get` to stdout or into a file.
//! - `disk`: `repair` (a stopped node's damaged index) and the scrub flags of `node`.

mod args;
mod disk;
mod files;
mod members;
mod node;
mod output;
mod peers;
mod transfer;

use std::io::IsTerminal;

use crate::api::client::{self, default_data_dir, ApiClient};
use crate::datadir::DataDir;

pub use args::{Cli, Command, NodeArgs, Target};

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
        Command::Node(args) => node::run(args).await,
        Command::SwarmKey { output } => node::swarm_key(output.as_deref()),
        Command::Demo { nodes } => crate::demo::run(nodes.into())
            .await
            .map_err(|e| Error::Failed(format!("demo failed: {e:#}"))),
        Command::Put {
            path,
            key,
            wait,
            timeout,
            target,
        } => {
            let api = target.connect()?;
            let key = files::put(&api, &path, key).await?;
            match wait {
                Some(n) => files::wait_holders(&api, &key, n, timeout).await,
                None => Ok(()),
            }
        }
        Command::Get {
            key,
            output,
            target,
        } => {
            // `-o -` is standard output, as for `put -`.
            let dest = output
                .as_deref()
                .filter(|p| *p != std::path::Path::new("-"));
            files::get(&target.connect()?, &key, dest).await
        }
        Command::Rm { key, target } => files::rm(&target.connect()?, &key).await,
        Command::Ls { json, all, target } => files::ls(&target.connect()?, json, all).await,
        Command::Stat { key, json, target } => files::stat(&target.connect()?, &key, json).await,
        Command::Peers { json, target } => peers::peers(&target.connect()?, json).await,
        Command::Id { json, target } => peers::id(&target.connect()?, json).await,
        Command::Connect { addr, json, target } => {
            peers::connect(&target.connect()?, &addr, json).await
        }
        Command::Invite {
            admin,
            json,
            target,
        } => members::invite(&target.connect()?, admin, json).await,
        Command::Allow {
            peer_id,
            admin,
            target,
        } => members::allow(&target.connect()?, &peer_id, admin).await,
        Command::Deny { peer_id, target } => members::deny(&target.connect()?, &peer_id).await,
        Command::Members { json, target } => members::members(&target.connect()?, json).await,
        Command::Repair { data_dir, force } => disk::repair(data_dir, force),
    }
}

impl Target {
    /// A client of the node this command targets: `--api` or the data dir's `api` file, with
    /// `--token` or the data dir's `api-token` file.
    fn connect(&self) -> Result<ApiClient> {
        let dir = DataDir::new(self.data_dir.clone().unwrap_or_else(default_data_dir));
        Ok(ApiClient::discover(
            self.api.as_deref(),
            dir.path(),
            self.token.clone(),
        )?)
    }
}

/// Reports a command line that clap refused: one line on stderr, exit code 2 (help and version
/// print in full, exit code 0).
pub fn usage_error(e: clap::Error) -> u8 {
    if !e.use_stderr() {
        let _ = e.print();
        return 0;
    }
    // A bare `dfs` (or a command without its subcommand) shows the help, not an error.
    if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return 2;
    }
    let rendered = e.render().to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    // clap's "did you mean" tips come after the first paragraph: keep them on the line.
    let tips: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("tip:"))
        .collect();
    if tips.is_empty() {
        eprintln!("error: {message} (see dfs --help)");
    } else {
        eprintln!("error: {message} ({}; see dfs --help)", tips.join("; "));
    }
    2
}
