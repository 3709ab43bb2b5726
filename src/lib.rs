//! gamelake: a lakehouse for game data — Delta Lake tables on a local folder or S3, queried
//! with DataFusion.
//!
//! Layers, lowest first; a module imports only from layers below its own (checked by
//! `tests/it/layers.rs`; the map is `docs/architecture.md`):
//!
//! 1. [`error`]; then the toolkit: [`toml_files`], [`timing`], [`secret`], [`plain_types`],
//!    [`progress`], [`http_serve`]; then [`output`] and [`metrics`].
//! 2. [`lake`]: storage, Delta tables, the one write path.
//! 3. [`catalog`]: the lake as `schema.table`; [`cluster`]: the same queries on Ballista.
//! 4. [`query`]: the SQL session and its planner rules.
//! 5. [`serving`] (the engine behind BI protocols), [`sources`] (what pipelines read, and the
//!    source contract), [`records`] (records → Arrow rows with a rejected side).
//! 6. [`pipeline`], [`intake`], [`flight`], [`report`], [`demo`].
//! 7. [`schedule`]; then [`config`] (`gamelake.toml`); then [`cli`].

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod flight;
pub mod http_serve;
pub mod intake;
pub mod lake;
pub mod metrics;
pub mod output;
pub mod pipeline;
pub mod plain_types;
pub mod postgres_wire;
pub mod progress;
pub mod query;
pub mod records;
pub mod report;
pub mod schedule;
pub mod secret;
pub mod serving;
pub mod sources;
pub mod timing;
pub mod toml_files;

pub use error::{Error, Result};
pub use lake::Lake;
pub use query::{Output, QuerySettings, Session};
