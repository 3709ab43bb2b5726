//! Log intake: `gamelake serve --http ADDR` (and `--forward ADDR`, Fluentd's forward protocol)
//! receives game-server logs from Fluent Bit, Fluentd or any HTTP client and commits them to
//! Delta tables partitioned by day.
//!
//! A request's records are appended to the write-ahead log ([`wal`]) and fsynced before the
//! sender is answered; the [`committer`] turns the log into Delta commits every
//! `commit_interval`, each carrying the log position as a transaction marker, so a crash at any
//! point loses no acknowledged record and commits none twice. Records become rows in
//! [`crate::records`]; a record that cannot be a row goes to `<schema>._rejected` with the reason.

pub mod committer;
pub mod config;
mod dedup;
pub mod disk;
pub mod forward;
pub mod forward_message;
pub mod http;
pub mod maintenance;
pub mod metrics;
pub mod msgpack;
pub mod segment;
pub mod server;
pub mod wal;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::StatusCode;
use sha2::{Digest, Sha256};

pub use committer::Committer;
pub use config::{IntakeConfig, IntakeSettings, IntakeTable, IntakeToken};
pub use metrics::Metrics;
pub use wal::Wal;

use crate::error::{Error, Result};
use crate::lake::write::transaction_version;
use crate::lake::{REJECTED, TableRef};
use crate::query::Session;

/// The state the HTTP handlers share.
pub struct Intake {
    /// Settings with defaults applied.
    pub settings: IntakeSettings,
    /// The write-ahead log.
    pub wal: Wal,
    /// Intake tables by `schema.table`.
    pub tables: Arc<BTreeMap<String, IntakeTable>>,
    /// Senders' tokens; empty means no authentication (only allowed on loopback).
    tokens: Vec<IntakeToken>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Intake {
    /// Opens the write-ahead log and checks the tables. Returns the shared state and the
    /// committer to run beside the HTTP server.
    pub async fn open(
        session: &Session,
        config: &IntakeConfig,
        settings: IntakeSettings,
    ) -> Result<(Arc<Self>, Committer)> {
        let mut tables = BTreeMap::new();
        for table in &config.tables {
            let name = TableRef::parse(&table.name)?;
            crate::records::check_rules(&table.row_rules())?;
            if let Some(retain) = table.retain
                && retain < crate::lake::maintenance::VACUUM_FLOOR
            {
                return Err(Error::Invalid(format!(
                    "[[intake.tables]] {name}: retain = \"{}\" is under an hour, so vacuum could delete the files of a commit in progress; use at least \"1h\"",
                    humantime::format_duration(retain)
                )));
            }
            forward_message::check_tags(table)?;
            if tables.insert(name.to_string(), table.clone()).is_some() {
                return Err(Error::Invalid(format!(
                    "[[intake.tables]] {name} is listed twice"
                )));
            }
        }
        for token in &config.tokens {
            if token.token.len() < 16 {
                return Err(Error::Invalid(format!(
                    "[[intake.tokens]] {}: the token is shorter than 16 characters; use a long random one (e.g. `openssl rand -hex 24`)",
                    token.name
                )));
            }
        }
        let tables = Arc::new(tables);
        let app_id = format!("gamelake-intake:{}", settings.node);
        // The tables' exactly-once markers bound the segment numbers already used.
        let mut floor = 0;
        for name in tables.keys() {
            let table = TableRef::parse(name)?;
            let rejected = TableRef::new(table.schema.clone(), REJECTED)?;
            for t in [&table, &rejected] {
                let recorded = transaction_version(session.lake(), t, &app_id).await?;
                floor = floor.max(recorded.unwrap_or(0).max(0) as u64);
            }
        }
        let wal = Wal::open(
            &settings.wal_dir,
            settings.commit_bytes,
            settings.dedup_window,
            floor + 1,
        )?;
        let metrics = Arc::new(Metrics::default());
        let replica = match &settings.hold_until_replicated_in {
            Some((url, options)) => Some(Arc::new(crate::lake::Lake::open_with_options(
                url,
                options.clone(),
            )?)),
            None => None,
        };
        let committer = Committer {
            lake: session.lake().clone(),
            replica,
            state: session.write_state(),
            wal: wal.clone(),
            tables: tables.clone(),
            app_id,
            metrics: metrics.clone(),
        };
        let intake = Arc::new(Self {
            settings,
            wal,
            tables,
            tokens: config.tokens.clone(),
            metrics,
        });
        Ok((intake, committer))
    }

    /// The table a Fluentd tag goes to: the first whose `tags` match it.
    pub fn table_for_tag(&self, tag: &str) -> Option<(&str, &IntakeTable)> {
        self.tables
            .iter()
            .find(|(_, t)| t.tags.iter().any(|p| forward_message::tag_matches(p, tag)))
            .map(|(name, t)| (name.as_str(), t))
    }

    /// Whether senders must present a token.
    pub fn requires_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks a request's bearer token against the configured ones (comparing digests, so the
    /// time taken does not reveal how much of a token matched). Answers the sender's name (empty
    /// when no tokens are configured).
    pub fn check_sender(
        &self,
        bearer: Option<&str>,
        table: &TableRef,
    ) -> std::result::Result<&str, (StatusCode, String)> {
        if self.tokens.is_empty() {
            return Ok("");
        }
        let Some(given) = bearer else {
            return Err((
                StatusCode::UNAUTHORIZED,
                "missing 'Authorization: Bearer <token>' (tokens are set in [[intake.tokens]])"
                    .to_string(),
            ));
        };
        let digest = Sha256::digest(given.as_bytes());
        let Some(token) = self
            .tokens
            .iter()
            .find(|t| Sha256::digest(t.token.as_bytes()) == digest)
        else {
            return Err((StatusCode::UNAUTHORIZED, "unknown token".to_string()));
        };
        if !token.allows(table) {
            return Err((
                StatusCode::FORBIDDEN,
                format!("token '{}' may not write {table}", token.name),
            ));
        }
        Ok(&token.name)
    }
}
