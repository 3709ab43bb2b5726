//! Decimal `*` (and `+`, `-` of sides of different scales) without an overflow check per value,
//! when a batch's values cannot overflow.
//!
//! DataFusion computes `DECIMAL` arithmetic with arrow's kernels, which check every 128-bit
//! product and sum for overflow (`i128::checked_mul` per value, and for `1 - l_discount`, whose
//! sides differ in scale, two checked multiplications to rescale them first), one value at a
//! time. TPC-H's `l_extendedprice * (1 - l_discount) * (1 + l_tax)` does six of them per
//! lineitem row. This rule replaces such an operation by a function that looks at each batch
//! first: the largest magnitude on each side (one vectorised pass) bounds what the result can
//! be; when that bound fits in 128 bits, the whole batch is computed with plain wrapping
//! arithmetic (a single 64 x 64 -> 128-bit multiplication when both sides fit in 64 bits, as
//! money amounts do), otherwise with arrow's checked kernel as before. The answers, their types
//! and the overflow error are DataFusion's own; only the time differs.
//!
//! A logical optimizer rule, run after DataFusion's (types are known then), so that the function
//! reaches every place an expression can be: projections, filters, aggregate arguments, window
//! and sort expressions. Joins' conditions and table scans' filters (used for pruning) are left
//! as they are. Written here because arrow has no unchecked decimal kernels and DataFusion no
//! setting for them; switched by `gamelake.fast_decimal_arithmetic`.

use std::cmp::Ordering;
use std::sync::{Arc, LazyLock};

use arrow::array::{Array, AsArray, Decimal128Array};
use arrow::compute::kernels::numeric;
use arrow::datatypes::{
    DECIMAL128_MAX_PRECISION, DECIMAL128_MAX_SCALE, DataType, Decimal128Type, Field, FieldRef,
};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, ExprSchemable, LogicalPlan, Operator, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr_common::datum::apply;

use crate::query::options::GamelakeOptions;

/// The rule (see the module's documentation); on unless `gamelake.fast_decimal_arithmetic` is
/// false.
#[derive(Debug, Default)]
pub struct DecimalArithmetic;

impl OptimizerRule for DecimalArithmetic {
    fn name(&self) -> &str {
        "gamelake_decimal_arithmetic"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !GamelakeOptions::of(&config.options()).fast_decimal_arithmetic
            || !matches!(
                plan,
                LogicalPlan::Projection(_)
                    | LogicalPlan::Filter(_)
                    | LogicalPlan::Aggregate(_)
                    | LogicalPlan::Window(_)
                    | LogicalPlan::Sort(_)
            )
        {
            return Ok(Transformed::no(plan));
        }
        let [input] = plan.inputs()[..] else {
            return Ok(Transformed::no(plan));
        };
        let schema = Arc::clone(input.schema());
        // The plan's columns keep their names (`sum(a * b)`, not `sum(decimal_mul(a, b))`), so
        // the nodes above still find them.
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| rewrite_operation(e, &schema))?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    }
}

/// `a * b`, `a + b` or `a - b` of two `DECIMAL(p, s)` values as the matching function, when
/// its result type is the one DataFusion gave the operation.
fn rewrite_operation(expr: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = &expr else {
        return Ok(Transformed::no(expr));
    };
    let Some(operation) = Operation::of(*op) else {
        return Ok(Transformed::no(expr));
    };
    let (left_type, right_type) = (left.get_type(schema)?, right.get_type(schema)?);
    let result = operation.result_type(&left_type, &right_type);
    if result.is_none() || result != Some(expr.get_type(schema)?) {
        return Ok(Transformed::no(expr));
    }
    // Sides of one scale are added by arrow without multiplications, one check each: as fast
    // as a pass over the magnitudes (measured: `sum(l_extendedprice + l_tax)`).
    let same_scale = matches!((&left_type, &right_type),
        (DataType::Decimal128(_, a), DataType::Decimal128(_, b)) if a == b);
    if operation != Operation::Mul && same_scale {
        return Ok(Transformed::no(expr));
    }
    let args = vec![left.as_ref().clone(), right.as_ref().clone()];
    Ok(Transformed::yes(Expr::ScalarFunction(
        ScalarFunction::new_udf(operation.function(), args),
    )))
}

/// One of the three operations, with arrow's rules for its result's precision and scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Operation {
    Mul,
    Add,
    Sub,
}

impl Operation {
    fn of(op: Operator) -> Option<Self> {
        match op {
            Operator::Multiply => Some(Self::Mul),
            Operator::Plus => Some(Self::Add),
            Operator::Minus => Some(Self::Sub),
            _ => None,
        }
    }

    /// The function that computes it.
    fn function(self) -> Arc<ScalarUDF> {
        static FUNCTIONS: LazyLock<[Arc<ScalarUDF>; 3]> = LazyLock::new(|| {
            [Operation::Mul, Operation::Add, Operation::Sub].map(|operation| {
                Arc::new(ScalarUDF::new_from_impl(DecimalFunction {
                    operation,
                    signature: Signature::any(2, Volatility::Immutable),
                }))
            })
        });
        Arc::clone(&FUNCTIONS[self as usize])
    }

    /// arrow's result type (`arrow_arith::numeric`), or `None` unless both sides are
    /// `Decimal128` of a non-negative scale.
    fn result_type(self, left: &DataType, right: &DataType) -> Option<DataType> {
        let (&DataType::Decimal128(p1, s1), &DataType::Decimal128(p2, s2)) = (left, right) else {
            return None;
        };
        if s1 < 0 || s2 < 0 {
            return None;
        }
        let (precision, scale) = match self {
            Self::Mul => (p1 + p2 + 1, s1.checked_add(s2)?),
            Self::Add | Self::Sub => {
                let scale = s1.max(s2);
                let digits = (p1 as i8 - s1).max(p2 as i8 - s2);
                ((scale + digits + 1) as u8, scale)
            }
        };
        (scale <= DECIMAL128_MAX_SCALE)
            .then(|| DataType::Decimal128(precision.min(DECIMAL128_MAX_PRECISION), scale))
    }

    /// arrow's checked kernel, for what the fast path cannot prove safe.
    fn checked(self, left: &ColumnarValue, right: &ColumnarValue) -> Result<ColumnarValue> {
        // DataFusion's `BinaryExpr` calls the wrapping kernels; for decimals arrow checks
        // overflow in them too.
        match self {
            Self::Mul => apply(left, right, numeric::mul_wrapping),
            Self::Add => apply(left, right, numeric::add_wrapping),
            Self::Sub => apply(left, right, numeric::sub_wrapping),
        }
    }
}

/// `decimal_mul(a, b)`, `decimal_add(a, b)`, `decimal_sub(a, b)`: the operation on two
/// `Decimal128` values, as arrow computes it.
#[derive(Debug, PartialEq, Eq, Hash)]
struct DecimalFunction {
    operation: Operation,
    signature: Signature,
}

impl ScalarUDFImpl for DecimalFunction {
    fn name(&self) -> &str {
        match self.operation {
            Operation::Mul => "decimal_mul",
            Operation::Add => "decimal_add",
            Operation::Sub => "decimal_sub",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        let [left, right] = arg_types else {
            return datafusion::common::plan_err!("{} takes two arguments", self.name());
        };
        self.operation.result_type(left, right).ok_or_else(|| {
            datafusion::common::DataFusionError::Plan(format!(
                "{} takes two Decimal128 values, not {left} and {right}",
                self.name()
            ))
        })
    }

    /// Null when either side can be, as for the operator.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let types: Vec<DataType> = args
            .arg_fields
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let nullable = args.arg_fields.iter().any(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            self.return_type(&types)?,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [left, right] = &args.args[..] else {
            return datafusion::common::exec_err!("{} takes two arguments", self.name());
        };
        let (Some(l), Some(r)) = (Side::of(left), Side::of(right)) else {
            return self.operation.checked(left, right);
        };
        match unchecked(self.operation, l, r)? {
            Some(values) => {
                let DataType::Decimal128(precision, scale) = *args.return_field.data_type() else {
                    return datafusion::common::exec_err!("{} returns Decimal128", self.name());
                };
                let values = values.with_precision_and_scale(precision, scale)?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
            None => self.operation.checked(left, right),
        }
    }
}

/// One side of an operation: a batch's values, or one value for the whole batch.
#[derive(Clone, Copy)]
enum Side<'a> {
    Values(&'a Decimal128Array, i8),
    Value(i128, i8),
}

impl<'a> Side<'a> {
    /// The side, unless it is a null or both sides are single values (computed once, by arrow).
    fn of(value: &'a ColumnarValue) -> Option<Self> {
        match value {
            ColumnarValue::Array(array) => {
                let DataType::Decimal128(_, scale) = *array.data_type() else {
                    return None;
                };
                Some(Self::Values(
                    array.as_primitive_opt::<Decimal128Type>()?,
                    scale,
                ))
            }
            ColumnarValue::Scalar(ScalarValue::Decimal128(Some(v), _, scale)) => {
                Some(Self::Value(*v, *scale))
            }
            ColumnarValue::Scalar(_) => None,
        }
    }

    fn scale(self) -> i8 {
        match self {
            Self::Values(_, scale) | Self::Value(_, scale) => scale,
        }
    }

    /// A bound `b` on the side's magnitude: every value `v` has `-2^b <= v < 2^b`. One pass
    /// over the values (null slots too: that only loosens the bound).
    fn magnitude_bits(self) -> u32 {
        let folded = match self {
            Self::Values(array, _) => array
                .values()
                .iter()
                .fold(0i128, |acc, &v| acc | (v ^ (v >> 127))),
            Self::Value(v, _) => v ^ (v >> 127),
        };
        128 - folded.leading_zeros()
    }
}

/// The operation computed without overflow checks, or `None` when the sides' magnitudes do not
/// rule out overflow (or both are single values).
fn unchecked(operation: Operation, l: Side, r: Side) -> Result<Option<Decimal128Array>> {
    let (lb, rb) = (l.magnitude_bits(), r.magnitude_bits());
    match operation {
        Operation::Mul if lb + rb > 126 => Ok(None),
        // Both sides are 64-bit values: one widening multiplication.
        Operation::Mul if lb <= 63 && rb <= 63 => combine(l, r, |a, b| {
            (a as i64 as i128).wrapping_mul(b as i64 as i128)
        }),
        Operation::Mul => combine(l, r, i128::wrapping_mul),
        Operation::Add | Operation::Sub => {
            // The side of the smaller scale is multiplied up to the other's.
            let (ls, rs) = (l.scale(), r.scale());
            let factor = 10i128.pow(u32::from(ls.abs_diff(rs)));
            let factor_bits = 128 - factor.leading_zeros();
            let (lb, rb) = if ls < rs {
                (lb + factor_bits, rb)
            } else if rs < ls {
                (lb, rb + factor_bits)
            } else {
                (lb, rb)
            };
            if lb.max(rb) + 1 > 126 {
                return Ok(None);
            }
            let up = |v: i128| v.wrapping_mul(factor);
            match (operation, ls.cmp(&rs)) {
                (Operation::Add, Ordering::Less) => combine(l, r, |a, b| up(a).wrapping_add(b)),
                (Operation::Sub, Ordering::Less) => combine(l, r, |a, b| up(a).wrapping_sub(b)),
                (Operation::Add, Ordering::Greater) => combine(l, r, |a, b| a.wrapping_add(up(b))),
                (Operation::Sub, Ordering::Greater) => combine(l, r, |a, b| a.wrapping_sub(up(b))),
                (Operation::Add, Ordering::Equal) => combine(l, r, i128::wrapping_add),
                _ => combine(l, r, i128::wrapping_sub),
            }
        }
    }
}

/// `f` over the two sides, row by row (nulls: where either side is null).
fn combine(l: Side, r: Side, f: impl Fn(i128, i128) -> i128) -> Result<Option<Decimal128Array>> {
    Ok(match (l, r) {
        (Side::Values(a, _), Side::Values(b, _)) => Some(arrow::compute::binary(a, b, f)?),
        (Side::Values(a, _), Side::Value(v, _)) => Some(a.unary(|x| f(x, v))),
        (Side::Value(v, _), Side::Values(b, _)) => Some(b.unary(|y| f(v, y))),
        (Side::Value(..), Side::Value(..)) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values of every magnitude: small money amounts, 64-bit edges, and 128-bit edges that
    /// overflow when multiplied.
    fn samples(seed: u64, len: usize) -> Decimal128Array {
        let mut x = seed;
        let edges = [
            0,
            1,
            -1,
            i64::MAX as i128,
            i64::MIN as i128,
            i128::MAX,
            i128::MIN,
        ];
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match (x % 10, i % 11) {
                    (0, _) => None,
                    (_, 0) => Some(edges[(x % 7) as usize]),
                    (1, _) => Some((x as i64) as i128 * (x as i32) as i128),
                    _ => Some((x % 2_000_000) as i128 - 1_000_000),
                }
            })
            .collect()
    }

    /// The fast path answers what arrow's checked kernel answers, for every batch it takes.
    #[test]
    fn same_answers_as_arrow() {
        let mut fast = 0;
        for seed in 1..200u64 {
            // Small batches, so that many hold no edge value and take the fast path.
            let len = 1 + (seed as usize % 9);
            for (ls, rs) in [(2, 2), (0, 2), (4, 2), (2, 0)] {
                let l = samples(seed, len).with_precision_and_scale(38, ls).unwrap();
                let r = samples(seed * 31 + 7, len)
                    .with_precision_and_scale(38, rs)
                    .unwrap();
                let single = ScalarValue::try_from_array(&r, 0).unwrap();
                for operation in [Operation::Mul, Operation::Add, Operation::Sub] {
                    let sides = [
                        (
                            ColumnarValue::Array(Arc::new(l.clone())),
                            ColumnarValue::Array(Arc::new(r.clone())),
                        ),
                        (
                            ColumnarValue::Array(Arc::new(l.clone())),
                            ColumnarValue::Scalar(single.clone()),
                        ),
                        (
                            ColumnarValue::Scalar(single.clone()),
                            ColumnarValue::Array(Arc::new(l.clone())),
                        ),
                    ];
                    for (left, right) in sides {
                        let expected = operation.checked(&left, &right);
                        let (Some(a), Some(b)) = (Side::of(&left), Side::of(&right)) else {
                            continue;
                        };
                        let Some(got) = unchecked(operation, a, b).unwrap() else {
                            continue;
                        };
                        fast += 1;
                        let expected = expected
                            .unwrap_or_else(|e| {
                                panic!("{operation:?} overflowed on a fast batch: {e}")
                            })
                            .into_array(len)
                            .unwrap();
                        let expected = expected.as_primitive::<Decimal128Type>();
                        assert_eq!(
                            got.iter().collect::<Vec<_>>(),
                            expected.iter().collect::<Vec<_>>(),
                            "{operation:?} scales {ls} and {rs}"
                        );
                        assert_eq!(got.nulls(), expected.nulls());
                    }
                }
            }
        }
        assert!(fast > 1000, "only {fast} batches took the fast path");
    }

    /// A batch whose product overflows takes arrow's path and its error.
    #[test]
    fn overflow_is_still_an_error() {
        let big: Decimal128Array = vec![Some(i128::MAX / 3), Some(2)].into_iter().collect();
        let sides = (
            ColumnarValue::Array(Arc::new(big.clone())),
            ColumnarValue::Array(Arc::new(big)),
        );
        let (l, r) = (Side::of(&sides.0).unwrap(), Side::of(&sides.1).unwrap());
        assert!(unchecked(Operation::Mul, l, r).unwrap().is_none());
        let err = Operation::Mul.checked(&sides.0, &sides.1).unwrap_err();
        assert!(err.to_string().contains("Overflow"), "{err}");
    }
}
