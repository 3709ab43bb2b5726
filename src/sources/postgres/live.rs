//! Live PostgreSQL tables in SQL: `pg.<schema>.<table>` reads the hot rows through the same
//! binary COPY reader, with the query's columns and filters pushed into the COPY query.

use std::any::Any;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DFResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use futures::TryStreamExt;

use tokio_postgres::types::Type;

use super::{
    CopyConnection, PgColumn, connect, describe, pg_error, quote_identifier, read_stream, schema_of,
};
use crate::error::{Error, Result};
use crate::sources::live::{ListedCatalog, scan_batches};

/// The `pg` catalog: PostgreSQL schemas and their tables, listed when the session starts.
pub type PgCatalog = ListedCatalog<PgSchema>;

impl ListedCatalog<PgSchema> {
    /// Lists the database's user tables.
    pub async fn load(url: &str) -> Result<Self> {
        let client = connect(url).await?;
        let rows = client
            .query(
                "SELECT table_schema, table_name FROM information_schema.tables
                 WHERE table_schema NOT IN ('pg_catalog', 'information_schema')
                 ORDER BY 1, 2",
                &[],
            )
            .await
            .map_err(|e| pg_error("listing tables", &e))?;
        let rows = rows.into_iter().map(|row| (row.get(0), row.get(1)));
        Ok(Self::from_rows(rows, |schema, tables| PgSchema {
            url: url.to_string(),
            schema: schema.to_string(),
            tables,
        }))
    }
}

/// One PostgreSQL schema.
#[derive(Debug)]
pub struct PgSchema {
    url: String,
    schema: String,
    tables: Vec<String>,
}

#[async_trait]
impl SchemaProvider for PgSchema {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let relation = format!(
            "{}.{}",
            quote_identifier(&self.schema),
            quote_identifier(name)
        );
        let client = connect(&self.url).await.map_err(Error::into_datafusion)?;
        let columns = describe(&client, &format!("SELECT * FROM {relation}"))
            .await
            .map_err(Error::into_datafusion)?;
        Ok(Some(Arc::new(PgTable {
            url: self.url.clone(),
            relation,
            schema: schema_of(&columns),
            columns,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}

/// A PostgreSQL table read at query time.
#[derive(Debug)]
pub struct PgTable {
    url: String,
    relation: String,
    schema: SchemaRef,
    /// The table's columns, as described when the query was planned.
    columns: Vec<PgColumn>,
}

impl PgTable {
    /// A filter as PostgreSQL SQL, unless it reads a column the lake holds in another form
    /// (`time` as microseconds, `interval` as a struct): PostgreSQL would compare that column
    /// with a literal of the wrong type, or wrongly.
    fn pushed(&self, filter: &Expr) -> Option<String> {
        let differs = filter.column_refs().iter().any(|c| {
            self.columns
                .iter()
                .any(|col| col.name == c.name && col.kind.differs_in_arrow())
        });
        if differs {
            return None;
        }
        to_postgres(filter)
    }

    /// The COPY query for a scan: the needed columns and the filters PostgreSQL can apply.
    fn query(
        &self,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> String {
        let columns = match projection {
            Some(p) if !p.is_empty() => p
                .iter()
                .map(|i| quote_identifier(self.schema.field(*i).name()))
                .collect::<Vec<_>>()
                .join(", "),
            Some(_) => "1 AS _".to_string(),
            None => "*".to_string(),
        };
        let conditions: Vec<String> = filters.iter().filter_map(|f| self.pushed(f)).collect();
        let mut sql = format!("SELECT {columns} FROM {}", self.relation);
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
    }
}

#[async_trait]
impl TableProvider for PgTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DFResult<Vec<TableProviderFilterPushDown>> {
        // Inexact: PostgreSQL filters, and DataFusion checks again (types may compare differently).
        Ok(filters
            .iter()
            .map(|f| {
                if self.pushed(f).is_some() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DFResult<Arc<dyn ExecutionPlan>> {
        let schema = match projection {
            Some(p) => Arc::new(self.schema.project(p)?),
            None => self.schema.clone(),
        };
        let query = self.query(projection, filters, limit);
        let columns = match projection {
            Some(p) if !p.is_empty() => p.iter().map(|i| self.columns[*i].clone()).collect(),
            // The constant the query reads when no column is needed.
            Some(_) => vec![PgColumn::new("_", &Type::INT4, -1).map_err(Error::into_datafusion)?],
            None => self.columns.clone(),
        };
        let partition = LiveQuery {
            url: self.url.clone(),
            query,
            columns,
            schema: schema.clone(),
        };
        let table = StreamingTable::try_new(schema, vec![Arc::new(partition)])?;
        table.scan(state, None, &[], None).await
    }
}

/// A partition that runs its COPY when executed.
#[derive(Debug)]
struct LiveQuery {
    url: String,
    query: String,
    /// The query's columns, for the decoders.
    columns: Vec<PgColumn>,
    schema: SchemaRef,
}

impl PartitionStream for LiveQuery {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (url, query, columns) = (self.url.clone(), self.query.clone(), self.columns.clone());
        let batches = futures::stream::once(async move {
            let connection = CopyConnection::connect(&url)
                .await
                .map_err(Error::into_datafusion)?;
            read_stream(connection, query, columns)
                .await
                .map_err(Error::into_datafusion)
        })
        .try_flatten();
        scan_batches(self.schema.clone(), batches)
    }
}

/// A filter as PostgreSQL SQL, when DataFusion's unparser can write it.
fn to_postgres(expr: &Expr) -> Option<String> {
    let stripped = datafusion::logical_expr::expr_rewriter::unnormalize_col(expr.clone());
    Unparser::new(&PostgreSqlDialect {})
        .expr_to_sql(&stripped)
        .ok()
        .map(|sql| sql.to_string())
}

impl PgTable {
    /// For tests and EXPLAIN-style checks: the query a scan would send.
    pub fn planned_query(&self, projection: Option<&Vec<usize>>, filters: &[Expr]) -> String {
        self.query(projection, filters, None)
    }

    /// Downcasts a provider.
    pub fn from_provider(provider: &Arc<dyn TableProvider>) -> Option<&PgTable> {
        (provider.as_ref() as &dyn Any).downcast_ref::<PgTable>()
    }
}
