//! The month (quarter, year) of a `DATE` without a round trip through nanosecond timestamps.
//!
//! `CAST(date_trunc('month', d) AS DATE)` is how reports group a date column by month. DataFusion
//! has no `date_trunc` for dates: it casts each date to a nanosecond timestamp, truncates that,
//! and the query casts it back, three passes per row; on the demo's 23 M sessions grouping by
//! month took 0.45 s against 0.12 s by day. This rule asks for the same date from DataFusion's own
//! `make_date(date_part('year', d), date_part('month', d), 1)` (0.31 s), which also holds for
//! dates no nanosecond timestamp can (before 1677, after 2262). Written here because DataFusion
//! has no such simplification; only built-in functions come out of it, so a plan that uses it
//! still runs on a cluster whose scheduler and executors know nothing of gamelake.

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::error::Result;
use datafusion::functions::expr_fn::{date_part, make_date};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{Cast, Expr, ExprSchemable, LogicalPlan, lit};
use datafusion::optimizer::AnalyzerRule;

/// Rewrites `CAST(date_trunc('day' | 'month' | 'quarter' | 'year', <date>) AS DATE)` into the
/// date itself or `make_date(...)`.
#[derive(Debug, Default)]
pub struct MonthOfDate;

/// An analyzer rule, after type coercion (which adds the casts it looks for) and before the
/// optimizer, whose common-subexpression pass would otherwise pull the shared
/// `CAST(d AS TIMESTAMP)` out of the pattern first.
impl AnalyzerRule for MonthOfDate {
    fn name(&self) -> &str {
        "gamelake_month_of_date"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        plan.transform_up_with_subqueries(rewrite_node).data()
    }
}

/// The node with its date truncations rewritten.
fn rewrite_node(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    // The date's type comes from the node's input; nodes of several inputs (joins) are left
    // alone.
    let [input] = plan.inputs()[..] else {
        return Ok(Transformed::no(plan));
    };
    let schema = input.schema().clone();
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let rewritten = expr.transform_up(|e| match month_of(&e, &schema)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(e)),
        })?;
        Ok(rewritten.update_data(|e| name.restore(e)))
    })
}

/// The `make_date` form of `expr`, when it is `CAST(date_trunc(unit, CAST(d AS TIMESTAMP)) AS
/// DATE)` with `d` a date and `unit` day, month, quarter or year.
fn month_of(expr: &Expr, schema: &datafusion::common::DFSchema) -> Result<Option<Expr>> {
    let Expr::Cast(Cast {
        expr: truncated,
        field,
    }) = expr
    else {
        return Ok(None);
    };
    if field.data_type() != &DataType::Date32 {
        return Ok(None);
    }
    let Expr::ScalarFunction(ScalarFunction { func, args }) = truncated.as_ref() else {
        return Ok(None);
    };
    let [Expr::Literal(unit, _), Expr::Cast(Cast { expr: date, .. })] = &args[..] else {
        return Ok(None);
    };
    if func.name() != "date_trunc" || date.get_type(schema)? != DataType::Date32 {
        return Ok(None);
    }
    let year = || date_part(lit("year"), date.as_ref().clone());
    let month = || date_part(lit("month"), date.as_ref().clone());
    Ok(match unit_name(unit).as_deref() {
        Some("day") => Some(date.as_ref().clone()),
        Some("month") => Some(make_date(year(), month(), lit(1i32))),
        Some("quarter") => {
            let first_month = (month() - lit(1i32)) / lit(3i32) * lit(3i32) + lit(1i32);
            Some(make_date(year(), first_month, lit(1i32)))
        }
        Some("year") => Some(make_date(year(), lit(1i32), lit(1i32))),
        _ => None,
    })
}

/// A literal unit, lower-cased (`'MONTH'` works in `date_trunc` too).
fn unit_name(unit: &ScalarValue) -> Option<String> {
    unit.try_as_str().flatten().map(str::to_ascii_lowercase)
}
