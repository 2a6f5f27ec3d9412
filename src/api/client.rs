//! The HTTP client of the local API that the CLI uses, and how it finds a node: `--api`,
//! `DFS_API`, or the `api` file in the data dir; the token from `--token`, `DFS_API_TOKEN` or
//! the data dir's `api-token`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::json::{
    ConnectRequest, Connected, ErrorBody, FileStat, Holders, Id, Invite, InviteRequest, LogEntry,
    Member, Peer, RestoreRequest, Role, RoleRequest,
};
use crate::datadir::DataDir;

/// How long connecting to the node may take: a dead node is reported, never waited for.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a call to the API failed. [`Error::is_connection`] tells usage and connection problems
/// (exit code 2) from failed operations (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no node is running for data dir {dir} (no api file); start one with `dfs node --data-dir {dir}`, or point to one with --api"
    )]
    NoNode { dir: String },
    #[error("cannot read {path}: {source}")]
    ApiFile {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "cannot reach the node at {url} ({reason}); is it running? start one with `dfs node --data-dir {dir}`"
    )]
    Unreachable {
        url: String,
        dir: String,
        reason: String,
    },
    #[error(
        "no API token: give --token or DFS_API_TOKEN (the node's <data dir>/api-token); {dir} is not the data dir of the node at {url}"
    )]
    NoToken { url: String, dir: String },
    #[error(
        "the node at {url} refused the API token; use the token in its data dir's api-token file (--data-dir, --token or DFS_API_TOKEN)"
    )]
    Unauthorized { url: String },
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    Rejected { status: StatusCode, message: String },
    #[error("transfer failed: {0}")]
    Transfer(String),
}

impl Error {
    /// True for errors about reaching or using the node (exit code 2), rather than about the
    /// operation itself.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            Error::NoNode { .. }
                | Error::NoToken { .. }
                | Error::ApiFile { .. }
                | Error::Unreachable { .. }
                | Error::Unauthorized { .. }
        )
    }
}

/// A connection to one node's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    /// The data dir shown in hints.
    dir: String,
    http: reqwest::Client,
}

/// The default data dir: `DFS_DATA_DIR` is read by clap; this is the platform's data dir.
pub fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("dfs")
}

/// Turns `HOST:PORT` or a URL into a base URL without a trailing slash.
pub fn base_url(api: &str) -> String {
    let api = api.trim().trim_end_matches('/');
    if api.contains("://") {
        api.to_string()
    } else {
        format!("http://{api}")
    }
}

impl ApiClient {
    /// Finds the node: `api` (from `--api` or `DFS_API`) if given, else the api file in
    /// `data_dir`. The token is `token` if given, else the data dir's `api-token` file, which
    /// is used for an `api` given explicitly only when the data dir's api file names that same
    /// API (so that one node's token is never sent to another): otherwise [`Error::NoToken`].
    pub fn discover(
        api: Option<&str>,
        data_dir: &Path,
        token: Option<String>,
    ) -> Result<ApiClient, Error> {
        let dir = data_dir.display().to_string();
        let layout = DataDir::new(data_dir);
        let base = match api {
            Some(a) => {
                let base = base_url(a);
                let running = std::fs::read_to_string(layout.api_file())
                    .ok()
                    .map(|s| base_url(&s));
                if token.is_none() && running.as_deref() != Some(base.as_str()) {
                    return Err(Error::NoToken { url: base, dir });
                }
                base
            }
            None => {
                let path = layout.api_file();
                match std::fs::read_to_string(&path) {
                    Ok(s) if !s.trim().is_empty() => base_url(&s),
                    Ok(_) => return Err(Error::NoNode { dir }),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Error::NoNode { dir })
                    }
                    Err(source) => {
                        return Err(Error::ApiFile {
                            path: path.display().to_string(),
                            source,
                        })
                    }
                }
            }
        };
        let given = token.is_some();
        let token = token.or_else(|| {
            std::fs::read_to_string(layout.token_file())
                .ok()
                .map(|t| t.trim().to_string())
        });
        tracing::debug!(
            node = %base,
            from = if api.is_some() { "--api or DFS_API" } else { "the data dir's api file" },
            data_dir = %dir,
            token = match (given, token.is_some()) {
                (true, _) => "--token or DFS_API_TOKEN",
                (false, true) => "the data dir's api-token",
                (false, false) => "none",
            },
            "using a node"
        );
        Ok(ApiClient::new(base, token, dir))
    }

    /// A client of the API at `base` (a URL).
    pub fn new(base: String, token: Option<String>, dir: String) -> ApiClient {
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .build()
            .expect("a plain HTTP client builds");
        ApiClient {
            base,
            token,
            dir,
            http,
        }
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// The API token this client sends, if it has one.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Sends a request; maps connection failures and error answers to [`Error`].
    async fn send(&self, req: RequestBuilder) -> Result<Response, Error> {
        let req = req.build().map_err(|e| self.unreachable(e))?;
        let (method, url) = (req.method().clone(), req.url().clone());
        let started = std::time::Instant::now();
        tracing::debug!(%method, %url, "request");
        let res = self.http.execute(req).await.map_err(|e| {
            tracing::debug!(%method, %url, error = %error_chain(&e), "request failed");
            self.unreachable(e)
        })?;
        let status = res.status();
        tracing::debug!(%method, %url, %status, ms = started.elapsed().as_millis() as u64, "answer");
        if status.is_success() {
            return Ok(res);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                url: self.base.clone(),
            });
        }
        let message = match res.json::<ErrorBody>().await {
            // The node's words may quote a key or a peer's: shown as text, never as escapes.
            Ok(b) => crate::record::printable(&b.error).into_owned(),
            Err(_) => format!("the node answered {status}"),
        };
        if status == StatusCode::NOT_FOUND {
            Err(Error::NotFound { message })
        } else {
            Err(Error::Rejected { status, message })
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> Error {
        if e.is_connect() || e.is_timeout() || e.is_builder() {
            let reason = if e.is_timeout() {
                "connection timed out".to_string()
            } else if e.is_builder() {
                "bad API address".to_string()
            } else {
                "connection refused".to_string()
            };
            Error::Unreachable {
                url: self.base.clone(),
                dir: self.dir.clone(),
                reason,
            }
        } else {
            Error::Transfer(error_chain(&e))
        }
    }

    async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, Error> {
        self.send(req)
            .await?
            .json()
            .await
            .map_err(|e| Error::Transfer(error_chain(&e)))
    }

    /// `PUT /v1/files/{key}`: stores `body` (of `len` bytes, if known) under `key`.
    pub async fn put(
        &self,
        key: &str,
        body: reqwest::Body,
        len: Option<u64>,
    ) -> Result<FileStat, Error> {
        let mut req = self.request(Method::PUT, &file_path(key)).body(body);
        if let Some(n) = len {
            req = req.header(reqwest::header::CONTENT_LENGTH, n);
        }
        self.json(req).await
    }

    /// `POST /v1/import/{key}`: asks the node to read the file at `path` itself (it must be
    /// on the node's machine; the API answers 403 to a caller that is not on loopback, and 422
    /// when the node cannot read the path).
    pub async fn import(&self, key: &str, path: &str) -> Result<FileStat, Error> {
        let req = self
            .request(Method::POST, &format!("/v1/import/{}", encode(key)))
            .json(&serde_json::json!({ "path": path }));
        self.json(req).await
    }

    /// True when the node's API is on this machine (a loopback address), so that it can read
    /// a local file itself.
    pub fn is_local(&self) -> bool {
        let rest = self
            .base
            .split_once("://")
            .map_or(self.base.as_str(), |(_, r)| r);
        let host = rest.split('/').next().unwrap_or("");
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => host,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// `GET /v1/files/{key}`: the response, whose body streams the content.
    pub async fn get(&self, key: &str) -> Result<Response, Error> {
        self.send(self.request(Method::GET, &file_path(key))).await
    }

    /// `GET /v1/files/{key}?version=V`: one version's content.
    pub async fn get_version(&self, key: &str, version: &str) -> Result<Response, Error> {
        let path = format!("{}?version={}", file_path(key), encode(version));
        self.send(self.request(Method::GET, &path)).await
    }

    /// `GET /v1/log/{key}`: every version this node knows, oldest first.
    pub async fn log(&self, key: &str) -> Result<Vec<LogEntry>, Error> {
        self.json(self.request(Method::GET, &format!("/v1/log/{}", encode(key))))
            .await
    }

    /// `POST /v1/restore/{key}`: makes `version` current again (a new write).
    pub async fn restore(&self, key: &str, version: &str) -> Result<FileStat, Error> {
        let body = RestoreRequest {
            version: version.to_string(),
        };
        let req = self.request(Method::POST, &format!("/v1/restore/{}", encode(key)));
        self.json(req.json(&body)).await
    }

    /// `GET /v1/files/{key}` with `Range: bytes=FROM-` and `If-Range: ETAG`: a `206` continues
    /// the version named by `etag` at byte `from`; a `200` is the whole current version (the
    /// file changed); a `416` (`Error::Rejected`) means nothing is left after `from`.
    pub async fn get_from(&self, key: &str, from: u64, etag: &str) -> Result<Response, Error> {
        let req = self
            .request(Method::GET, &file_path(key))
            .header(reqwest::header::RANGE, format!("bytes={from}-"))
            .header(reqwest::header::IF_RANGE, etag);
        self.send(req).await
    }

    /// `DELETE /v1/files/{key}`: the tombstone.
    pub async fn delete(&self, key: &str) -> Result<FileStat, Error> {
        self.json(self.request(Method::DELETE, &file_path(key)))
            .await
    }

    pub async fn stat(&self, key: &str) -> Result<FileStat, Error> {
        self.json(self.request(Method::GET, &format!("/v1/stat/{}", encode(key))))
            .await
    }

    /// `GET /v1/stat/{key}?holders=1`: the stat with the nodes that hold the content.
    pub async fn stat_with_holders(&self, key: &str) -> Result<FileStat, Error> {
        self.json(self.request(Method::GET, &format!("/v1/stat/{}?holders=1", encode(key))))
            .await
    }

    /// `GET /v1/holders/{key}?min=N&timeout_ms=T`: waits (at most `timeout`) until `min` nodes
    /// hold the content.
    pub async fn holders(
        &self,
        key: &str,
        min: usize,
        timeout: Duration,
    ) -> Result<Holders, Error> {
        let path = format!(
            "/v1/holders/{}?min={min}&timeout_ms={}",
            encode(key),
            timeout.as_millis()
        );
        self.json(self.request(Method::GET, &path)).await
    }

    /// `POST /v1/connect`: dials `addr` and answers once connected.
    pub async fn connect(&self, addr: &str) -> Result<Connected, Error> {
        let req = self
            .request(Method::POST, "/v1/connect")
            .json(&ConnectRequest { addr: addr.into() });
        self.json(req).await
    }

    /// `GET /metrics`: the Prometheus text.
    pub async fn metrics(&self) -> Result<String, Error> {
        self.send(self.request(Method::GET, "/metrics"))
            .await?
            .text()
            .await
            .map_err(|e| Error::Transfer(error_chain(&e)))
    }

    /// Every record, tombstones included; only keys starting with `prefix` if given.
    pub async fn list(&self, prefix: Option<&str>) -> Result<Vec<FileStat>, Error> {
        let mut req = self.request(Method::GET, "/v1/files");
        if let Some(p) = prefix {
            req = req.query(&[("prefix", p)]);
        }
        self.json(req).await
    }

    /// [`ApiClient::list`] as it arrives: calls `each` with every entry of the streamed list
    /// in order, holding one chunk of the body at a time; `each` returning false stops it.
    pub async fn list_each(
        &self,
        prefix: Option<&str>,
        mut each: impl FnMut(FileStat) -> bool,
    ) -> Result<(), Error> {
        let mut req = self.request(Method::GET, "/v1/files");
        if let Some(p) = prefix {
            req = req.query(&[("prefix", p)]);
        }
        let mut res = self.send(req).await?;
        let mut split = ArraySplitter::default();
        let broken = |what: String| Error::Transfer(format!("the listing broke off: {what}"));
        while let Some(chunk) = res
            .chunk()
            .await
            .map_err(|e| Error::Transfer(error_chain(&e)))?
        {
            for item in split.feed(&chunk).map_err(broken)? {
                if !each(serde_json::from_slice(&item).map_err(|e| broken(e.to_string()))?) {
                    return Ok(());
                }
            }
        }
        if !split.done {
            return Err(broken("it ended before its last entry".into()));
        }
        Ok(())
    }

    pub async fn peers(&self) -> Result<Vec<Peer>, Error> {
        self.json(self.request(Method::GET, "/v1/peers")).await
    }

    pub async fn id(&self) -> Result<Id, Error> {
        self.json(self.request(Method::GET, "/v1/id")).await
    }

    /// `GET /v1/members`.
    pub async fn members(&self) -> Result<Vec<Member>, Error> {
        self.json(self.request(Method::GET, "/v1/members")).await
    }

    /// `PUT /v1/members/{peer_id}`: grants `role`.
    pub async fn allow(&self, peer: &str, role: Role) -> Result<Member, Error> {
        let req = self
            .request(Method::PUT, &format!("/v1/members/{}", encode(peer)))
            .json(&RoleRequest { role });
        self.json(req).await
    }

    /// `DELETE /v1/members/{peer_id}`: revokes write access.
    pub async fn deny(&self, peer: &str) -> Result<Member, Error> {
        self.json(self.request(Method::DELETE, &format!("/v1/members/{}", encode(peer))))
            .await
    }

    /// `POST /v1/invite`: a ticket for a new machine.
    pub async fn invite(&self, admin: bool) -> Result<Invite, Error> {
        let req = self
            .request(Method::POST, "/v1/invite")
            .json(&InviteRequest { admin });
        self.json(req).await
    }
}

/// Characters left as they are in a key in a URL path: RFC 3986 unreserved.
const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A key, percent-encoded for a URL path (every `/` too).
pub fn encode(key: &str) -> String {
    percent_encoding::utf8_percent_encode(key, KEY).to_string()
}

fn file_path(key: &str) -> String {
    format!("/v1/files/{}", encode(key))
}

pub use crate::error_chain;

/// Splits a JSON array of objects, fed in pieces, into the bytes of each element (tracking
/// strings and nesting, without parsing the elements).
#[derive(Default)]
struct ArraySplitter {
    started: bool,
    done: bool,
    depth: usize,
    in_string: bool,
    escaped: bool,
    item: Vec<u8>,
}

impl ArraySplitter {
    fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let mut items = Vec::new();
        for &b in bytes {
            if self.done {
                if b.is_ascii_whitespace() {
                    continue;
                }
                return Err("bytes after the list".into());
            }
            if !self.started {
                match b {
                    b'[' => self.started = true,
                    b if b.is_ascii_whitespace() => {}
                    _ => return Err("not a JSON list".into()),
                }
                continue;
            }
            if self.depth == 0 {
                match b {
                    b',' if !self.item.is_empty() => items.push(std::mem::take(&mut self.item)),
                    b']' => {
                        if !self.item.is_empty() {
                            items.push(std::mem::take(&mut self.item));
                        }
                        self.done = true;
                    }
                    b if b.is_ascii_whitespace() => {}
                    b'{' | b'[' => {
                        self.depth = 1;
                        self.item.push(b);
                    }
                    _ => return Err("an entry that is not an object".into()),
                }
                continue;
            }
            self.item.push(b);
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => self.depth -= 1,
                _ => {}
            }
        }
        Ok(items)
    }
}

#[cfg(test)]
mod splitter_tests {
    use super::ArraySplitter;

    #[test]
    fn splits_in_any_pieces() {
        let text = br#"[{"a":"x}\"],{","b":[1,{"c":2}]},{"d":"\\"}]"#;
        for cut in 0..text.len() {
            let mut s = ArraySplitter::default();
            let mut items = s.feed(&text[..cut]).unwrap();
            items.extend(s.feed(&text[cut..]).unwrap());
            assert!(s.done);
            let items: Vec<String> = items
                .into_iter()
                .map(|i| String::from_utf8(i).unwrap())
                .collect();
            assert_eq!(
                items,
                [r#"{"a":"x}\"],{","b":[1,{"c":2}]}"#, r#"{"d":"\\"}"#]
            );
        }
        let mut s = ArraySplitter::default();
        assert!(s.feed(b"[]").unwrap().is_empty());
        assert!(s.done);
    }
}
