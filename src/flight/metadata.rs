//! The metadata drivers ask for on connect: server facts (GetSqlInfo), the SQL types
//! (GetXdbcTypeInfo), and the catalogs, schemas and tables of the session. The result columns
//! come from arrow-flight's builders, which follow the Flight SQL spec.

use std::sync::Arc;

use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlNullOrdering, SupportedSqlGrammar, XdbcDataType,
};
use datafusion::common::ResolvedTableReference;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;

use crate::error::{Error, Result};
use crate::plain_types::plain_schema;
use crate::serving::access::Rules;
use crate::serving::access::rules::Access;
use crate::serving::guard::{POSTGRES_CATALOG, may_see};
use crate::serving::{Principal, Role};

/// Server facts for GetSqlInfo. `read_only` is what readers see: true unless writes are
/// possible for some user.
pub fn sql_info(read_only: bool) -> Result<SqlInfoData> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "gamelake");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
    b.append(SqlInfo::FlightSqlServerReadOnly, read_only);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(SqlInfo::FlightSqlServerCancel, true);
    b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, !read_only);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    b.append(
        SqlInfo::SqlSupportedGrammar,
        (1 << SupportedSqlGrammar::SqlMinimumGrammar as i32)
            | (1 << SupportedSqlGrammar::SqlCoreGrammar as i32),
    );
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlCatalogAtStart, true);
    b.append(SqlInfo::SqlTransactionsSupported, false);
    b.build().map_err(Error::Flight)
}

/// The SQL types for GetXdbcTypeInfo.
pub fn xdbc_types() -> Result<XdbcTypeInfoData> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types: [(&str, XdbcDataType, Option<i32>, Option<&str>); 11] = [
        ("BOOLEAN", XdbcDataType::XdbcBit, Some(1), None),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(16), None),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(32), None),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(64), None),
        ("REAL", XdbcDataType::XdbcReal, Some(24), None),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(53), None),
        (
            "DECIMAL",
            XdbcDataType::XdbcDecimal,
            Some(38),
            Some("precision,scale"),
        ),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None, None),
        ("BYTEA", XdbcDataType::XdbcVarbinary, None, None),
        ("DATE", XdbcDataType::XdbcDate, None, None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None, None),
    ];
    for (name, data_type, size, params) in types {
        let text = matches!(name, "VARCHAR" | "DATE" | "TIMESTAMP");
        let numeric = size.is_some() && name != "BOOLEAN";
        b.append(XdbcTypeInfo {
            type_name: name.to_string(),
            data_type,
            column_size: size,
            literal_prefix: text.then(|| "'".to_string()),
            literal_suffix: text.then(|| "'".to_string()),
            create_params: params.map(|p| p.split(',').map(str::to_string).collect()),
            nullable: Nullable::NullabilityNullable,
            case_sensitive: name == "VARCHAR",
            searchable: Searchable::Full,
            unsigned_attribute: numeric.then_some(false),
            fixed_prec_scale: name == "DECIMAL",
            auto_increment: numeric.then_some(false),
            local_type_name: Some(name.to_string()),
            minimum_scale: (name == "DECIMAL").then_some(0),
            maximum_scale: (name == "DECIMAL").then_some(38),
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: numeric.then_some(if name == "DECIMAL" { 10 } else { 2 }),
            interval_precision: None,
        });
    }
    b.build().map_err(Error::Flight)
}

/// Fills GetCatalogs with the catalogs `who` may see.
pub fn catalogs(
    ctx: &SessionContext,
    who: &Principal,
    mut b: GetCatalogsBuilder,
) -> GetCatalogsBuilder {
    for name in visible_catalogs(ctx, who) {
        b.append(name);
    }
    b
}

/// Fills GetDbSchemas (the builder applies the client's filters).
pub fn schemas(
    ctx: &SessionContext,
    who: &Principal,
    mut b: GetDbSchemasBuilder,
) -> GetDbSchemasBuilder {
    for (catalog, schema) in schema_pairs(ctx, who) {
        b.append(catalog, schema);
    }
    b
}

/// The catalogs whose tables `who` may see (the `pg` catalog only with its grant).
fn visible_catalogs(ctx: &SessionContext, who: &Principal) -> Vec<String> {
    let mut names: Vec<String> = ctx
        .catalog_names()
        .into_iter()
        .filter(|c| c.as_str() != POSTGRES_CATALOG || may_see(who, c, ""))
        .collect();
    names.sort();
    names
}

fn schema_pairs(ctx: &SessionContext, who: &Principal) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for catalog in visible_catalogs(ctx, who) {
        let Some(provider) = ctx.catalog(&catalog) else {
            continue;
        };
        let mut names = provider.schema_names();
        names.sort();
        pairs.extend(
            names
                .into_iter()
                .filter(|s| may_see(who, &catalog, s))
                .map(|s| (catalog.clone(), s)),
        );
    }
    pairs
}

/// Fills GetTables: every table and view, with its Arrow schema (as clients will read it) when
/// the client asked for schemas; under access `rules`, a reader is not shown the tables no rule
/// lets them read.
pub async fn tables(
    ctx: &SessionContext,
    who: &Principal,
    rules: Option<&Rules>,
    mut b: GetTablesBuilder,
) -> Result<GetTablesBuilder> {
    for (catalog, schema) in schema_pairs(ctx, who) {
        let Some(provider) = ctx.catalog(&catalog).and_then(|c| c.schema(&schema)) else {
            continue;
        };
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            let reference = ResolvedTableReference {
                catalog: catalog.as_str().into(),
                schema: schema.as_str().into(),
                table: name.as_str().into(),
            };
            if let Some(rules) = rules
                && who.role != Role::Admin
                && matches!(rules.access(who, &reference), Access::Denied(_))
            {
                continue;
            }
            let Some(table) = provider
                .table(&name)
                .await
                .map_err(Error::from_datafusion)?
            else {
                continue;
            };
            let kind = match table.table_type() {
                TableType::View => "VIEW",
                TableType::Temporary => "LOCAL TEMPORARY",
                TableType::Base => "TABLE",
            };
            let arrow_schema = if b.include_schema() {
                plain_schema(&table.schema())
            } else {
                Arc::new(datafusion::arrow::datatypes::Schema::empty())
            };
            b.append(&catalog, &schema, &name, kind, &arrow_schema)?;
        }
    }
    Ok(b)
}

/// The table types GetTableTypes lists.
pub const TABLE_TYPES: [&str; 3] = ["LOCAL TEMPORARY", "TABLE", "VIEW"];
