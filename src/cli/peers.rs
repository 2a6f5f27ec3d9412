//! The network commands, `peers`, `id` and `connect`: what the node is connected to, how to
//! reach it, and a connection made now.

use crate::api::client::ApiClient;

use super::{output, Result};

/// `dfs peers [--json]`: the connected peers and their addresses.
pub(super) async fn peers(api: &ApiClient, json: bool) -> Result<()> {
    let peers = api.peers().await?;
    if json {
        return output::json(&peers);
    }
    output::peers(&peers);
    Ok(())
}

/// `dfs connect MULTIADDR [--json]`: the node dials the address; prints the peer id once
/// connected.
pub(super) async fn connect(api: &ApiClient, addr: &str, json: bool) -> Result<()> {
    let connected = api.connect(addr).await?;
    if json {
        return output::json(&connected);
    }
    println!("connected to {} at {}", connected.peer_id, connected.addr);
    Ok(())
}

/// `dfs id [--json]`: this node's peer id and listen addresses.
pub(super) async fn id(api: &ApiClient, json: bool) -> Result<()> {
    let id = api.id().await?;
    if json {
        return output::json(&id);
    }
    output::id(&id);
    Ok(())
}
