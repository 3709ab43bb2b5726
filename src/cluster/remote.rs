//! A query's result computed on the cluster, as a table a local plan can read.
//!
//! Writes commit from the client through deltalake, whose writer plans its input itself and
//! wraps it in extension nodes Ballista cannot ship. So a write's input query is planned for the
//! cluster first (a `DistributedQueryExec`), and the local writer reads that as a plain table.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::error::Result as DFResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::{Expr, LogicalPlan, LogicalPlanBuilder};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::ProjectionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::projection::ProjectionExec;

use crate::error::{Error, Result};

/// The cluster's plan for one query, read once by a local plan.
#[derive(Debug)]
struct RemoteResult {
    plan: Arc<dyn ExecutionPlan>,
}

#[async_trait]
impl TableProvider for RemoteResult {
    fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let Some(columns) = projection else {
            return Ok(self.plan.clone());
        };
        let schema = self.plan.schema();
        let exprs = columns.iter().map(|&i| {
            let name = schema.field(i).name();
            ProjectionExpr::new(Arc::new(Column::new(name, i)), name.clone())
        });
        Ok(Arc::new(ProjectionExec::try_new(exprs, self.plan.clone())?))
    }
}

/// Plans `plan` on the cluster (`cluster` is a `--cluster` session's state) and answers a
/// local plan that reads its result.
pub async fn remote_input(cluster: &SessionState, plan: LogicalPlan) -> Result<LogicalPlan> {
    let physical = cluster
        .create_physical_plan(&plan)
        .await
        .map_err(Error::from_datafusion)?;
    let table = Arc::new(RemoteResult { plan: physical });
    LogicalPlanBuilder::scan("cluster_result", provider_as_source(table), None)
        .and_then(LogicalPlanBuilder::build)
        .map_err(Error::from_datafusion)
}
