//! Who is calling: the users and signing key of the server, the Handshake's basic-auth login,
//! and the bearer token every other call carries.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet::STANDARD as STANDARD_ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::serving::auth::{Principal, Role, Signer, TokenError, User, authenticate};

/// Base64 of basic auth, with or without padding.
const BASIC_AUTH: GeneralPurpose = GeneralPurpose::new(
    &STANDARD_ALPHABET,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Who may connect, and how long what the server signs stays valid.
#[derive(Clone, Debug)]
pub struct Access {
    /// Configured users; empty means no authentication (only with `--insecure-no-auth`).
    pub users: Arc<Vec<User>>,
    /// Signs tokens, tickets and prepared-statement handles.
    pub signer: Signer,
    /// Lifetime of bearer tokens and prepared-statement handles.
    pub token_ttl: Duration,
    /// Lifetime of a ticket between GetFlightInfo and DoGet.
    pub ticket_ttl: Duration,
}

impl Access {
    /// The caller, from its bearer token (or anonymous when the server has no users).
    #[allow(clippy::result_large_err)]
    pub fn caller(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let header = metadata.get("authorization").and_then(|v| v.to_str().ok());
        if self.users.is_empty() {
            return Ok(Principal::anonymous());
        }
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Err(Status::unauthenticated(
                "no bearer token: authenticate with a Handshake (basic auth: user and password) first",
            ));
        };
        self.signer
            .verify::<Principal>(token.trim())
            .map_err(|e| match e {
                TokenError::Expired => {
                    Status::unauthenticated("the token has expired: authenticate again")
                }
                TokenError::Invalid => Status::unauthenticated("invalid token"),
            })
    }

    /// The Handshake: checks basic auth (user and password) against the configured users.
    pub async fn login(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        if self.users.is_empty() {
            return Ok(Principal::anonymous());
        }
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|h| h.strip_prefix("Basic "))
            .ok_or_else(|| {
                Status::unauthenticated("handshake needs basic auth (user and password)")
            })?;
        // Clients differ on padding (arrow-go sends none), so accept both.
        let decoded = BASIC_AUTH
            .decode(header.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::invalid_argument("malformed basic auth header"))?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("malformed basic auth header"))?;
        let users = self.users.clone();
        let (name, password) = (name.to_string(), password.to_string());
        // argon2 is deliberately slow: keep it off the async workers.
        let found = tokio::task::spawn_blocking(move || {
            authenticate(&users, &name, &password).map(|u| Principal {
                user: u.name.clone(),
                role: u.role,
            })
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
        found.ok_or_else(|| Status::unauthenticated("wrong user name or password"))
    }
}

/// A ticket or handle may only be used by the user it was issued to (or an admin).
#[allow(clippy::result_large_err)]
pub fn owned_by(who: &Principal, owner: &Principal) -> Result<(), Status> {
    if who.user == owner.user || who.role == Role::Admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "this ticket was issued to user {}, not {}",
            owner.user, who.user
        )))
    }
}
