//! Hash joins' filters applied to rows in the Parquet scans they reach, while they keep few rows.
//!
//! Once a hash join has read its build side it publishes a filter on the probe side's keys (a
//! DataFusion dynamic filter: the keys' bounds and a lookup in the join's hash table), which
//! reaches the scan below the probe side. DataFusion uses it there to skip row groups by their
//! statistics, and to skip rows while decoding only under
//! `datafusion.execution.parquet.pushdown_filters`, one switch for every predicate of every
//! scan. Skipping rows pays when the join keeps few of the probe side's rows (TPC-H Q18 keeps
//! 57 of 1.5 M orders: the other columns of the rest are never decoded) and costs when it keeps
//! most (each row is looked up twice, and the decoder assembles a selection). Which case a
//! query is in is known only once the build side has been read, not when the plan is made.
//!
//! So this rule turns row filtering on in the scans whose whole predicate is such filters, and
//! wraps each filter in an [`AdaptiveFilter`] that counts what the filter keeps. When, after
//! [`MIN_ROWS`] rows, it keeps more than [`MAX_KEPT`] of them, or the kept rows lie in more
//! than [`MAX_RUNS`] separate runs per row, the wrapper stops filtering for the rest of the
//! query and answers "keep". Dropping such a filter never changes an answer:
//! the join still matches every row it is given. Scans with predicates of their own are left
//! as DataFusion plans them (filtering those rows while decoding was measured slower).
//!
//! Written here because DataFusion 55 places filters statically; adaptive placement is planned
//! upstream (apache/datafusion#22883) and would replace this rule.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::ScalarValue;
use datafusion::common::cast::as_boolean_array;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::datasource::physical_plan::{FileSource, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::expressions::DynamicFilterPhysicalExpr;
use datafusion::physical_expr::{PhysicalExpr, conjunction, split_conjunction};
use datafusion::physical_expr_common::physical_expr::snapshot_generation;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;

use crate::query::options::GamelakeOptions;

/// Rows a filter must have judged before it may be switched off: a few batches, so one
/// unrepresentative batch does not decide.
pub const MIN_ROWS: usize = 3 * 8192;

/// The share of rows a filter may keep and still be worth applying to rows.
pub const MAX_KEPT: f64 = 0.2;

/// Runs of kept rows per row judged beyond which a filter is not worth applying: the decoder
/// then assembles the other columns from many short pieces, which cost more than decoding
/// them whole (TPC-H Q9 keeps 5% of lineitem, scattered: its scan took 2.6 times as long
/// filtered), while kept rows that lie together (Q18's few orders) or are very rare (Q17's)
/// skip whole stretches.
pub const MAX_RUNS: f64 = 0.01;

/// The rule (see the module's documentation); on unless `gamelake.adaptive_join_filters` is
/// false or `datafusion.execution.parquet.pushdown_filters` already filters every scan's rows.
#[derive(Debug, Default)]
pub struct AdaptiveJoinFilters;

impl PhysicalOptimizerRule for AdaptiveJoinFilters {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !GamelakeOptions::of(config).adaptive_join_filters
            || config.execution.parquet.pushdown_filters
        {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            Ok(match filtering_scan(&node) {
                Some(scan) => Transformed::yes(scan),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "gamelake_adaptive_join_filters"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The scan filtering rows by its join filters, or `None` when `node` is not a Parquet scan
/// whose whole predicate is join filters.
fn filtering_scan(node: &Arc<dyn ExecutionPlan>) -> Option<Arc<dyn ExecutionPlan>> {
    let exec = node.downcast_ref::<DataSourceExec>()?;
    let (config, parquet) = exec.downcast_to_file_source::<ParquetSource>()?;
    if parquet.table_parquet_options().global.pushdown_filters {
        return None;
    }
    let predicate = parquet.filter()?;
    let conjuncts = split_conjunction(&predicate);
    let all_dynamic = conjuncts
        .iter()
        .all(|c| c.downcast_ref::<DynamicFilterPhysicalExpr>().is_some());
    if !all_dynamic {
        return None;
    }
    let adaptive = conjunction(
        conjuncts
            .into_iter()
            .map(|c| Arc::new(AdaptiveFilter::new(Arc::clone(c))) as Arc<dyn PhysicalExpr>),
    );
    let mut config = config.clone();
    config.file_source = Arc::new(parquet.with_predicate(adaptive).with_pushdown_filters(true));
    Some(Arc::new(exec.clone().with_data_source(Arc::new(config))))
}

/// A join filter that switches itself off once it has kept too many of the rows it judged, or
/// kept them in too many separate runs.
#[derive(Debug)]
pub struct AdaptiveFilter {
    filter: Arc<dyn PhysicalExpr>,
    /// Shared by every copy of this filter (DataFusion copies it per file and partition), so the
    /// decision is the query's, not one file's.
    tally: Arc<Tally>,
}

/// What a filter has judged so far.
#[derive(Debug, Default)]
struct Tally {
    rows: AtomicUsize,
    kept: AtomicUsize,
    /// Runs of consecutive kept rows.
    runs: AtomicUsize,
    off: AtomicBool,
}

impl AdaptiveFilter {
    /// Wraps `filter`, a dynamic filter (or any predicate that may be dropped without changing
    /// an answer).
    pub fn new(filter: Arc<dyn PhysicalExpr>) -> Self {
        Self {
            filter,
            tally: Arc::default(),
        }
    }

    /// Whether the filter has switched itself off.
    pub fn is_off(&self) -> bool {
        self.tally.off.load(Ordering::Relaxed)
    }

    /// Counts one batch's verdicts, and switches off when too many rows were kept, or kept
    /// rows lay in too many separate runs. Rows judged before the join published its filter
    /// (which keeps everything then) do not count.
    fn count(&self, rows: usize, (kept, runs): (usize, usize)) {
        if snapshot_generation(&self.filter) <= 1 {
            return;
        }
        let add = |counter: &AtomicUsize, n: usize| counter.fetch_add(n, Ordering::Relaxed) + n;
        let rows = add(&self.tally.rows, rows) as f64;
        let kept = add(&self.tally.kept, kept) as f64;
        let runs = add(&self.tally.runs, runs) as f64;
        if rows >= MIN_ROWS as f64 && (kept > MAX_KEPT * rows || runs > MAX_RUNS * rows) {
            self.tally.off.store(true, Ordering::Relaxed);
        }
    }
}

/// How many rows a verdict keeps (true, not null) and in how many runs of consecutive rows,
/// counted 64 rows at a time: a run starts at each kept row whose predecessor was not kept.
fn kept_and_runs(verdict: &BooleanArray) -> (usize, usize) {
    let kept = match verdict.nulls() {
        Some(valid) => verdict.values() & valid.inner(),
        None => verdict.values().clone(),
    };
    let mut runs = 0;
    let mut previous = 0u64;
    for bits in kept.bit_chunks().iter_padded() {
        runs += (bits & !((bits << 1) | previous)).count_ones() as usize;
        previous = bits >> 63;
    }
    (kept.count_set_bits(), runs)
}

impl fmt::Display for AdaptiveFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "adaptive({})", self.filter)
    }
}

impl PartialEq for AdaptiveFilter {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tally, &other.tally) && self.filter.eq(&other.filter)
    }
}

impl Eq for AdaptiveFilter {}

impl Hash for AdaptiveFilter {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.tally).hash(state);
        self.filter.hash(state);
    }
}

impl PhysicalExpr for AdaptiveFilter {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.filter.nullable(input_schema)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        if self.is_off() {
            return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))));
        }
        let verdict = self.filter.evaluate(batch)?;
        let kept = match &verdict {
            ColumnarValue::Array(array) => kept_and_runs(as_boolean_array(array)?),
            ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))) => (batch.num_rows(), 1),
            ColumnarValue::Scalar(_) => (0, 0),
        };
        self.count(batch.num_rows(), kept);
        Ok(verdict)
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.filter]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        let filter = children.pop().unwrap_or_else(|| Arc::clone(&self.filter));
        Ok(Arc::new(Self {
            filter,
            tally: Arc::clone(&self.tally),
        }))
    }

    /// Statistics pruning sees the filter itself: after its children have been snapshotted,
    /// the wrapper steps aside.
    fn snapshot(&self) -> Result<Option<Arc<dyn PhysicalExpr>>> {
        Ok(Some(Arc::clone(&self.filter)))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.filter.fmt_sql(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_of_kept_rows_are_counted_across_words_and_without_nulls() {
        let verdict = BooleanArray::from(vec![true, true, false, true, false, false, true, true]);
        assert_eq!(kept_and_runs(&verdict), (5, 3));
        // One run over three 64-bit words, then one more row after a gap.
        let mut long = vec![true; 150];
        long.extend([false, true]);
        assert_eq!(kept_and_runs(&BooleanArray::from(long)), (151, 2));
        // A null is not kept, so it splits a run.
        let nulls = BooleanArray::from(vec![Some(true), None, Some(true), Some(false)]);
        assert_eq!(kept_and_runs(&nulls), (2, 2));
        assert_eq!(kept_and_runs(&BooleanArray::from(vec![false; 70])), (0, 0));
    }
}
