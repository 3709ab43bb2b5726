//! Printing what statements give, for `gamelake sql` and its REPL: rows in the chosen format
//! (with [`crate::output`]'s writers) to a file or standard output, status lines to standard
//! error.

use std::io::Write;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::output::{Format, write_stream};
use crate::query::{Output, Session};

/// Prints statement outputs: rows to the chosen output, status lines to standard error.
pub struct Printer {
    format: Format,
    out: Box<dyn Write + Send>,
    quiet: bool,
}

impl Printer {
    /// A printer for a format, writing to a file or to standard output.
    pub fn new(format: Format, output: Option<PathBuf>, quiet: bool) -> Result<Self> {
        let out: Box<dyn Write + Send> = match &output {
            Some(path) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(path).map_err(|e| Error::io(path, e))?,
            )),
            None => Box::new(std::io::stdout()),
        };
        Ok(Self { format, out, quiet })
    }

    /// Prints one statement's output; returns the rows printed.
    pub async fn print(&mut self, output: Output) -> Result<u64> {
        match output {
            Output::Rows(df) => {
                let stream = df.execute_stream().await.map_err(Error::from_datafusion)?;
                write_stream(self.format, stream, &mut self.out).await
            }
            Output::Done(message) => {
                if !self.quiet {
                    eprintln!("{message}");
                }
                Ok(0)
            }
        }
    }
}

/// Runs every statement of a text and prints it (used by the REPL).
pub async fn run_text(session: &Session, printer: &mut Printer, text: &str) -> Result<u64> {
    let mut rows = 0;
    for statement in session.parse(text)? {
        rows += printer.print(session.execute(statement).await?).await?;
    }
    Ok(rows)
}
