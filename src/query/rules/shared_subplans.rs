//! A subquery that appears twice in a plan is computed once.
//!
//! A CTE named twice (TPC-H Q15 joins `revenue` and takes its maximum), or a view used by two
//! branches, is planned by DataFusion as two identical subtrees, each reading and aggregating
//! the same files. This rule finds identical subtrees that aggregate a scan and replaces each
//! occurrence by one [`SharedExec`], which runs the subtree once per partition and hands every
//! consumer the same batches.
//!
//! Limits, so that sharing is always safe and cheap:
//! - only subtrees that end in an aggregation (whose output is usually far smaller than its
//!   input: the shared batches are held in memory until the query ends, outside the memory
//!   pool), built only of scans and single-input operators without dynamic filters of their
//!   own (no joins or top-k sorts: two consumers could otherwise drive two copies of a join
//!   whose partitions wait for each other), and without volatile functions (`random()`);
//! - the rule runs before DataFusion pushes join filters down the plan, and a [`SharedExec`]
//!   lets no filter through: one consumer's join filter must not thin what the other reads.
//!
//! Written here because DataFusion 55 has no common-subplan reuse (apache/datafusion#8777).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::metrics::{
    Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
    SendableRecordBatchStream, displayable,
};
use futures::{TryStreamExt, stream};
use tokio::sync::OnceCell;

use crate::query::options::GamelakeOptions;

/// The rule (see the module's documentation); on unless `gamelake.shared_subplans` is false.
#[derive(Debug, Default)]
pub struct SharedSubplans;

impl PhysicalOptimizerRule for SharedSubplans {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !GamelakeOptions::of(config).shared_subplans {
            return Ok(plan);
        }
        // Each shareable subtree's text, computed once, by the address of its root (the plan
        // is not changed until the last pass, which visits each root before its children).
        let mut keys = HashMap::new();
        let mut repeated = HashMap::new();
        collect_keys(&plan, &mut keys, &mut repeated);
        repeated.retain(|_, count| *count > 1);
        // Shared are the outermost repeated subtrees that still appear twice once those
        // around them are shared.
        let mut outermost = HashMap::new();
        count_outermost(&plan, &keys, &repeated, &mut outermost);
        outermost.retain(|_, count| *count > 1);
        if outermost.is_empty() {
            return Ok(plan);
        }
        let mut shared: HashMap<&str, Arc<dyn ExecutionPlan>> = HashMap::new();
        plan.transform_down(|node| {
            let Some(key) = keys
                .get(&address(&node))
                .map(String::as_str)
                .filter(|key| outermost.contains_key(key))
            else {
                return Ok(Transformed::no(node));
            };
            let exec = shared
                .entry(key)
                .or_insert_with(|| Arc::new(SharedExec::new(Arc::clone(&node))));
            Ok(Transformed::new(
                Arc::clone(exec),
                true,
                TreeNodeRecursion::Jump,
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "gamelake_shared_subplans"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Where a node lies in memory: the same node met again has the same address.
fn address(node: &Arc<dyn ExecutionPlan>) -> usize {
    Arc::as_ptr(node).cast::<()>() as usize
}

/// The text of every shareable subtree, nested ones too, by the address of its root, and how
/// often each text occurs.
fn collect_keys(
    node: &Arc<dyn ExecutionPlan>,
    keys: &mut HashMap<usize, String>,
    counts: &mut HashMap<String, usize>,
) {
    let address = address(node);
    let key = match keys.get(&address) {
        Some(key) => Some(key.clone()),
        None => key_of(node),
    };
    if let Some(key) = key {
        keys.insert(address, key.clone());
        *counts.entry(key).or_default() += 1;
    }
    for child in node.children() {
        collect_keys(child, keys, counts);
    }
}

/// Counts the subtrees of `repeated` that no other subtree of `repeated` contains.
fn count_outermost<'a>(
    node: &Arc<dyn ExecutionPlan>,
    keys: &'a HashMap<usize, String>,
    repeated: &HashMap<String, usize>,
    outermost: &mut HashMap<&'a str, usize>,
) {
    if let Some(key) = keys
        .get(&address(node))
        .map(String::as_str)
        .filter(|key| repeated.contains_key(*key))
    {
        *outermost.entry(key).or_default() += 1;
        return;
    }
    for child in node.children() {
        count_outermost(child, keys, repeated, outermost);
    }
}

/// The subtree's full text (operators, expressions, every file: the verbose form lists them
/// all), when it may be shared; two subtrees with the same text compute the same rows.
fn key_of(node: &Arc<dyn ExecutionPlan>) -> Option<String> {
    if node.downcast_ref::<AggregateExec>().is_none() || !shareable(node) {
        return None;
    }
    Some(displayable(node.as_ref()).indent(true).to_string())
}

/// Whether the subtree is single-input operators down to a scan of files, without dynamic
/// filters or volatile expressions.
fn shareable(node: &Arc<dyn ExecutionPlan>) -> bool {
    let children = node.children();
    if children.len() > 1 || !node.dynamic_expressions_produced().is_empty() {
        return false;
    }
    let mut volatile = false;
    let visited = node.apply_expressions(&mut |expr: &Arc<dyn PhysicalExpr>| {
        volatile |= is_volatile(expr);
        Ok(TreeNodeRecursion::Continue)
    });
    if visited.is_err() || volatile {
        return false;
    }
    match children.first() {
        Some(child) => shareable(child),
        // Files only: their text names every file read, an in-memory table's shows no values.
        None => node.downcast_ref::<DataSourceExec>().is_some_and(|scan| {
            scan.data_source()
                .downcast_ref::<FileScanConfig>()
                .is_some()
        }),
    }
}

/// Runs its input once per partition and gives every consumer of that partition the same
/// batches (see the module's documentation).
#[derive(Debug)]
pub struct SharedExec {
    input: Arc<dyn ExecutionPlan>,
    /// One slot per partition, shared by every copy of this node in the plan.
    results: Arc<Vec<OnceCell<Arc<Vec<RecordBatch>>>>>,
    /// `partitions_computed` and `partitions_served` (`EXPLAIN ANALYZE`), shared likewise.
    metrics: ExecutionPlanMetricsSet,
    computed: Count,
    served: Count,
}

impl SharedExec {
    /// Shares `input`'s partitions.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let partitions = input.output_partitioning().partition_count();
        let metrics = ExecutionPlanMetricsSet::new();
        Self {
            results: Arc::new((0..partitions).map(|_| OnceCell::new()).collect()),
            input,
            computed: MetricBuilder::new(&metrics).global_counter("partitions_computed"),
            served: MetricBuilder::new(&metrics).global_counter("partitions_served"),
            metrics,
        }
    }
}

impl DisplayAs for SharedExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SharedExec: computed once for its consumers")
    }
}

impl ExecutionPlan for SharedExec {
    fn name(&self) -> &str {
        "SharedExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// A copy with new children keeps the shared slots: a rule rewriting the plan after this
    /// one meets the node once per consumer and must not split what they share.
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.pop().unwrap_or_else(|| Arc::clone(&self.input));
        Ok(Arc::new(Self {
            input,
            results: Arc::clone(&self.results),
            metrics: self.metrics.clone(),
            computed: self.computed.clone(),
            served: self.served.clone(),
        }))
    }

    /// Running the plan again computes again.
    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(Self::new(Arc::clone(&self.input))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let results = Arc::clone(&self.results);
        let input = Arc::clone(&self.input);
        self.served.add(1);
        let computed = self.computed.clone();
        let batches = async move {
            let slot = results.get(partition).ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(format!(
                    "SharedExec has no partition {partition}"
                ))
            })?;
            let batches = slot
                .get_or_try_init(|| async {
                    computed.add(1);
                    let part = input.execute(partition, context)?;
                    let batches: Vec<RecordBatch> = part.try_collect().await?;
                    Ok::<_, datafusion::error::DataFusionError>(Arc::new(batches))
                })
                .await?;
            let batches = Arc::clone(batches);
            let each = (0..batches.len()).map(move |i| Ok(batches[i].clone()));
            Ok::<_, datafusion::error::DataFusionError>(stream::iter(each))
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream::once(batches).try_flatten(),
        )))
    }
}
