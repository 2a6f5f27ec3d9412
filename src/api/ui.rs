//! The node's web page: one HTML page, its script and its style sheet, embedded in the binary
//! and served without a token (they hold no data; the script reads the token from the URL's
//! fragment and sends it as a bearer token on every API call), under a strict
//! `Content-Security-Policy`. Also the check that keeps other origins out of the API.
//!
//! The files live in `src/api/ui/`; there is no build step.

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::ApiError;

/// The page (also at `/` and `/ui/`).
pub const PATH: &str = "/ui";

const INDEX: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// Scripts and styles from the node only (no inline code, no `eval`), API calls to the node
/// only, no framing, no plugins, no forms posted anywhere. `data:` images: the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page's routes; they need no token.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            PATH,
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/",
            get(|| async { asset(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/app.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary may bring a new page: the browser asks again each time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

/// Refuses (403) a request whose `Origin` is not the origin it was sent to. Browsers add
/// `Origin` to cross-origin requests (and to same-origin ones other than GET and HEAD); the
/// API sends no CORS headers, so a browser never lets another origin read an answer, and this
/// keeps such requests from acting at all. Clients outside browsers send no `Origin`.
pub(super) async fn same_origin(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN);
    if let Some(origin) = origin {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok());
        let same = match (origin.to_str().ok(), host) {
            (Some(o), Some(h)) => o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .is_some_and(|rest| rest.eq_ignore_ascii_case(h)),
            _ => false,
        };
        if !same {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "cross-origin requests are not accepted (open the node's own page: dfs ui)",
            )
            .into_response();
        }
    }
    next.run(req).await
}
