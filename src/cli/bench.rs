//! `gamelake bench`: runs query files several times in one warm session and reports each run's
//! time, for the benchmark scripts under `benches/` (and for anyone timing their own queries).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use serde_json::json;

use super::Context;
use crate::error::{Error, Result};
use crate::output::{Format, write_batches};
use crate::query::Session;

/// Flags of `gamelake bench`.
#[derive(Debug, Args)]
#[command(after_help = "Prints one JSON line per query on standard output:
  {\"query\":\"q01\",\"rows\":4,\"seconds\":[0.41,0.22,0.21],\"best\":0.21}
or {\"query\":..., \"error\":\"...\"} when it fails (the others still run; the exit code is 1).
A run is the whole statement: planning (with the Delta log) and execution, all rows collected.

Examples:
  gamelake --lake ./tpch bench benches/tpch/queries/*.sql --runs 3
  gamelake bench queries/daily_active_users.sql --param day=2026-11-24 --out results/")]
pub struct BenchArgs {
    /// SQL files to time, in order; the last statement of each is the measured query.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Runs per file; the first also warms caches, the best is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,

    /// Write each file's result (of its last run) to this folder as <file name>.parquet.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// A value for a `$name` placeholder (repeatable), as in `gamelake sql`.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// Runs `gamelake bench`.
pub async fn run(context: &Context, args: BenchArgs) -> Result<()> {
    let session = context.session_with_params(&args.params).await?;
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let bar = crate::progress::bar(
        u64::from(args.runs) * args.files.len() as u64,
        "runs",
        "bench",
    );
    let mut failed = 0;
    for file in &args.files {
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        bar.set_message(name.clone());
        let line = match time_file(&session, file, args.runs, &bar).await {
            Ok((seconds, result)) => {
                let rows: usize = result.1.iter().map(|b| b.num_rows()).sum();
                if let Some(dir) = &args.out {
                    write_parquet(&dir.join(format!("{name}.parquet")), result).await?;
                }
                let best = seconds.iter().copied().fold(f64::INFINITY, f64::min);
                json!({ "query": name, "rows": rows, "seconds": seconds, "best": best })
            }
            Err(e) => {
                failed += 1;
                json!({ "query": name, "error": e.to_string() })
            }
        };
        bar.suspend(|| println!("{line}"));
    }
    bar.finish_and_clear();
    if failed > 0 {
        return Err(Error::Invalid(format!(
            "{failed} of {} queries failed (see their lines above)",
            args.files.len()
        )));
    }
    Ok(())
}

/// A query's result: its schema and rows.
type Rows = (SchemaRef, Vec<RecordBatch>);

/// Runs a file `runs` times; answers each run's seconds and the last run's result.
async fn time_file(
    session: &Session,
    file: &PathBuf,
    runs: u32,
    bar: &indicatif::ProgressBar,
) -> Result<(Vec<f64>, Rows)> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::io(file, e))?;
    let mut seconds = Vec::new();
    let mut result: Rows = (Arc::new(Schema::empty()), Vec::new());
    for _ in 0..runs {
        let started = Instant::now();
        result = session
            .collect_last(&text)
            .await?
            .unwrap_or_else(|| (Arc::new(Schema::empty()), Vec::new()));
        seconds.push(started.elapsed().as_secs_f64());
        bar.inc(1);
    }
    Ok((seconds, result))
}

async fn write_parquet(path: &PathBuf, (schema, batches): Rows) -> Result<()> {
    let mut out =
        std::io::BufWriter::new(std::fs::File::create(path).map_err(|e| Error::io(path, e))?);
    write_batches(Format::Parquet, schema, batches, &mut out).await?;
    Ok(())
}
