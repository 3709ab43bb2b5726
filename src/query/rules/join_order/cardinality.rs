//! Row estimates of logical plans, from the lake tables' statistics: rows per table, each
//! column's bounds and, after `ANALYZE`, distinct counts.
//!
//! Deliberately simple (independence between predicates, uniform values between a column's
//! bounds): the join order only compares the sizes of a few candidate joins, and a plan whose
//! estimate is unknown (a table without statistics, an operator not modelled here) is not
//! reordered at all.

use datafusion::catalog::default_table_source::source_as_provider;
use datafusion::common::{Column, ColumnStatistics, ScalarValue};
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, JoinType, LogicalPlan, Operator};

/// Share of rows kept by a predicate this module cannot analyze; DataFusion's default too.
const UNKNOWN: f64 = 0.2;

/// Share of rows kept by `column = value` when the column's distinct count is unknown.
const EQUALITY: f64 = 0.1;

/// Share of rows kept by a range over a column whose bounds are unknown.
const RANGE: f64 = 1.0 / 3.0;

/// Estimated rows of `plan`, or `None` when a table's row count or an operator is unknown.
pub fn rows(plan: &LogicalPlan) -> Option<f64> {
    let estimate = match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            let rows = *provider.statistics()?.num_rows.get_value()? as f64;
            scan.fetch.map_or(rows, |fetch| rows.min(fetch as f64))
        }
        LogicalPlan::Filter(filter) => {
            rows(&filter.input)? * selectivity(&filter.predicate, &filter.input)
        }
        LogicalPlan::Projection(p) => rows(&p.input)?,
        LogicalPlan::SubqueryAlias(s) => rows(&s.input)?,
        LogicalPlan::Sort(sort) => {
            let rows = rows(&sort.input)?;
            sort.fetch.map_or(rows, |fetch| rows.min(fetch as f64))
        }
        LogicalPlan::Aggregate(aggregate) => {
            let input = rows(&aggregate.input)?;
            // Groups: the product of the grouping columns' distinct counts, within the input.
            let groups = aggregate
                .group_expr
                .iter()
                .map(|e| distinct_count(e, &aggregate.input))
                .try_fold(1.0, |product, count| count.map(|c| product * c));
            groups.map_or(input, |g| g.min(input)).max(1.0)
        }
        LogicalPlan::Join(join) => match join.join_type {
            JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => rows(&join.left)?,
            JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => rows(&join.right)?,
            // A join inside a relation this module does not reorder: its larger side.
            _ => rows(&join.left)?.max(rows(&join.right)?),
        },
        LogicalPlan::Union(union) => {
            let mut sum = 0.0;
            for input in &union.inputs {
                sum += rows(input)?;
            }
            sum
        }
        _ => return None,
    };
    Some(estimate.max(1.0))
}

/// The distinct values of `expr` over `plan`'s rows when `expr` is a table's column: its
/// recorded count (`ANALYZE`), else the width of an integer or date column's range; at most
/// the plan's rows.
pub fn distinct_count(expr: &Expr, plan: &LogicalPlan) -> Option<f64> {
    let stats = column_statistics(plan, as_column(expr)?)?;
    let count = match stats.distinct_count.get_value() {
        Some(count) => *count as f64,
        None => {
            let (min, max) = (stats.min_value.get_value()?, stats.max_value.get_value()?);
            if !is_discrete(min) {
                return None;
            }
            number(max)? - number(min)? + 1.0
        }
    };
    Some(rows(plan).map_or(count, |rows| count.min(rows)).max(1.0))
}

/// Whether a column of this value's type holds whole numbers (so its range bounds its
/// distinct values).
fn is_discrete(value: &ScalarValue) -> bool {
    matches!(
        value,
        ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::UInt8(_)
            | ScalarValue::UInt16(_)
            | ScalarValue::UInt32(_)
            | ScalarValue::UInt64(_)
            | ScalarValue::Date32(_)
    )
}

/// The share of `plan`'s rows that `predicate` keeps. Its conditions are taken as unrelated,
/// except bounds on one column (`d >= x AND d < y`), which are one range.
pub fn selectivity(predicate: &Expr, plan: &LogicalPlan) -> f64 {
    let mut share = 1.0;
    let mut ranges: Vec<Range> = Vec::new();
    for condition in split_conjunction(predicate) {
        match Range::of(condition) {
            Some(range) => match ranges.iter_mut().find(|r| r.column == range.column) {
                Some(known) => known.narrow(range),
                None => ranges.push(range),
            },
            None => share *= condition_share(condition, plan),
        }
    }
    for range in &ranges {
        share *= range.share(plan);
    }
    share.clamp(0.0, 1.0)
}

/// The share of rows one condition (not an `AND`) keeps.
fn condition_share(condition: &Expr, plan: &LogicalPlan) -> f64 {
    let share = match condition {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And => selectivity(condition, plan),
            Operator::Or => {
                let (a, b) = (selectivity(left, plan), selectivity(right, plan));
                a + b - a * b
            }
            Operator::Eq | Operator::NotEq => {
                let column = match (literal(left), literal(right)) {
                    (None, Some(_)) => Some(left.as_ref()),
                    (Some(_), None) => Some(right.as_ref()),
                    _ => None,
                };
                let equal = column
                    .and_then(|c| distinct_count(c, plan))
                    .map_or(EQUALITY, |n| 1.0 / n);
                if *op == Operator::Eq {
                    equal
                } else {
                    1.0 - equal
                }
            }
            _ => UNKNOWN,
        },
        Expr::Not(inner) => 1.0 - selectivity(inner, plan),
        Expr::Between(Between {
            expr,
            negated,
            low,
            high,
        }) => {
            // A negated BETWEEN (`Range::of` takes the others).
            let inside = match (literal(low), literal(high)) {
                (Some(low), Some(high)) => {
                    range_share(expr, plan, Some(low), Some(high)).unwrap_or(RANGE)
                }
                _ => RANGE,
            };
            if *negated { 1.0 - inside } else { inside }
        }
        Expr::InList(list) => {
            let one = distinct_count(&list.expr, plan).map_or(EQUALITY, |n| 1.0 / n);
            let inside = (one * list.list.len() as f64).min(1.0);
            if list.negated { 1.0 - inside } else { inside }
        }
        Expr::Like(like) => {
            if like.negated {
                1.0 - UNKNOWN
            } else {
                UNKNOWN
            }
        }
        Expr::IsNotNull(_) => 1.0 - UNKNOWN / 4.0,
        Expr::IsNull(_) => UNKNOWN / 4.0,
        _ => UNKNOWN,
    };
    share.clamp(0.0, 1.0)
}

/// Bounds a condition puts on one column: `c < x`, `x >= c`, `c BETWEEN x AND y`.
struct Range<'a> {
    column: &'a Expr,
    low: Option<&'a ScalarValue>,
    high: Option<&'a ScalarValue>,
}

impl<'a> Range<'a> {
    /// The bounds `condition` is, when it is a comparison of a column with a constant.
    fn of(condition: &'a Expr) -> Option<Self> {
        let (column, low, high) = match condition {
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) => (expr.as_ref(), Some(literal(low)?), Some(literal(high)?)),
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (literal(left), literal(right)) {
                    (None, Some(value)) => (left.as_ref(), *op, value),
                    (Some(value), None) => (right.as_ref(), op.swap()?, value),
                    _ => return None,
                };
                match op {
                    Operator::Lt | Operator::LtEq => (column, None, Some(value)),
                    Operator::Gt | Operator::GtEq => (column, Some(value), None),
                    _ => return None,
                }
            }
            _ => return None,
        };
        as_column(column)?;
        Some(Self { column, low, high })
    }

    /// Both conditions: the higher low bound, the lower high bound.
    fn narrow(&mut self, other: Range<'a>) {
        if let Some(low) = other.low
            && self.low.is_none_or(|l| low > l)
        {
            self.low = Some(low);
        }
        if let Some(high) = other.high
            && self.high.is_none_or(|h| high < h)
        {
            self.high = Some(high);
        }
    }

    /// The share of rows within the bounds.
    fn share(&self, plan: &LogicalPlan) -> f64 {
        range_share(self.column, plan, self.low, self.high).unwrap_or(RANGE)
    }
}

/// The share of a column's range between `low` and `high` (either open), from the column's
/// bounds, when both they and the values are numbers, decimals, dates or timestamps.
fn range_share(
    expr: &Expr,
    plan: &LogicalPlan,
    low: Option<&ScalarValue>,
    high: Option<&ScalarValue>,
) -> Option<f64> {
    let stats = column_statistics(plan, as_column(expr)?)?;
    let min = number(stats.min_value.get_value()?)?;
    let max = number(stats.max_value.get_value()?)?;
    if max <= min {
        return None;
    }
    let from = low.map_or(Some(min), number)?.max(min);
    let to = high.map_or(Some(max), number)?.min(max);
    Some(((to - from) / (max - min)).clamp(0.0, 1.0))
}

/// A value on a line, for interpolating between a column's bounds.
fn number(value: &ScalarValue) -> Option<f64> {
    Some(match value {
        ScalarValue::Int8(Some(v)) => f64::from(*v),
        ScalarValue::Int16(Some(v)) => f64::from(*v),
        ScalarValue::Int32(Some(v)) | ScalarValue::Date32(Some(v)) => f64::from(*v),
        ScalarValue::Int64(Some(v))
        | ScalarValue::Date64(Some(v))
        | ScalarValue::TimestampSecond(Some(v), _)
        | ScalarValue::TimestampMillisecond(Some(v), _)
        | ScalarValue::TimestampMicrosecond(Some(v), _)
        | ScalarValue::TimestampNanosecond(Some(v), _) => *v as f64,
        ScalarValue::UInt8(Some(v)) => f64::from(*v),
        ScalarValue::UInt16(Some(v)) => f64::from(*v),
        ScalarValue::UInt32(Some(v)) => f64::from(*v),
        ScalarValue::UInt64(Some(v)) => *v as f64,
        ScalarValue::Float32(Some(v)) => f64::from(*v),
        ScalarValue::Float64(Some(v)) => *v,
        ScalarValue::Decimal128(Some(v), _, scale) => *v as f64 / 10f64.powi(i32::from(*scale)),
        _ => return None,
    })
}

/// The literal `expr` is, through casts.
fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        Expr::Cast(cast) => literal(&cast.expr),
        Expr::TryCast(cast) => literal(&cast.expr),
        _ => None,
    }
}

/// The column `expr` reads, through casts.
pub fn as_column(expr: &Expr) -> Option<&Column> {
    match expr {
        Expr::Column(column) => Some(column),
        Expr::Cast(cast) => as_column(&cast.expr),
        Expr::TryCast(cast) => as_column(&cast.expr),
        _ => None,
    }
}

/// The statistics of the table column that `plan`'s output `column` passes on unchanged.
fn column_statistics(plan: &LogicalPlan, column: &Column) -> Option<ColumnStatistics> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let provider = source_as_provider(&scan.source).ok()?;
            let index = provider.schema().index_of(&column.name).ok()?;
            provider.statistics()?.column_statistics.get(index).cloned()
        }
        LogicalPlan::Filter(filter) => column_statistics(&filter.input, column),
        LogicalPlan::Sort(sort) => column_statistics(&sort.input, column),
        LogicalPlan::Projection(p) => {
            let index = p.schema.maybe_index_of_column(column)?;
            let source = match p.expr.get(index)? {
                Expr::Alias(alias) => as_column(&alias.expr)?,
                other => as_column(other)?,
            };
            column_statistics(&p.input, source)
        }
        LogicalPlan::SubqueryAlias(alias) => {
            let index = alias.schema.maybe_index_of_column(column)?;
            let inner = Column::from(alias.input.schema().qualified_field(index));
            column_statistics(&alias.input, &inner)
        }
        LogicalPlan::Aggregate(aggregate) => {
            let index = aggregate.schema.maybe_index_of_column(column)?;
            let group = as_column(aggregate.group_expr.get(index)?)?;
            column_statistics(&aggregate.input, group)
        }
        LogicalPlan::Join(join) => {
            if join.left.schema().has_column(column) {
                column_statistics(&join.left, column)
            } else {
                column_statistics(&join.right, column)
            }
        }
        _ => None,
    }
}
