//! SCRAM-SHA-256 (RFC 5802, RFC 7677) on the server's side, for the PostgreSQL wire protocol's
//! password login without TLS.
//!
//! A user's `scram_sha256` verifier is PostgreSQL's own format,
//! `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>` (what `pg_authid.rolpassword`
//! holds, and what `gamelake hash-password` prints): it proves a password without holding one.
//! pgwire's SCRAM implementation needs the salted password itself, from which a client's proof
//! can be forged, so the exchange is written here over the stored keys, as PostgreSQL does it.
//! Passwords are used as UTF-8 bytes without SASLprep, which is what PostgreSQL does with a
//! password SASLprep would refuse, and equal for ASCII passwords either way.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The mechanism's name on the wire.
pub const MECHANISM: &str = "SCRAM-SHA-256";

/// PBKDF2 iterations of a new verifier (PostgreSQL's default).
const ITERATIONS: u32 = 4096;

/// The longest SCRAM message read (a nonce, a proof and a few fields need far less).
const MAX_MESSAGE: usize = 1024;

type HmacSha256 = Hmac<Sha256>;

/// A parsed `SCRAM-SHA-256$...` verifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verifier {
    iterations: u32,
    salt: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Verifier {
    /// A verifier of `password` with a fresh random salt.
    pub fn new(password: &str) -> Self {
        let salt = uuid::Uuid::new_v4().as_bytes().to_vec();
        Self::with_salt(password, salt, ITERATIONS)
    }

    fn with_salt(password: &str, salt: Vec<u8>, iterations: u32) -> Self {
        let salted = salted_password(password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        Self {
            iterations,
            stored_key: Sha256::digest(&client_key).to_vec(),
            server_key: hmac(&salted, b"Server Key"),
            salt,
        }
    }

    /// A verifier no password matches, with a salt derived from `name` and `secret` (the same
    /// each time): an unknown user is answered like a known one and refused at the end.
    pub fn decoy(name: &str, secret: &[u8]) -> Self {
        let salt = hmac(secret, name.as_bytes())[..16].to_vec();
        Self {
            iterations: ITERATIONS,
            salt,
            stored_key: hmac(secret, b"stored key"),
            server_key: hmac(secret, b"server key"),
        }
    }

    /// Parses PostgreSQL's format; `what` names the field in errors.
    pub fn parse(text: &str, what: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Invalid(format!(
                "{what}: not a SCRAM-SHA-256 verifier ({why}); expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> as printed by `gamelake hash-password`"
            ))
        };
        let rest = text
            .strip_prefix("SCRAM-SHA-256$")
            .ok_or_else(|| bad("it does not start with SCRAM-SHA-256$"))?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| bad("no keys"))?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| bad("no salt"))?;
        let (stored, server) = keys.split_once(':').ok_or_else(|| bad("no ServerKey"))?;
        let iterations: u32 = iterations
            .parse()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| bad("the iteration count is not a positive number"))?;
        let decode = |part: &str, name: &str| {
            STANDARD
                .decode(part)
                .map_err(|_| bad(&format!("{name} is not base64")))
        };
        let verifier = Self {
            iterations,
            salt: decode(salt, "the salt")?,
            stored_key: decode(stored, "StoredKey")?,
            server_key: decode(server, "ServerKey")?,
        };
        if verifier.stored_key.len() != 32 || verifier.server_key.len() != 32 {
            return Err(bad("a key is not 32 bytes"));
        }
        Ok(verifier)
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SCRAM-SHA-256${}:{}${}:{}",
            self.iterations,
            STANDARD.encode(&self.salt),
            STANDARD.encode(&self.stored_key),
            STANDARD.encode(&self.server_key)
        )
    }
}

/// The server's side after its first message, waiting for the client's proof.
#[derive(Debug)]
pub struct Exchange {
    verifier: Verifier,
    gs2_header: String,
    nonce: String,
    client_first_bare: String,
    server_first: String,
}

/// Answers the client's first message (`n,,n=<user>,r=<nonce>`) with the server's first
/// (`r=<nonce>,s=<salt>,i=<iterations>`). Channel binding is not offered, so a client that
/// demands it (`p=...`) is refused.
pub fn server_first(verifier: Verifier, client_first: &[u8]) -> Result<(String, Exchange)> {
    let text = message_text(client_first)?;
    let mut parts = text.splitn(3, ',');
    let (binding, authzid, bare) = match (parts.next(), parts.next(), parts.next()) {
        (Some(b), Some(a), Some(bare)) => (b, a, bare),
        _ => return Err(malformed("the client's first message")),
    };
    if binding.starts_with("p=") {
        return Err(Error::Invalid(
            "SCRAM channel binding (SCRAM-SHA-256-PLUS) is not offered by this server".to_string(),
        ));
    }
    if !matches!(binding, "n" | "y") || !authzid.is_empty() && !authzid.starts_with("a=") {
        return Err(malformed("the client's first message"));
    }
    let client_nonce = bare
        .split(',')
        .find_map(|attr| attr.strip_prefix("r="))
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic() && b != b','))
        .ok_or_else(|| malformed("the client's first message (no nonce)"))?;
    let server_nonce = STANDARD.encode(uuid::Uuid::new_v4().as_bytes());
    let nonce = format!("{client_nonce}{server_nonce}");
    let server_first = format!(
        "r={nonce},s={},i={}",
        STANDARD.encode(&verifier.salt),
        verifier.iterations
    );
    let exchange = Exchange {
        verifier,
        gs2_header: format!("{binding},{authzid},"),
        nonce,
        client_first_bare: bare.to_string(),
        server_first: server_first.clone(),
    };
    Ok((server_first, exchange))
}

impl Exchange {
    /// Checks the client's final message (`c=...,r=...,p=<proof>`) and returns the server's
    /// final (`v=<signature>`) when the proof is right; a wrong proof is `Ok(None)`.
    pub fn finish(&self, client_final: &[u8]) -> Result<Option<String>> {
        let text = message_text(client_final)?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or_else(|| malformed("the client's final message (no proof)"))?;
        let mut attrs = without_proof.split(',');
        let binding = attrs.next().and_then(|a| a.strip_prefix("c="));
        let nonce = attrs.next().and_then(|a| a.strip_prefix("r="));
        if binding != Some(STANDARD.encode(&self.gs2_header).as_str()) {
            return Err(malformed("the client's final message (channel binding)"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(malformed("the client's final message (nonce)"));
        }
        let proof = STANDARD
            .decode(proof)
            .map_err(|_| malformed("the client's final message (proof)"))?;
        let auth_message = format!(
            "{},{},{without_proof}",
            self.client_first_bare, self.server_first
        );
        let signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Ok(None);
        }
        let client_key: Vec<u8> = proof.iter().zip(&signature).map(|(p, s)| p ^ s).collect();
        let computed = Sha256::digest(&client_key);
        // Constant time: every byte compared whatever the first difference.
        let differs = computed
            .iter()
            .zip(&self.verifier.stored_key)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if differs != 0 {
            return Ok(None);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(Some(format!("v={}", STANDARD.encode(server_signature))))
    }
}

fn message_text(bytes: &[u8]) -> Result<&str> {
    if bytes.len() > MAX_MESSAGE {
        return Err(malformed("a SCRAM message (too long)"));
    }
    std::str::from_utf8(bytes).map_err(|_| malformed("a SCRAM message (not UTF-8)"))
}

fn malformed(what: &str) -> Error {
    Error::Invalid(format!("malformed SCRAM exchange: {what}"))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// PBKDF2-HMAC-SHA256 with one block of output (SCRAM's `Hi`).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
    let mut block = salt.to_vec();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &block);
    let mut result = u.clone();
    for _ in 1..iterations {
        u = hmac(password, &u);
        result.iter_mut().zip(&u).for_each(|(r, x)| *r ^= x);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's side, as RFC 5802 computes it.
    fn client_final(password: &str, client_first_bare: &str, server_first: &str) -> String {
        let mut salt = "";
        let mut iterations = 0;
        let mut nonce = "";
        for attr in server_first.split(',') {
            match attr.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = v,
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = salted_password(
            password.as_bytes(),
            &STANDARD.decode(salt).unwrap(),
            iterations,
        );
        let client_key = hmac(&salted, b"Client Key");
        let stored_key = Sha256::digest(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = hmac(&stored_key, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        format!("{without_proof},p={}", STANDARD.encode(proof))
    }

    #[test]
    fn the_right_password_passes_and_a_wrong_one_does_not() {
        let verifier = Verifier::parse(&Verifier::new("s3cret").to_string(), "test").unwrap();
        for (password, passes) in [("s3cret", true), ("s3cret!", false)] {
            let bare = "n=,r=abcdefgh";
            let (first, exchange) =
                server_first(verifier.clone(), format!("n,,{bare}").as_bytes()).unwrap();
            let last = client_final(password, bare, &first);
            assert_eq!(exchange.finish(last.as_bytes()).unwrap().is_some(), passes);
        }
    }

    #[test]
    fn rfc_7677_example_exchange() {
        // RFC 7677, section 3: user "user", password "pencil".
        let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let verifier = Verifier::with_salt("pencil", salt, 4096);
        let exchange = Exchange {
            verifier: Verifier::parse(&verifier.to_string(), "test").unwrap(),
            gs2_header: "n,,".to_string(),
            nonce: "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".to_string(),
            client_first_bare: "n=user,r=rOprNGfwEbeRWgbNEkqO".to_string(),
            server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096".to_string(),
        };
        let client_final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
        assert_eq!(
            exchange.finish(client_final.as_bytes()).unwrap().as_deref(),
            Some("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
        );
        assert!(Verifier::parse("md5abc", "users[0].scram_sha256").is_err());
        assert!(Verifier::parse("SCRAM-SHA-256$x:AA==$AA==:AA==", "t").is_err());
    }

    #[test]
    fn channel_binding_demands_and_garbage_are_refused() {
        let verifier = Verifier::new("x");
        assert!(server_first(verifier.clone(), b"p=tls-server-end-point,,n=,r=abc").is_err());
        assert!(server_first(verifier.clone(), b"garbage").is_err());
        assert!(server_first(verifier.clone(), &vec![b'a'; 5000]).is_err());
        let (_, exchange) = server_first(verifier, b"n,,n=,r=abc").unwrap();
        assert!(exchange.finish(b"c=biws,r=wrongnonce,p=AAAA").is_err());
    }
}
