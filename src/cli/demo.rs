//! `gamelake demo`: generate the demo lake, then show what gamelake answers on it.

use std::time::Instant;

use clap::Args;

use super::Context;
use super::printer::{Printer, run_text};
use crate::demo::{DemoOptions, generate};
use crate::error::Result;
use crate::output::Format;
use crate::pipeline::{Mode, TableConfig, publish};
use crate::sources::postgres::{connect, pg_error};

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
  gamelake demo --replace              regenerate over existing demo tables
  gamelake demo --end 2026-10-31       the same rows on any day (data ends on that date)
  gamelake demo --to-postgres postgres://postgres@127.0.0.1/game
                                       also fill PostgreSQL for the pipelines/ examples")]
pub struct DemoArgs {
    /// Size: 1.0 is about 100,000 players (0.01 is a quick test lake).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub scale: f64,
    /// Random seed; the same seed and scale give identical rows.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Years of history, ending on --end.
    #[arg(long, default_value_t = 1)]
    pub years: u32,
    /// The last day of data, YYYY-MM-DD [default: yesterday, in the game's server zone
    /// +08:00]. Give it to regenerate the same rows on another day (with the same --seed,
    /// --scale and --years).
    #[arg(long, value_name = "DATE")]
    pub end: Option<chrono::NaiveDate>,
    /// Overwrite demo tables that already exist in the lake (otherwise the demo refuses).
    #[arg(long)]
    pub replace: bool,
    /// Generate only; do not run the showcase queries.
    #[arg(long)]
    pub no_queries: bool,
    /// Also load the demo's OLTP tables into the PostgreSQL database at URL, as the example
    /// pipelines in `pipelines/` read them: `public.players`, `public.items`,
    /// `public.friendships` and `public.purchases` (with an `updated_at` cursor set by now()),
    /// each with its primary key. Tables that exist are refilled in one transaction each.
    #[arg(long, value_name = "URL")]
    pub to_postgres: Option<String>,
}

/// The demo's OLTP tables as PostgreSQL holds them: (PostgreSQL table, lake query, key).
const OLTP_TABLES: [(&str, &str, &[&str]); 4] = [
    (
        "public.players",
        "SELECT * FROM game.players",
        &["player_id"],
    ),
    ("public.items", "SELECT * FROM game.items", &["item_id"]),
    (
        "public.friendships",
        "SELECT * FROM game.friendships",
        &["player_id", "friend_id"],
    ),
    (
        "public.purchases",
        "SELECT *, purchased_at AS updated_at FROM game.purchases",
        &["purchase_id"],
    ),
];

/// Loads [`OLTP_TABLES`] from the demo lake into PostgreSQL at `url` through the `[sink]`
/// path (staging table, then one transaction per table).
async fn load_postgres(session: &crate::query::Session, url: &str) -> Result<()> {
    for (to, query, key) in OLTP_TABLES {
        let table = TableConfig {
            to: to.to_string(),
            query: Some(query.to_string()),
            mode: Mode::Replace,
            key: key.iter().map(|k| k.to_string()).collect(),
            ..TableConfig::default()
        };
        let report = publish(session, url, &table).await?;
        eprintln!(
            "PostgreSQL {}: {} rows in {:.1}s",
            report.table, report.rows, report.seconds
        );
    }
    connect(url)
        .await?
        .batch_execute("ALTER TABLE public.purchases ALTER COLUMN updated_at SET DEFAULT now()")
        .await
        .map_err(|e| pg_error("public.purchases", &e))?;
    Ok(())
}

/// Yesterday in the game's server zone: the demo's data then ends where reports relative to
/// today (`since the start of last month`) find it.
fn yesterday() -> chrono::NaiveDate {
    let today = crate::timing::server_today();
    today.pred_opt().unwrap_or(today)
}

/// Runs `gamelake demo`.
pub async fn run(context: &Context, args: DemoArgs) -> Result<()> {
    let options = DemoOptions {
        scale: args.scale,
        seed: args.seed,
        years: args.years,
        end: args.end.unwrap_or_else(yesterday),
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
    if let Some(url) = &args.to_postgres {
        load_postgres(&session, url).await?;
    }
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
    // The program as it was started (`target/release/gamelake` under `cargo run`), so the
    // commands work when pasted into the same shell.
    let me = super::invoked_as();
    println!(
        "\nTotal {:.1}s. Next:\n  {me} --lake {lake} sql                               interactive SQL (\\d lists tables)\n  {me} --lake {lake} sql -f queries/arpu_by_region_month.sql\n  {me} --lake {lake} lake history logs.events",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
