//! SQL table names as lake tables: `schema.table` in the lake catalog, the default schema
//! when only a table is written.

use datafusion::common::{ResolvedTableReference, TableReference};

use super::{CATALOG, DEFAULT_SCHEMA};
use crate::error::{Error, Result};
use crate::lake::TableRef;

/// The lake table a name refers to (`schema.table`, or `table` in the default schema).
pub(super) fn lake_table(name: &TableReference) -> Result<TableRef> {
    let ResolvedTableReference {
        catalog,
        schema,
        table,
    } = name.clone().resolve(CATALOG, DEFAULT_SCHEMA);
    if catalog.as_ref() != CATALOG {
        return Err(Error::Invalid(format!(
            "{name}: only the lake catalog '{CATALOG}' can hold tables; write schema.table"
        )));
    }
    TableRef::new(schema.as_ref(), table.as_ref())
}
