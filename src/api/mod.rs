//! The local HTTP API: a thin axum layer over [`node::Client`](crate::node::Client), on
//! loopback, with a bearer token on every request. Bodies stream both ways with bounded memory.
//! Every endpoint is documented in `docs/API.md`.
//!
//! - [`json`]: the JSON shapes of requests and answers (also the CLI's `--json` output).
//! - [`range`]: the `Range` header.
//! - [`conditional`]: `If-Match`, `If-None-Match` and `If-Range` on files.
//! - [`client`]: the HTTP client the CLI uses, and how it finds a node and its token.
//! - [`ui`]: the web page the node serves (embedded files, no token needed to load it).

mod files;
mod network;

use files::*;
use network::*;

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
/// The header of a file's answer that carries its version (the `version` of its Stat: the
/// version id, hex).
pub const VERSION_HEADER: &str = "x-dfs-version";
/// The header of a file's answer that carries its version's time (the `time` of its Stat).
pub const TIME_HEADER: &str = "x-dfs-time";
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

/// Keys read from the store per page of a listing.
const LIST_PAGE: usize = 1000;
/// Keys of the first page: few, so that the answer starts at once.
const LIST_FIRST_PAGE: usize = 50;
/// Pages of a listing encoded ahead of what the client has taken.
const LIST_PAGES_AHEAD: usize = 2;

/// Largest body of an import request (a JSON object with a path).
const MAX_IMPORT_BODY: usize = 64 * 1024;

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
