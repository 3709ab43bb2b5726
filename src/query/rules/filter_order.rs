//! Cheap conjuncts of a filter first: comparisons of fixed-width columns and literals ahead of
//! string comparisons, `IN` lists, `LIKE` and functions.
//!
//! DataFusion evaluates `a AND b` by evaluating `a` on every row, then `b` only on the rows `a`
//! kept when it kept at most a fifth of them (and on every row otherwise), in the order the
//! query wrote them. TPC-H Q12 writes `l_shipmode IN ('MAIL', 'SHIP')` (string comparisons,
//! keeping two rows in seven) before its date ranges (one row in seven), so the strings of all
//! 6 M lineitems were compared: its `FilterExec` took 136 ms, and the query 0.16 s; with this
//! rule 0.13 s (two alternating rounds of all 22 queries, `benches/RESULTS.md`). This rule
//! moves comparisons of a column of a fixed-width type (numbers, dates, timestamps, decimals,
//! booleans) with a literal and a column's `IS [NOT] NULL` to the front, then comparisons of
//! two such columns, then the rest, keeping the written order within each group. Such
//! comparisons cost a few nanoseconds a row, so the worst case (a selective string comparison
//! behind an unselective date range) costs little; the best case skips most of the expensive
//! comparisons.
//!
//! Moving a comparison that cannot fail ahead can only shrink the set of rows any other
//! conjunct is evaluated on (what `a AND b` keeps is within what `b` keeps), so an expression
//! a query guards by another conjunct (`x <> 0 AND 10 / x > 1`) sees no row it would not
//! have seen before. Written here because DataFusion keeps a filter's conjuncts in the
//! written order (its `reorder_filters` applies to Parquet row filters only).

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{
    BinaryExpr, Column, IsNotNullExpr, IsNullExpr, Literal,
};
use datafusion::physical_expr::{PhysicalExpr, conjunction, split_conjunction};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};

use crate::query::options::GamelakeOptions;

/// The rule (see the module's documentation); on unless `gamelake.cheap_filters_first` is false.
#[derive(Debug, Default)]
pub struct CheapFiltersFirst;

impl PhysicalOptimizerRule for CheapFiltersFirst {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !GamelakeOptions::of(config).cheap_filters_first {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(predicate) = cheap_first(filter.predicate(), &filter.input().schema()) else {
                return Ok(Transformed::no(node));
            };
            let reordered = FilterExecBuilder::from(filter)
                .with_predicate(predicate)
                .build()?;
            Ok(Transformed::yes(
                Arc::new(reordered) as Arc<dyn ExecutionPlan>
            ))
        })
        .data()
    }

    fn name(&self) -> &str {
        "gamelake_cheap_filters_first"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `predicate` with its conjuncts ordered by [`cost`], or `None` when they already are.
fn cheap_first(
    predicate: &Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Option<Arc<dyn PhysicalExpr>> {
    let mut conjuncts: Vec<_> = split_conjunction(predicate)
        .into_iter()
        .map(|c| (cost(c, schema), c))
        .collect();
    if conjuncts.is_sorted_by_key(|(cost, _)| *cost) {
        return None;
    }
    // Stable: the written order within each group.
    conjuncts.sort_by_key(|(cost, _)| *cost);
    Some(conjunction(
        conjuncts.into_iter().map(|(_, c)| Arc::clone(c)),
    ))
}

/// How a conjunct ranks, cheapest first. A comparison of a fixed-width column with a literal
/// or a column's `IS [NOT] NULL` (scalar kernels, and the conditions most likely to be
/// selective ranges), then a comparison of two fixed-width columns; these cannot fail. Then
/// everything else, in the written order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cost {
    ColumnWithLiteral,
    TwoColumns,
    Other,
}

fn cost(conjunct: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Cost {
    if let Some(binary) = conjunct.downcast_ref::<BinaryExpr>() {
        use Operator::*;
        let comparison = matches!(binary.op(), Eq | NotEq | Lt | LtEq | Gt | GtEq);
        let (left, right) = (binary.left(), binary.right());
        if !comparison || !fixed_width(left, schema) || !fixed_width(right, schema) {
            return Cost::Other;
        }
        let literals = [left, right]
            .iter()
            .filter(|side| side.downcast_ref::<Literal>().is_some())
            .count();
        return match literals {
            0 => Cost::TwoColumns,
            _ => Cost::ColumnWithLiteral,
        };
    }
    let null_test_arg = conjunct
        .downcast_ref::<IsNullExpr>()
        .map(IsNullExpr::arg)
        .or_else(|| {
            conjunct
                .downcast_ref::<IsNotNullExpr>()
                .map(IsNotNullExpr::arg)
        });
    match null_test_arg {
        Some(arg) if arg.downcast_ref::<Column>().is_some() => Cost::ColumnWithLiteral,
        _ => Cost::Other,
    }
}

/// A column or literal of a fixed-width type.
fn fixed_width(operand: &Arc<dyn PhysicalExpr>, schema: &Schema) -> bool {
    let leaf =
        operand.downcast_ref::<Column>().is_some() || operand.downcast_ref::<Literal>().is_some();
    leaf && operand
        .data_type(schema)
        .is_ok_and(|t| t.is_primitive() || t == DataType::Boolean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::{binary, col, is_not_null, lit};

    #[test]
    fn literal_comparisons_then_column_comparisons_then_the_rest_each_as_written() {
        let schema = Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Int32, true),
            Field::new("s", DataType::Utf8, true),
        ]);
        let c = |name: &str| col(name, &schema).expect("column");
        let cmp = |l, op, r| binary(l, op, r, &schema).expect("comparison");
        let predicate = conjunction([
            cmp(c("s"), Operator::Eq, lit("x")),
            cmp(c("a"), Operator::Lt, c("b")),
            cmp(c("a"), Operator::Gt, lit(5)),
            cmp(c("s"), Operator::NotEq, lit("y")),
            is_not_null(c("b")).expect("is not null"),
        ]);
        let ordered = cheap_first(&predicate, &schema).expect("reordered");
        assert_eq!(
            ordered.to_string(),
            "a@0 > 5 AND b@1 IS NOT NULL AND a@0 < b@1 AND s@2 = x AND s@2 != y"
        );
        // Already in order: left as it is.
        assert!(cheap_first(&ordered, &schema).is_none());
    }
}
