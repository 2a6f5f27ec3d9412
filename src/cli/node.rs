//! `dfs node`: runs a peer and its local API until a signal, keeping the data dir's `api` file
//! while the API is up.

use std::net::SocketAddr;
use std::time::Duration;

use crate::api::client::default_data_dir;
use crate::datadir::DataDir;
use crate::node::{Config, Node};

use super::args::NodeArgs;
use super::{Error, Result};

/// How long requests in flight may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Runs a node until SIGINT or SIGTERM (or its failure), then stops it gracefully.
pub(super) async fn run(args: NodeArgs) -> Result<()> {
    let api_addr = resolve(&args.api).await?;
    let asked_api = api_addr;
    if !api_addr.ip().is_loopback() {
        if !args.api_allow_remote {
            return Err(Error::Usage(format!(
                "the API address {api_addr} is not loopback; add --api-allow-remote to allow it"
            )));
        }
        tracing::warn!(addr = %api_addr, "the API listens on a non-loopback address");
    }
    let swarm_key = match &args.swarm_key {
        Some(path) => Some(crate::net::transport::read_swarm_key(path).map_err(Error::Usage)?),
        None => None,
    };
    let data_dir = DataDir::new(args.data_dir.unwrap_or_else(default_data_dir));
    let dir = data_dir.path();
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::Usage(format!(
            "cannot create data dir {}: {e}; choose another with --data-dir",
            dir.display()
        ))
    })?;
    let token = crate::api::load_or_create_token(&data_dir).map_err(|e| {
        Error::Usage(format!(
            "cannot use data dir {}: the API token file: {e}",
            dir.display()
        ))
    })?;
    let mut config = Config::new(dir.to_path_buf());
    let listen = args.listen.clone();
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    config.bootstrap = args.bootstrap;
    if let Some(ticket) = &args.join {
        config.join = Some(
            crate::trust::Ticket::decode(ticket)
                .map_err(|e| Error::Usage(format!("--join: {e}")))?,
        );
    }
    config.swarm_key = swarm_key;
    config.mdns = args.mdns;
    if let Some(ms) = args.announce_interval_ms {
        config.announce_interval = Duration::from_millis(ms.max(1));
    }
    config.scrub_interval = args.scrub_interval;
    config.scrub_rate = args.scrub_rate;
    config.max_clock_offset = args.max_clock_offset;
    config.keep = std::time::Duration::from_secs_f64(args.keep_days * 86_400.0);
    config.keep_bytes = args.keep_bytes;
    config.replicas = args.replicas;
    config.capacity = args.capacity.max(1);
    config.repair_after = args.repair_after;
    config.cache_size = args.cache_size;
    if let Some(ms) = args.repair_interval_ms {
        config.repair_interval = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.sync_interval_ms {
        config.sync_interval = Duration::from_millis(ms.max(1));
    }
    tracing::debug!(
        data_dir = %dir.display(),
        listen = ?config.listen,
        bootstrap = ?config.bootstrap,
        api = %api_addr,
        scrub_interval = ?config.scrub_interval,
        scrub_rate = config.scrub_rate,
        "configuration (flags, DFS_* variables and config.toml)"
    );
    // The node first: a second node on this data dir is told so (the store is locked), not
    // that the first one's API port is taken.
    let mut node = Node::start(config)
        .await
        .map_err(|e| Error::Usage(format!("cannot start the node: {e}")))?;
    let listener = match tokio::net::TcpListener::bind(api_addr).await {
        Ok(l) => l,
        Err(e) => {
            node.shutdown().await;
            return Err(Error::Usage(format!(
                "cannot listen for the API on {}: {e}; choose another address with --api",
                args.api
            )));
        }
    };
    let api_addr = listener
        .local_addr()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let client = node.client();
    if let Ok(info) = client.info().await {
        let addrs: Vec<String> = info.addrs.iter().map(|a| a.to_string()).collect();
        tracing::info!(peer_id = %info.peer_id, addrs = %addrs.join(" "), "node started");
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
        // Both addresses worked: the next start of this data dir uses them again.
        if let Err(e) = super::config::remember(&data_dir, &listen, asked_api) {
            tracing::warn!(cause = %e, "cannot remember this run's addresses for the next start");
        }
        tokio::select! {
            signal = shutdown_signal() => {
                tracing::info!(signal, "shutting down (Ctrl-C again to exit at once)");
                super::exit_on_second_interrupt();
            }
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

/// `dfs swarm-key`: prints a new swarm key, or writes it to a new file with mode 0600.
pub(super) fn swarm_key(output: Option<&std::path::Path>) -> Result<()> {
    let key = crate::net::transport::new_swarm_key();
    let Some(path) = output.filter(|p| *p != std::path::Path::new("-")) else {
        print!("{key}");
        return Ok(());
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = |options: &std::fs::OpenOptions| -> std::io::Result<()> {
        use std::io::Write;
        let mut file = options.open(path)?;
        file.write_all(key.as_bytes())?;
        file.sync_all()
    };
    write(&options).map_err(|e| Error::Usage(format!("cannot write {}: {e}", path.display())))
}

/// Resolves the `--api` address (`HOST:PORT`, or a URL `http://HOST:PORT` as clients take it
/// from `DFS_API`) to the first socket address.
async fn resolve(api: &str) -> Result<SocketAddr> {
    let bad =
        |why: String| Error::Usage(format!("bad --api address {api:?}: {why}; use HOST:PORT"));
    let trimmed = api.trim().trim_end_matches('/');
    let host_port = trimmed.strip_prefix("http://").unwrap_or(trimmed);
    if host_port.contains("://") || host_port.contains('/') {
        return Err(bad("only HOST:PORT or http://HOST:PORT".into()));
    }
    tokio::net::lookup_host(host_port)
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
