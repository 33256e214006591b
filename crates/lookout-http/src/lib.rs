//! Lookout's HTTP listener.
//!
//! - `GET /metrics`: the database's own metrics in the OpenMetrics text
//!   format, for Prometheus to scrape.
//! - `POST /v1/traces`: OpenTelemetry traces over OTLP/HTTP; the GenAI
//!   spans become rows of a table (see [`otlp`]).
//!
//! The listener keeps the Postgres listener's rules: without a bearer token
//! it only listens on loopback (the caller checks), with one every request
//! must carry it, and with a certificate it speaks TLS only.

pub mod otlp;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use lookout_metrics::{Counter, Family, Labels};
use lookout_query::Lookout;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use otlp::OtlpOptions;

/// Entry point for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes `data` as an OTLP export in both encodings and maps what
    /// decodes to rows; errors are expected, panics are bugs.
    pub fn otlp_export(data: &[u8]) {
        crate::otlp::fuzz_export(data);
    }
}

/// How the HTTP listener serves.
#[derive(Clone, Default)]
pub struct HttpOptions {
    /// Every request must carry `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// Speak TLS with this acceptor (plain HTTP is refused).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Trace ingest.
    pub otlp: OtlpOptions,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: never printed.
        f.debug_struct("HttpOptions")
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<set>"))
            .field("tls", &self.tls.is_some())
            .field("otlp", &self.otlp)
            .finish()
    }
}

/// The HTTP listener's own counters.
#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<Labels<2>, Counter>,
    spans: Family<Labels<1>, Counter>,
}

impl HttpMetrics {
    fn register(registry: &lookout_metrics::Registry) -> HttpMetrics {
        HttpMetrics {
            requests: registry.register(
                "http_requests",
                "HTTP requests, by route and status code class",
                Family::default(),
            ),
            spans: registry.register(
                "otlp_spans",
                "GenAI spans received over OTLP, by result (stored, rejected: malformed, failed: storage refused the export)",
                Family::default(),
            ),
        }
    }

    fn spans(&self, n: u64, result: &'static str) {
        if n > 0 {
            self.spans.get_or_create(&[("result", result)]).inc_by(n);
        }
    }
}

/// What every handler shares.
#[derive(Clone)]
struct AppState {
    db: Lookout,
    otlp: Arc<OtlpOptions>,
    bearer_token: Option<Arc<str>>,
    metrics: HttpMetrics,
}

/// The routes, with authentication in front of all of them.
fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/traces", post(otlp::export_traces))
        .layer(axum::extract::DefaultBodyLimit::max(
            state.otlp.max_body_bytes,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// `GET /metrics`: OpenMetrics when the client accepts it (Prometheus
/// asks for it), else the classic text format.
async fn metrics(State(app): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let registry = app.db.metrics();
    let (encoded, content_type) = if openmetrics {
        (
            registry.encode(),
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            registry.encode_classic(),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    match encoded {
        Ok(text) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Refuses a request without the configured bearer token (401), and counts
/// every request by route and status.
async fn authenticate(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = match request.uri().path() {
        "/metrics" => "/metrics",
        "/v1/traces" => "/v1/traces",
        _ => "other",
    };
    let response = match &app.bearer_token {
        Some(token) if !carries_token(&request, token) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is required\n",
        )
            .into_response(),
        _ => next.run(request).await,
    };
    let class = match response.status().as_u16() {
        200..=299 => "2xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    app.metrics
        .requests
        .get_or_create(&[("route", route), ("code", class)])
        .inc();
    response
}

fn carries_token(request: &Request, token: &str) -> bool {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    constant_time_eq(given.as_bytes(), token.as_bytes())
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell an attacker how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i % b.len().max(1)).copied().unwrap_or(0));
    }
    diff == 0
}

/// How long a connection may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections served at once; past it new ones are closed at once, so a
/// flood of idle connections cannot hold the server's memory.
const MAX_CONNECTIONS: usize = 512;

/// Serves HTTP on `listener` until `shutdown` completes, then lets requests
/// in progress finish for up to five seconds.
pub async fn serve(
    db: Lookout,
    listener: TcpListener,
    options: HttpOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = AppState {
        metrics: HttpMetrics::register(db.metrics()),
        db,
        otlp: Arc::new(options.otlp),
        bearer_token: options.bearer_token.map(Arc::from),
    };
    let service = TowerToHyperService::new(router(state));
    let mut connections = JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "HTTP accept failed");
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(%peer, "HTTP connection refused: {MAX_CONNECTIONS} already open");
                    continue;
                };
                let _ = socket.set_nodelay(true);
                let service = service.clone();
                let tls = options.tls.clone();
                connections.spawn(async move {
                    let _slot = slot;
                    let mut http = hyper::server::conn::http1::Builder::new();
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT);
                    let served = match tls {
                        Some(acceptor) => match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(socket)).await {
                            Ok(Ok(stream)) => http.serve_connection(TokioIo::new(stream), service).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "HTTP TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        },
                        None => http.serve_connection(TokioIo::new(socket), service).await,
                    };
                    if let Err(e) = served {
                        tracing::debug!(%peer, error = %e, "HTTP connection ended with an error");
                    }
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        connections.abort_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secreT", b"secret"));
        assert!(!constant_time_eq(b"secret!", b"secret"));
        assert!(!constant_time_eq(b"", b"secret"));
        assert!(!constant_time_eq(b"secret", b""));
    }
}
