//! A session's gate: a check each statement passes before anything of it runs. The session
//! shows the gate what it is about to do, at the three points where something could happen
//! otherwise: before any table is looked up (a lookup may connect to PostgreSQL), once the
//! logical plan is made (before a write, a DDL, a `SET` or a scan starts), and before an
//! `ANALYZE` (which commits). Servers set one per user ([`crate::serving::guard`]); the CLI
//! sets none.

use std::sync::Arc;

use datafusion::common::ResolvedTableReference;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;

use crate::error::Result;

/// What a statement is about to do, as the gate sees it.
pub enum ToRun<'a> {
    /// The tables it names, before any is looked up.
    Tables(&'a [ResolvedTableReference]),
    /// Its logical plan, parameters bound, before it runs (a query's rows are computed later,
    /// when the caller streams them; a write or a DDL would run at once).
    Plan(&'a LogicalPlan),
    /// `ANALYZE schema.table`: counts a table's values and commits them.
    Analyze,
}

/// A check every statement of a session passes before anything of it runs.
pub type Gate = Arc<dyn Fn(ToRun<'_>) -> Result<()> + Send + Sync>;

/// A rewrite every query's logical plan passes after the gate, before it runs (a server's
/// access rules: filters and masks around the scans of a reader's tables).
pub type Rewrite = Arc<dyn Fn(LogicalPlan, &SessionState) -> Result<LogicalPlan> + Send + Sync>;
