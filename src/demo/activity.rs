//! What players do, day by day: sessions on servers, purchases in the shop, and the event log
//! those produce. Rows are appended straight to Arrow builders.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::rng::Rng;
use super::world::{CATEGORIES, DEVICES, Item, Player, REGIONS, diurnal_second, event_boost};
use crate::error::Result;

/// The calendar of the data: day 0 is `first_date` (server time, UTC+8).
#[derive(Clone, Copy, Debug)]
pub struct Calendar {
    /// Days since 1970-01-01 of day 0.
    pub first_epoch_day: i64,
    /// Number of days.
    pub days: i64,
}

impl Calendar {
    /// Microseconds since the epoch (UTC) of a server-time day and second.
    pub fn micros(&self, day: i64, second: i64) -> i64 {
        ((self.first_epoch_day + day) * 86_400 + second - 8 * 3600) * 1_000_000
    }

    /// The Date32 value of a server day.
    pub fn date(&self, day: i64) -> i32 {
        (self.first_epoch_day + day) as i32
    }

    /// Day of the year (0-based, approximate: 365-day years from day 0's year start).
    fn day_of_year(&self, day: i64) -> i64 {
        (self.first_epoch_day + day).rem_euclid(365)
    }
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Rows per batch of the simulated tables.
const BATCH_ROWS: usize = 64 * 1024;

/// The Arrow builders of one table's columns.
trait TableBuilders: Default {
    /// The rows appended since the last call, as one batch; the builders start empty again.
    fn finish(&mut self) -> Result<RecordBatch>;
}

/// One table's rows as batches of at most [`BATCH_ROWS`] rows. Not one batch for all: an Arrow
/// string array holds at most 2 GiB of text (32-bit offsets), which the event log's attributes
/// pass at scale 10.
#[derive(Default)]
struct Batches<T> {
    open: T,
    rows: usize,
    done: Vec<RecordBatch>,
}

impl<T: TableBuilders> Batches<T> {
    /// Appends one row with `append`, closing the batch when it is full.
    fn push(&mut self, append: impl FnOnce(&mut T)) -> Result<()> {
        append(&mut self.open);
        self.rows += 1;
        if self.rows == BATCH_ROWS {
            self.done.push(self.open.finish()?);
            self.rows = 0;
        }
        Ok(())
    }

    /// Every batch (at least one, perhaps empty, so the table has its columns).
    fn finish(mut self) -> Result<Vec<RecordBatch>> {
        if self.rows > 0 || self.done.is_empty() {
            self.done.push(self.open.finish()?);
        }
        Ok(self.done)
    }
}

/// Sessions, purchases and events of all players.
pub struct Activity {
    sessions: Batches<Sessions>,
    purchases: Batches<Purchases>,
    events: Batches<Events>,
}

/// The simulated tables, each as batches.
pub struct ActivityTables {
    /// `game.sessions`.
    pub sessions: Vec<RecordBatch>,
    /// `game.purchases`.
    pub purchases: Vec<RecordBatch>,
    /// `logs.events`.
    pub events: Vec<RecordBatch>,
}

impl Activity {
    /// Simulates every player's life.
    pub fn simulate(
        seed: u64,
        cal: Calendar,
        players: &[Player],
        items: &[Item],
        progress: &indicatif::ProgressBar,
    ) -> Result<Self> {
        let base = Rng::new(seed, "activity");
        let mut by_category: Vec<Vec<&Item>> = vec![Vec::new(); CATEGORIES.len()];
        for item in items {
            by_category[item.category].push(item);
        }
        let mut out = Self {
            sessions: Batches::default(),
            purchases: Batches::default(),
            events: Batches::default(),
        };
        let mut purchase_id = 0i64;
        for p in players {
            if p.id % 1024 == 0 {
                progress.set_position(p.id as u64);
            }
            let mut r = base.fork(p.id as u64);
            let server = format!("{}-{:02}", REGIONS[p.region], 1 + p.id % 4);
            for day in p.signup_day..=p.last_day {
                let weekday = (cal.first_epoch_day + day + 3).rem_euclid(7); // 0 = Monday
                let weekend = if weekday >= 5 { 1.3 } else { 1.0 };
                let boost = event_boost(cal.day_of_year(day), day);
                let plays =
                    day == p.signup_day || r.chance((p.activity * weekend * boost).min(0.97));
                if !plays {
                    continue;
                }
                let n_sessions = 1 + usize::from(r.chance(0.25 * boost));
                for s in 0..n_sessions {
                    let start = if day == p.signup_day && s == 0 {
                        p.signup_second
                    } else {
                        diurnal_second(&mut r)
                    };
                    let length = r.lognormal(1500.0, 0.8).clamp(60.0, 6.0 * 3600.0) as i64;
                    let login = cal.micros(day, start);
                    let logout = login + length * 1_000_000;
                    let version = format!("2.{}", day / 60);
                    out.sessions
                        .push(|s| s.push(p, &cal, day, login, logout, &server, &version))?;
                    let attrs = format!(
                        r#"{{"client_version":"{version}","device":"{}"}}"#,
                        DEVICES[p.device]
                    );
                    out.events
                        .push(|e| e.push(p, cal.date(day), login, "login", &server, attrs))?;
                    for _ in 0..r.range(1, 4) {
                        let at = login + r.range(0, length) * 1_000_000;
                        let kind = [
                            "match_start",
                            "match_end",
                            "level_up",
                            "quest_complete",
                            "chat",
                        ][r.weighted(&[4.0, 4.0, 1.0, 2.0, 1.5])];
                        let attrs = format!(
                            r#"{{"map":"m{}","score":{}}}"#,
                            r.range(1, 9),
                            r.range(0, 5000)
                        );
                        out.events
                            .push(|e| e.push(p, cal.date(day), at, kind, &server, attrs))?;
                    }
                    // Spending: payers buy in proportion to their propensity; non-payers rarely try.
                    let p_buy = if p.spend > 0.0 {
                        (0.04 * p.spend).min(0.7)
                    } else {
                        0.003
                    };
                    if r.chance(p_buy) {
                        let category = if r.chance(0.7) {
                            p.interest
                        } else {
                            r.range(0, CATEGORIES.len() as i64) as usize
                        };
                        let choices = &by_category[category];
                        // Whales lean to the expensive end of a category.
                        let k = if p.spend > 8.0 {
                            choices.len() - 1 - r.range(0, 5) as usize
                        } else {
                            r.range(0, choices.len() as i64) as usize
                        };
                        let item = choices[k.min(choices.len() - 1)];
                        purchase_id += 1;
                        let at = login + r.range(0, length) * 1_000_000;
                        out.purchases
                            .push(|b| b.push(purchase_id, p, &cal, day, item, at))?;
                        let attrs =
                            format!(r#"{{"item_id":{},"purchase_id":{purchase_id}}}"#, item.id);
                        out.events
                            .push(|e| e.push(p, cal.date(day), at, "purchase", &server, attrs))?;
                    }
                    let attrs = format!(r#"{{"seconds":{length}}}"#);
                    out.events
                        .push(|e| e.push(p, cal.date(day), logout, "logout", &server, attrs))?;
                }
            }
        }
        Ok(out)
    }

    /// The finished tables.
    pub fn finish(self) -> Result<ActivityTables> {
        Ok(ActivityTables {
            sessions: self.sessions.finish()?,
            purchases: self.purchases.finish()?,
            events: self.events.finish()?,
        })
    }
}

#[derive(Default)]
struct Sessions {
    player: Int64Builder,
    login: TimestampMicrosecondBuilder,
    logout: TimestampMicrosecondBuilder,
    date: Date32Builder,
    region: StringBuilder,
    server: StringBuilder,
    version: StringBuilder,
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        p: &Player,
        cal: &Calendar,
        day: i64,
        login: i64,
        logout: i64,
        server: &str,
        version: &str,
    ) {
        self.player.append_value(p.id);
        self.login.append_value(login);
        self.logout.append_value(logout);
        self.date.append_value(cal.date(day));
        self.region.append_value(REGIONS[p.region]);
        self.server.append_value(server);
        self.version.append_value(version);
    }
}

impl TableBuilders for Sessions {
    fn finish(&mut self) -> Result<RecordBatch> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("player_id", DataType::Int64, false),
            Field::new("login_at", ts(), false),
            Field::new("logout_at", ts(), false),
            Field::new("session_date", DataType::Date32, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("server_id", DataType::Utf8, false),
            Field::new("client_version", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.player.finish()),
            Arc::new(self.login.finish().with_timezone("UTC")),
            Arc::new(self.logout.finish().with_timezone("UTC")),
            Arc::new(self.date.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.server.finish()),
            Arc::new(self.version.finish()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[derive(Default)]
struct Purchases {
    id: Int64Builder,
    player: Int64Builder,
    item: Int32Builder,
    amount: Decimal128Builder,
    currency: StringBuilder,
    at: TimestampMicrosecondBuilder,
    date: Date32Builder,
    region: StringBuilder,
    channel: StringBuilder,
}

impl Purchases {
    fn push(&mut self, id: i64, p: &Player, cal: &Calendar, day: i64, item: &Item, at: i64) {
        let overseas = p.region >= 3;
        self.id.append_value(id);
        self.player.append_value(p.id);
        self.item.append_value(item.id);
        // Overseas regions pay in USD at a rounded rate of 7 CNY.
        self.amount.append_value(i128::from(if overseas {
            item.price_cents / 7
        } else {
            item.price_cents
        }));
        self.currency
            .append_value(if overseas { "USD" } else { "CNY" });
        self.at.append_value(at);
        self.date.append_value(cal.date(day));
        self.region.append_value(REGIONS[p.region]);
        self.channel.append_value(match (p.device, overseas) {
            (1, _) => "app_store",
            (0, true) => "google_play",
            (2, _) => "web",
            _ if p.id % 2 == 0 => "wechat_pay",
            _ => "alipay",
        });
    }
}

impl TableBuilders for Purchases {
    fn finish(&mut self) -> Result<RecordBatch> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("purchase_id", DataType::Int64, false),
            Field::new("player_id", DataType::Int64, false),
            Field::new("item_id", DataType::Int32, false),
            Field::new("amount", DataType::Decimal128(12, 2), false),
            Field::new("currency", DataType::Utf8, false),
            Field::new("purchased_at", ts(), false),
            Field::new("purchase_date", DataType::Date32, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("channel", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.id.finish()),
            Arc::new(self.player.finish()),
            Arc::new(self.item.finish()),
            Arc::new(self.amount.finish().with_precision_and_scale(12, 2)?),
            Arc::new(self.currency.finish()),
            Arc::new(self.at.finish().with_timezone("UTC")),
            Arc::new(self.date.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.channel.finish()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[derive(Default)]
struct Events {
    time: TimestampMicrosecondBuilder,
    date: Date32Builder,
    player: Int64Builder,
    kind: StringBuilder,
    server: StringBuilder,
    region: StringBuilder,
    attributes: StringBuilder,
}

impl Events {
    fn push(
        &mut self,
        p: &Player,
        date: i32,
        at: i64,
        kind: &str,
        server: &str,
        attributes: String,
    ) {
        self.time.append_value(at);
        self.date.append_value(date);
        self.player.append_value(p.id);
        self.kind.append_value(kind);
        self.server.append_value(server);
        self.region.append_value(REGIONS[p.region]);
        self.attributes.append_value(attributes);
    }
}

impl TableBuilders for Events {
    fn finish(&mut self) -> Result<RecordBatch> {
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("event_time", ts(), false),
            Field::new("event_date", DataType::Date32, false),
            Field::new("player_id", DataType::Int64, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("server_id", DataType::Utf8, false),
            Field::new("region", DataType::Utf8, false),
            Field::new("attributes", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.date.finish()),
            Arc::new(self.player.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.server.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.attributes.finish()),
        ];
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The event log is cut into batches (one array for all of it overflowed at scale 10),
    /// and every row is in one of them.
    #[test]
    fn rows_are_cut_into_batches_of_at_most_batch_rows() {
        let player = Player {
            id: 7,
            region: 0,
            device: 0,
            signup_day: 0,
            signup_second: 0,
            last_day: 0,
            activity: 0.5,
            spend: 0.0,
            interest: 0,
            community: 0,
        };
        let mut events: Batches<Events> = Batches::default();
        for i in 0..(2 * BATCH_ROWS + 5) as i64 {
            events
                .push(|e| e.push(&player, 0, i, "login", "s-01", "{}".to_string()))
                .unwrap();
        }
        let batches = events.finish().unwrap();
        let sizes: Vec<usize> = batches.iter().map(RecordBatch::num_rows).collect();
        assert_eq!(sizes, vec![BATCH_ROWS, BATCH_ROWS, 5]);
        let empty: Batches<Events> = Batches::default();
        let batches = empty.finish().unwrap();
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].num_rows(), 0);
        assert_eq!(batches[0].num_columns(), 7);
    }
}
