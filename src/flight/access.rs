//! Who is calling: the Handshake's basic-auth login and the bearer token every other call
//! carries, checked against the server's users as they are now ([`Directory`]).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::alphabet::STANDARD as STANDARD_ALPHABET;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use tonic::Status;
use tonic::metadata::MetadataMap;

use super::wire::to_status;
use crate::serving::Directory;
use crate::serving::auth::{Principal, Role, Signer, TokenError};

/// Base64 of basic auth, with or without padding.
const BASIC_AUTH: GeneralPurpose = GeneralPurpose::new(
    &STANDARD_ALPHABET,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The longest basic-auth header read (a user name and password, base64): more is refused
/// before decoding.
const MAX_BASIC_AUTH: usize = 4096;

/// Who may connect, and how long what the server signs stays valid.
#[derive(Clone, Debug)]
pub struct Access {
    /// Configured users; none means no authentication (only with `--insecure-no-auth`).
    pub users: Arc<Directory>,
    /// Signs tokens, tickets and prepared-statement handles.
    pub signer: Signer,
    /// Lifetime of bearer tokens and prepared-statement handles.
    pub token_ttl: Duration,
    /// Lifetime of a ticket between GetFlightInfo and DoGet.
    pub ticket_ttl: Duration,
}

impl Access {
    /// The caller, from its bearer token (or anonymous when the server has no users), with
    /// the role and grants its user has now; a token of a user no longer configured is refused.
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
        let claimed = self
            .signer
            .verify::<Principal>(token.trim())
            .map_err(|e| match e {
                TokenError::Expired => {
                    Status::unauthenticated("the token has expired: authenticate again")
                }
                TokenError::Invalid => Status::unauthenticated("invalid token"),
            })?;
        self.users.principal(&claimed).ok_or_else(|| {
            Status::unauthenticated(format!(
                "user {} is no longer allowed on this server: authenticate again",
                claimed.user
            ))
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
        if header.len() > MAX_BASIC_AUTH {
            return Err(Status::invalid_argument("basic auth header too long"));
        }
        // Clients differ on padding (arrow-go sends none), so accept both.
        let decoded = BASIC_AUTH
            .decode(header.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| Status::invalid_argument("malformed basic auth header"))?;
        let (name, password) = decoded
            .split_once(':')
            .ok_or_else(|| Status::invalid_argument("malformed basic auth header"))?;
        self.users
            .login(name, password)
            .await
            .map_err(to_status)?
            .ok_or_else(|| Status::unauthenticated("wrong user name or password"))
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
