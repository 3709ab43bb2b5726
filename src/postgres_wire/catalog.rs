//! `pg_catalog` for the PostgreSQL protocol's clients: psql's `\dt` and `\d`, SQLAlchemy's
//! reflection (Superset, Metabase-like tools), DBeaver's and Grafana's probes all read
//! PostgreSQL's system tables. datafusion-pg-catalog builds them from a catalog; this module
//! gives it the lake's tables as every reader may see them (not `system.*`, not the live
//! `pg.*` and `mysql.*` tables, whose listing would reach another server), and makes
//! `version()` answer like PostgreSQL, which drivers parse.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::CatalogProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};

use super::login::SERVER_VERSION;
use crate::catalog::LakeCatalog;
use crate::error::{Error, Result};
use crate::query::{CATALOG, Session};
use crate::serving::guard::SYSTEM_SCHEMA;

/// The schema PostgreSQL's clients read.
pub const PG_CATALOG: &str = "pg_catalog";

/// Adds `pg_catalog`, PostgreSQL's functions that clients call (`format_type`,
/// `pg_get_userbyid`, `current_schema`, ...) and a PostgreSQL-like `version()` to `session`.
pub fn install(session: &Session) -> Result<()> {
    let pg_error = |e: Box<DataFusionError>| Error::Query(*e);
    datafusion_pg_catalog::setup_pg_catalog(session.context(), CATALOG, EmptyContextProvider)
        .map_err(pg_error)?;
    let provider = PgCatalogSchemaProvider::try_new(
        LakeTables(session.catalog().clone()),
        Arc::new(PgCatalogStaticTables::try_new().map_err(Error::Query)?),
        EmptyContextProvider,
    )
    .map_err(Error::Query)?;
    let indexes = datafusion::datasource::MemTable::try_new(
        Arc::new(datafusion::arrow::datatypes::Schema::new(
            [
                "schemaname",
                "tablename",
                "indexname",
                "tablespace",
                "indexdef",
            ]
            .map(|name| datafusion::arrow::datatypes::Field::new(name, DataType::Utf8, true))
            .to_vec(),
        )),
        vec![vec![]],
    )
    .map_err(Error::Query)?;
    let schema = WithIndexes {
        inner: Arc::new(provider),
        indexes: Arc::new(indexes),
    };
    session
        .catalog()
        .attach_schema(PG_CATALOG, Arc::new(schema));
    session.context().register_udf(to_regtype());
    session.context().register_udf(json_build_object());
    session.context().register_udf(create_udf(
        "pg_collation_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))))),
    ));
    // No table has a serial column: SQLAlchemy's reflection asks for each column's sequence.
    session.context().register_udf(create_udf(
        "pg_get_serial_sequence",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|_: &[ColumnarValue]| Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None)))),
    ));
    let version = format!(
        "PostgreSQL {SERVER_VERSION}, Apache DataFusion {}",
        datafusion::DATAFUSION_VERSION
    );
    session.context().register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_: &[ColumnarValue]| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    Ok(())
}

/// datafusion-pg-catalog's tables and the view `pg_indexes`, empty (the lake has no indexes;
/// DuckDB's postgres extension reads it when it attaches).
#[derive(Debug)]
struct WithIndexes {
    inner: Arc<dyn datafusion::catalog::SchemaProvider>,
    indexes: Arc<dyn datafusion::catalog::TableProvider>,
}

#[async_trait]
impl datafusion::catalog::SchemaProvider for WithIndexes {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push(PG_INDEXES.to_string());
        names
    }

    async fn table(
        &self,
        name: &str,
    ) -> std::result::Result<Option<Arc<dyn datafusion::catalog::TableProvider>>, DataFusionError>
    {
        if name.eq_ignore_ascii_case(PG_INDEXES) {
            return Ok(Some(self.indexes.clone()));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(PG_INDEXES) || self.inner.table_exist(name)
    }
}

/// The view of indexes PostgreSQL has in `pg_catalog`.
pub const PG_INDEXES: &str = "pg_indexes";

/// `to_regtype(name)`: the oid of a built-in PostgreSQL type by name, or NULL (drivers call
/// it to look up optional types such as `hstore`, which gamelake does not have).
fn to_regtype() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    use pgwire::api::Type;
    // PostgreSQL's built-in types have oids below 10000.
    let by_name: std::collections::HashMap<String, i32> = (0..10_000u32)
        .filter_map(|oid| Type::from_oid(oid).map(|t| (t.name().to_string(), oid as i32)))
        .collect();
    create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let names = ColumnarValue::values_to_arrays(args)?;
            let names = names[0]
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Plan("to_regtype takes a type name".into()))?;
            let oids: Int32Array = (0..names.len())
                .map(|i| {
                    (!names.is_null(i))
                        .then(|| by_name.get(names.value(i).trim_start_matches("pg_catalog.")))
                        .flatten()
                        .copied()
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(oids)))
        }),
    )
}

/// The lake's tables as `pg_catalog` lists them: one database (the lake), its schemas but
/// `system`, and the namespaces every PostgreSQL database has (`pg_catalog`, whose types
/// clients join on, and `public`), listed without tables.
#[derive(Clone, Debug)]
struct LakeTables(Arc<LakeCatalog>);

impl LakeTables {
    fn listed(&self, catalog: &str, schema: &str) -> bool {
        catalog == CATALOG && schema != SYSTEM_SCHEMA && schema != PG_CATALOG
    }

    /// A listed schema's provider.
    fn listed_schema(
        &self,
        catalog: &str,
        schema: &str,
    ) -> Option<Arc<dyn datafusion::catalog::SchemaProvider>> {
        self.listed(catalog, schema)
            .then(|| self.0.schema(schema))
            .flatten()
    }
}

#[async_trait]
impl CatalogInfo for LakeTables {
    async fn catalog_names(&self) -> std::result::Result<Vec<String>, DataFusionError> {
        Ok(vec![CATALOG.to_string()])
    }

    async fn schema_names(
        &self,
        catalog: &str,
    ) -> std::result::Result<Option<Vec<String>>, DataFusionError> {
        Ok((catalog == CATALOG).then(|| {
            let mut names: Vec<String> = self
                .0
                .schema_names()
                .into_iter()
                .filter(|s| self.listed(catalog, s))
                .collect();
            for fixed in [PG_CATALOG, crate::query::DEFAULT_SCHEMA] {
                if !names.iter().any(|n| n == fixed) {
                    names.push(fixed.to_string());
                }
            }
            names
        }))
    }

    async fn table_names(
        &self,
        catalog: &str,
        schema: &str,
    ) -> std::result::Result<Option<Vec<String>>, DataFusionError> {
        if catalog == CATALOG && schema == PG_CATALOG {
            return Ok(Some(Vec::new()));
        }
        if !self.listed(catalog, schema) {
            return Ok(None);
        }
        Ok(Some(
            self.0
                .schema(schema)
                .map(|s| s.table_names())
                .unwrap_or_default(),
        ))
    }

    async fn table_schema(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> std::result::Result<Option<SchemaRef>, DataFusionError> {
        let Some(provider) = self.listed_schema(catalog, schema) else {
            return Ok(None);
        };
        Ok(provider.table(table).await?.map(|t| t.schema()))
    }

    async fn table_type(
        &self,
        catalog: &str,
        schema: &str,
        table: &str,
    ) -> std::result::Result<Option<TableType>, DataFusionError> {
        let Some(provider) = self.listed_schema(catalog, schema) else {
            return Ok(None);
        };
        provider.table_type(table).await
    }
}

/// `json_build_object(key, value, ...)`: a JSON object as text (SQLAlchemy's reflection
/// builds one per identity column).
#[derive(Debug, PartialEq, Eq, Hash)]
struct JsonBuildObject {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for JsonBuildObject {
    fn name(&self) -> &str {
        "json_build_object"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        use datafusion::arrow::array::StringBuilder;
        if !args.args.len().is_multiple_of(2) {
            return Err(DataFusionError::Plan(
                "json_build_object takes pairs of keys and values".into(),
            ));
        }
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let mut out = StringBuilder::new();
        for row in 0..args.number_rows {
            let mut object = serde_json::Map::new();
            for pair in arrays.chunks(2) {
                let key = ScalarValue::try_from_array(&pair[0], row)?;
                let value = ScalarValue::try_from_array(&pair[1], row)?;
                let value = match value {
                    v if v.is_null() => serde_json::Value::Null,
                    ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(b),
                    v if v.data_type().is_numeric() => serde_json::from_str(&v.to_string())
                        .unwrap_or_else(|_| serde_json::Value::String(v.to_string())),
                    v => serde_json::Value::String(v.to_string()),
                };
                object.insert(key.to_string(), value);
            }
            out.append_value(serde_json::Value::Object(object).to_string());
        }
        Ok(ColumnarValue::Array(Arc::new(out.finish())))
    }
}

fn json_build_object() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(JsonBuildObject {
        signature: datafusion::logical_expr::Signature::variadic_any(Volatility::Immutable),
    })
}
