//! `gamelake lake ...`: table inspection and maintenance.

use clap::Subcommand;

use super::Context;
use crate::error::Result;
use crate::lake::history::{history_batch, read_history};
use crate::lake::{TableRef, TableVersion};
use crate::output::{Format, write_stream};

/// Lake subcommands.
#[derive(Debug, Subcommand)]
pub enum LakeCommand {
    /// Show a table's commits, newest first (version, time, operation, rows, files, pipeline marker).
    History {
        /// The table, as schema.table.
        table: String,
        /// How many commits to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// How to print.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

/// Runs a lake subcommand.
pub async fn run(context: &Context, command: LakeCommand) -> Result<()> {
    match command {
        LakeCommand::History {
            table,
            limit,
            format,
        } => {
            let table = TableRef::parse(&table)?;
            let lake = context.lake()?;
            lake.check_reachable().await?;
            let dt = lake.open_table(&table, &TableVersion::Latest).await?;
            let commits = read_history(&dt, &table.to_string(), Some(limit)).await?;
            let batch = history_batch(&commits)?;
            let schema = batch.schema();
            let stream = Box::pin(
                datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::iter([Ok(batch)]),
                ),
            );
            let mut out = std::io::stdout();
            write_stream(format, stream, &mut out).await?;
            Ok(())
        }
    }
}
