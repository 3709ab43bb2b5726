//! The users a server accepts, now: logins against their argon2 hashes, bounded so a flood of
//! handshakes cannot take every thread, and timed alike for unknown names and wrong passwords
//! (no user enumeration by timing); and the current grants of a token's user, so that a user
//! removed from the config (or given another role) is refused or changed at the next call.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::auth::{Principal, User, authenticate, check_users, hash_password};
use super::scram::Verifier;
use crate::error::{Error, Result};

/// How long a login waits for a free hashing thread before it is refused as busy.
const LOGIN_QUEUE_WAIT: Duration = Duration::from_secs(5);

/// The configured users and the bounded work of checking their passwords.
pub struct Directory {
    users: RwLock<Arc<Vec<User>>>,
    /// A user whose hash is of a random password: an unknown name is checked against it, so it
    /// is refused after the same work as a wrong password.
    decoy: User,
    /// Password checks (argon2, deliberately slow) that may run at once.
    hashing: Arc<Semaphore>,
    /// Derives the SCRAM salts of unknown names (see [`Directory::scram_verifier`]).
    decoy_secret: [u8; 16],
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("users", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl Directory {
    /// A directory of `users` (their hashes checked now); password checks run on at most half
    /// the cores at once, so a flood of logins leaves the other half to the queries.
    pub fn new(users: Vec<User>) -> Result<Self> {
        check_users(&users)?;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let cores = (cores / 2).max(1);
        let decoy_password = uuid::Uuid::new_v4().to_string();
        Ok(Self {
            users: RwLock::new(Arc::new(users)),
            decoy: User::new("", hash_password(&decoy_password)?, Default::default()),
            hashing: Arc::new(Semaphore::new(cores)),
            decoy_secret: *uuid::Uuid::new_v4().as_bytes(),
        })
    }

    /// The users now.
    pub fn current(&self) -> Arc<Vec<User>> {
        self.users
            .read()
            .map_or_else(|p| p.into_inner().clone(), |u| u.clone())
    }

    /// Replaces the users (a config reloaded): tokens of removed users stop working at their
    /// next call, changed roles and grants apply at once.
    pub fn replace(&self, users: Vec<User>) -> Result<()> {
        check_users(&users)?;
        let mut slot = self.users.write().unwrap_or_else(|p| p.into_inner());
        *slot = Arc::new(users);
        Ok(())
    }

    /// Whether no user is configured (a server with `--insecure-no-auth`).
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The user `name` with `password`, or None. Runs argon2 off the async workers, on at most
    /// half the cores at once; a login that waits longer than a few seconds for its turn is
    /// refused as busy.
    pub async fn login(&self, name: &str, password: &str) -> Result<Option<Principal>> {
        let permit = tokio::time::timeout(LOGIN_QUEUE_WAIT, self.hashing.clone().acquire_owned())
            .await
            .map_err(|_| {
                Error::Busy(
                    "too many logins at once: the server checks a few passwords at a time; retry in a moment"
                        .to_string(),
                )
            })?
            .map_err(|_| Error::Unavailable("the server is shutting down".to_string()))?;
        let users = self.current();
        let decoy = self.decoy.clone();
        let (name, password) = (name.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let known = users.iter().any(|u| u.name == name);
            if known {
                authenticate(&users, &name, &password).map(Principal::of)
            } else {
                // Same work as a wrong password, then no.
                let decoys = [decoy];
                let _ = authenticate(&decoys, "", &password);
                None
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("the password check failed: {e}")))
    }

    /// The SCRAM-SHA-256 verifier `name` logs in with: the user's `scram_sha256`, or, for an
    /// unknown name or a user without one, a decoy no password matches, with a salt that is the
    /// same on every try (so the answer does not tell whether the name exists).
    pub fn scram_verifier(&self, name: &str) -> Verifier {
        self.current()
            .iter()
            .find(|u| u.name == name)
            .and_then(|u| u.scram_sha256.as_deref())
            .and_then(|text| Verifier::parse(text, "scram_sha256").ok())
            .unwrap_or_else(|| Verifier::decoy(name, &self.decoy_secret))
    }

    /// The caller a token names, as configured now: None when the user is no longer there.
    pub fn principal(&self, claimed: &Principal) -> Option<Principal> {
        self.current()
            .iter()
            .find(|u| u.name == claimed.user)
            .map(Principal::of)
    }
}
