//! gamelake's planner rules, each added to the session in `query/mod.rs` and each switched off
//! by its own `gamelake.*` setting (`options.rs`): where a rule sits in DataFusion's passes and
//! why is in its own file.
//!
//! - Analyzer: [`month_of_date`] (`date_trunc('month', d)` comparisons on dates).
//! - Logical optimizer: [`decimal_arith`] (decimal arithmetic without overflow checks where
//!   the types bound the result), [`join_order`] (inner joins ordered by estimated size, from
//!   the logical row estimates in `join_order/cardinality.rs`).
//! - Physical optimizer: [`filter_order`] (cheap filters first), [`join_filters`] (adaptive
//!   dynamic join filters), [`shared_subplans`] (a subplan computed once for its readers).
//! - Statistics: [`statistics_providers`], the row estimates DataFusion's join selection asks
//!   for physical plans (distinct counts of string filters, joins on several keys).

pub mod decimal_arith;
pub mod filter_order;
pub mod join_filters;
pub mod join_order;
pub mod month_of_date;
pub mod shared_subplans;
pub mod statistics_providers;
