//! Row estimates for join planning, where DataFusion's own are far off: filters on strings, by
//! the columns' distinct counts (`ANALYZE`), and joins on two or more keys.
//!
//! DataFusion's join selection consults a `StatisticsRegistry` when
//! `datafusion.optimizer.use_statistics_registry` is on, as gamelake's sessions set it: a chain
//! of providers, each estimating the operators it knows from its inputs' estimates. gamelake
//! asks two of its own before DataFusion's.
//!
//! [`DistinctCountFilters`]: DataFusion estimates a filter by interval analysis, which covers
//! numbers, dates and timestamps; a predicate with any other comparison in it (`brand =
//! 'Brand#23'`) keeps one default fraction, a fifth, whatever the columns. Join planning
//! follows the estimate: TPC-H Q17's filter on `part` keeps 204 of 200,000 parts, estimated
//! 40,000, so its join with lineitem was estimated at 1.2 M rows instead of 6,088, and
//! DataFusion built the semi join's hash tables from the other input, an aggregation over all
//! of lineitem, and partitioned both. Here each `column = constant` keeps one row in the
//! column's distinct count and each `column IN (n constants)` n in it, and the rest of the
//! predicate is estimated by DataFusion as before. Columns without a count, and predicates
//! DataFusion analyzes itself (it uses the counts for numbers too), are left to DataFusion.
//!
//! [`CompositeKeyJoins`]: DataFusion estimates a join's rows as the product of the inputs' rows
//! over the product, key by key, of the larger distinct count, as if the keys were unrelated.
//! For `(partkey, suppkey)` that divides by 200,000 x 10,000 though `partsupp` holds 800,000
//! rows, and TPC-H Q9's join of lineitem with it (319,404 rows) became small enough for
//! DataFusion to build one hash table from it in one thread. Here each input's keys together
//! have at most as many distinct values as the input has rows.

use std::sync::Arc;

use datafusion::common::stats::Precision;
use datafusion::common::{Result, Statistics};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_expr::intervals::utils::check_support;
use datafusion::physical_expr::{PhysicalExpr, PhysicalExprRef, conjunction, split_conjunction};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::operator_statistics::{
    ExtendedStatistics, JoinStatisticsProvider, StatisticsProvider, StatisticsRegistry,
    StatisticsResult,
};
use datafusion::physical_plan::statistics::StatisticsArgs;

/// Filters estimated by distinct counts (see the module's documentation).
#[derive(Debug, Default)]
pub struct DistinctCountFilters;

/// Joins on several keys estimated with each input's distinct keys at most its rows (see the
/// module's documentation).
#[derive(Debug, Default)]
pub struct CompositeKeyJoins;

/// DataFusion's providers with gamelake's asked first.
pub fn registry() -> StatisticsRegistry {
    let mut registry = StatisticsRegistry::default_with_builtin_providers();
    registry.register(Arc::new(CompositeKeyJoins));
    registry.register(Arc::new(DistinctCountFilters));
    registry
}

impl StatisticsProvider for CompositeKeyJoins {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        let Some(join) = plan.downcast_ref::<HashJoinExec>() else {
            return Ok(StatisticsResult::Delegate);
        };
        let [left, right] = child_stats else {
            return Ok(StatisticsResult::Delegate);
        };
        if join.on().len() < 2 {
            return Ok(StatisticsResult::Delegate);
        }
        let left = keys_within_rows(left, join.on().iter().map(|(l, _)| l));
        let right = keys_within_rows(right, join.on().iter().map(|(_, r)| r));
        // DataFusion's estimate (and its bounds for outer, semi and anti joins) from them.
        JoinStatisticsProvider.compute_statistics(plan, &[left, right])
    }
}

/// An input's statistics with its join keys' distinct counts lowered so that their product is
/// at most its rows: the key with the most distinct values keeps its count (up to the rows),
/// each next one what the rows leave.
fn keys_within_rows<'a>(
    stats: &ExtendedStatistics,
    keys: impl Iterator<Item = &'a PhysicalExprRef>,
) -> ExtendedStatistics {
    let base = stats.base();
    let Some(&rows) = base.num_rows.get_value() else {
        return stats.clone();
    };
    let mut counted: Vec<(usize, usize)> = keys
        .filter_map(|key| {
            let index = key.downcast_ref::<Column>()?.index();
            let distinct = *base
                .column_statistics
                .get(index)?
                .distinct_count
                .get_value()?;
            Some((index, distinct))
        })
        .collect();
    counted.sort_by_key(|(_, distinct)| std::cmp::Reverse(*distinct));
    let mut lowered = base.clone();
    let mut left = rows.max(1);
    for (index, distinct) in counted {
        let kept = distinct.clamp(1, left);
        if let Some(column) = lowered.column_statistics.get_mut(index) {
            column.distinct_count = Precision::Inexact(kept);
        }
        left = (left / kept).max(1);
    }
    ExtendedStatistics::new(lowered)
}

impl StatisticsProvider for DistinctCountFilters {
    fn compute_statistics(
        &self,
        plan: &dyn ExecutionPlan,
        child_stats: &[ExtendedStatistics],
    ) -> Result<StatisticsResult> {
        let Some(filter) = plan.downcast_ref::<FilterExec>() else {
            return Ok(StatisticsResult::Delegate);
        };
        let Some(input) = child_stats.first() else {
            return Ok(StatisticsResult::Delegate);
        };
        match estimate(filter, input.base_arc())? {
            Some(stats) => Ok(StatisticsResult::Computed(ExtendedStatistics::new(stats))),
            None => Ok(StatisticsResult::Delegate),
        }
    }
}

/// The filter's output statistics, or `None` when distinct counts add nothing to DataFusion's
/// own estimate.
fn estimate(filter: &FilterExec, input: &Arc<Statistics>) -> Result<Option<Statistics>> {
    let predicate = filter.predicate();
    if check_support(predicate, &filter.input().schema()) {
        return Ok(None);
    }
    let mut fraction = 1.0;
    let mut rest = Vec::new();
    for conjunct in split_conjunction(predicate) {
        match kept_by_distinct_count(conjunct.as_ref(), input) {
            Some(kept) => fraction *= kept,
            None => rest.push(Arc::clone(conjunct)),
        }
    }
    if fraction == 1.0 {
        return Ok(None);
    }
    // The rest of the predicate as DataFusion estimates it (all rows when nothing is left:
    // `true` would otherwise get the default fraction), with the filter's projection.
    let default_selectivity = if rest.is_empty() {
        100
    } else {
        filter.default_selectivity()
    };
    let rest_filter = FilterExecBuilder::from(filter)
        .with_predicate(conjunction(rest))
        .with_default_selectivity(default_selectivity)
        .build()?;
    let mut stats = Arc::unwrap_or_clone(
        rest_filter.statistics_from_inputs(&[Arc::clone(input)], &StatisticsArgs::new())?,
    );
    stats.num_rows = scaled(stats.num_rows, fraction);
    stats.total_byte_size = scaled(stats.total_byte_size, fraction);
    let rows = stats.num_rows.get_value().copied();
    for column in &mut stats.column_statistics {
        column.byte_size = scaled(column.byte_size, fraction);
        if let (Some(distinct), Some(rows)) = (column.distinct_count.get_value(), rows) {
            column.distinct_count = Precision::Inexact((*distinct).min(rows));
        }
        column.null_count = match (column.null_count.get_value(), rows) {
            (Some(nulls), Some(rows)) => Precision::Inexact((*nulls).min(rows)),
            _ => column.null_count,
        };
    }
    Ok(Some(stats))
}

/// The fraction of rows `column = constant`, `column IN (constants)`, or an `OR` of such,
/// keeps, by the columns' distinct counts; `None` for any other conjunct or a column without
/// a count.
fn kept_by_distinct_count(conjunct: &dyn PhysicalExpr, input: &Statistics) -> Option<f64> {
    let distinct = |column: &dyn PhysicalExpr| -> Option<f64> {
        let column = column.downcast_ref::<Column>()?;
        let count = *input
            .column_statistics
            .get(column.index())?
            .distinct_count
            .get_value()?;
        (count > 0).then_some(count as f64)
    };
    let constant = |e: &dyn PhysicalExpr| {
        e.downcast_ref::<Literal>()
            .is_some_and(|l| !l.value().is_null())
    };
    if let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() {
        let (left, right) = (binary.left().as_ref(), binary.right().as_ref());
        return match binary.op() {
            // DataFusion writes short IN lists as `a = x OR a = y`.
            Operator::Or => {
                let either =
                    kept_by_distinct_count(left, input)? + kept_by_distinct_count(right, input)?;
                Some(either.min(1.0))
            }
            Operator::Eq if constant(right) => distinct(left).map(|d| 1.0 / d),
            Operator::Eq if constant(left) => distinct(right).map(|d| 1.0 / d),
            _ => None,
        };
    }
    let in_list = conjunct.downcast_ref::<InListExpr>()?;
    if in_list.negated() || !in_list.list().iter().all(|e| constant(e.as_ref())) {
        return None;
    }
    distinct(in_list.expr().as_ref()).map(|d| (in_list.list().len() as f64 / d).min(1.0))
}

/// `value` times `fraction`, rounded up, inexact.
fn scaled(value: Precision<usize>, fraction: f64) -> Precision<usize> {
    match value.get_value() {
        Some(v) => Precision::Inexact((*v as f64 * fraction).ceil() as usize),
        None => value,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::ColumnStatistics;

    use super::*;

    fn input(rows: usize, distinct: &[usize]) -> ExtendedStatistics {
        ExtendedStatistics::new(Statistics {
            num_rows: Precision::Inexact(rows),
            total_byte_size: Precision::Absent,
            column_statistics: distinct
                .iter()
                .map(|d| ColumnStatistics {
                    distinct_count: Precision::Inexact(*d),
                    ..ColumnStatistics::new_unknown()
                })
                .collect(),
        })
    }

    fn key(index: usize) -> PhysicalExprRef {
        Arc::new(Column::new(&format!("k{index}"), index))
    }

    fn distinct_counts(stats: &ExtendedStatistics) -> Vec<Option<usize>> {
        stats
            .base()
            .column_statistics
            .iter()
            .map(|c| c.distinct_count.get_value().copied())
            .collect()
    }

    #[test]
    fn composite_keys_have_at_most_as_many_values_as_rows() {
        // partsupp: 800,000 rows, 200,000 parts, 10,000 suppliers (and a column not joined on).
        let keys = [key(1), key(0)];
        let lowered = keys_within_rows(&input(800_000, &[10_000, 200_000, 7]), keys.iter());
        assert_eq!(distinct_counts(&lowered), [Some(4), Some(200_000), Some(7)]);
        // Keys whose product fits are left alone, and a key is never above the rows.
        let fits = keys_within_rows(&input(1_000_000, &[100, 1000]), keys.iter());
        assert_eq!(distinct_counts(&fits), [Some(100), Some(1000)]);
        let one = keys_within_rows(&input(50, &[100, 1000]), keys.iter());
        assert_eq!(distinct_counts(&one), [Some(1), Some(50)]);
    }
}
