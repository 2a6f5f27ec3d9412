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
//! - `partial`: the resumable partial file of `get -o FILE`.
//! - `tree`: directories for `put -r` and `get -r`.
//! - `config`: `<data dir>/config.toml`, the node's flags from a file.
//! - `disk`: `repair` (a stopped node's damaged index) and the scrub flags of `node`.
//! - `ui`: `ui`, the address of the node's web page.

mod args;
mod config;
mod disk;
mod files;
mod history;
mod members;
mod node;
mod output;
mod partial;
mod peers;
mod transfer;
mod tree;
mod ui;

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
    /// Stopped by Ctrl-C (exit code 130, as a shell reports SIGINT).
    #[error("{0}")]
    Interrupted(String),
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted(_) => 130,
            Error::Usage(_) => 2,
            Error::Api(e) if e.is_connection() => 2,
            Error::Api(_) | Error::Failed(_) => 1,
        }
    }
}

type Result<T, E = Error> = std::result::Result<T, E>;

/// `key` if it is one (the grammar of docs/PROTOCOL.md), checked before any request: the node
/// would refuse it, and a key such as `.` would not even survive a URL.
fn checked(key: &str) -> Result<&str> {
    crate::record::validate_key(key).map_err(|e| Error::Failed(e.to_string()))?;
    Ok(key)
}

/// Parses the command line (with `<data dir>/config.toml` for `dfs node`). On a usage error it
/// prints the error (or the help) and returns the exit code.
pub fn parse() -> std::result::Result<Cli, u8> {
    config::parse(std::env::args_os().collect())
}

/// Runs a parsed command line to completion.
pub fn run(cli: Cli) -> Result<()> {
    init_logging(&log_filter(&cli));
    if !matches!(cli.command, Command::Node(_) | Command::Demo { .. }) {
        quiet_on_closed_pipe();
    } else {
        few_malloc_arenas();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the async runtime: {e}")))?;
    let result = runtime.block_on(interruptible(cli.command));
    if matches!(result, Err(Error::Interrupted(_))) {
        // Whatever still runs (a write on a blocking thread) may not hold up the exit.
        runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    }
    result
}

/// glibc malloc arenas of a node per core. glibc gives each thread that allocates under
/// contention an arena of its own, up to 8 per core, and a freed block goes back to its own
/// arena only: a node's blocking threads (store work for hundreds of transfers at once) left
/// about 90 MiB scattered over arenas after a member pushed 60,000 records whose content
/// nobody serves (210 MiB peak on 2 cores; 146 MiB with 4 arenas, 121 MiB with 2; fetch
/// throughput within the noise of the benchmark).
const MALLOC_ARENAS_PER_CORE: usize = 2;

/// Caps glibc's arenas (see [`MALLOC_ARENAS_PER_CORE`]), before the runtime starts any
/// thread; `MALLOC_ARENA_MAX` in the environment still wins.
fn few_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = (cores * MALLOC_ARENAS_PER_CORE).clamp(2, 64) as i32;
        // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX is glibc's, and no
        // thread but this one runs yet.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
    }
}

/// A client command whose output goes to a pipe that closes early (`dfs ls | head -1`) ends
/// quietly, as `cat` does, instead of panicking in `println!`: the default action of SIGPIPE,
/// which Rust's runtime sets to "ignore". Not for a node: it must outlive any one peer.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default has no preconditions; no handler
    // of ours is replaced (the runtime had set SIG_IGN).
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The log filter when `RUST_LOG` is not set: `info` for a node (`warn` for the other
/// commands, the demo included: it tells its own story on stdout), `-v` adds debug logs of dfs
/// itself, `-vv` its trace logs, `-q` keeps warnings only (errors only for the other commands).
fn log_filter(cli: &Cli) -> String {
    let node = matches!(cli.command, Command::Node(_));
    let base = match (node, cli.quiet) {
        (true, false) => "info",
        (true, true) | (false, false) => "warn",
        (false, true) => "error",
    };
    // Kademlia warns "Failed to trigger bootstrap: No known peers" whenever its automatic
    // bootstrap finds an empty routing table, as every node's does until its first peer: noise,
    // not a fault. Its errors still show.
    let base = format!("{base},libp2p_kad::behaviour=error");
    match cli.verbose {
        0 => base,
        1 => format!("{base},dfs=debug"),
        _ => format!("{base},dfs=trace"),
    }
}

/// Runs a command until it ends or Ctrl-C. `dfs node` handles its signals itself (a graceful
/// stop); any other command is dropped at the first Ctrl-C (a `get -o` keeps its partial file),
/// and a second Ctrl-C, should the way out hang, exits at once.
async fn interruptible(command: Command) -> Result<()> {
    if matches!(command, Command::Node(_)) {
        return run_command(command).await;
    }
    let command = run_command(command);
    tokio::pin!(command);
    tokio::select! {
        // The command first: while a `get -o` copies bytes it catches Ctrl-C itself, to say
        // which partial file it kept.
        biased;
        result = &mut command => result,
        _ = tokio::signal::ctrl_c() => {
            exit_on_second_interrupt();
            // The signal reaches each listener in turn: this one may wake before the command's
            // own. A moment lets the command say what it kept (or finish what it was doing).
            match tokio::time::timeout(INTERRUPT_GRACE, &mut command).await {
                Ok(result) => result,
                Err(_) => Err(Error::Interrupted("interrupted".into())),
            }
        }
    }
}

/// How long a command may take to end by itself after Ctrl-C before it is dropped.
const INTERRUPT_GRACE: std::time::Duration = std::time::Duration::from_millis(300);

/// After a first Ctrl-C: a second one exits the process at once (status 130), whatever is
/// still being cleaned up.
pub(crate) fn exit_on_second_interrupt() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("error: interrupted again; exiting now");
            std::process::exit(130);
        }
    });
}

fn init_logging(default: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // libp2p's warnings that peers trigger at will are rate-limited (see `log_limit`).
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal())
                .with_filter(filter)
                .with_filter(crate::log_limit::libp2p_lines()),
        )
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
            recursive: false,
            json,
            wait,
            timeout,
            target,
            ..
        } => {
            let api = target.connect()?;
            let key = files::put(&api, &path, key, json).await?;
            match wait {
                Some(n) => files::wait_holders(&api, &key, n, timeout, json).await,
                None => Ok(()),
            }
        }
        Command::Put {
            path,
            prefix,
            recursive: true,
            json,
            target,
            ..
        } => tree::put(&target.connect()?, &path, prefix, json).await,
        Command::Get {
            key,
            output,
            recursive: false,
            json,
            version,
            target,
        } => {
            checked(&key)?;
            let dest = files::Dest::of(output, &key)?;
            match version {
                Some(v) => history::get_version(&target.connect()?, &key, &v, dest, json).await,
                None => files::get(&target.connect()?, &key, dest, json).await,
            }
        }
        Command::Get {
            key,
            output,
            recursive: true,
            json,
            target,
            ..
        } => {
            let dir = output.ok_or_else(|| Error::Usage("get -r needs -o DIR".into()))?;
            tree::get(&target.connect()?, &key, &dir, json).await
        }
        Command::Log { key, json, target } => {
            history::log(&target.connect()?, checked(&key)?, json).await
        }
        Command::Restore {
            key,
            version,
            json,
            target,
        } => history::restore(&target.connect()?, checked(&key)?, &version, json).await,
        Command::Rm { key, json, target } => {
            files::rm(&target.connect()?, checked(&key)?, json).await
        }
        Command::Ls {
            prefix,
            json,
            all,
            target,
        } => files::ls(&target.connect()?, prefix.as_deref(), json, all).await,
        Command::Stat { key, json, target } => {
            files::stat(&target.connect()?, checked(&key)?, json).await
        }
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
            json,
            target,
        } => members::allow(&target.connect()?, &peer_id, admin, json).await,
        Command::Deny {
            peer_id,
            json,
            target,
        } => members::deny(&target.connect()?, &peer_id, json).await,
        Command::Members { json, target } => members::members(&target.connect()?, json).await,
        Command::Repair { data_dir, force } => disk::repair(data_dir, force),
        Command::Ui { json, open, target } => ui::ui(&target.connect()?, json, open).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut public = without_hidden(&Cli::command());
            clap_complete::generate(shell, &mut public, "dfs", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// `cmd` without its hidden flags and commands (the test hooks of `dfs node`): what shell
/// completions offer. (clap_complete lists hidden flags too.)
fn without_hidden(cmd: &clap::Command) -> clap::Command {
    let mut public = clap::Command::new(cmd.get_name().to_string());
    if let Some(about) = cmd.get_about() {
        public = public.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        public = public.version(version.to_string());
    }
    for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
        public = public.arg(arg.clone());
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        public = public.subcommand(without_hidden(sub));
    }
    public
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
    // The help of the command that was mistyped: clap's usage line names it.
    let command = rendered
        .lines()
        .find_map(|l| l.trim().strip_prefix("Usage: "))
        .map(|usage| {
            let words: Vec<&str> = usage
                .split_whitespace()
                .take_while(|w| !w.starts_with(['[', '<', '-']))
                .collect();
            words.join(" ")
        })
        .filter(|c| c.starts_with("dfs"))
        .or_else(|| {
            // No usage line (a bad value): the first argument that names a command.
            let commands = <Cli as clap::CommandFactory>::command();
            std::env::args()
                .skip(1)
                .find(|a| commands.find_subcommand(a).is_some())
                .map(|c| format!("dfs {c}"))
        })
        .unwrap_or_else(|| "dfs".into());
    if tips.is_empty() {
        eprintln!("error: {message} (see {command} --help)");
    } else {
        eprintln!(
            "error: {message} ({}; see {command} --help)",
            tips.join("; ")
        );
    }
    2
}
