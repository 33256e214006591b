//! The start of a connection: TLS requirement, then SCRAM-SHA-256 login when
//! authentication is on, or straight in when it is off.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::{ClientInfo, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::auth::{UserSource, Users};
use crate::handler::{ClientIdentity, Connection};

/// How clients get in; shared by all connections.
#[derive(Debug, Clone, Default)]
pub struct Authentication {
    /// Whether clients must log in; when off every client is let in as an
    /// admin (loopback only, the zero-config default).
    pub enabled: bool,
    /// Users who may log in (from the configuration and `CREATE ROLE`).
    pub users: Arc<Users>,
    /// Refuse clients that did not negotiate TLS.
    pub require_tls: bool,
}

/// One connection's startup handler.
pub(crate) struct Startup {
    conn: Arc<Connection>,
    require_tls: bool,
    /// SCRAM state for this connection, when authentication is on.
    login: Option<(
        SASLAuthStartupHandler<DefaultServerParameterProvider>,
        Arc<Users>,
    )>,
}

impl Startup {
    pub(crate) fn new(conn: Arc<Connection>, auth: &Authentication) -> Startup {
        let login = auth.enabled.then_some(&auth.users).map(|users| {
            let scram = ScramAuth::new(Arc::new(UserSource(Arc::clone(users))));
            let handler =
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram);
            (handler, Arc::clone(users))
        });
        Startup {
            conn,
            require_tls: auth.require_tls,
            login,
        }
    }
}

fn fatal(code: &str, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        code.to_owned(),
        message.to_owned(),
    )))
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls
            && !client.is_secure()
            && matches!(message, PgWireFrontendMessage::Startup(_))
        {
            return Err(fatal(
                "28000",
                "this server accepts only TLS connections (connect with sslmode=require)",
            ));
        }
        let Some((sasl, users)) = &self.login else {
            return StartupHandler::on_startup(self.conn.as_ref(), client, message).await;
        };
        sasl.on_startup(client, message).await?;
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            let identity = ClientIdentity::of(client);
            let access = users
                .get(identity.user())
                .map(|u| u.access)
                .ok_or_else(|| fatal("28P01", "the user was dropped while logging in"))?;
            self.conn.started(identity, access).await;
        }
        Ok(())
    }
}
