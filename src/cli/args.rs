//! The command line's clap definitions: every command, flag, environment variable and help text.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use libp2p::Multiaddr;

const MAIN_EXAMPLES: &str = "\
Examples:
  dfs demo                                    a local 3-node cluster: put, replicate, get, rm
  dfs node --data-dir ~/dfs1 --listen /ip4/0.0.0.0/tcp/4001
  dfs node --data-dir ~/dfs2 --listen /ip4/0.0.0.0/tcp/4002 --api 127.0.0.1:5002 \\
           --bootstrap /ip4/127.0.0.1/tcp/4001/p2p/12D3KooW...
  dfs put --data-dir ~/dfs1 photo.jpg
  dfs get --data-dir ~/dfs2 photo.jpg -o copy.jpg

Exit codes: 0 success, 1 operation failed (not found, rejected), 2 usage or connection error,
130 interrupted (Ctrl-C; a second Ctrl-C exits at once).";

/// A decentralized file store on rust-libp2p.
#[derive(Debug, Parser)]
#[command(
    name = "dfs",
    bin_name = "dfs",
    version,
    after_help = MAIN_EXAMPLES,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output on stderr: -v debug for dfs, -vv trace (RUST_LOG, if set, wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Less log output on stderr: warnings and errors only (RUST_LOG, if set, wins).
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
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
to <data dir>/api-token. Flags may also come from DFS_* variables and from <data dir>/config.toml
(each flag by its long name, e.g. listen = [\"/ip4/0.0.0.0/tcp/4001\"], scrub-interval = \"24h\");
the command line wins over DFS_*, which wins over config.toml. A restart with only --data-dir
uses the listen and API addresses of the last run (<data dir>/addresses.toml). Logs go to
stderr at info; -v, -vv or -q change that, RUST_LOG overrides it.")]
    Node(NodeArgs),
    /// Store a file under a key (the key defaults to the file name).
    #[command(after_help = "\
Examples:
  dfs put report.pdf
  dfs put ./build/app.tar.gz --key releases/app-1.0.tar.gz
  tar c dir | dfs put - --key dir.tar
  dfs put -r ./photos                          every file as photos/<relative path>
  dfs put -r ./photos --prefix trips/2024 --json")]
    Put {
        /// The file to store, or `-` for standard input (then --key is required); with -r, a
        /// directory.
        path: String,
        /// The key to store it under (default: the file name; required with `-`).
        #[arg(long, conflicts_with = "recursive", required_if_eq("path", "-"))]
        key: Option<String>,
        /// Store every regular file under the directory PATH, each under PREFIX/<relative
        /// path> (symbolic links are skipped).
        #[arg(short, long)]
        recursive: bool,
        /// With -r: the prefix of the keys (default: the directory's name).
        #[arg(long, requires = "recursive", value_name = "PREFIX")]
        prefix: Option<String>,
        /// Print JSON: the stat object of the new record (with -r, a list of them).
        #[arg(long)]
        json: bool,
        /// Return once N nodes (this one included) hold the whole file; exit 1 if fewer do
        /// within --timeout.
        #[arg(long, value_name = "N")]
        wait: Option<usize>,
        /// How long --wait waits (e.g. 30s, 5m).
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::disk::parse_duration, requires = "wait")]
        timeout: std::time::Duration,
        #[command(flatten)]
        target: Target,
    },
    /// Read a file: local, else fetched from the network. Writes to stdout unless -o.
    #[command(after_help = "\
Examples:
  dfs get report.pdf -o report.pdf
  dfs get logs.txt | grep error
  dfs get photo.jpg -o -  > copy.jpg
  dfs get -r photos -o ./photos                every key under photos/ into ./photos/...

With -o FILE the bytes go to FILE.dfs-partial (and what version they are of to
FILE.dfs-partial.json), renamed to FILE once complete and verified against the content id. An
interrupted get (Ctrl-C, a lost connection) keeps them: the same command again continues where
it stopped, or starts over if the file changed meanwhile. Binary content is not written to a
terminal unless -o - is given.")]
    Get {
        /// The key: a name like photos/2024/cat.jpg (UTF-8, at most 1 KiB; no control characters, no empty, . or .. segment); with -r, a prefix.
        key: String,
        /// Write to this file (resumable, renamed into place once verified); `-` is standard
        /// output. With -r, the directory to write into.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Every key under the prefix KEY/, written to -o DIR as DIR/<rest of the key>
        /// (keys that would land outside DIR, such as ones with `..`, are refused).
        #[arg(short, long, requires = "output")]
        recursive: bool,
        /// Print JSON: {"key", "path", "size", "content_id", "version", "time", "resumed_from"}
        /// (with -r, a list of them). Needs -o FILE.
        #[arg(long)]
        json: bool,
        /// Read this version (a conflict, or one kept in history) instead of the current one:
        /// a version id as `dfs log KEY` prints it, or a unique prefix of 8+ hex digits.
        #[arg(long, value_name = "VERSION", conflicts_with = "recursive")]
        version: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Show every version of a key this node knows: who wrote or deleted what, and when.
    #[command(after_help = "\
Examples:
  dfs log report.pdf
  dfs log report.pdf --json   [{\"version\", \"time\", \"clock\", \"author\", \"size\",
                               \"content_id\", \"deleted\", \"state\", \"local\"}, ...]

State: current, conflict (written concurrently with the current version; kept until a write
that saw both), replaced (kept in history for --keep-days, within --keep-bytes).")]
    Log {
        /// The key: a name like photos/2024/cat.jpg (UTF-8, at most 1 KiB; no control characters, no empty, . or .. segment).
        key: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Make an earlier version (or a conflict) current again: a new write of its content that
    /// replaces every current version, and spreads like any write.
    #[command(after_help = "\
Examples:
  dfs log report.pdf                    find the version id
  dfs restore report.pdf 3f2a9c1e       undo an overwrite or an rm")]
    Restore {
        /// The key.
        key: String,
        /// The version id as `dfs log KEY` prints it, or a unique prefix of 8+ hex digits.
        version: String,
        /// Print JSON (the new version's stat).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a key everywhere (a tombstone that spreads to every node).
    #[command(after_help = "Example:\n  dfs rm report.pdf")]
    Rm {
        /// The key: a name like photos/2024/cat.jpg (UTF-8, at most 1 KiB; no control characters, no empty, . or .. segment).
        key: String,
        /// Print JSON: the stat object of the tombstone.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the keys this node knows, with size and state (local, remote, deleted).
    #[command(after_help = "\
Examples:
  dfs ls
  dfs ls photos/
  dfs ls --all --json

State: local (content stored here), remote (known, content still arriving), damaged (a chunk
failed verification here; a healthy copy is being fetched), deleted.")]
    Ls {
        /// Only keys that start with this prefix.
        prefix: Option<String>,
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

JSON: {\"key\", \"size\", \"content_id\" (hex, null when deleted), \"version\" (its id, hex),
       \"time\" (ms since the epoch), \"clock\" (decimal string), \"author\",
       \"local\", \"deleted\", \"damaged\" (chunks found damaged here, not yet replaced),
       \"holders\" (peer ids of the nodes that hold the whole file: this one, connected peers)}")]
    Stat {
        /// The key: a name like photos/2024/cat.jpg (UTF-8, at most 1 KiB; no control characters, no empty, . or .. segment).
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
    /// Connect to a peer now (the node dials it and answers once connected).
    #[command(after_help = "\
Examples:
  dfs connect /ip4/192.0.2.7/tcp/4001/p2p/12D3KooW...
  dfs connect /dns4/nas.local/tcp/4001 --json      {\"peer_id\", \"addr\"}

A dfs peer the node connects to is remembered in its address book (<data dir>/peers.json)
and dialled again at the next start.")]
    Connect {
        /// The peer's multiaddr (/ip4, /ip6, /dns4, /dns6 or /dns, then /tcp/PORT, optionally
        /// /p2p/PEER_ID).
        addr: String,
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
  dfs id --json        {\"peer_id\", \"addrs\", \"network\", \"role\"}")]
    Id {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print a new swarm key: the pre-shared key of a private network (give it to every node
    /// with `dfs node --swarm-key FILE`).
    #[command(after_help = "\
Examples:
  dfs swarm-key > swarm.key
  dfs swarm-key -o swarm.key            written with mode 0600
  dfs node --swarm-key swarm.key ...    only nodes holding the same key can connect

The format is IPFS's swarm.key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits). Anyone who
has the file can join the network: copy it like a password.")]
    SwarmKey {
        /// Write the key to this file (mode 0600; refused if it exists) instead of stdout.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
    },
    /// Make a ticket that lets a new machine join this network as a writer (admins only).
    #[command(after_help = "\
Examples:
  dfs invite                       prints dfs1...; on the new machine: dfs node --join dfs1...
  dfs invite --admin --json        {\"ticket\": \"dfs1...\"} (the owner only)

A ticket is a secret for one machine: it holds that machine's new identity.")]
    Invite {
        /// The new member may also grant and revoke write access (only the owner appoints).
        #[arg(long)]
        admin: bool,
        /// Print JSON: {"ticket": "..."}.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Give a peer write access (admins only); with --admin, make it an admin (the owner only).
    #[command(after_help = "Example:\n  dfs allow 12D3KooW...")]
    Allow {
        /// The peer id (base58), as `dfs id` on that node prints it.
        peer_id: String,
        #[arg(long)]
        admin: bool,
        /// Print JSON: the member object as it now stands.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a peer's write access (admins only). Its records so far stay; anything it signs
    /// afterwards is refused by every node, whatever time it claims.
    #[command(after_help = "Example:\n  dfs deny 12D3KooW...")]
    Deny {
        /// The peer id (base58).
        peer_id: String,
        /// Print JSON: the member object as it now stands.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// List the network's members: the owner, admins, writers, revoked writers.
    #[command(after_help = "\
Examples:
  dfs members
  dfs members --json   [{\"peer_id\", \"role\", \"owner\", \"cutoff\"?}, ...]")]
    Members {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Print the address of the node's web page (peers, files, transfers, upload, download).
    #[command(after_help = "\
Examples:
  dfs ui                     http://127.0.0.1:5001/ui#token=...
  dfs ui --open              also opens it with $BROWSER or xdg-open
  dfs ui --json              {\"url\": \"http://127.0.0.1:5001/ui#token=...\"}

The address carries the API token after '#': browsers never send that part to the server, and
the page keeps it for the tab's session only. Keep the address as secret as the token.")]
    Ui {
        /// Print JSON: {"url": "..."}.
        #[arg(long)]
        json: bool,
        /// Also open the address with $BROWSER or xdg-open (on the browser's command line,
        /// which other users of this machine can see).
        #[arg(long)]
        open: bool,
        #[command(flatten)]
        target: Target,
    },
    /// Rebuild a damaged index (a stopped node's): keep every verified chunk, get the records
    /// back from the peers at the next start.
    #[command(after_help = super::disk::REPAIR_HELP)]
    Repair {
        /// Data dir of the stopped node [default: the platform data dir]
        #[arg(long, env = "DFS_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// Rebuild even if the index looks healthy (its records that no peer has are lost).
        #[arg(long)]
        force: bool,
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
    /// Print a shell completion script.
    #[command(after_help = "\
Examples:
  dfs completions bash > ~/.local/share/bash-completion/completions/dfs
  dfs completions zsh > ~/.zfunc/_dfs        (with fpath+=~/.zfunc before compinit)
  dfs completions fish > ~/.config/fish/completions/dfs.fish")]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Which node a client command talks to.
#[derive(Debug, Args)]
pub struct Target {
    /// Data dir of the node (its `api` and `api-token` files) [default: the platform data dir]
    #[arg(long, env = "DFS_DATA_DIR", value_name = "DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// The node's API, as HOST:PORT or URL (instead of <data dir>/api). Its token is then
    /// --token, or the data dir's api-token if the data dir's api file names this same API.
    #[arg(long, env = "DFS_API", value_name = "HOST:PORT")]
    pub(super) api: Option<String>,
    /// The API token (instead of <data dir>/api-token).
    #[arg(long, env = "DFS_API_TOKEN", hide_env_values = true)]
    pub(super) token: Option<String>,
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// Directory of all state: identity, store, api and api-token files [default: the platform
    /// data dir]
    #[arg(long, env = "DFS_DATA_DIR", value_name = "DIR")]
    pub(super) data_dir: Option<PathBuf>,
    /// Address to listen on for peers (repeatable) [default: /ip4/0.0.0.0/tcp/4001]
    #[arg(
        long,
        env = "DFS_LISTEN",
        value_name = "MULTIADDR",
        value_delimiter = ',',
        value_parser = parse_multiaddr
    )]
    pub(super) listen: Vec<Multiaddr>,
    /// A known peer to join through (repeatable), e.g. /ip4/1.2.3.4/tcp/4001/p2p/12D3KooW...
    #[arg(
        long,
        env = "DFS_BOOTSTRAP",
        value_name = "MULTIADDR",
        value_delimiter = ',',
        value_parser = parse_multiaddr
    )]
    pub(super) bootstrap: Vec<Multiaddr>,
    /// Address of the local HTTP API, HOST:PORT (or http://HOST:PORT); port 0 picks a free
    /// port.
    #[arg(long, env = "DFS_API", value_name = "HOST:PORT", default_value = crate::api::DEFAULT_ADDR)]
    pub(super) api: String,
    /// Join a network as a writer with a ticket from `dfs invite` (on a fresh data dir, or one
    /// whose own network never held a file or a member; later starts need no flag). Without
    /// --join or --bootstrap, a fresh data dir creates a new network that this node owns; with
    /// --bootstrap alone, the node joins the bootstrap peer's network as a reader.
    #[arg(long, env = "DFS_JOIN", value_name = "TICKET", hide_env_values = true)]
    pub(super) join: Option<String>,
    /// Join a private network: only nodes holding this swarm key (a file from `dfs swarm-key`)
    /// can connect.
    #[arg(long, env = "DFS_SWARM_KEY", value_name = "FILE")]
    pub(super) swarm_key: Option<PathBuf>,
    /// Allow the API on a non-loopback address (anyone who can reach it and has the token
    /// controls the node).
    #[arg(long)]
    pub(super) api_allow_remote: bool,
    /// Find peers on the local networks by mDNS (off by default: it announces this node on
    /// every network the machine joins).
    #[arg(long, env = "DFS_MDNS")]
    pub(super) mdns: bool,
    /// Pause between background scrubs, which re-hash every stored chunk and heal damaged ones
    /// from peers (e.g. 24h, 90m, 30s; 0 disables).
    #[arg(long, env = "DFS_SCRUB_INTERVAL", value_name = "DURATION", default_value = "24h", value_parser = super::disk::parse_duration)]
    pub(super) scrub_interval: std::time::Duration,
    /// Most bytes per second a scrub reads (e.g. 16M, 512K; 0 for no limit).
    #[arg(long, env = "DFS_SCRUB_RATE", value_name = "BYTES", default_value = "16M", value_parser = super::disk::parse_bytes)]
    pub(super) scrub_rate: u64,
    /// Most this node's clock may be off from its peers' median before it refuses local writes;
    /// records more than twice this ahead of the network's time wait (e.g. 500ms, 2s).
    #[arg(long, env = "DFS_MAX_CLOCK_OFFSET", value_name = "DURATION", default_value = "500ms", value_parser = super::disk::parse_duration)]
    pub(super) max_clock_offset: std::time::Duration,
    /// Days that replaced versions and deletes stay in history (`dfs log`, `dfs restore`);
    /// fractions are fine (0.5 is 12 hours; 0 keeps nothing past the next retention pass).
    #[arg(long, env = "DFS_KEEP_DAYS", value_name = "DAYS", default_value = "30", value_parser = parse_days)]
    pub(super) keep_days: f64,
    /// Most bytes of content that only history holds (e.g. 10G, 500M); beyond, the oldest
    /// versions go first.
    #[arg(long, env = "DFS_KEEP_BYTES", value_name = "BYTES", default_value = "10G", value_parser = super::disk::parse_bytes)]
    pub(super) keep_bytes: u64,
    /// Copies of each file's content the network keeps, set when the network is created (by
    /// its owner's first start): `all` (every node holds every file) or a number, e.g. 3
    /// (content lives on the 3 members placed for it; records still reach every node). Later
    /// starts, and other nodes, take the network's.
    #[arg(long, env = "DFS_REPLICAS", value_name = "all|N")]
    pub(super) replicas: Option<crate::placement::Replicas>,
    /// This node's storage capacity (e.g. 500G, 2T): its weight when files are placed, so a
    /// node with twice the capacity holds about twice the files.
    #[arg(long, env = "DFS_CAPACITY", value_name = "BYTES", default_value = "1T", value_parser = super::disk::parse_bytes)]
    pub(super) capacity: u64,
    /// How long a member may be gone before the files placed on it are placed on others and
    /// copied there (e.g. 10m, 1h, 30s).
    #[arg(long, env = "DFS_REPAIR_AFTER", value_name = "DURATION", default_value = "10m", value_parser = super::disk::parse_duration)]
    pub(super) repair_after: std::time::Duration,
    /// Most bytes of files read here but not placed here that this node keeps (e.g. 1G, 0).
    #[arg(long, env = "DFS_CACHE_SIZE", value_name = "BYTES", default_value = "1G", value_parser = super::disk::parse_bytes)]
    pub(super) cache_size: u64,
    #[arg(long, hide = true)]
    pub(super) announce_interval_ms: Option<u64>,
    #[arg(long, hide = true)]
    pub(super) repair_interval_ms: Option<u64>,
    #[arg(long, hide = true)]
    pub(super) sync_interval_ms: Option<u64>,
}

/// A number of days, zero or more (fractions allowed).
/// A multiaddr, with the form to write when given a `HOST:PORT` or anything else.
pub(super) fn parse_multiaddr(s: &str) -> std::result::Result<Multiaddr, String> {
    if let Ok(addr) = s.trim().parse::<Multiaddr>() {
        return Ok(addr);
    }
    let form = "a multiaddr such as /ip4/192.168.1.5/tcp/4001 or /dns4/example.com/tcp/4001";
    Err(match s.trim().parse::<std::net::SocketAddr>() {
        Ok(std::net::SocketAddr::V4(a)) => {
            format!("not {form}; write /ip4/{}/tcp/{}", a.ip(), a.port())
        }
        Ok(std::net::SocketAddr::V6(a)) => {
            format!("not {form}; write /ip6/{}/tcp/{}", a.ip(), a.port())
        }
        Err(_) => format!("not {form}"),
    })
}

fn parse_days(s: &str) -> std::result::Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(d) if d.is_finite() && (0.0..=36_500.0).contains(&d) => Ok(d),
        _ => Err(format!("{s:?} is not a number of days from 0 to 36500")),
    }
}
