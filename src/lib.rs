//! gamelake: a lakehouse for game data — Delta Lake tables on a local folder or S3, queried
//! with DataFusion.
//!
//! Layers, lowest first: [`lake`] (storage, Delta tables, the write path) → [`catalog`] (the lake
//! as `schema.table`) → [`query`] (the SQL session) → [`cli`]. [`cluster`] runs the same
//! queries on Apache Ballista.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod flight;
pub mod intake;
pub mod lake;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod plain_types;
pub mod progress;
pub mod query;
pub mod report;
pub mod schedule;
pub mod sources;

pub use error::{Error, Result};
pub use lake::Lake;
pub use query::{Output, QuerySettings, Session};
