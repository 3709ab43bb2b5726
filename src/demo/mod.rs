//! `gamelake demo`: a deterministic, realistic game dataset written to the lake through the
//! shared write path, then a few of the saved queries run over it.

mod activity;
mod rng;
mod shop;
mod tables;
mod world;

use std::time::Instant;

use datafusion::arrow::array::RecordBatch;

use crate::error::{Error, Result};
use crate::lake::TableRef;
use crate::lake::layout::{Codec, TableLayout};
use crate::lake::write::{WriteMode, WriteOptions, write_batches};
use crate::query::Session;
use activity::{BATCH_ROWS, Calendar, Simulation};

/// Players per unit of `--scale`.
pub const PLAYERS_PER_SCALE: f64 = 100_000.0;
/// The largest scale accepted (about 20 million players).
pub const MAX_SCALE: f64 = 200.0;

/// What to generate.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// 1.0 is about 100,000 players; 0.01 is a quick test lake.
    pub scale: f64,
    /// Random seed: the same seed and scale give byte-identical rows.
    pub seed: u64,
    /// Years of history, ending on `end`.
    pub years: u32,
    /// The last day of data (server time). The same seed, scale, years and end give the same
    /// rows on any day; `gamelake demo` ends yesterday unless told otherwise.
    pub end: chrono::NaiveDate,
    /// Replace demo tables that already exist (otherwise refuse).
    pub replace: bool,
}

/// The demo tables, in the order they are written.
pub const TABLES: [&str; 6] = [
    "game.players",
    "game.items",
    "game.friendships",
    "game.purchases",
    "game.sessions",
    "logs.events",
];

/// Rows written per table.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// `(table, rows, seconds spent writing it)` per table, in the order written.
    pub tables: Vec<(String, usize, f64)>,
}

impl DemoOptions {
    /// Checks the options, with errors that say what is accepted.
    pub fn validate(&self) -> Result<()> {
        if !self.scale.is_finite() || self.scale <= 0.0 {
            return Err(Error::Invalid(format!(
                "--scale {} is not a positive number; use e.g. 0.01 (1,000 players) or 1 (100,000 players)",
                self.scale
            )));
        }
        if self.scale > MAX_SCALE {
            return Err(Error::Invalid(format!(
                "--scale {} is too large (at most {MAX_SCALE}, about {} million players)",
                self.scale,
                (MAX_SCALE * PLAYERS_PER_SCALE / 1e6) as u64
            )));
        }
        if (self.scale * PLAYERS_PER_SCALE) < 10.0 {
            return Err(Error::Invalid(format!(
                "--scale {} gives fewer than 10 players; use 0.0001 or more",
                self.scale
            )));
        }
        if !(1..=20).contains(&self.years) {
            return Err(Error::Invalid(format!(
                "--years {} is out of range; use 1 to 20",
                self.years
            )));
        }
        Ok(())
    }

    fn calendar(&self) -> Result<Calendar> {
        let last = self.end;
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days = i64::from(self.years) * 365;
        Ok(Calendar {
            first_epoch_day: (last - epoch).num_days() - days + 1,
            days,
        })
    }
}

/// The layout of each demo table: daily partitions for events in time, sorted by player and
/// time, bloom filters on player ids. Sessions and purchases, which one-player lookups read a
/// few dozen day files of, are LZ4: a lookup reads each file's few pages, and zstd's
/// decompressor, made anew for each column of each file, cost more than the pages
/// (`queries/player_activity.sql`'s sessions part over a 4.6 M-row copy of game.sessions:
/// median 79 ms with zstd, 49-59 ms with LZ4, files 97 MB against 75 MB; measured 2026-12-07
/// with the test build, `gamelake bench --runs 30`).
fn layout(table: &str) -> TableLayout {
    let (partition, sort): (&[&str], &[&str]) = match table {
        "game.players" => (&[], &["player_id"]),
        "game.items" => (&[], &["item_id"]),
        "game.friendships" => (&[], &["player_id", "friend_id"]),
        "game.purchases" => (&["purchase_date"], &["player_id", "purchased_at"]),
        "game.sessions" => (&["session_date"], &["player_id", "login_at"]),
        _ => (&["event_date"], &["player_id", "event_time"]),
    };
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    TableLayout {
        partition_by: strings(partition),
        sort_by: strings(sort),
        bloom_filter_columns: if table == "game.items" {
            vec![]
        } else {
            vec!["player_id".into()]
        },
        compression: if matches!(table, "game.sessions" | "game.purchases") {
            Codec::Lz4
        } else {
            Codec::Zstd
        },
        ..Default::default()
    }
}

/// Generates the data and writes the six tables. Refuses to touch existing demo tables unless
/// `replace` is set; checks that the lake is writable before generating anything.
pub async fn generate(session: &Session, options: &DemoOptions) -> Result<DemoReport> {
    options.validate()?;
    let lake = session.lake();
    let mut existing = Vec::new();
    for name in TABLES {
        if lake.is_table(&TableRef::parse(name)?).await? {
            existing.push(name);
        }
    }
    if !existing.is_empty() && !options.replace {
        return Err(Error::Invalid(format!(
            "the lake at {} already holds demo tables ({}); run with --replace to overwrite them, or use another --lake",
            lake.location().url(),
            existing.join(", ")
        )));
    }
    lake.check_writable().await?;

    let cal = options.calendar()?;
    let n = (options.scale * PLAYERS_PER_SCALE).round() as i64;
    let started = Instant::now();
    let players = world::players(options.seed, n, cal.days);
    let items = world::items(options.seed);
    let pairs = world::friendships(options.seed, &players);
    let mut writer = DemoWriter::new(session);
    writer
        .write("game.players", slices(tables::players(&cal, &players)?))
        .await?;
    writer
        .write("game.items", slices(tables::items(&items)?))
        .await?;
    writer
        .write(
            "game.friendships",
            slices(tables::friendships(&cal, &pairs)?),
        )
        .await?;
    let mut simulation = Simulation::new(options.seed, cal, &players, &items, &pairs);
    let bar = crate::progress::bar(cal.days as u64, "days", "simulating");
    while !simulation.is_done() {
        simulation.step()?;
        bar.set_position(simulation.day() as u64);
        if simulation.held_events() >= EVENTS_PER_WRITE || simulation.is_done() {
            bar.set_message(format!("writing days up to {}", simulation.day()));
            let rows = simulation.take()?;
            writer.write("game.purchases", rows.purchases).await?;
            writer.write("game.sessions", rows.sessions).await?;
            writer.write("logs.events", rows.events).await?;
            bar.set_message("simulating");
        }
    }
    bar.finish_and_clear();
    // Distinct counts for the planner's estimates, as a kept lake has them (seconds at scale 10).
    for name in TABLES {
        session.sql(&format!("ANALYZE {name}")).await?;
    }
    eprintln!(
        "generated {} players and their {} days in {:.1}s",
        players.len(),
        cal.days,
        started.elapsed().as_secs_f64()
    );
    for (name, rows, secs) in &writer.report.tables {
        eprintln!(
            "  {name:<18} {rows:>11} rows  written in {secs:>6.1}s  {:>10.0} rows/s",
            *rows as f64 / secs.max(1e-9)
        );
    }
    Ok(writer.report)
}

/// Simulated event rows held in memory before they are written with the sessions and purchases
/// of the same days: the demo peaks at about 4 GB whatever the scale (measured: 4.0 GB at scale
/// 1, 2.9 GB at scale 10).
const EVENTS_PER_WRITE: usize = 8_000_000;

/// Writes the demo tables, each in one or more commits: the first replaces or creates the table,
/// the later ones append the next days.
struct DemoWriter<'a> {
    session: &'a Session,
    state: datafusion::execution::SessionState,
    report: DemoReport,
}

impl<'a> DemoWriter<'a> {
    fn new(session: &'a Session) -> Self {
        Self {
            session,
            state: session.write_state(),
            report: DemoReport { tables: Vec::new() },
        }
    }

    /// Writes one piece of a table; a later piece of a table this run already wrote is appended.
    async fn write(&mut self, name: &str, batches: Vec<RecordBatch>) -> Result<()> {
        let rows = batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        let written = self.report.tables.iter().position(|(t, ..)| t == name);
        if rows == 0 && written.is_some() {
            return Ok(());
        }
        let table = TableRef::parse(name)?;
        let lake = self.session.lake();
        let mode = if written.is_some() {
            WriteMode::Append
        } else if lake.is_table(&table).await? {
            WriteMode::Overwrite
        } else {
            WriteMode::Create
        };
        let started = Instant::now();
        let options = WriteOptions {
            layout: Some(layout(name)),
            ..WriteOptions::new(mode)
        };
        write_batches(lake, &table, &self.state, batches, options).await?;
        self.session.catalog().note_table(&table, true);
        let secs = started.elapsed().as_secs_f64();
        match written {
            Some(i) => {
                self.report.tables[i].1 += rows;
                self.report.tables[i].2 += secs;
            }
            None => self.report.tables.push((name.to_string(), rows, secs)),
        }
        Ok(())
    }
}

/// Splits a large batch into pieces of a size the writer handles well.
fn slices(batch: RecordBatch) -> Vec<RecordBatch> {
    (0..batch.num_rows().max(1))
        .step_by(BATCH_ROWS)
        .map(|start| batch.slice(start, BATCH_ROWS.min(batch.num_rows() - start)))
        .collect()
}
