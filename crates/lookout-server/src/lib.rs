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
mod roles;
mod startup;
mod tls;
mod types;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lookout_query::Lookout;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

pub use crate::auth::{SCRAM_ITERATIONS, User, Users, Verifier};
use crate::handler::{Connection, ConnectionHandlers};
pub use crate::roles::install_roles;
pub use crate::startup::Authentication;
pub use crate::tls::tls_acceptor;

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
    let mut connections = JoinSet::new();
    let registry = Arc::new(cancel::CancelRegistry::default());
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
                    startup: Arc::new(startup::Startup::new(Arc::clone(&conn), &options.authentication)),
                    conn,
                };
                let tls = options.tls.clone();
                tracing::debug!(%peer, "connection opened");
                connections.spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
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
