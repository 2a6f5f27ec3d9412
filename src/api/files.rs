//! The file routes: listing, stat, holders, history and restore, delete, put (streamed or by
//! path), and get/head with ranges and conditional requests.

use super::*;

/// The query of `GET /v1/files`.
#[derive(serde::Deserialize)]
pub(super) struct ListQuery {
    /// Only keys that start with this.
    pub(super) prefix: Option<String>,
}

/// `GET /v1/files`: the JSON list, streamed page by page (a chunked body, the same bytes as one
/// `Json` answer), so that the first entries leave at once and memory stays bounded whatever
/// the number of records. An error after the first page cuts the body short (the client sees
/// JSON that does not parse).
pub(super) async fn list(
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
pub(super) struct StatQuery {
    /// `1` or `true`: add the holders.
    #[serde(default)]
    pub(super) holders: Option<String>,
}

pub(super) async fn stat(
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
pub(super) struct HoldersQuery {
    /// Wait until at least this many nodes (this one included) hold the content.
    #[serde(default)]
    pub(super) min: usize,
    /// How long to wait for `min`, in milliseconds (default 0: answer at once).
    #[serde(default)]
    pub(super) timeout_ms: u64,
}

pub(super) async fn holders(
    State(api): State<Api>,
    uri: Uri,
    axum::extract::Query(query): axum::extract::Query<HoldersQuery>,
) -> Result<Json<Holders>> {
    let key = key_of(&uri, "/v1/holders/")?;
    let wait = Duration::from_millis(query.timeout_ms).min(MAX_HOLDERS_WAIT);
    let h = api.client.wait_holders(&key, query.min, wait).await?;
    Ok(Json(Holders::new(&h, query.min)))
}

pub(super) async fn log(State(api): State<Api>, uri: Uri) -> Result<Json<Vec<json::LogEntry>>> {
    let key = key_of(&uri, "/v1/log/")?;
    let log = api.client.log(key).await?;
    Ok(Json(log.iter().map(json::LogEntry::from).collect()))
}

pub(super) async fn restore(
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
pub(super) fn version_of(uri: &Uri) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        kv.strip_prefix("version=").map(|v| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// A download of the key's current version, or of `version`.
pub(super) async fn download_of(
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

pub(super) async fn delete_file(State(api): State<Api>, uri: Uri) -> Result<Json<FileStat>> {
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

pub(super) async fn put_file(
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

#[derive(serde::Deserialize)]
pub(super) struct ImportRequest {
    pub(super) path: String,
}

/// `POST /v1/import/{key}` `{"path": "/abs/file"}`: the node reads a file of its own machine
/// and stores it, as a put would (no bytes through HTTP). Only callers on loopback may ask (a
/// token holder elsewhere must not make the node read its local files): others get 403.
pub(super) async fn import_file(
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
pub(super) fn checked_length(
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

pub(super) async fn get_file(
    State(api): State<Api>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    file_response(&api, &uri, &headers, true).await
}

pub(super) async fn head_file(
    State(api): State<Api>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response> {
    file_response(&api, &uri, &headers, false).await
}

/// The answer to `GET` (or `HEAD`) on a file, with range support.
pub(super) async fn file_response(
    api: &Api,
    uri: &Uri,
    headers: &HeaderMap,
    body: bool,
) -> Result<Response> {
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
    res = res.header(VERSION_HEADER, download.record.version().to_hex());
    res = res.header(TIME_HEADER, crate::clock::physical_ms(download.record.time));
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
