//! Lookout's Postgres wire protocol server.
//!
//! Built on [`pgwire`]: each client connection gets its own
//! [`lookout_query::Session`]; the simple and extended query protocols,
//! `COPY FROM STDIN` / `COPY TO STDOUT`, and SQLSTATE error codes are mapped
//! here. This crate knows nothing of files or storage: it speaks to the
//! database only through the SQL session.

mod auth;
mod cancel;
mod handler;
mod handlers;
mod roles;
mod scram;
mod startup;
mod tls;
mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use lookout_query::Lookout;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use crate::auth::{RoleLimits, SCRAM_ITERATIONS, User, Users, Verifier};
use crate::handler::Connection;
use crate::handlers::ConnectionHandlers;
pub use crate::roles::install_roles;
pub use crate::startup::Authentication;
pub use crate::tls::{tls_acceptor, tls_server_end_point};

/// Entry points for the fuzz targets in `fuzz/`. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses `sql` as a role statement and runs the server side of a
    /// SCRAM exchange on `sql` as the client's messages; errors are
    /// expected, panics are bugs.
    pub fn role_statement_and_scram(sql: &str) {
        let _ = crate::roles::parse(sql);
        let users = crate::auth::Users::default();
        let keys = users.login_keys("fuzz");
        let (first, last) = sql.split_once('\n').unwrap_or((sql, ""));
        if let Ok((_, waiting)) = crate::scram::server_first(
            first.as_bytes(),
            keys,
            if first.starts_with("p=") {
                crate::scram::Binding::Chosen(b"certificate hash")
            } else {
                crate::scram::Binding::NotOffered
            },
        ) {
            let _ = waiting.verify(last.as_bytes());
        }
    }
}

/// Server behaviour that is not SQL.
#[derive(Clone)]
pub struct ServerOptions {
    /// After shutdown is requested, connections get this long to finish
    /// their statements before they are closed.
    pub shutdown_grace: Duration,
    /// Who may connect, and how.
    pub authentication: Authentication,
    /// TLS for clients that ask for it (`sslmode=require`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("shutdown_grace", &self.shutdown_grace)
            .field("authentication", &self.authentication)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            shutdown_grace: Duration::from_secs(5),
            authentication: Authentication::default(),
            tls: None,
        }
    }
}

/// Accepts connections on `listener` until `shutdown` completes, then stops
/// accepting, lets open connections finish for the grace period and returns.
/// The caller closes the database afterwards (flushing buffered rows).
pub async fn serve(
    lookout: Lookout,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    lookout.set_role_directory(Arc::clone(&options.authentication.users) as _);
    install_roles(&lookout, Arc::clone(&options.authentication.users))
        .await
        .map_err(|e| std::io::Error::other(format!("roles: {e}")))?;
    let read_only = lookout.storage().is_read_only();
    let mut connections = JoinSet::new();
    let registry = Arc::new(cancel::CancelRegistry::default());
    let metrics = ConnectionMetrics::register(lookout.metrics());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let conn = Connection::new(&lookout, Arc::clone(&registry));
                let handlers = ConnectionHandlers {
                    startup: Arc::new(startup::Startup::new(Arc::clone(&conn), &options.authentication, read_only)),
                    conn,
                };
                let tls = options.tls.clone();
                // A second handle on a plain-text socket, to answer a client
                // whose message made the protocol decoder panic.
                let (socket, spare) = match tls {
                    None => spare_handle(socket),
                    Some(_) => (Ok(socket), None),
                };
                let Ok(socket) = socket else { continue };
                tracing::debug!(%peer, "connection opened");
                let open = metrics.opened();
                connections.spawn(async move {
                    let _open = open;
                    let served = std::panic::AssertUnwindSafe(
                        pgwire::tokio::process_socket(socket, tls, handlers),
                    )
                    .catch_unwind()
                    .await;
                    match served {
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "connection ended with an error");
                        }
                        Ok(Ok(())) => {}
                        Err(panic) => {
                            let what = panic_message(panic.as_ref());
                            tracing::warn!(%peer, panic = %what, "a client message could not be decoded; connection closed");
                            if let Some(mut spare) = spare {
                                let _ = spare.write_all(&fatal_protocol_error(&what)).await;
                                let _ = spare.shutdown().await;
                            }
                        }
                    }
                    tracing::debug!(%peer, "connection closed");
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let open = connections.len();
    if open > 0 {
        tracing::info!(
            open,
            grace_secs = options.shutdown_grace.as_secs(),
            "waiting for open connections"
        );
        let deadline = tokio::time::sleep(options.shutdown_grace);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    connections.abort_all();
                    break;
                }
                next = connections.join_next() => if next.is_none() { break },
            }
        }
    }
    Ok(())
}

/// The socket and a second handle on it (`None` if it cannot be cloned).
fn spare_handle(
    socket: tokio::net::TcpStream,
) -> (
    std::io::Result<tokio::net::TcpStream>,
    Option<tokio::net::TcpStream>,
) {
    let std_socket = match socket.into_std() {
        Ok(s) => s,
        Err(e) => return (Err(e), None),
    };
    let spare = std_socket
        .try_clone()
        .ok()
        .and_then(|s| tokio::net::TcpStream::from_std(s).ok());
    (tokio::net::TcpStream::from_std(std_socket), spare)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "malformed message".to_string())
}

/// An ErrorResponse (FATAL, 08P01) as the protocol frames it.
fn fatal_protocol_error(detail: &str) -> Vec<u8> {
    let mut fields = Vec::new();
    let message = format!("invalid frontend message: {detail}");
    for (tag, value) in [
        (b'S', "FATAL"),
        (b'V', "FATAL"),
        (b'C', "08P01"),
        (b'M', message.as_str()),
    ] {
        fields.push(tag);
        fields.extend(value.bytes().filter(|b| *b != 0));
        fields.push(0);
    }
    fields.push(0);
    let mut frame = vec![b'E'];
    frame.extend(((fields.len() + 4) as u32).to_be_bytes());
    frame.extend(fields);
    frame
}

/// Client connections, open and accepted.
#[derive(Clone)]
struct ConnectionMetrics {
    open: lookout_metrics::Gauge,
    accepted: lookout_metrics::Counter,
}

impl ConnectionMetrics {
    fn register(registry: &lookout_metrics::Registry) -> ConnectionMetrics {
        ConnectionMetrics {
            open: registry.register(
                "connections",
                "Open Postgres protocol connections",
                lookout_metrics::Gauge::default(),
            ),
            accepted: registry.register(
                "connections_accepted",
                "Postgres protocol connections accepted",
                lookout_metrics::Counter::default(),
            ),
        }
    }

    /// Counts a connection as open until the returned guard is dropped.
    fn opened(&self) -> OpenConnection {
        self.accepted.inc();
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

struct OpenConnection(lookout_metrics::Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
