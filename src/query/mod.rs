//! The SQL session over the lake: DataFusion with the lake catalog as default, and the
//! statements that write (CREATE TABLE [AS], INSERT, DELETE, DROP) routed to the Delta write path
//! and `ANALYZE` recording distinct counts for the planner's estimates.
//!
//! Everything in gamelake that runs SQL gets its session here.

mod analyze;
pub mod dates;
mod gate;
mod options;
mod params;
mod rules;
mod statements;
mod table_options;
mod table_refs;

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DFStatement};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::delta_datafusion::planner::DeltaPlanner;

use crate::catalog::{LakeCatalog, TableScan, suggest_tables};
use crate::error::{Error, Result};
use crate::lake::Lake;

/// Name of the catalog the lake is registered as (the session default).
pub const CATALOG: &str = "gamelake";
/// Schema used when a statement names a table without one.
pub const DEFAULT_SCHEMA: &str = "public";

/// Key ranges up to which a single-integer-key hash join uses an array instead of a hash
/// table: 8 M values, an array of 32 MiB (four bytes per value) per build partition.
const ARRAY_JOIN_MAX_RANGE: usize = 1 << 23;

/// Estimated build sides up to which a hash join builds one table for every partition.
const SINGLE_HASH_TABLE_MAX_BYTES: usize = 64 << 20;
/// The same bound in rows.
const SINGLE_HASH_TABLE_MAX_ROWS: usize = 1 << 20;

/// Engine settings of a session.
#[derive(Clone, Debug, Default)]
pub struct QuerySettings {
    /// Parallelism of plans; defaults to the number of cores.
    pub target_partitions: Option<usize>,
    /// Memory a query may use before it spills or fails, in bytes; unbounded when `None`.
    pub memory_limit: Option<usize>,
    /// How long the lake's table names may be reused before the next statement lists the
    /// lake again. Zero (the default) lists before every statement; servers set a few seconds.
    pub catalog_ttl: std::time::Duration,
    /// Refuse `SELECT * FROM 'path/or/url'` (servers, where users must not read the server's
    /// files); the CLI allows it.
    pub deny_file_paths: bool,
    /// Read strings and binaries from Parquet as plain `Utf8`/`Binary` instead of DataFusion's
    /// view types (servers whose clients need plain types anyway: no cast at the boundary).
    pub plain_strings: bool,
    /// Run queries on this Ballista cluster instead of in this process (`--cluster`).
    pub cluster: Option<crate::cluster::ClusterUrl>,
}

/// What one statement produced.
pub enum Output {
    /// A query's rows, not yet computed: stream or collect them.
    Rows(DataFrame),
    /// A statement that changed something, with a one-line summary (`CREATE TABLE shop.orders: 2 rows`).
    Done(String),
}

pub use gate::{Gate, Rewrite, ToRun};
pub use params::{Params, parse_param};

/// DataFusion's physical optimizer rules with gamelake's: subplans are shared before join
/// filters are pushed down (a shared subplan lets none through), and, once those have been
/// pushed, scans filter rows by join filters and filters evaluate their cheap conjuncts first.
fn physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let sanity_check = rules
        .iter()
        .position(|rule| rule.name() == "SanityCheckPlan")
        .unwrap_or(rules.len());
    // DataFusion's last rules: the second FilterPushdown (join filters), then SanityCheckPlan.
    rules.insert(
        sanity_check,
        Arc::new(rules::filter_order::CheapFiltersFirst),
    );
    rules.insert(
        sanity_check,
        Arc::new(rules::join_filters::AdaptiveJoinFilters),
    );
    rules.insert(
        sanity_check.saturating_sub(1),
        Arc::new(rules::shared_subplans::SharedSubplans),
    );
    rules
}

/// A SQL session over a lake.
#[derive(Clone)]
pub struct Session {
    ctx: SessionContext,
    catalog: Arc<LakeCatalog>,
    /// Regional lakes attached by [`Session::with_lakes`], refreshed with the default one.
    regions: crate::catalog::regions::Regions,
    params: Arc<Params>,
    catalog_ttl: std::time::Duration,
    gate: Option<Gate>,
    rewrite: Option<Rewrite>,
}

impl Session {
    /// Builds a session over a lake and checks that the lake can be listed.
    pub async fn new(lake: Arc<Lake>, settings: &QuerySettings) -> Result<Self> {
        lake.check_reachable().await?;
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, DEFAULT_SCHEMA)
            .with_create_default_catalog_and_schema(false);
        if let Some(n) = settings.target_partitions {
            config = config.with_target_partitions(n.max(1));
        }
        if settings.plain_strings {
            config
                .options_mut()
                .execution
                .parquet
                .schema_force_view_types = false;
        }
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(limit) = settings.memory_limit {
            runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        }
        // Settings delta-rs relies on: its planner (writes, deletes and merges use extension
        // nodes), and no IN-list pushdown of hash joins, which can panic on dictionary keys.
        config = config
            .set_usize("datafusion.optimizer.hash_join_inlist_pushdown_max_size", 0)
            .set_usize(
                "datafusion.optimizer.hash_join_inlist_pushdown_max_distinct_values",
                0,
            );
        // A hash join on one integer key whose build side spans fewer than this many values
        // looks its keys up in an array indexed by the key (DataFusion's "perfect hash join")
        // rather than in a hash table, however sparse the keys: no hashing and no comparison
        // of keys per probed row, for an array of at most 32 MiB. DataFusion takes the array
        // only for ranges under 1,024 values or keys filling 15% of their range; TPC-H's
        // filtered orders fill 2-12% of their 6 M order keys.
        config = config.set_usize(
            "datafusion.execution.perfect_hash_join_small_build_threshold",
            ARRAY_JOIN_MAX_RANGE,
        );
        if settings.cluster.is_some() {
            // Writes read the lake's files here too (see `Session::write_state`).
            runtime = runtime.with_object_store_registry(Arc::new(
                crate::cluster::stores::LakeStores::default(),
            ));
        }
        let mut state = SessionStateBuilder::new()
            .with_default_features()
            .with_runtime_env(runtime.build_arc()?)
            .with_query_planner(DeltaPlanner::new())
            .with_analyzer_rule(Arc::new(rules::month_of_date::MonthOfDate));
        if settings.cluster.is_none() {
            // A cluster's scheduler plans with its own rules and knows neither these nodes, the
            // decimal functions of `rules/decimal_arith.rs`, nor the `gamelake.*` settings.
            // Join selection estimates string filters by the columns' distinct counts and
            // joins on several keys with each side's keys bounded by its rows (`rules/statistics_providers.rs`),
            // the rest by DataFusion's providers.
            config = config
                .with_option_extension(options::GamelakeOptions::default())
                .set_bool("datafusion.optimizer.use_statistics_registry", true);
            // One hash table for every partition (CollectLeft) when the build side is estimated
            // under 64 MiB or 1 M rows (DataFusion: 1 MiB, 128 K rows). Building one table is
            // cheap with the array above, and the probe side, usually the largest input, is then
            // not repartitioned (each row hashed and moved). On a cluster that table would be
            // sent to every executor, so it keeps DataFusion's thresholds.
            config = config
                .set_usize(
                    "datafusion.optimizer.hash_join_single_partition_threshold",
                    SINGLE_HASH_TABLE_MAX_BYTES,
                )
                .set_usize(
                    "datafusion.optimizer.hash_join_single_partition_threshold_rows",
                    SINGLE_HASH_TABLE_MAX_ROWS,
                );
            state = state
                .with_statistics_registry(rules::statistics_providers::registry())
                .with_physical_optimizer_rules(physical_rules())
                .with_optimizer_rule(Arc::new(rules::decimal_arith::DecimalArithmetic))
                .with_optimizer_rule(Arc::new(rules::join_order::JoinOrder));
        }
        let mut state = state.with_config(config).build();
        let scan = TableScan {
            cluster: settings.cluster.is_some(),
            plain_strings: settings.plain_strings,
        };
        if let Some(cluster) = &settings.cluster {
            cluster.check_reachable().await?;
            state = crate::cluster::client_state(state, cluster)?;
        }
        let ctx = SessionContext::new_with_state(state);
        if settings.cluster.is_none()
            && let Some((url, store)) = lake.location().scan_store()?
        {
            // Scans address an S3 lake's files by bucket; a session that only reads would
            // otherwise find no store for them (writes register one through deltalake).
            ctx.register_object_store(&url, store);
        }
        let ctx = if settings.deny_file_paths {
            ctx
        } else {
            ctx.enable_url_table()
        };
        let catalog = Arc::new(LakeCatalog::with_scan(lake, scan));
        catalog.refresh().await?;
        ctx.register_catalog(CATALOG, catalog.clone());
        Ok(Self {
            ctx,
            catalog,
            regions: Arc::default(),
            params: Arc::default(),
            catalog_ttl: settings.catalog_ttl,
            gate: None,
            rewrite: None,
        })
    }

    /// The same session (catalogs, views, settings) with its own memory pool, e.g. one per
    /// query on a server.
    pub fn with_memory_pool(
        &self,
        pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool>,
    ) -> Result<Self> {
        let runtime = RuntimeEnvBuilder::from_runtime_env(self.ctx.runtime_env().as_ref())
            .with_memory_pool(pool)
            .build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.ctx.state())
            .with_runtime_env(runtime)
            .build();
        Ok(Self {
            ctx: SessionContext::new_with_state(state),
            ..self.clone()
        })
    }

    /// The same session with values for `$name` placeholders in later statements.
    pub fn with_params(mut self, params: Params) -> Self {
        self.params = Arc::new(params);
        self
    }

    /// The same session with a gate every later statement passes before anything of it runs
    /// (see [`Gate`]).
    pub fn with_gate(mut self, gate: Gate) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The same session with a rewrite every later statement's plan passes after the gate
    /// (see [`Rewrite`]).
    pub fn with_rewrite(mut self, rewrite: Rewrite) -> Self {
        self.rewrite = Some(rewrite);
        self
    }

    /// The DataFusion context (for registering functions or running DataFrames).
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Whether this session's queries run on a Ballista cluster (`--cluster`).
    pub fn on_cluster(&self) -> bool {
        self.catalog.scan().cluster
    }

    /// The state writers plan with: this session's, except on a cluster, where deltalake's
    /// writers (which wrap their input in nodes Ballista cannot ship) plan and run here.
    pub fn write_state(&self) -> datafusion::execution::SessionState {
        let state = self.ctx.state();
        if !self.on_cluster() {
            return state;
        }
        SessionStateBuilder::new_from_existing(state)
            .with_query_planner(DeltaPlanner::new())
            .build()
    }

    /// The same session with regional lakes (`[lakes]` in the config) attached: each as a
    /// read-only catalog of its own name (`bj.game.purchases`), and all of them as
    /// `lakes.<schema>.<table>` with a `lake` column. Names are checked: a lake's name must be
    /// a plain lower-case identifier that no other catalog uses.
    pub async fn with_lakes(mut self, lakes: Vec<(String, Arc<Lake>)>) -> Result<Self> {
        use crate::catalog::regions::{LAKES, LakesCatalog};
        if lakes.is_empty() {
            return Ok(self);
        }
        let mut regions = Vec::new();
        for (name, lake) in lakes {
            let plain = name.starts_with(|c: char| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !plain || [CATALOG, LAKES, "pg", "mysql", "datafusion"].contains(&name.as_str()) {
                return Err(Error::Invalid(format!(
                    "[lakes] {name}: a lake's name is a catalog name in SQL: lower-case letters, digits and _, starting with a letter, and none of {CATALOG}, {LAKES}, pg, mysql, datafusion"
                )));
            }
            lake.check_reachable().await?;
            if !self.on_cluster()
                && let Some((url, store)) = lake.location().scan_store()?
            {
                self.ctx.register_object_store(&url, store);
            }
            let catalog = Arc::new(LakeCatalog::with_scan(lake, self.catalog.scan()));
            catalog.refresh().await?;
            self.ctx.register_catalog(&name, catalog.clone());
            regions.push((name, catalog));
        }
        self.regions = Arc::new(regions);
        self.ctx
            .register_catalog(LAKES, Arc::new(LakesCatalog::new(self.regions.clone())));
        Ok(self)
    }

    /// The regional lake (or the union of them, `lakes`) a table name is in, if any.
    pub fn regional_catalog<'a>(
        &self,
        name: &'a datafusion::common::TableReference,
    ) -> Option<&'a str> {
        let catalog = name.catalog()?;
        (catalog == crate::catalog::regions::LAKES
            || self.regions.iter().any(|(region, _)| region == catalog))
        .then_some(catalog)
    }

    /// The lake catalog.
    pub fn catalog(&self) -> &Arc<LakeCatalog> {
        &self.catalog
    }

    /// The lake.
    pub fn lake(&self) -> &Arc<Lake> {
        self.catalog.lake()
    }

    /// Registers the views saved in the lake (`_views/`), e.g. a pipeline's hot + cold union.
    /// A view whose tables are not reachable from this session (such as `pg.*` without
    /// `--pg-url`) is skipped with a warning.
    pub async fn load_views(&self) -> Result<()> {
        for (view, sql) in self.lake().saved_views().await? {
            let create = format!(
                "CREATE OR REPLACE VIEW {}.{} AS {sql}",
                view.schema, view.table
            );
            if let Err(e) = self.sql(&create).await {
                tracing::warn!("view {view} is not available in this session: {e}");
            }
        }
        Ok(())
    }

    /// Parses SQL text into statements (all of them, before any runs).
    pub fn parse(&self, sql: &str) -> Result<Vec<DFStatement>> {
        let statements =
            DFParser::parse_sql_with_dialect(sql, &GenericDialect {}).map_err(Error::Query)?;
        Ok(statements.into_iter().collect())
    }

    /// Runs every statement of the text in order, stopping at the first error.
    pub async fn sql(&self, sql: &str) -> Result<Vec<Output>> {
        let mut outputs = Vec::new();
        for statement in self.parse(sql)? {
            outputs.push(self.execute(statement).await?);
        }
        Ok(outputs)
    }

    /// Runs SQL text that holds one query and collects its rows.
    pub async fn query(&self, sql: &str) -> Result<Vec<datafusion::arrow::array::RecordBatch>> {
        match self.sql(sql).await?.pop() {
            Some(Output::Rows(df)) => df.collect().await.map_err(Error::from_datafusion),
            _ => Err(Error::Invalid(format!("not a query: {sql}"))),
        }
    }

    /// Runs every statement of `sql` and collects the rows of the last one that returns rows
    /// (None when none does): for reports, sinks and `gamelake bench`.
    pub async fn collect_last(
        &self,
        sql: &str,
    ) -> Result<
        Option<(
            datafusion::arrow::datatypes::SchemaRef,
            Vec<datafusion::arrow::array::RecordBatch>,
        )>,
    > {
        let mut result = None;
        for statement in self.parse(sql)? {
            if let Output::Rows(df) = self.execute(statement).await? {
                let schema = Arc::new(df.schema().as_arrow().clone());
                result = Some((schema, df.collect().await.map_err(Error::from_datafusion)?));
            }
        }
        Ok(result)
    }

    /// Runs one parsed statement.
    pub async fn execute(&self, statement: DFStatement) -> Result<Output> {
        self.catalog.refresh_within(self.catalog_ttl).await?;
        for (_, region) in self.regions.iter() {
            region.refresh_within(self.catalog_ttl).await?;
        }
        statements::execute(self, statement)
            .await
            .map_err(|e| self.explain(e))
    }

    /// Adds what the user can do to errors DataFusion phrases tersely.
    fn explain(&self, err: Error) -> Error {
        let Error::Query(df) = &err else {
            return err;
        };
        let text = df.to_string();
        if let Some(name) = missing_table(&text) {
            return self.table_not_found(&name);
        }
        if let Some(start) = text.find("No value found for placeholder with name $") {
            let name: String = text[start + "No value found for placeholder with name $".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            return Error::Invalid(format!(
                "the query needs a value for ${name}: pass --param {name}=VALUE"
            ));
        }
        err
    }

    /// A "table does not exist" error listing close names that do.
    pub fn table_not_found(&self, name: &str) -> Error {
        let name = name
            .strip_prefix(&format!("{CATALOG}."))
            .unwrap_or(name)
            .to_string();
        let known = self.catalog.known_tables();
        let close = suggest_tables(&name, &known);
        let suggestion = if !close.is_empty() {
            format!("; did you mean {}?", close.join(", "))
        } else if known.is_empty() {
            format!(
                "; the lake at {} holds no tables yet",
                self.lake().location().url()
            )
        } else if known.len() <= 10 {
            format!("; tables in the lake: {}", known.join(", "))
        } else {
            "; run SHOW TABLES to list them".to_string()
        };
        Error::TableNotFound { name, suggestion }
    }
}

/// Extracts `x` from DataFusion's "table 'x' not found".
fn missing_table(message: &str) -> Option<String> {
    let start = message.find("table '")? + "table '".len();
    let rest = &message[start..];
    let end = rest.find("' not found")?;
    Some(rest[..end].to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_missing_table_name() {
        assert_eq!(
            super::missing_table("Error during planning: table 'gamelake.shop.ordrs' not found"),
            Some("gamelake.shop.ordrs".to_string())
        );
        assert_eq!(super::missing_table("something else"), None);
    }
}
