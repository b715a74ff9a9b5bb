//! The `[web]` listener (axum): the status page `/`, `/api/stations` (JSON)
//! and `/metrics` (Prometheus text). All read-only; a route that changes
//! state must call [`authorized`] first.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use super::Status;

/// The page: plain HTML and a little JS that reads `/api/stations`.
const PAGE: &str = include_str!("page.html");

/// Prometheus' text format, version 0.0.4.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The routes, over `status`.
pub fn router(status: Arc<Status>) -> Router {
    let mut router = Router::new()
        .route("/", get(page))
        .route("/api/stations", get(stations))
        .route("/metrics", get(metrics));
    let changes = changes();
    // `route_layer`: only the routes in `changes`, not the 404 fallback
    // (and axum refuses it on a router with no routes).
    if changes.has_routes() {
        router = router.merge(changes.route_layer(axum::middleware::from_fn_with_state(
            status.clone(),
            require_token,
        )));
    }
    router.with_state(status)
}

/// Routes that change state (none yet): add them here and they are
/// reachable only with `Authorization: Bearer <[web] token>`.
fn changes() -> Router<Arc<Status>> {
    Router::new()
}

/// The middleware in front of [`changes`].
async fn require_token(
    State(status): State<Arc<Status>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorized(request.headers(), status.config.web.token.as_deref()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

/// Serves `router` on `listen` until `stop` turns true.
pub async fn run(
    status: Arc<Status>,
    listen: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("[web] listen = {listen}: cannot bind"))?;
    tracing::info!(listen = %listener.local_addr()?, "status page listening");
    let mut stop2 = stop.clone();
    let serve = axum::serve(listener, router(status)).with_graceful_shutdown(async move {
        let _ = stop.wait_for(|s| *s).await;
    });
    // Requests in flight get a moment on stop; a client that never
    // finishes its request must not hold up sanboot's exit.
    tokio::select! {
        r = serve => r.context("[web] server"),
        _ = async {
            let _ = stop2.wait_for(|s| *s).await;
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        } => Ok(()),
    }
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn stations(State(status): State<Arc<Status>>) -> Json<super::Snapshot> {
    Json(status.snapshot())
}

async fn metrics(State(status): State<Arc<Status>>) -> Response {
    (
        [(header::CONTENT_TYPE, METRICS_TYPE)],
        status.metrics.render(),
    )
        .into_response()
}

/// Why [`authorized`] said no.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `[web] token` is configured: nothing may change state.
    Disabled,
    /// The request carried no token or a wrong one.
    Unauthorized,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Disabled => (
                StatusCode::FORBIDDEN,
                "changes are disabled: set [web] token to allow them\n",
            )
                .into_response(),
            Refusal::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "a valid Authorization: Bearer token is required\n",
            )
                .into_response(),
        }
    }
}

/// For routes that change state: `Ok` only when `[web] token` is set and
/// the request carries `Authorization: Bearer <token>`.
pub fn authorized(headers: &HeaderMap, token: Option<&str>) -> Result<(), Refusal> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(Refusal::Disabled);
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(g) if constant_time_eq(g.as_bytes(), token.as_bytes()) => Ok(()),
        _ => Err(Refusal::Unauthorized),
    }
}

/// Compares without stopping at the first difference (no timing hint
/// about how much of a guessed token was right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn the_token_check_wants_the_exact_bearer_token() {
        assert_eq!(authorized(&with("Bearer s3cret"), Some("s3cret")), Ok(()));
        let no = Err(Refusal::Unauthorized);
        assert_eq!(authorized(&with("Bearer s3cre"), Some("s3cret")), no);
        assert_eq!(authorized(&with("Basic s3cret"), Some("s3cret")), no);
        assert_eq!(authorized(&HeaderMap::new(), Some("s3cret")), no);
        // No token configured: nothing may change state, whatever is sent.
        let off = Err(Refusal::Disabled);
        assert_eq!(authorized(&with("Bearer "), None), off);
        assert_eq!(authorized(&with("Bearer "), Some("")), off);
        let r = Refusal::Unauthorized.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        assert_eq!(
            Refusal::Disabled.into_response().status(),
            StatusCode::FORBIDDEN
        );
    }
}
