//! `gamelake hash-password`: the argon2 hash of a password, for a `[[users]]` entry.

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{Error, Result};
use crate::serving::hash_password;

/// Runs `gamelake hash-password`: reads a password (first line of standard input) and prints
/// its argon2 hash for a `[[users]]` entry.
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
    println!("{}", hash_password(password)?);
    Ok(())
}
