//! Live MySQL tables in SQL: `mysql.<db>.<table>` reads v1.0's rows at query time through the
//! same decoder as the pipelines, with the query's columns and the filters MySQL compares as
//! DataFusion does pushed into the SELECT — so an analyst can compare v1.0 with the lake in one
//! query.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DFResult;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::MySqlDialect;
use futures::TryStreamExt;
use mysql_async::prelude::Queryable;

use super::{
    MyColumn, MyKind, SESSION, TypePolicy, connect, describe, my_error, quote_identifier,
    read_stream,
};
use crate::error::{Error, Result};
use crate::sources::live::{ListedCatalog, scan_batches};

/// The `mysql` catalog: the server's databases and their tables, listed when the session starts.
pub type MyCatalog = ListedCatalog<MyDatabase>;

impl ListedCatalog<MyDatabase> {
    /// Lists the tables of every database the user sees (not MySQL's own).
    pub async fn load(url: &str) -> Result<Self> {
        let mut conn = connect(url, &SESSION).await?;
        let rows: Vec<(String, String)> = conn
            .query(
                "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')
                 ORDER BY 1, 2",
            )
            .await
            .map_err(|e| my_error("listing tables", e))?;
        let _ = conn.disconnect().await;
        Ok(Self::from_rows(rows, |database, tables| MyDatabase {
            url: url.to_string(),
            database: database.to_string(),
            tables,
        }))
    }
}

/// One MySQL database.
#[derive(Debug)]
pub struct MyDatabase {
    url: String,
    database: String,
    tables: Vec<String>,
}

#[async_trait]
impl SchemaProvider for MyDatabase {
    fn table_names(&self) -> Vec<String> {
        self.tables.clone()
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let relation = format!(
            "{}.{}",
            quote_identifier(&self.database),
            quote_identifier(name)
        );
        let mut conn = connect(&self.url, &SESSION)
            .await
            .map_err(Error::into_datafusion)?;
        let columns = describe(
            &mut conn,
            &format!("SELECT * FROM {relation}"),
            TypePolicy::default(),
        )
        .await
        .map_err(Error::into_datafusion)?;
        let _ = conn.disconnect().await;
        Ok(Some(Arc::new(MyTable {
            url: self.url.clone(),
            relation,
            schema: super::schema_of(&columns),
            columns,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.iter().any(|t| t == name)
    }
}

/// A MySQL table read at query time (the default type policy: `tinyint(1)` as boolean, zero
/// dates as NULL).
#[derive(Debug)]
pub struct MyTable {
    url: String,
    relation: String,
    schema: SchemaRef,
    columns: Vec<MyColumn>,
}

impl MyTable {
    /// The SELECT for a scan: the needed columns and the filters MySQL can apply.
    pub fn planned_query(
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
            Some(_) => "1 AS `_`".to_string(),
            None => "*".to_string(),
        };
        let conditions: Vec<String> = filters
            .iter()
            .filter(|f| self.pushable(f))
            .filter_map(to_mysql)
            .collect();
        let mut sql = format!("SELECT {columns} FROM {}", self.relation);
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        sql
    }

    /// Whether MySQL keeps every row DataFusion would keep for `expr`: comparisons of numbers,
    /// dates and times with literals; strings only by equality and IN (MySQL's collations may
    /// ignore case and trailing spaces, which only adds rows, but they order strings otherwise)
    /// and never with a backslash; NULL tests, and ANDs of these. DataFusion filters again what
    /// MySQL returns.
    fn pushable(&self, expr: &Expr) -> bool {
        let kind = |e: &Expr| match e {
            Expr::Column(c) => self
                .columns
                .iter()
                .find(|m| m.name == c.name)
                .map(|m| m.kind.clone()),
            _ => None,
        };
        let ordered = |k: &MyKind| {
            !matches!(
                k,
                MyKind::Utf8 | MyKind::DecimalText { .. } | MyKind::Binary { .. } | MyKind::Set
            )
        };
        // MySQL reads a backslash in a string literal as an escape (unless NO_BACKSLASH_ESCAPES):
        // such a literal would ask for another string.
        let plain = |e: &Expr| match e {
            Expr::Literal(value, _) => !value.to_string().contains('\\'),
            _ => true,
        };
        match expr {
            Expr::BinaryExpr(b) if !plain(&b.left) || !plain(&b.right) => false,
            Expr::InList(list) if !list.list.iter().all(plain) => false,
            Expr::BinaryExpr(b) if b.op == Operator::And => {
                self.pushable(&b.left) && self.pushable(&b.right)
            }
            Expr::BinaryExpr(b) => {
                let (column, literal) = match (b.left.as_ref(), b.right.as_ref()) {
                    (c @ Expr::Column(_), Expr::Literal(..)) => (c, true),
                    (Expr::Literal(..), c @ Expr::Column(_)) => (c, true),
                    _ => (&*b.left, false),
                };
                let Some(k) = kind(column) else { return false };
                literal
                    && match b.op {
                        Operator::Eq => k != MyKind::Set,
                        Operator::NotEq
                        | Operator::Lt
                        | Operator::LtEq
                        | Operator::Gt
                        | Operator::GtEq => ordered(&k),
                        _ => false,
                    }
            }
            Expr::InList(list) => {
                !list.negated
                    && kind(&list.expr).is_some_and(|k| k != MyKind::Set)
                    && list.list.iter().all(|e| matches!(e, Expr::Literal(..)))
            }
            Expr::IsNull(e) | Expr::IsNotNull(e) => kind(e).is_some(),
            _ => false,
        }
    }

    /// Downcasts a provider.
    pub fn from_provider(provider: &Arc<dyn TableProvider>) -> Option<&MyTable> {
        (provider.as_ref() as &dyn std::any::Any).downcast_ref::<MyTable>()
    }
}

#[async_trait]
impl TableProvider for MyTable {
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
        Ok(filters
            .iter()
            .map(|f| {
                if self.pushable(f) && to_mysql(f).is_some() {
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
        let columns = match projection {
            Some(p) if !p.is_empty() => p.iter().map(|i| self.columns[*i].clone()).collect(),
            // The constant the query reads when no column is needed.
            Some(_) => vec![MyColumn {
                name: "_".into(),
                kind: MyKind::Int64,
            }],
            None => self.columns.clone(),
        };
        let partition = LiveQuery {
            url: self.url.clone(),
            query: self.planned_query(projection, filters, limit),
            columns,
            schema: schema.clone(),
        };
        let table = StreamingTable::try_new(schema, vec![Arc::new(partition)])?;
        table.scan(state, None, &[], None).await
    }
}

/// A partition that runs its SELECT when executed.
#[derive(Debug)]
struct LiveQuery {
    url: String,
    query: String,
    columns: Vec<MyColumn>,
    schema: SchemaRef,
}

impl PartitionStream for LiveQuery {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let (url, query, columns) = (self.url.clone(), self.query.clone(), self.columns.clone());
        let batches = futures::stream::once(async move {
            let conn = connect(&url, &SESSION)
                .await
                .map_err(Error::into_datafusion)?;
            Ok::<_, datafusion::error::DataFusionError>(read_stream(
                conn,
                query,
                Vec::new(),
                columns,
                TypePolicy::default(),
            ))
        })
        .try_flatten();
        scan_batches(self.schema.clone(), batches)
    }
}

/// A filter as MySQL SQL, when DataFusion's unparser can write it.
fn to_mysql(expr: &Expr) -> Option<String> {
    let stripped = datafusion::logical_expr::expr_rewriter::unnormalize_col(expr.clone());
    Unparser::new(&MySqlDialect {})
        .expr_to_sql(&stripped)
        .ok()
        .map(|sql| sql.to_string())
}
