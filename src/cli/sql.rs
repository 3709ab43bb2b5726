//! `gamelake sql`: statements from -c/-f, or a REPL.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;

use super::Context;
use crate::error::{Error, Result};
use crate::output::{Format, write_stream};
use crate::query::{Output, Session};

/// Flags of `gamelake sql`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gamelake sql -c \"CREATE TABLE shop.orders AS SELECT * FROM (VALUES (1,'a',10.5)) v(id,name,amount)\"
  gamelake sql -c \"SELECT * FROM shop.orders\" --format csv
  gamelake sql -c \"SELECT * FROM shop.\\\"orders@v0\\\"\"        time travel to version 0
  gamelake sql -c \"SELECT * FROM shop.\\\"orders\\$history\\\"\"     the table's commits
  gamelake sql -c \"ANALYZE shop.orders\"                     distinct counts for the planner
  gamelake sql -f queries/player_activity.sql --param player_id=42
  gamelake sql -f report.sql --format parquet -o out.parquet")]
pub struct SqlArgs {
    /// A SQL command to run (repeatable; run in order, each may hold several statements).
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    pub commands: Vec<String>,

    /// A SQL script to run (repeatable; after the -c commands).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// How to print query results.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Write query results to this file instead of standard output (required for parquet).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// A value for a `$name` placeholder in the SQL (repeatable): --param player_id=42.
    /// Numbers, dates (YYYY-MM-DD) and true/false are typed; anything else is text.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,

    /// Print no timing or status lines, only results.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Runs `gamelake sql`.
pub async fn run(context: &Context, args: SqlArgs) -> Result<()> {
    if args.format == Format::Parquet && args.output.is_none() {
        return Err(Error::Unsupported(
            "--format parquet needs -o FILE (parquet is binary; it does not go to a terminal)"
                .into(),
        ));
    }
    let session = context.session_with_params(&args.params).await?;
    if args.commands.is_empty() && args.files.is_empty() {
        return super::repl::run(&session).await;
    }
    let mut scripts: Vec<String> = args.commands.clone();
    for file in &args.files {
        scripts.push(std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?);
    }
    let mut printer = Printer::new(args.format, args.output.clone(), args.quiet)?;
    for script in scripts {
        for statement in session.parse(&script)? {
            let output = session.execute(statement).await?;
            printer.print(output).await?;
        }
    }
    Ok(())
}

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
