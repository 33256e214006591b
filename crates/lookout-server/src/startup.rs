//! The start of a connection: TLS requirement, then SCRAM-SHA-256 login when
//! authentication is on, or straight in when it is off.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{ClientInfo, METADATA_USER, PgWireConnectionState, PidSecretKeyGenerator};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication as AuthMessage;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use crate::auth::Users;
use crate::handler::{ClientIdentity, Connection};
use crate::scram::{self, AwaitingProof, ScramError};
use lookout_query::SqlState;

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
    /// The TLS certificate's `tls-server-end-point` data
    /// ([`crate::tls_server_end_point`]): with it, TLS clients are offered
    /// SCRAM-SHA-256-PLUS (channel binding).
    pub tls_server_end_point: Option<Arc<[u8]>>,
}

/// Where a connection's SCRAM login stands.
enum Login {
    /// Waiting for the client's first SCRAM message.
    Started,
    /// The server's first message went out; waiting for the proof.
    AwaitingProof(Box<AwaitingProof>),
    /// Over (logged in, or failed).
    Done,
}

/// One connection's startup handler.
pub(crate) struct Startup {
    conn: Arc<Connection>,
    require_tls: bool,
    /// Who may log in, when authentication is on.
    users: Option<Arc<Users>>,
    /// Channel binding data, offered to TLS clients.
    end_point: Option<Arc<[u8]>>,
    login: Mutex<Login>,
    /// Whether the server is a read-only replica, which it reports as a
    /// hot standby does.
    read_only: bool,
}

impl Startup {
    pub(crate) fn new(conn: Arc<Connection>, auth: &Authentication, read_only: bool) -> Startup {
        Startup {
            conn,
            require_tls: auth.require_tls,
            users: auth.enabled.then(|| Arc::clone(&auth.users)),
            end_point: auth.tls_server_end_point.clone(),
            login: Mutex::new(Login::Started),
            read_only,
        }
    }

    /// The parameters reported after login. `in_hot_standby` and
    /// `default_transaction_read_only` tell drivers looking for the
    /// primary (libpq's `target_session_attrs`) to pass a replica by.
    fn parameters(&self) -> DefaultServerParameterProvider {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.in_hot_standby = self.read_only;
        parameters.default_transaction_read_only = self.read_only;
        parameters
    }

    /// The channel binding data to offer this client: over TLS only.
    fn binding_data<C: ClientInfo>(&self, client: &C) -> Option<Arc<[u8]>> {
        self.end_point.clone().filter(|_| client.is_secure())
    }

    fn take_login(&self) -> Login {
        std::mem::replace(
            &mut *self.login.lock().unwrap_or_else(|p| p.into_inner()),
            Login::Done,
        )
    }
}

fn fatal(state: SqlState, message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_owned(),
        state.code().to_owned(),
        message.to_owned(),
    )))
}

/// PostgreSQL's answer to every failed password login, whatever the cause
/// (wrong password, unknown user, broken exchange), so it tells nothing.
fn login_failed<C: ClientInfo>(client: &C, why: &ScramError) -> PgWireError {
    let user = user_of(client);
    tracing::info!(user, ?why, "password authentication failed");
    fatal(
        SqlState::InvalidPassword,
        &format!("password authentication failed for user \"{user}\""),
    )
}

fn user_of<C: ClientInfo>(client: &C) -> String {
    client
        .metadata()
        .get(METADATA_USER)
        .cloned()
        .unwrap_or_default()
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
                SqlState::InvalidAuthorizationSpecification,
                "this server accepts only TLS connections (connect with sslmode=require)",
            ));
        }
        let Some(users) = &self.users else {
            // Authentication off: every client is let in, as an admin.
            if let PgWireFrontendMessage::Startup(ref startup) = message {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let (pid, secret) = crate::cancel::PID_GENERATOR.generate(client);
                client.set_pid_and_secret_key(pid, secret);
                finish_authentication(client, &self.parameters()).await?;
                self.conn
                    .started(ClientIdentity::of(client), lookout_query::Access::Admin)
                    .await;
            }
            return Ok(());
        };
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let mut mechanisms = Vec::new();
                if self.binding_data(client).is_some() {
                    // PostgreSQL lists it first too.
                    mechanisms.push(scram::MECHANISM_PLUS.to_string());
                }
                mechanisms.push(scram::MECHANISM.to_string());
                client
                    .send(PgWireBackendMessage::Authentication(AuthMessage::SASL(
                        mechanisms,
                    )))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => match self.take_login() {
                Login::Started => {
                    let first = message.into_sasl_initial_response()?;
                    let offered = self.binding_data(client);
                    let binding = match (first.auth_method.as_str(), offered.as_deref()) {
                        (scram::MECHANISM, None) => scram::Binding::NotOffered,
                        (scram::MECHANISM, Some(_)) => scram::Binding::Declined,
                        (scram::MECHANISM_PLUS, Some(data)) => scram::Binding::Chosen(data),
                        (other, _) => {
                            return Err(fatal(
                                SqlState::InvalidAuthorizationSpecification,
                                &format!("SASL mechanism {other} was not offered"),
                            ));
                        }
                    };
                    let keys = users.login_keys(&user_of(client));
                    let data = first.data.unwrap_or_default();
                    let (reply, waiting) = scram::server_first(&data, keys, binding)
                        .map_err(|e| login_failed(client, &e))?;
                    *self.login.lock().unwrap_or_else(|p| p.into_inner()) =
                        Login::AwaitingProof(Box::new(waiting));
                    client
                        .send(PgWireBackendMessage::Authentication(
                            AuthMessage::SASLContinue(Bytes::from(reply)),
                        ))
                        .await?;
                }
                Login::AwaitingProof(waiting) => {
                    let response = message.into_sasl_response()?;
                    let reply = waiting
                        .verify(&response.data)
                        .map_err(|e| login_failed(client, &e))?;
                    let identity_name = user_of(client);
                    let user = users.get(&identity_name).ok_or_else(|| {
                        fatal(
                            SqlState::InvalidPassword,
                            "the user was dropped while logging in",
                        )
                    })?;
                    let admission = users
                        .admit(&identity_name, &user)
                        .map_err(|e| fatal(SqlState::TooManyConnections, &e))?;
                    client
                        .send(PgWireBackendMessage::Authentication(
                            AuthMessage::SASLFinal(Bytes::from(reply)),
                        ))
                        .await?;
                    let (pid, secret) = crate::cancel::PID_GENERATOR.generate(client);
                    client.set_pid_and_secret_key(pid, secret);
                    finish_authentication(client, &self.parameters()).await?;
                    self.conn
                        .started(ClientIdentity::of(client), user.access)
                        .await;
                    self.conn.held_to(admission, user.limits).await;
                }
                Login::Done => {
                    return Err(fatal(
                        SqlState::ProtocolViolation,
                        "unexpected password message",
                    ));
                }
            },
            _ => {}
        }
        Ok(())
    }
}
