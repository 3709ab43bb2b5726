//! Who connects over the PostgreSQL protocol, checked against the same `[[users]]` as Flight
//! SQL: over TLS the client sends its password, checked against the argon2 hash; without TLS
//! the password never crosses the network: SCRAM-SHA-256 against the user's `scram_sha256`
//! verifier ([`crate::serving::scram`]). A server without users (`--insecure-no-auth`, loopback
//! only) lets everyone in as the reader `anonymous`.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::{
    ClientInfo, PgWireConnectionState, PidSecretKeyGenerator, RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};

use super::cancel::Sessions;
use crate::serving::Directory;
use crate::serving::auth::Principal;
use crate::serving::scram::{self, Exchange};

/// The version string clients see (`server_version`, `SELECT version()`): a PostgreSQL version
/// first, which drivers parse to pick their queries, then what answers.
pub const SERVER_VERSION: &str = concat!("15.0 (gamelake ", env!("CARGO_PKG_VERSION"), ")");

/// The startup handler: authentication, then the parameters and key a session starts with.
pub struct Login {
    users: Arc<Directory>,
    sessions: Arc<Sessions>,
    keys: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
}

/// Where a connection's login stands, kept with the connection.
enum Step {
    /// Waiting for the password (TLS).
    Password,
    /// Waiting for SCRAM's first message.
    ScramFirst,
    /// Waiting for SCRAM's proof.
    ScramFinal(Box<Exchange>),
}

/// The login step of a connection (in its session extensions).
#[derive(Default)]
struct LoginStep(Mutex<Option<Step>>);

impl Login {
    /// A startup handler checking `users`, registering connections for cancel requests.
    pub fn new(users: Arc<Directory>, sessions: Arc<Sessions>) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = SERVER_VERSION.to_string();
        parameters.is_superuser = false;
        Self {
            users,
            sessions,
            keys: RandomPidSecretKeyGenerator::default(),
            parameters,
        }
    }

    /// Lets the client in as `who`: its key for cancel requests, then the session parameters.
    async fn admit<C>(&self, client: &mut C, who: Principal) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = self.keys.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let extensions = client.session_extensions();
        extensions.insert(self.sessions.register(pid, key));
        extensions.insert(who);
        finish_authentication(client, &self.parameters).await
    }
}

#[async_trait]
impl StartupHandler for Login {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                let user = user_of(client);
                if self.users.is_empty() {
                    return self.admit(client, Principal::anonymous()).await;
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                let (step, ask) = if client.is_secure() {
                    (Step::Password, Authentication::CleartextPassword)
                } else {
                    (
                        Step::ScramFirst,
                        Authentication::SASL(vec![scram::MECHANISM.to_string()]),
                    )
                };
                if user.is_empty() {
                    return Err(refused(
                        "no user name given: connect with a user of [[users]]",
                    ));
                }
                set_step(client, step);
                client
                    .send(PgWireBackendMessage::Authentication(ask))
                    .await?;
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let user = user_of(client);
                match take_step(client) {
                    Some(Step::Password) => {
                        let password = message.into_password()?.password;
                        let who = self
                            .users
                            .login(&user, &password)
                            .await
                            .map_err(|e| refused(&e.to_string()))?
                            .ok_or_else(|| wrong_password(&user))?;
                        self.admit(client, who).await?;
                    }
                    Some(Step::ScramFirst) => {
                        let first = message.into_sasl_initial_response()?;
                        if first.auth_method != scram::MECHANISM {
                            return Err(refused(&format!(
                                "SASL mechanism {} is not offered; use {}",
                                first.auth_method,
                                scram::MECHANISM
                            )));
                        }
                        let data = first.data.unwrap_or_default();
                        let verifier = self.users.scram_verifier(&user);
                        let (reply, exchange) = scram::server_first(verifier, &data)
                            .map_err(|e| refused(&e.to_string()))?;
                        set_step(client, Step::ScramFinal(Box::new(exchange)));
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(reply.into_bytes().into()),
                            ))
                            .await?;
                    }
                    Some(Step::ScramFinal(exchange)) => {
                        let last = message.into_sasl_response()?;
                        let reply = exchange
                            .finish(&last.data)
                            .map_err(|e| refused(&e.to_string()))?
                            .ok_or_else(|| wrong_password(&user))?;
                        // The verifier proves the password; the user's grants are read now.
                        let who = self
                            .users
                            .principal(&Principal::new(&user, Default::default()))
                            .ok_or_else(|| wrong_password(&user))?;
                        client
                            .feed(PgWireBackendMessage::Authentication(
                                Authentication::SASLFinal(reply.into_bytes().into()),
                            ))
                            .await?;
                        self.admit(client, who).await?;
                    }
                    None => return Err(refused("a password message came before the startup")),
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The user the startup message named.
fn user_of<C: ClientInfo>(client: &C) -> String {
    client.metadata().get("user").cloned().unwrap_or_default()
}

fn set_step<C: ClientInfo>(client: &C, step: Step) {
    let slot = client
        .session_extensions()
        .get_or_insert_with(LoginStep::default);
    *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(step);
}

fn take_step<C: ClientInfo>(client: &C) -> Option<Step> {
    let slot = client.session_extensions().get::<LoginStep>()?;
    slot.0.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// PostgreSQL's answer to a failed login (SQLSTATE 28P01), the same for an unknown user, a
/// wrong password and a user without a SCRAM verifier.
fn wrong_password(user: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        "28P01".to_string(),
        format!(
            "password authentication failed for user \"{user}\" (without TLS the user needs scram_sha256 in [[users]], printed by `gamelake hash-password`; with TLS, sslmode=require, the password_hash is enough)"
        ),
    )))
}

/// A login refused for a reason other than the password (SQLSTATE 28000).
fn refused(message: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        "28000".to_string(),
        message.to_string(),
    )))
}
