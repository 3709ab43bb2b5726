//! Chains of inner joins in the order that keeps intermediate results small.
//!
//! DataFusion joins tables in the order the query names them and only chooses, per join, which
//! side to hash. TPC-H Q7 names `supplier, lineitem, orders, customer, nation n1, nation n2`:
//! its 1.8 M lineitems of two years meet all 1.5 M orders (hashed, in partitions) and 150,000
//! customers before the two nations (2 of 25 each) keep 5,924 rows. Joined first, the nations
//! keep 798 suppliers and 12,010 customers; their 145,700 lineitems then meet the 121,300
//! orders of those customers, one hash table built from them.
//!
//! This rule takes each chain of inner equi-joins (through column-only projections), with its
//! relations (tables and everything below that is not such a join) and its join conditions,
//! estimates each relation's rows from the tables' statistics (`cardinality`), and orders the
//! joins greedily: it joins, again and again, the two connected parts whose join is estimated
//! smallest (Fegaras' greedy operator ordering; no cross products). The new order replaces the
//! written one only when the sum of its estimated intermediate rows is under a third of the
//! written order's ([`MIN_GAIN`]), so a plan whose estimates are near each other, or unknown
//! (a table without statistics), stays as written; which side of each join is hashed is then
//! DataFusion's choice as before. Reordering inner joins never changes an answer: every
//! condition is applied at the first join where all the relations it names are present.
//! DataFusion's `eliminate_cross_join` flattens a reordered chain into the written shape again
//! on the optimizer's next pass; this rule, last in each pass, orders it the same way again, so
//! the passes end with the same plan.
//!
//! Written here because DataFusion 55 has no join reordering (apache/datafusion#3843; a
//! cost-based enumeration is proposed in apache/datafusion#24456 and would replace this rule).

mod cardinality;

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, NullEquality};
use datafusion::error::Result;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, Join, JoinConstraint, JoinType, LogicalPlan, Projection};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

use crate::query::options::GamelakeOptions;

/// The most relations a chain may join for this rule to order it (the greedy search is cubic
/// in them; chains this long are not written by hand).
const MAX_RELATIONS: usize = 16;

/// How much smaller (estimated intermediate rows) the greedy order must be than the written
/// one to replace it. The estimates leave out the filters hash joins pass down to scans
/// (DataFusion's dynamic filters), which already spare a written order much of its work:
/// TPC-H Q5, estimated 2.4 times smaller reordered, ran slower (0.30-0.39 s against
/// 0.29-0.35 s); Q7, 18 times, faster (0.25-0.29 s against 0.25-0.34 s, median 0.27 s
/// against 0.32 s).
const MIN_GAIN: f64 = 3.0;

/// The rule (see the module's documentation); on unless `gamelake.join_order` is false.
#[derive(Debug, Default)]
pub struct JoinOrder;

impl OptimizerRule for JoinOrder {
    fn name(&self) -> &str {
        "gamelake_join_order"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        // The rule walks the plan itself: a chain is ordered as a whole, from its top join.
        None
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        if !GamelakeOptions::of(&config.options()).join_order {
            return Ok(Transformed::no(plan));
        }
        order(plan)
    }
}

/// Orders every chain of inner joins in `plan`.
fn order(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if chain_join(&plan).is_none() {
        return plan.map_children(order);
    }
    let plan = order_relations(plan)?;
    let mut chain = Chain::default();
    let written = chain.add(&plan.data);
    match chain.reorder(&written, plan.data.schema().columns())? {
        Some(reordered) => Ok(Transformed::yes(reordered)),
        None => Ok(plan),
    }
}

/// Orders the chains inside the relations of the chain `plan` is a node of.
fn order_relations(plan: LogicalPlan) -> Result<Transformed<LogicalPlan>> {
    if chain_join(&plan).is_some() {
        plan.map_children(order_relations)
    } else {
        order(plan)
    }
}

/// The inner equi-join a node of a chain is: the join itself, or the one under a projection
/// of columns only.
fn chain_join(plan: &LogicalPlan) -> Option<&Join> {
    match plan {
        LogicalPlan::Join(join)
            if join.join_type == JoinType::Inner
                && join.null_equality == NullEquality::NullEqualsNothing
                && !join.null_aware =>
        {
            Some(join)
        }
        LogicalPlan::Projection(p) if p.expr.iter().all(|e| matches!(e, Expr::Column(_))) => {
            match p.input.as_ref() {
                LogicalPlan::Join(_) => chain_join(&p.input),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A join tree over a chain's relations (indexes into [`Chain::relations`]).
#[derive(Debug, Clone, PartialEq)]
enum Tree {
    Relation(usize),
    Join(Box<Tree>, Box<Tree>),
}

impl Tree {
    /// The relations under this tree, as a bit set.
    fn set(&self) -> u32 {
        match self {
            Tree::Relation(i) => 1 << i,
            Tree::Join(a, b) => a.set() | b.set(),
        }
    }
}

/// One condition `left = right` of a chain, each side over one relation.
#[derive(Debug)]
struct Key {
    left: Side,
    right: Side,
}

/// One side of a [`Key`]: its relation, its expression, and the expression's distinct values
/// in the relation when known (`cardinality::distinct_count`, looked up once).
#[derive(Debug)]
struct Side {
    relation: usize,
    expr: Expr,
    distinct: Option<f64>,
}

impl Key {
    /// The key's sides as (the one in `a`, the one in `b`), for two disjoint sets of
    /// relations; `None` when the key does not join them.
    fn between(&self, a: u32, b: u32) -> Option<(&Side, &Side)> {
        let (l, r) = (1 << self.left.relation, 1 << self.right.relation);
        if a & l != 0 && b & r != 0 {
            Some((&self.left, &self.right))
        } else if b & l != 0 && a & r != 0 {
            Some((&self.right, &self.left))
        } else {
            None
        }
    }
}

impl Side {
    /// Distinct values of the key in a part of `rows` rows: its count, else the rows.
    fn distinct_within(&self, rows: f64) -> f64 {
        self.distinct.unwrap_or(rows).min(rows)
    }
}

/// A chain of inner joins taken apart.
#[derive(Debug, Default)]
struct Chain {
    relations: Vec<LogicalPlan>,
    keys: Vec<(Expr, Expr)>,
    /// Conditions other than equalities of two relations (the joins' filters).
    filters: Vec<Expr>,
}

impl Chain {
    /// Adds a node of the chain and what is under it; returns its tree.
    fn add(&mut self, plan: &LogicalPlan) -> Tree {
        let Some(join) = chain_join(plan) else {
            self.relations.push(plan.clone());
            return Tree::Relation(self.relations.len() - 1);
        };
        self.keys.extend(join.on.iter().cloned());
        self.filters.extend(join.filter.iter().cloned());
        let left = self.add(&join.left);
        let right = self.add(&join.right);
        Tree::Join(Box::new(left), Box::new(right))
    }

    /// The chain in the greedy order, when that is much smaller by estimate than `written`;
    /// `None` when it is not, or when the chain is one this rule leaves alone.
    fn reorder(&self, written: &Tree, columns: Vec<Column>) -> Result<Option<LogicalPlan>> {
        let n = self.relations.len();
        if !(3..=MAX_RELATIONS).contains(&n) || self.filters.iter().any(Expr::is_volatile) {
            return Ok(None);
        }
        let Some(keys) = self.placed_keys() else {
            return Ok(None);
        };
        let Some(rows) = self
            .relations
            .iter()
            .map(cardinality::rows)
            .collect::<Option<Vec<f64>>>()
        else {
            return Ok(None);
        };
        let sizes = Sizes {
            rows: &rows,
            keys: &keys,
        };
        let Some((greedy, greedy_cost)) = sizes.greedy() else {
            return Ok(None);
        };
        let (_, written_cost) = sizes.cost(written);
        tracing::debug!(
            written_cost,
            greedy_cost,
            ?rows,
            ?written,
            ?greedy,
            "join order"
        );
        if greedy == *written || greedy_cost * MIN_GAIN > written_cost {
            return Ok(None);
        }
        let mut applied = vec![false; self.filters.len()];
        let joined = self.build(&greedy, &keys, greedy.set(), &mut applied)?;
        project(joined, columns).map(Some)
    }

    /// The join conditions, each side placed in its relation; `None` when a side reads
    /// several relations or none (such a chain is left as written).
    fn placed_keys(&self) -> Option<Vec<Key>> {
        let side = |expr: &Expr| {
            let relation = self.relation_of(expr)?;
            let distinct = cardinality::distinct_count(expr, &self.relations[relation]);
            Some(Side {
                relation,
                expr: expr.clone(),
                distinct,
            })
        };
        self.keys
            .iter()
            .map(|(l, r)| {
                let (left, right) = (side(l)?, side(r)?);
                (left.relation != right.relation).then_some(Key { left, right })
            })
            .collect()
    }

    /// The one relation all of `expr`'s columns belong to.
    fn relation_of(&self, expr: &Expr) -> Option<usize> {
        let mut found = None;
        for column in expr.column_refs() {
            let i = self
                .relations
                .iter()
                .position(|r| r.schema().has_column(column))?;
            if found.is_some_and(|f| f != i) {
                return None;
            }
            found = Some(i);
        }
        found
    }

    /// The bit set of the relations `expr` reads (those it names no column of are left out).
    fn relations_of(&self, expr: &Expr) -> u32 {
        expr.column_refs()
            .into_iter()
            .filter_map(|c| self.relations.iter().position(|r| r.schema().has_column(c)))
            .fold(0, |set, i| set | (1 << i))
    }

    /// The plan of `tree`: each join with the conditions between its two sides, and the
    /// filters not yet `applied` that name no relation outside it (at the top, `all`, every
    /// filter left).
    fn build(
        &self,
        tree: &Tree,
        keys: &[Key],
        all: u32,
        applied: &mut [bool],
    ) -> Result<LogicalPlan> {
        let (a, b) = match tree {
            Tree::Relation(i) => return Ok(self.relations[*i].clone()),
            Tree::Join(a, b) => (a, b),
        };
        let (left, right) = (
            self.build(a, keys, all, applied)?,
            self.build(b, keys, all, applied)?,
        );
        let (left_set, right_set) = (a.set(), b.set());
        let on = keys
            .iter()
            .filter_map(|key| key.between(left_set, right_set))
            .map(|(l, r)| (l.expr.clone(), r.expr.clone()))
            .collect();
        let here = left_set | right_set;
        let mut filters = Vec::new();
        for (i, filter) in self.filters.iter().enumerate() {
            let set = self.relations_of(filter);
            if !applied[i] && ((set & here) == set || here == all) {
                applied[i] = true;
                filters.push(filter.clone());
            }
        }
        let join = Join::try_new(
            Arc::new(left),
            Arc::new(right),
            on,
            conjunction(filters),
            JoinType::Inner,
            JoinConstraint::On,
            NullEquality::NullEqualsNothing,
            false,
        )?;
        Ok(LogicalPlan::Join(join))
    }
}

/// `plan` with the written chain's output columns, in its order.
fn project(plan: LogicalPlan, columns: Vec<Column>) -> Result<LogicalPlan> {
    let expr = columns.into_iter().map(Expr::Column).collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        expr,
        Arc::new(plan),
    )?))
}

/// Estimated sizes of a chain's joins.
struct Sizes<'a> {
    rows: &'a [f64],
    keys: &'a [Key],
}

impl Sizes<'_> {
    /// The greedy order and its cost, or `None` when the relations are not all connected by
    /// conditions (a cross product is left where the query wrote it).
    fn greedy(&self) -> Option<(Tree, f64)> {
        let mut parts: Vec<(Tree, f64)> = (0..self.rows.len())
            .map(|i| (Tree::Relation(i), self.rows[i]))
            .collect();
        let mut cost = 0.0;
        while parts.len() > 1 {
            let mut best: Option<(usize, usize, f64)> = None;
            for i in 0..parts.len() {
                for j in i + 1..parts.len() {
                    let (a, b) = (&parts[i], &parts[j]);
                    let Some(rows) = self.join_rows(a.0.set(), a.1, b.0.set(), b.1) else {
                        continue;
                    };
                    if best.is_none_or(|(_, _, r)| rows < r) {
                        best = Some((i, j, rows));
                    }
                }
            }
            let (i, j, rows) = best?;
            let b = parts.remove(j);
            let a = parts.remove(i);
            cost += rows;
            // The larger side first, the way a query lists a fact table before dimensions;
            // DataFusion still hashes whichever side it estimates smaller.
            let (first, second) = if a.1 >= b.1 { (a.0, b.0) } else { (b.0, a.0) };
            parts.push((Tree::Join(Box::new(first), Box::new(second)), rows));
        }
        parts.pop().map(|(tree, _)| (tree, cost))
    }

    /// The estimated rows and the cost (sum of estimated join results) of `tree`.
    fn cost(&self, tree: &Tree) -> (f64, f64) {
        match tree {
            Tree::Relation(i) => (self.rows[*i], 0.0),
            Tree::Join(a, b) => {
                let ((a_rows, a_cost), (b_rows, b_cost)) = (self.cost(a), self.cost(b));
                let rows = self
                    .join_rows(a.set(), a_rows, b.set(), b_rows)
                    .unwrap_or(a_rows * b_rows);
                (rows, a_cost + b_cost + rows)
            }
        }
    }

    /// The estimated rows of joining two parts of the chain by the conditions between them;
    /// `None` when there are none. Each condition alone would keep `a_rows * b_rows /` the
    /// larger of its sides' distinct counts; with several, the smallest of those. Multiplying
    /// them instead (as if the keys were unrelated) makes a join on a composite key look far
    /// smaller than it is: TPC-H Q9's lineitem joined with `partsupp` on part and supplier
    /// keeps all 6 M lineitems, and would be estimated at 800,000 and joined first.
    fn join_rows(&self, a: u32, a_rows: f64, b: u32, b_rows: f64) -> Option<f64> {
        let mut smallest: Option<f64> = None;
        for key in self.keys {
            let Some((in_a, in_b)) = key.between(a, b) else {
                continue;
            };
            let distinct = in_a
                .distinct_within(a_rows)
                .max(in_b.distinct_within(b_rows));
            let rows = a_rows * b_rows / distinct.max(1.0);
            smallest = Some(smallest.map_or(rows, |s| s.min(rows)));
        }
        smallest
    }
}
