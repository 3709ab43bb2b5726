//! `gamelake sql`: statements from -c/-f, or a REPL.

use std::path::PathBuf;

use clap::Args;

use super::Context;
use super::printer::Printer;
use crate::error::{Error, Result};
use crate::output::Format;

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
        return Err(Error::Invalid(
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
