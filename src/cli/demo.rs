//! `gamelake demo`: generate the demo lake, then show what gamelake answers on it.

use std::time::Instant;

use clap::Args;

use super::Context;
use super::printer::{Printer, run_text};
use crate::demo::{DemoOptions, generate};
use crate::error::Result;
use crate::output::Format;

/// The saved queries the demo shows, with their files (embedded, so the binary runs anywhere).
const SHOWCASE: [(&str, &str); 4] = [
    (
        "queries/dau_by_region.sql",
        include_str!("../../queries/dau_by_region.sql"),
    ),
    (
        "queries/retention_by_cohort.sql",
        include_str!("../../queries/retention_by_cohort.sql"),
    ),
    (
        "queries/top_spenders.sql",
        include_str!("../../queries/top_spenders.sql"),
    ),
    (
        "queries/friend_recommendations.sql",
        include_str!("../../queries/friend_recommendations.sql"),
    ),
];

/// Flags of `gamelake demo`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  gamelake demo                        100,000 players, one year, into ./lake
  gamelake --lake /tmp/demo demo --scale 0.01 --seed 7
  gamelake demo --replace              regenerate over existing demo tables")]
pub struct DemoArgs {
    /// Size: 1.0 is about 100,000 players (0.01 is a quick test lake).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub scale: f64,
    /// Random seed; the same seed and scale give identical rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Years of history, ending 2026-10-31.
    #[arg(long, default_value_t = 1)]
    pub years: u32,
    /// Overwrite demo tables that already exist in the lake (otherwise the demo refuses).
    #[arg(long)]
    pub replace: bool,
    /// Generate only; do not run the showcase queries.
    #[arg(long)]
    pub no_queries: bool,
}

/// Runs `gamelake demo`.
pub async fn run(context: &Context, args: DemoArgs) -> Result<()> {
    let options = DemoOptions {
        scale: args.scale,
        seed: args.seed,
        years: args.years,
        replace: args.replace,
    };
    options.validate()?;
    let session = context.session().await?;
    let started = Instant::now();
    generate(&session, &options).await?;
    eprintln!(
        "demo lake written in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !args.no_queries {
        let mut printer = Printer::new(Format::Table, None, true)?;
        for (file, sql) in SHOWCASE {
            let title = sql
                .lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("-- ");
            println!("\n{file}: {title}");
            let query_started = Instant::now();
            let mut shown = String::new();
            for line in sql.lines().filter(|l| !l.trim_start().starts_with("--")) {
                shown.push_str(line);
                shown.push('\n');
            }
            let rows = run_text(&session, &mut printer, &shown).await?;
            println!(
                "{rows} rows in {:.3}s",
                query_started.elapsed().as_secs_f64()
            );
        }
    }
    let url = session.lake().location().url();
    let lake = url
        .to_file_path()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|()| url.to_string());
    println!(
        "\nTotal {:.1}s. Next:\n  gamelake --lake {lake} sql                               interactive SQL (\\d lists tables)\n  gamelake --lake {lake} sql -f queries/arpu_by_region_month.sql\n  gamelake --lake {lake} lake history logs.events",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
