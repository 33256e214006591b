//! Lookout's Postgres wire protocol server.
//!
//! Built on [`pgwire`]: each client connection gets its own
//! [`lookout_query::Session`]; the simple and extended query protocols,
//! `COPY FROM STDIN` / `COPY TO STDOUT`, and SQLSTATE error codes are mapped
//! here. This crate knows nothing of files or storage: it speaks to the
//! database only through the SQL session.

mod cancel;
mod handler;
mod types;

use std::future::Future;
use std::time::Duration;

use lookout_query::Lookout;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::handler::{Connection, ConnectionHandlers};

/// Server behaviour that is not SQL.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// After shutdown is requested, connections get this long to finish
    /// their statements before they are closed.
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            shutdown_grace: Duration::from_secs(5),
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
    let mut connections = JoinSet::new();
    let registry = std::sync::Arc::new(cancel::CancelRegistry::default());
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
                let handlers = ConnectionHandlers {
                    conn: Connection::new(&lookout, std::sync::Arc::clone(&registry)),
                };
                tracing::debug!(%peer, "connection opened");
                connections.spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, None, handlers).await {
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
