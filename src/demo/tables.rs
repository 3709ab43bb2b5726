//! Arrow batches of the population tables (players, items, friendships).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

use super::activity::Calendar;
use super::world::{CATEGORIES, COUNTRIES, DEVICES, Item, Player, REGIONS};
use crate::error::Result;

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// `game.players`. Level and VIP tier follow from how long and how much a player played.
pub fn players(cal: &Calendar, players: &[Player]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("player_id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("region", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("signup_at", ts(), false),
        Field::new("signup_date", DataType::Date32, false),
        Field::new("level", DataType::Int32, false),
        Field::new("vip_tier", DataType::Int32, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(players.iter().map(|p| p.id))),
        Arc::new(StringArray::from_iter_values(
            players.iter().map(|p| format!("player_{:07}", p.id)),
        )),
        Arc::new(StringArray::from_iter_values(
            players.iter().map(|p| REGIONS[p.region]),
        )),
        Arc::new(StringArray::from_iter_values(
            players.iter().map(|p| COUNTRIES[p.region]),
        )),
        Arc::new(StringArray::from_iter_values(
            players.iter().map(|p| DEVICES[p.device]),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                players
                    .iter()
                    .map(|p| cal.micros(p.signup_day, p.signup_second)),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from_iter_values(
            players.iter().map(|p| cal.date(p.signup_day)),
        )),
        Arc::new(Int32Array::from_iter_values(players.iter().map(|p| {
            let days = (p.last_day - p.signup_day + 1) as f64;
            (1.0 + (days * p.activity).sqrt() * 6.0).min(99.0) as i32
        }))),
        Arc::new(Int32Array::from_iter_values(players.iter().map(
            |p| match p.spend {
                s if s <= 0.0 => 0,
                s if s < 2.0 => 1,
                s if s < 5.0 => 2,
                s if s < 15.0 => 3,
                _ => 4,
            },
        ))),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// `game.items`.
pub fn items(items: &[Item]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("item_id", DataType::Int32, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("price", DataType::Decimal128(10, 2), false),
        Field::new("currency", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int32Array::from_iter_values(items.iter().map(|i| i.id))),
        Arc::new(StringArray::from_iter_values(
            items.iter().map(|i| i.name.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            items.iter().map(|i| CATEGORIES[i.category]),
        )),
        Arc::new(
            Decimal128Array::from_iter_values(items.iter().map(|i| i128::from(i.price_cents)))
                .with_precision_and_scale(10, 2)?,
        ),
        Arc::new(StringArray::from_iter_values(items.iter().map(|_| "CNY"))),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// `game.friendships`: both directions of every pair, so "friends of X" is one filter.
pub fn friendships(cal: &Calendar, pairs: &[(i64, i64, i64)]) -> Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("player_id", DataType::Int64, false),
        Field::new("friend_id", DataType::Int64, false),
        Field::new("since", ts(), false),
    ]);
    let both = || pairs.iter().flat_map(|&(a, b, d)| [(a, b, d), (b, a, d)]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(both().map(|(a, _, _)| a))),
        Arc::new(Int64Array::from_iter_values(both().map(|(_, b, _)| b))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                both().map(|(_, _, d)| cal.micros(d, 12 * 3600)),
            )
            .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}
