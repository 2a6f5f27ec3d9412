//! The node and network routes: identity, peers and connecting, transfers, members (roles,
//! revocations, invitations) and the metrics.

use super::*;

pub(super) async fn connect(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> Result<Json<Connected>> {
    let request: ConnectRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad body: {e} (expected {{\"addr\": \"/ip4/.../tcp/.../p2p/...\"}})"),
        )
    })?;
    let addr: libp2p::Multiaddr = request.addr.parse().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("bad multiaddr {:?}: {e}", request.addr),
        )
    })?;
    let peer = api.client.connect(addr.clone()).await?;
    Ok(Json(Connected {
        peer_id: peer.to_base58(),
        addr: addr.to_string(),
    }))
}

/// `GET /metrics`: every metric in the Prometheus text format.
pub(super) async fn metrics(State(api): State<Api>) -> Result<Response> {
    let text = api.client.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, METRICS_TYPE)], text).into_response())
}

pub(super) async fn peers(State(api): State<Api>) -> Result<Json<Vec<Peer>>> {
    let peers = api.client.peers().await?;
    let offsets = api.client.clock_offsets();
    Ok(Json(
        peers
            .iter()
            .map(|p| Peer {
                clock_offset_ms: offsets.get(&p.peer_id).map(|o| o.ms),
                ..Peer::from(p)
            })
            .collect(),
    ))
}

pub(super) async fn id(State(api): State<Api>) -> Result<Json<Id>> {
    let info = api.client.info().await?;
    // A peer without any grant is a reader of a network it knows.
    let network = api.client.network_id();
    let role = api
        .client
        .role()
        .or_else(|| network.as_ref().map(|_| json::Role::Reader));
    let mut id = Id::new(&info, network, role);
    id.records = api.client.store().record_count();
    id.writes_refused = api.client.writes_refused();
    Ok(Json(id))
}

pub(super) async fn transfers(State(api): State<Api>) -> Json<Vec<Transfer>> {
    Json(api.client.transfers().iter().map(Transfer::from).collect())
}

pub(super) async fn members(State(api): State<Api>) -> Result<Json<Vec<Member>>> {
    Ok(Json(api.client.members()))
}

pub(super) fn peer_param(peer: &str) -> Result<libp2p::PeerId> {
    peer.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{peer:?} is not a peer id (base58, as `dfs id` prints it)"),
        )
    })
}

/// The member as it stands after a change.
pub(super) fn member(api: &Api, peer: libp2p::PeerId) -> Member {
    let id = peer.to_base58();
    api.client
        .members()
        .into_iter()
        .find(|m| m.peer_id == id)
        .unwrap_or(Member {
            peer_id: id,
            role: json::Role::Reader,
            cutoff: None,
            owner: false,
            failed_proofs: 0,
            equivocated: false,
        })
}

pub(super) async fn set_role(
    State(api): State<Api>,
    axum::extract::Path(peer): axum::extract::Path<String>,
    body: std::result::Result<Json<RoleRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Member>> {
    let peer = peer_param(&peer)?;
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    api.client.allow(peer, req.role).await?;
    Ok(Json(member(&api, peer)))
}

pub(super) async fn revoke(
    State(api): State<Api>,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Result<Json<Member>> {
    let peer = peer_param(&peer)?;
    api.client.allow(peer, json::Role::Reader).await?;
    Ok(Json(member(&api, peer)))
}

pub(super) async fn invite(
    State(api): State<Api>,
    body: axum::body::Bytes,
) -> Result<Json<Invite>> {
    let req: InviteRequest = if body.is_empty() {
        InviteRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?
    };
    let ticket = api.client.invite(req.admin).await?;
    Ok(Json(Invite {
        ticket: ticket.encode(),
        peer_id: ticket.peer_id().to_base58(),
        role: Some(ticket.grant.role),
    }))
}
