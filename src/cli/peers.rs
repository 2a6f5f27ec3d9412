//! The network commands, `peers` and `id`: what the node is connected to and how to reach it.

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

/// `dfs id [--json]`: this node's peer id and listen addresses.
pub(super) async fn id(api: &ApiClient, json: bool) -> Result<()> {
    let id = api.id().await?;
    if json {
        return output::json(&id);
    }
    output::id(&id);
    Ok(())
}
