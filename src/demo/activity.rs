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

/// Sessions, purchases and events of all players.
pub struct Activity {
    sessions: Sessions,
    purchases: Purchases,
    events: Events,
}

impl Activity {
    /// Simulates every player's life.
    pub fn simulate(
        seed: u64,
        cal: Calendar,
        players: &[Player],
        items: &[Item],
        progress: &indicatif::ProgressBar,
    ) -> Self {
        let base = Rng::new(seed, "activity");
        let mut by_category: Vec<Vec<&Item>> = vec![Vec::new(); CATEGORIES.len()];
        for item in items {
            by_category[item.category].push(item);
        }
        let mut out = Self {
            sessions: Sessions::default(),
            purchases: Purchases::default(),
            events: Events::default(),
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
                        .push(p, &cal, day, login, logout, &server, &version);
                    out.events.push(
                        p,
                        cal.date(day),
                        login,
                        "login",
                        &server,
                        format!(
                            r#"{{"client_version":"{version}","device":"{}"}}"#,
                            DEVICES[p.device]
                        ),
                    );
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
                        out.events.push(p, cal.date(day), at, kind, &server, attrs);
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
                        out.purchases.push(purchase_id, p, &cal, day, item, at);
                        out.events.push(
                            p,
                            cal.date(day),
                            at,
                            "purchase",
                            &server,
                            format!(r#"{{"item_id":{},"purchase_id":{purchase_id}}}"#, item.id),
                        );
                    }
                    out.events.push(
                        p,
                        cal.date(day),
                        logout,
                        "logout",
                        &server,
                        format!(r#"{{"seconds":{length}}}"#),
                    );
                }
            }
        }
        out
    }

    /// The finished tables: sessions, purchases, events.
    pub fn finish(self) -> Result<(RecordBatch, RecordBatch, RecordBatch)> {
        Ok((
            self.sessions.finish()?,
            self.purchases.finish()?,
            self.events.finish()?,
        ))
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

    fn finish(mut self) -> Result<RecordBatch> {
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

    fn finish(mut self) -> Result<RecordBatch> {
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

    fn finish(mut self) -> Result<RecordBatch> {
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
