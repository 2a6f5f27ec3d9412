//! The local HTTP API: a thin axum layer over [`node::Client`](crate::node::Client), on
//! loopback, with a bearer token on every request. Bodies stream both ways with bounded memory.
//! Every endpoint is documented in `docs/API.md`.
//!
//! - [`json`]: the JSON shapes of requests and answers (also the CLI's `--json` output).
//! - [`range`]: the `Range` header.
//! - [`conditional`]: `If-Match`, `If-None-Match` and `If-Range` on files.
//! - [`client`]: the HTTP client the CLI uses, and how it finds a node and its token.
//! - [`ui`]: the web page the node serves (embedded files, no token needed to load it).

pub mod client;
pub mod conditional;
pub mod json;
pub mod range;
pub mod ui;

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use crate::datadir::{atomic_write, DataDir};
use crate::node::{self, Client};
use crate::store::StoreError;
use json::{
    ConnectRequest, Connected, ErrorBody, FileStat, Holders, Id, Invite, InviteRequest, Member,
    Peer, RoleRequest, Transfer,
};

/// The names of the API's files in the data dir (the URL while a node runs, and the token); the
/// layout lives in [`crate::datadir`].
pub use crate::datadir::{API_FILE, TOKEN_FILE};
/// The header of a file's answer that carries the version (the `version` of its Stat).
pub const VERSION_HEADER: &str = "x-dfs-version";
/// The header of a file answer that carries the version's id (hex).
pub const VERSION_ID_HEADER: &str = "x-dfs-version-id";
/// Default address of the API.
pub const DEFAULT_ADDR: &str = "127.0.0.1:5001";
/// Requests served at once (a download counts until its body is sent); more get 503.
pub const MAX_REQUESTS: usize = 64;
/// A `PUT` body that sends nothing for this long is abandoned (and the put discarded).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait of `GET /v1/holders/{key}?min=N&timeout_ms=...`.
pub const MAX_HOLDERS_WAIT: Duration = Duration::from_secs(600);
/// The content type of `GET /metrics` (prometheus-client writes OpenMetrics text).
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An error answer: a status and a JSON `{"error": "..."}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// The file size, for the `Content-Range` of a 416.
    size: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            size: None,
        }
    }
}

impl From<node::Error> for ApiError {
    fn from(e: node::Error) -> ApiError {
        let status = match &e {
            e if e.is_not_found() => StatusCode::NOT_FOUND,
            node::Error::Store(StoreError::Invalid(_)) => StatusCode::BAD_REQUEST,
            node::Error::Range { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            node::Error::Source { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            node::Error::NotAllowed(_) => StatusCode::FORBIDDEN,
            node::Error::BadVersion(_) => StatusCode::BAD_REQUEST,
            node::Error::Store(StoreError::IsDelete(_)) => StatusCode::CONFLICT,
            node::Error::Store(StoreError::ClockOff(_)) => StatusCode::SERVICE_UNAVAILABLE,
            node::Error::Store(StoreError::IdentityInUse(_)) => StatusCode::CONFLICT,
            node::Error::Network(crate::net::Error::Dial { .. }) => StatusCode::BAD_GATEWAY,
            node::Error::Store(StoreError::Incomplete(_))
            | node::Error::Unavailable { .. }
            | node::Error::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(cause = %e, "request failed");
        }
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if let Some(size) = self.size {
            res.headers_mut()
                .insert(header::CONTENT_RANGE, value(format!("bytes */{size}")));
        }
        res
    }
}

type Result<T, E = ApiError> = std::result::Result<T, E>;

#[derive(Clone)]
struct Api {
    client: Client,
    token: Arc<str>,
    requests: Arc<Semaphore>,
}

/// The API's routes over a node's client, requiring `token` as a bearer token.
pub fn router(client: Client, token: String) -> Router {
    let state = Api {
        client,
        token: token.into(),
        requests: Arc::new(Semaphore::new(MAX_REQUESTS)),
    };
    let file = || {
        get(get_file)
            .head(head_file)
            .put(put_file)
            .delete(delete_file)
    };
    let authed = Router::new()
        .route("/v1/files", get(list))
        .route("/v1/files/{*key}", file())
        // An empty key: answered "invalid key" rather than "no such endpoint".
        .route("/v1/files/", file())
        .route("/v1/import/{*key}", axum::routing::post(import_file))
        .route("/v1/stat/{*key}", get(stat))
        .route("/v1/stat/", get(stat))
        .route("/v1/peers", get(peers))
        .route("/v1/log/{*key}", get(log))
        .route("/v1/restore/{*key}", axum::routing::post(restore))
        .route("/v1/id", get(id))
        .route("/v1/members", get(members))
        .route(
            "/v1/members/{peer_id}",
            axum::routing::put(set_role).delete(revoke),
        )
        .route("/v1/invite", axum::routing::post(invite))
        .route("/v1/transfers", get(transfers))
        .route("/v1/connect", axum::routing::post(connect))
        .route("/v1/holders/{*key}", get(holders))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth));
    Router::new()
        .route(
            "/v1/health",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .merge(authed)
        .merge(ui::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint (see docs/API.md)",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), limit))
        .layer(middleware::from_fn(ui::same_origin))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then finishes the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    client: Client,
    token: String,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    axum::serve(
        listener,
        router(client, token).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Reads the API token from `<data dir>/api-token`, creating it (32 random bytes, hex, mode
/// 0600) if it does not exist.
pub fn load_or_create_token(data_dir: &DataDir) -> io::Result<String> {
    use rand::RngCore;
    let path = data_dir.token_file();
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    atomic_write(&path, format!("{token}\n").as_bytes(), true)?;
    Ok(token)
}

/// Writes the API's URL to `<data dir>/api` (atomically), where clients find it.
pub fn write_api_file(data_dir: &DataDir, url: &str) -> io::Result<()> {
    atomic_write(&data_dir.api_file(), format!("{url}\n").as_bytes(), false)
}

/// Bounds the requests in flight: each holds a permit until its response body is sent.
async fn limit(State(api): State<Api>, req: Request, next: Next) -> Response {
    let Ok(permit) = api.requests.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("more than {MAX_REQUESTS} requests in flight; try again"),
        )
        .into_response();
    };
    let res = next.run(req).await;
    if axum::body::HttpBody::size_hint(res.body())
        .exact()
        .is_some()
    {
        return res; // complete already (JSON, errors, HEAD)
    }
    let (parts, body) = res.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Checks the bearer token (in constant time).
async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let expected = api.token.as_bytes();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        let mut res = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (see <data dir>/api-token)",
        )
        .into_response();
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    next.run(req).await
}

/// The key of a `/v1/<prefix>/{key}` path: percent-decoded, UTF-8, valid as a key.
fn key_of(uri: &Uri, prefix: &str) -> Result<String> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    let key = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "invalid key: not UTF-8"))?
        .into_owned();
    crate::record::validate_key(&key)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(key)
}

fn value(s: String) -> HeaderValue {
    HeaderValue::from_str(&s).expect("ASCII header value")
}

/// The query of `GET /v1/files`.
#[derive(serde::Deserialize)]
struct ListQuery {
    /// Only keys that start with this.
    prefix: Option<String>,
}

/// Keys read from the store per page of a listing.
const LIST_PAGE: usize = 1000;
/// Keys of the first page: few, so that the answer starts at once.
const LIST_FIRST_PAGE: usize = 50;
/// Pages of a listing encoded ahead of what the client has taken.
const LIST_PAGES_AHEAD: usize = 2;

/// `GET /v1/files`: the JSON list, streamed page by page (a chunked body, the same bytes as one
/// `Json` answer), so that the first entries leave at once and memory stays bounded whatever
/// the number of records. An error after the first page cuts the body short (the client sees
/// JSON that does not parse).
async fn list(
    State(api): State<Api>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Result<Response> {
    let prefix = query.prefix.unwrap_or_default();
    let first = api
        .client
        .list_page(prefix.clone(), None, LIST_FIRST_PAGE)
        .await?;
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<bytes::Bytes>>(LIST_PAGES_AHEAD);
    let client = api.client.clone();
    tokio::spawn(async move {
        let mut page = first;
        let mut out = b"[".to_vec();
        let mut empty = true;
        let mut asked = LIST_FIRST_PAGE;
        loop {
            let last = page.last().map(|s| s.record.key.clone());
            for stat in &page {
                if !empty {
                    out.push(b',');
                }
                empty = false;
                if let Err(e) = serde_json::to_writer(&mut out, &FileStat::from(stat)) {
                    let _ = tx.send(Err(io::Error::other(e))).await;
                    return;
                }
            }
            let more = page.len() == asked;
            asked = LIST_PAGE;
            if !more {
                out.push(b']');
            }
            if tx.send(Ok(std::mem::take(&mut out).into())).await.is_err() || !more {
                return;
            }
            page = match client.list_page(prefix.clone(), last, LIST_PAGE).await {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(io::Error::other(e.to_string()))).await;
                    return;
                }
            };
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        Body::from_stream(body),
    )
        .into_response())
}

/// The query of `GET /v1/stat/{key}`.
#[derive(serde::Deserialize)]
struct StatQuery {
    /// `1` or `true`: add the holders.
    #[serde(default)]
    holders: Option<String>,
}

async fn stat(
    State(api): State<Api>,
    uri: Uri,
    axum::extract::Query(query): axum::extract::Query<StatQuery>,
) -> Result<Json<FileStat>> {
    let key = key_of(&uri, "/v1/stat/")?;
    if matches!(query.holders.as_deref(), Some("1" | "true")) {
        let h = api.client.holders(&key).await?;
        let mut stat = FileStat::from(&h.stat);
        stat.holders = Some(h.peers.iter().map(|p| p.to_base58()).collect());
        stat.placed = h
            .placed
            .map(|placed| placed.iter().map(|p| p.to_base58()).collect());
        return Ok(Json(stat));
    }
    Ok(Json(FileStat::from(&api.client.stat(key).await?)))
}

/// The query of `GET /v1/holders/{key}`.
#[derive(serde::Deserialize)]
struct HoldersQuery {
    /// Wait until at least this many nodes (this one included) hold the content.
    #[serde(default)]
    min: usize,
    /// How long to wait for `min`, in milliseconds (default 0: answer at once).
    #[serde(default)]
    timeout_ms: u64,
}

async fn holders(
    State(api): State<Api>,
    uri: Uri,
    axum::extract::Query(query): axum::extract::Query<HoldersQuery>,
) -> Result<Json<Holders>> {
    let key = key_of(&uri, "/v1/holders/")?;
    let wait = Duration::from_millis(query.timeout_ms).min(MAX_HOLDERS_WAIT);
    let h = api.client.wait_holders(&key, query.min, wait).await?;
    Ok(Json(Holders::new(&h, query.min)))
}

async fn connect(State(api): State<Api>, body: axum::body::Bytes) -> Result<Json<Connected>> {
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
async fn metrics(State(api): State<Api>) -> Result<Response> {
    let text = api.client.metrics_text().await?;
    Ok(([(header::CONTENT_TYPE, METRICS_TYPE)], text).into_response())
}

async fn peers(State(api): State<Api>) -> Result<Json<Vec<Peer>>> {
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

async fn log(State(api): State<Api>, uri: Uri) -> Result<Json<Vec<json::LogEntry>>> {
    let key = key_of(&uri, "/v1/log/")?;
    let log = api.client.log(key).await?;
    Ok(Json(log.iter().map(json::LogEntry::from).collect()))
}

async fn restore(
    State(api): State<Api>,
    uri: Uri,
    body: std::result::Result<Json<json::RestoreRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<FileStat>)> {
    let key = key_of(&uri, "/v1/restore/")?;
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let record = api.client.restore(key, req.version).await?;
    Ok((StatusCode::CREATED, Json(FileStat::of(&record, true))))
}

/// The `version` query parameter of a file request, if any.
fn version_of(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        kv.strip_prefix("version=").map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// A download of the key's current version, or of `version`.
async fn download_of(
    api: &Api,
    key: String,
    version: Option<String>,
    range: Option<(u64, u64)>,
) -> std::result::Result<crate::replication::download::Download, node::Error> {
    match version {
        Some(v) => api.client.get_version(key, v, range).await,
        None => api.client.get(key, range).await,
    }
}

async fn id(State(api): State<Api>) -> Result<Json<Id>> {
    let info = api.client.info().await?;
    // A peer without any grant is a reader of a network it knows.
    let network = api.client.network_id();
    let role = api
        .client
        .role()
        .or_else(|| network.as_ref().map(|_| json::Role::Reader));
    let mut id = Id::new(&info, network, role);
    id.records = api.client.store().record_count();
    Ok(Json(id))
}

async fn transfers(State(api): State<Api>) -> Json<Vec<Transfer>> {
    Json(api.client.transfers().iter().map(Transfer::from).collect())
}

async fn members(State(api): State<Api>) -> Result<Json<Vec<Member>>> {
    Ok(Json(api.client.members()))
}

fn peer_param(peer: &str) -> Result<libp2p::PeerId> {
    peer.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("{peer:?} is not a peer id (base58, as `dfs id` prints it)"),
        )
    })
}

/// The member as it stands after a change.
fn member(api: &Api, peer: libp2p::PeerId) -> Member {
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

async fn set_role(
    State(api): State<Api>,
    axum::extract::Path(peer): axum::extract::Path<String>,
    body: std::result::Result<Json<RoleRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Member>> {
    let peer = peer_param(&peer)?;
    let Json(req) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    api.client.allow(peer, req.role).await?;
    Ok(Json(member(&api, peer)))
}

async fn revoke(
    State(api): State<Api>,
    axum::extract::Path(peer): axum::extract::Path<String>,
) -> Result<Json<Member>> {
    let peer = peer_param(&peer)?;
    api.client.allow(peer, json::Role::Reader).await?;
    Ok(Json(member(&api, peer)))
}

async fn invite(State(api): State<Api>, body: axum::body::Bytes) -> Result<Json<Invite>> {
    let req: InviteRequest = if body.is_empty() {
        InviteRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid body: {e}")))?
    };
    let ticket = api.client.invite(req.admin).await?;
    Ok(Json(Invite {
        ticket: ticket.encode(),
    }))
}

async fn delete_file(State(api): State<Api>, uri: Uri) -> Result<Json<FileStat>> {
    let key = key_of(&uri, "/v1/files/")?;
    let record = api.client.delete(key).await?;
    Ok(Json(FileStat::from(&crate::store::Stat {
        record,
        conflicts: Vec::new(),
        conflicts_local: Vec::new(),
        local: false,
        damaged: 0,
    })))
}

async fn put_file(
    State(api): State<Api>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FileStat>)> {
    let key = key_of(&uri, "/v1/files/")?;
    let expected = match headers.get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, "bad Content-Length"))?,
        ),
    };
    let broken = Arc::new(AtomicBool::new(false));
    let stream = checked_length(
        body.into_data_stream().map_err(io::Error::other),
        expected,
        broken.clone(),
    );
    let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
    match api.client.put(key, reader).await {
        Ok(record) => {
            let stat = crate::store::Stat {
                record,
                conflicts: Vec::new(),
                conflicts_local: Vec::new(),
                local: true,
                damaged: 0,
            };
            Ok((StatusCode::CREATED, Json(FileStat::from(&stat))))
        }
        Err(e) if broken.load(Ordering::Relaxed) => {
            tracing::info!(cause = %e, "put aborted: the request body ended early");
            Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("the request body ended early: {e}"),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Largest body of an import request (a JSON object with a path).
const MAX_IMPORT_BODY: usize = 64 * 1024;

#[derive(serde::Deserialize)]
struct ImportRequest {
    path: String,
}

/// `POST /v1/import/{key}` `{"path": "/abs/file"}`: the node reads a file of its own machine
/// and stores it, as a put would (no bytes through HTTP). Only callers on loopback may ask (a
/// token holder elsewhere must not make the node read its local files): others get 403.
async fn import_file(
    State(api): State<Api>,
    request: axum::extract::Request,
) -> Result<(StatusCode, Json<FileStat>)> {
    let local = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if !local {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "imports of local paths are accepted only from this machine (loopback)",
        ));
    }
    let key = key_of(request.uri(), "/v1/import/")?;
    let body = axum::body::to_bytes(request.into_body(), MAX_IMPORT_BODY)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("bad body: {e}")))?;
    let ImportRequest { path } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("expected {{\"path\": \"/absolute/path\"}}: {e}"),
        )
    })?;
    let path = std::path::PathBuf::from(path);
    if !path.is_absolute() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the path must be absolute",
        ));
    }
    let record = api.client.put_path(key, path).await?;
    let stat = crate::store::Stat {
        record,
        conflicts: Vec::new(),
        conflicts_local: Vec::new(),
        local: true,
        damaged: 0,
    };
    Ok((StatusCode::CREATED, Json(FileStat::from(&stat))))
}

/// Passes a request body through, turning a body that ends before its `Content-Length` (or runs
/// past it), or stalls for [`BODY_IDLE_TIMEOUT`], into a read error, so that the store discards
/// the put instead of committing a truncated file. Sets `broken` on any body error.
fn checked_length(
    body: impl Stream<Item = io::Result<bytes::Bytes>> + Send + Unpin + 'static,
    expected: Option<u64>,
    broken: Arc<AtomicBool>,
) -> impl Stream<Item = io::Result<bytes::Bytes>> + Send + 'static {
    let fail = |kind, msg: String| Some(Err(io::Error::new(kind, msg)));
    futures::stream::unfold((body, 0u64, false), move |(mut body, mut seen, done)| {
        let broken = broken.clone();
        async move {
            if done {
                return None;
            }
            let item = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
                Err(_) => fail(
                    io::ErrorKind::TimedOut,
                    format!("no data for {BODY_IDLE_TIMEOUT:?}"),
                ),
                Ok(Some(Ok(chunk))) => {
                    seen += chunk.len() as u64;
                    match expected {
                        Some(n) if seen > n => fail(
                            io::ErrorKind::InvalidData,
                            format!("body longer than its Content-Length {n}"),
                        ),
                        _ => Some(Ok(chunk)),
                    }
                }
                Ok(Some(Err(e))) => Some(Err(e)),
                Ok(None) => match expected {
                    Some(n) if seen != n => fail(
                        io::ErrorKind::UnexpectedEof,
                        format!("got {seen} of {n} bytes"),
                    ),
                    _ => None,
                },
            };
            let failed = matches!(item, Some(Err(_)));
            if failed {
                broken.store(true, Ordering::Relaxed);
            }
            item.map(|i| (i, (body, seen, failed)))
        }
    })
}

async fn get_file(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response> {
    file_response(&api, &uri, &headers, true).await
}

async fn head_file(State(api): State<Api>, uri: Uri, headers: HeaderMap) -> Result<Response> {
    file_response(&api, &uri, &headers, false).await
}

/// The answer to `GET` (or `HEAD`) on a file, with range support.
async fn file_response(api: &Api, uri: &Uri, headers: &HeaderMap, body: bool) -> Result<Response> {
    let key = key_of(uri, "/v1/files/")?;
    let version = version_of(uri);
    let mut download = download_of(api, key.clone(), version.clone(), None).await?;
    let size = download.record.size;
    let mut status = StatusCode::OK;
    let etag = download
        .record
        .cid
        .map(|cid| format!("\"{}\"", cid.to_hex()))
        .unwrap_or_default();
    let honour_range = match conditional::evaluate(headers, &etag) {
        conditional::Decision::Proceed { honour_range } => honour_range,
        conditional::Decision::NotModified => {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag)
                .header(header::ACCEPT_RANGES, "bytes")
                .body(Body::empty())
                .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()));
        }
        conditional::Decision::Failed => {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                format!("{key} is no longer the version named by If-Match; it is now {etag}"),
            ));
        }
    };
    let range_header = headers.get(header::RANGE).filter(|_| honour_range);
    if let Some(h) = range_header {
        let h = h
            .to_str()
            .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "bad Range header"))?;
        let range = range::parse(h, size)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))?;
        match range {
            range::Range::Unsatisfiable => {
                let mut e = ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    format!("range {h} is outside the file of {size} bytes"),
                );
                e.size = Some(size);
                return Err(e);
            }
            range::Range::Satisfiable(start, end) => {
                status = StatusCode::PARTIAL_CONTENT;
                let cid = download.record.cid;
                download = download_of(api, key, version, Some((start, end))).await?;
                if download.record.cid != cid {
                    // A new version arrived between the two calls: the range was resolved
                    // against the old one.
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "the file changed during the request; try again",
                    ));
                }
            }
        }
    }
    let (start, end) = download.range;
    let mut res = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes");
    if download.record.cid.is_some() {
        res = res.header(header::ETAG, etag);
    }
    res = res.header(VERSION_HEADER, download.record.time);
    res = res.header(VERSION_ID_HEADER, download.record.version().to_hex());
    if status == StatusCode::PARTIAL_CONTENT {
        res = res.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    let body = if body {
        Body::from_stream(download.body)
    } else {
        Body::empty()
    };
    res.body(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn through(
        parts: &[&'static [u8]],
        expected: Option<u64>,
    ) -> (io::Result<Vec<u8>>, bool) {
        let items: Vec<io::Result<bytes::Bytes>> = parts
            .iter()
            .map(|p| Ok(bytes::Bytes::from_static(p)))
            .collect();
        let broken = Arc::new(AtomicBool::new(false));
        let stream = checked_length(futures::stream::iter(items), expected, broken.clone());
        let all: io::Result<Vec<bytes::Bytes>> = stream.try_collect().await;
        (all.map(|v| v.concat()), broken.load(Ordering::Relaxed))
    }

    #[tokio::test]
    async fn a_body_must_match_its_content_length() {
        let (ok, broken) = through(&[b"abc", b"de"], Some(5)).await;
        assert_eq!(ok.unwrap(), b"abcde");
        assert!(!broken);
        let (ok, broken) = through(&[b"abc", b"de"], None).await;
        assert_eq!(ok.unwrap(), b"abcde");
        assert!(!broken);
        let (short, broken) = through(&[b"abc"], Some(5)).await;
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(broken);
        let (long, broken) = through(&[b"abc", b"def"], Some(5)).await;
        assert_eq!(long.unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert!(broken);
    }
}
