//! What players do, day by day: sessions on servers, purchases in the shop, and the event log
//! those produce. Rows are appended straight to Arrow builders.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::rng::Rng;
use super::shop::Shop;
use super::world::{DEVICES, GAME_MODES, Item, Player, REGIONS, diurnal_second, event_boost};
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

/// Rows per batch of the demo's tables (the simulated ones and the slices of the others).
pub(super) const BATCH_ROWS: usize = 64 * 1024;

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

    /// Rows appended so far.
    fn len(&self) -> usize {
        self.done.len() * BATCH_ROWS + self.rows
    }

    /// Every batch (at least one, perhaps empty, so the table has its columns).
    fn finish(mut self) -> Result<Vec<RecordBatch>> {
        if self.rows > 0 || self.done.is_empty() {
            self.done.push(self.open.finish()?);
        }
        Ok(self.done)
    }
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

/// Every player's life, simulated day after day and taken out in pieces, so the tables can be
/// written a range of days at a time (the whole history at scale 10 does not fit in memory).
/// Each player draws from their own random stream, day after day, so the rows do not depend on
/// where the pieces are cut; purchase ids grow with time, as a shop's would.
pub struct Simulation<'a> {
    cal: Calendar,
    players: &'a [Player],
    shop: Shop<'a>,
    /// One random stream per player, in the order of `players`.
    streams: Vec<Rng>,
    /// Each player's game server.
    servers: Vec<String>,
    purchase_id: i64,
    /// Indexes of `players` by sign-up day (then index), and how many of them have signed up.
    by_signup: Vec<usize>,
    signed_up: usize,
    /// Players signed up and not yet gone, in index order (the order fixes the purchase ids).
    active: Vec<usize>,
    /// The next day to simulate.
    day: i64,
    sessions: Batches<Sessions>,
    purchases: Batches<Purchases>,
    events: Batches<Events>,
}

impl<'a> Simulation<'a> {
    /// A simulation at day 0, before anyone played, of `players` with their friendships
    /// `(a, b, since_day)`.
    pub fn new(
        seed: u64,
        cal: Calendar,
        players: &'a [Player],
        items: &'a [Item],
        pairs: &[(i64, i64, i64)],
    ) -> Self {
        let base = Rng::new(seed, "activity");
        Self {
            cal,
            players,
            shop: Shop::new(players, items, pairs),
            streams: players.iter().map(|p| base.fork(p.id as u64)).collect(),
            servers: players
                .iter()
                .map(|p| format!("{}-{:02}", REGIONS[p.region], 1 + p.id % 4))
                .collect(),
            purchase_id: 0,
            by_signup: {
                let mut order: Vec<usize> = (0..players.len()).collect();
                order.sort_by_key(|&i| (players[i].signup_day, i));
                order
            },
            signed_up: 0,
            active: Vec::new(),
            day: 0,
            sessions: Batches::default(),
            purchases: Batches::default(),
            events: Batches::default(),
        }
    }

    /// The next day to simulate, counted from the first day of the data.
    pub fn day(&self) -> i64 {
        self.day
    }

    /// True when every day has been simulated.
    pub fn is_done(&self) -> bool {
        self.day >= self.cal.days
    }

    /// Event rows simulated and not yet taken (the largest of the three tables).
    pub fn held_events(&self) -> usize {
        self.events.len()
    }

    /// Simulates the next day for every player who plays the game on it. Only the players
    /// signed up and not yet gone are visited, so a long history costs its player-days.
    pub fn step(&mut self) -> Result<()> {
        let day = self.day;
        let players = self.players;
        let joined = self.by_signup[self.signed_up..]
            .iter()
            .take_while(|&&i| players[i].signup_day <= day)
            .count();
        if joined > 0 {
            let new = &self.by_signup[self.signed_up..self.signed_up + joined];
            self.active.extend_from_slice(new);
            // Two sorted runs: the sort merges them.
            self.active.sort();
            self.signed_up += joined;
        }
        let active = std::mem::take(&mut self.active);
        for &i in &active {
            self.play(i, &players[i], day)?;
        }
        self.active = active;
        self.active.retain(|&i| players[i].last_day > day);
        self.day += 1;
        Ok(())
    }

    /// The rows simulated since the last call.
    pub fn take(&mut self) -> Result<ActivityTables> {
        Ok(ActivityTables {
            sessions: std::mem::take(&mut self.sessions).finish()?,
            purchases: std::mem::take(&mut self.purchases).finish()?,
            events: std::mem::take(&mut self.events).finish()?,
        })
    }

    /// One player's day: whether they play, their sessions, the events those log and what they buy.
    fn play(&mut self, i: usize, p: &Player, day: i64) -> Result<()> {
        let cal = self.cal;
        let r = &mut self.streams[i];
        let server = self.servers[i].as_str();
        let weekday = (cal.first_epoch_day + day + 3).rem_euclid(7); // 0 = Monday
        let weekend = if weekday >= 5 { 1.3 } else { 1.0 };
        let boost = event_boost(cal.day_of_year(day), day);
        let plays = day == p.signup_day || r.chance((p.activity * weekend * boost).min(0.97));
        if !plays {
            return Ok(());
        }
        let n_sessions = 1 + usize::from(r.chance(0.25 * boost));
        for s in 0..n_sessions {
            let start = if day == p.signup_day && s == 0 {
                p.signup_second
            } else {
                diurnal_second(r)
            };
            let length = r.lognormal(1500.0, 0.8).clamp(60.0, 6.0 * 3600.0) as i64;
            let login = cal.micros(day, start);
            let logout = login + length * 1_000_000;
            let version = format!("2.{}", day / 60);
            // Players spend most of their time in the mode of their favourite category.
            let mode = GAME_MODES[if r.chance(0.6) {
                p.interest
            } else {
                r.range(0, GAME_MODES.len() as i64) as usize
            }];
            self.sessions
                .push(|s| s.push(p, &cal, day, (login, logout), server, &version, mode))?;
            let attrs = format!(
                r#"{{"client_version":"{version}","device":"{}"}}"#,
                DEVICES[p.device]
            );
            self.events
                .push(|e| e.push(p, cal.date(day), login, "login", server, attrs))?;
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
                    r#"{{"mode":"{mode}","map":"m{}","score":{}}}"#,
                    r.range(1, 9),
                    r.range(0, 5000)
                );
                self.events
                    .push(|e| e.push(p, cal.date(day), at, kind, server, attrs))?;
            }
            // Spending: payers buy in proportion to their propensity; non-payers rarely try.
            let p_buy = if p.spend > 0.0 {
                (0.04 * p.spend).min(0.7)
            } else {
                0.003
            };
            if r.chance(p_buy) {
                let item = self.shop.choose(r, i, p, day);
                self.purchase_id += 1;
                let id = self.purchase_id;
                let at = login + r.range(0, length) * 1_000_000;
                self.purchases
                    .push(|b| b.push(id, p, &cal, day, item, at))?;
                let attrs = format!(r#"{{"item_id":{},"purchase_id":{id}}}"#, item.id);
                self.events
                    .push(|e| e.push(p, cal.date(day), at, "purchase", server, attrs))?;
            }
            let attrs = format!(r#"{{"seconds":{length}}}"#);
            self.events
                .push(|e| e.push(p, cal.date(day), logout, "logout", server, attrs))?;
        }
        Ok(())
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
    mode: StringBuilder,
}

impl Sessions {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        p: &Player,
        cal: &Calendar,
        day: i64,
        (login, logout): (i64, i64),
        server: &str,
        version: &str,
        mode: &str,
    ) {
        self.mode.append_value(mode);
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
            Field::new("game_mode", DataType::Utf8, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.player.finish()),
            Arc::new(self.login.finish().with_timezone("UTC")),
            Arc::new(self.logout.finish().with_timezone("UTC")),
            Arc::new(self.date.finish()),
            Arc::new(self.region.finish()),
            Arc::new(self.server.finish()),
            Arc::new(self.version.finish()),
            Arc::new(self.mode.finish()),
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

    /// The rows of all days, in one table each.
    fn all_rows(pieces: Vec<ActivityTables>) -> [RecordBatch; 3] {
        let concat = |f: fn(&ActivityTables) -> &Vec<RecordBatch>| {
            let batches: Vec<RecordBatch> = pieces.iter().flat_map(|t| f(t).clone()).collect();
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
        };
        [
            concat(|t| &t.sessions),
            concat(|t| &t.purchases),
            concat(|t| &t.events),
        ]
    }

    /// Written a few days at a time (as the demo does at large scales), the tables hold exactly
    /// the rows of one piece: where the pieces are cut changes nothing.
    #[test]
    fn pieces_of_days_hold_the_same_rows_as_one_piece() {
        let cal = Calendar {
            first_epoch_day: 20_000,
            days: 40,
        };
        let players = super::super::world::players(3, 200, cal.days);
        let items = super::super::world::items(3);
        let run = |every: i64| {
            let pairs = super::super::world::friendships(3, &players);
            let mut sim = Simulation::new(3, cal, &players, &items, &pairs);
            let mut pieces = Vec::new();
            while !sim.is_done() {
                sim.step().unwrap();
                if sim.day() % every == 0 || sim.is_done() {
                    pieces.push(sim.take().unwrap());
                }
            }
            pieces
        };
        let whole = run(cal.days);
        assert_eq!(whole.len(), 1);
        let cut = run(7);
        assert_eq!(cut.len(), 6);
        let (whole, cut) = (all_rows(whole), all_rows(cut));
        assert!(
            whole[0].num_rows() > 1000,
            "{} sessions",
            whole[0].num_rows()
        );
        assert!(whole[1].num_rows() > 0, "no purchases");
        assert_eq!(whole, cut);
    }

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
