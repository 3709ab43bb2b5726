//! `gamelake hash-password`: a password's argon2 hash and SCRAM-SHA-256 verifier, as the two
//! lines of a `[[users]]` entry.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{Error, Result};
use crate::serving::hash_password;
use crate::serving::scram::Verifier;

/// Runs `gamelake hash-password`: reads a password (first line of standard input) and prints
/// `password_hash = "..."` (argon2, for Flight SQL and PostgreSQL logins over TLS) and
/// `scram_sha256 = "..."` (for PostgreSQL logins without TLS), ready to paste into `[[users]]`.
pub fn run() -> Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Error::io("<stdin>", e))?;
    let password = line.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(Error::Invalid(
            "empty password: type it on standard input, e.g. `printf '%s' \"$PW\" | gamelake hash-password`".to_string(),
        ));
    }
    println!("password_hash = \"{}\"", hash_password(password)?);
    println!("scram_sha256 = \"{}\"", Verifier::new(password));
    Ok(())
}
