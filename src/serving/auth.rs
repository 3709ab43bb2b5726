//! Who may connect: users from the config (argon2 password hashes), their roles, and the signed
//! bearer tokens the handshake hands out.
//!
//! Tokens and tickets are signed with one HMAC-SHA256 key (`--token-secret`), so every replica
//! behind a load balancer that shares the key accepts what another issued. The format is
//! `base64url(json).base64url(mac)`: a JWT library would add algorithm negotiation we do not
//! want (one algorithm, one key), so these twenty lines are written here.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};

/// What a user may do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and metadata only.
    #[default]
    Reader,
    /// Also DDL, DML and `system.*` tables (the query log).
    Admin,
}

/// One `[[users]]` entry of the config.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Login name.
    pub name: String,
    /// An argon2 PHC string, as printed by `gamelake hash-password`.
    pub password_hash: String,
    /// The same password as a SCRAM-SHA-256 verifier (`SCRAM-SHA-256$4096:...`, printed by
    /// `gamelake hash-password`, or copied from PostgreSQL's `pg_authid.rolpassword`): lets
    /// the user log in over the PostgreSQL protocol without TLS, the password never sent.
    #[serde(default)]
    pub scram_sha256: Option<String>,
    /// `reader` (default) or `admin`.
    #[serde(default)]
    pub role: Role,
    /// May read PostgreSQL's tables through the `pg` catalog of `--pg-url` (readers only:
    /// admins always may; default false).
    #[serde(default)]
    pub postgres: bool,
    /// Groups the user belongs to, which access rules may name (`group = "analysts_bj"`).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Attributes access rules may use in row filters and masks through
    /// `user_attribute('name')`, e.g. `attributes = { region = "bj" }`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl User {
    /// A user with a password hash (from [`hash_password`]) and a role, without grants.
    pub fn new(name: &str, password_hash: String, role: Role) -> Self {
        Self {
            name: name.to_string(),
            password_hash,
            scram_sha256: None,
            role,
            postgres: false,
            groups: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Hashes a password into an argon2id PHC string (for the `password_hash` of a user).
pub fn hash_password(password: &str) -> Result<String> {
    // 16 random bytes from uuid's v4 generator (the OS RNG): argon2's own salt generator needs
    // a rand_core feature that only dev-dependencies happen to turn on.
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| Error::Internal(format!("cannot make a salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("cannot hash the password: {e}")))
}

/// Checks every user's hash parses, so a typo fails at start-up and not at the first login.
pub fn check_users(users: &[User]) -> Result<()> {
    for user in users {
        PasswordHash::new(&user.password_hash).map_err(|e| {
            Error::Invalid(format!(
                "user {}: password_hash is not an argon2 PHC string ({e}); make one with `gamelake hash-password`",
                user.name
            ))
        })?;
        if let Some(verifier) = &user.scram_sha256 {
            super::scram::Verifier::parse(verifier, &format!("user {}: scram_sha256", user.name))?;
        }
    }
    Ok(())
}

/// The user whose name and password match, if any.
pub fn authenticate<'a>(users: &'a [User], name: &str, password: &str) -> Option<&'a User> {
    let user = users.iter().find(|u| u.name == name)?;
    let hash = PasswordHash::new(&user.password_hash).ok()?;
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .ok()
        .map(|()| user)
}

/// Who is calling: a token's user, with the role and grants the server's users give it now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// User name (`anonymous` when the server runs without authentication).
    pub user: String,
    /// The user's role.
    pub role: Role,
    /// May read the `pg` catalog (see [`User::postgres`]).
    #[serde(default)]
    pub postgres: bool,
    /// The user's groups (see [`User::groups`]).
    #[serde(default)]
    pub groups: Vec<String>,
    /// The user's attributes (see [`User::attributes`]).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

impl Principal {
    /// A principal with a role and no grants.
    pub fn new(user: &str, role: Role) -> Self {
        Self {
            user: user.to_string(),
            role,
            postgres: false,
            groups: Vec::new(),
            attributes: BTreeMap::new(),
        }
    }

    /// What a configured user may do.
    pub fn of(user: &User) -> Self {
        Self {
            user: user.name.clone(),
            role: user.role,
            postgres: user.postgres,
            groups: user.groups.clone(),
            attributes: user.attributes.clone(),
        }
    }

    /// Everyone, on a server without users (`--insecure-no-auth`): a reader.
    pub fn anonymous() -> Self {
        Self::new("anonymous", Role::Reader)
    }
}

/// A signed, expiring envelope around any payload.
#[derive(Serialize, Deserialize)]
struct Signed<T> {
    /// Expiry, seconds since the Unix epoch.
    exp: u64,
    /// What the signer vouches for.
    body: T,
}

/// Signs and checks tokens and tickets with one key.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    /// A signer with a shared secret (replicas that share it accept each other's tickets).
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: secret.to_vec(),
        }
    }

    /// A signer with a random key: tokens and tickets are only valid on this process.
    pub fn random() -> Self {
        let key = [
            uuid::Uuid::new_v4().into_bytes(),
            uuid::Uuid::new_v4().into_bytes(),
        ]
        .concat();
        Self { key }
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }

    /// Signs `body`, valid for `ttl`.
    pub fn sign<T: Serialize>(&self, body: &T, ttl: Duration) -> Result<String> {
        let exp = now_secs() + ttl.as_secs().max(1);
        let json = serde_json::to_vec(&Signed { exp, body })
            .map_err(|e| Error::Internal(format!("cannot encode a ticket: {e}")))?;
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mac = self.mac(payload.as_bytes()).finalize().into_bytes();
        Ok(format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac)))
    }

    /// Checks the signature and expiry of a token made by [`Signer::sign`] and returns its body.
    pub fn verify<T: DeserializeOwned>(&self, token: &str) -> std::result::Result<T, TokenError> {
        let (payload, mac) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| TokenError::Invalid)?;
        self.mac(payload.as_bytes())
            .verify_slice(&mac)
            .map_err(|_| TokenError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Invalid)?;
        let signed: Signed<T> = serde_json::from_slice(&json).map_err(|_| TokenError::Invalid)?;
        if signed.exp < now_secs() {
            return Err(TokenError::Expired);
        }
        Ok(signed.body)
    }
}

/// Why a token or ticket was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not signed by this server's key (or not a token at all).
    Invalid,
    /// Signed, but past its expiry.
    Expired,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_reject_tampering_and_other_keys() {
        let signer = Signer::new(b"k1");
        let p = Principal::new("ana", Role::Reader);
        let token = signer.sign(&p, Duration::from_secs(60)).unwrap();
        assert_eq!(signer.verify::<Principal>(&token).unwrap(), p);
        assert_eq!(
            Signer::new(b"k2").verify::<Principal>(&token).unwrap_err(),
            TokenError::Invalid
        );
        let admin = Principal::new("ana", Role::Admin);
        let forged_body = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&Signed {
                exp: u64::MAX,
                body: admin,
            })
            .unwrap(),
        );
        let mac = token.split_once('.').unwrap().1;
        assert_eq!(
            signer
                .verify::<Principal>(&format!("{forged_body}.{mac}"))
                .unwrap_err(),
            TokenError::Invalid
        );
    }

    #[test]
    fn expired_tokens_are_refused() {
        let signer = Signer::random();
        let json = serde_json::to_vec(&Signed { exp: 1, body: 5u8 }).unwrap();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mac = URL_SAFE_NO_PAD.encode(signer.mac(payload.as_bytes()).finalize().into_bytes());
        assert_eq!(
            signer
                .verify::<u8>(&format!("{payload}.{mac}"))
                .unwrap_err(),
            TokenError::Expired
        );
    }

    #[test]
    fn passwords_hash_and_verify() {
        let users = vec![User::new(
            "ana",
            hash_password("s3cret").unwrap(),
            Role::Admin,
        )];
        check_users(&users).unwrap();
        assert!(authenticate(&users, "ana", "s3cret").is_some());
        assert!(authenticate(&users, "ana", "wrong").is_none());
        assert!(authenticate(&users, "bob", "s3cret").is_none());
        let bad = vec![User::new("x", "plain".into(), Role::Reader)];
        assert!(
            check_users(&bad)
                .unwrap_err()
                .to_string()
                .contains("hash-password")
        );
    }
}
