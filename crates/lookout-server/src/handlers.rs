//! The handlers pgwire runs for one connection: its startup (login) and
//! everything after it.

use std::sync::Arc;

use pgwire::api::PgWireServerHandlers;
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};

use crate::handler::Connection;
use crate::startup::Startup;

/// Hands pgwire the handlers of one connection.
pub(crate) struct ConnectionHandlers {
    pub(crate) conn: Arc<Connection>,
    pub(crate) startup: Arc<Startup>,
}

impl PgWireServerHandlers for ConnectionHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::clone(&self.conn)
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::clone(&self.conn)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        Arc::clone(&self.conn)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.conn.cancel_registry()
    }
}
