//! What the live catalogs of source databases share (`pg.*` and `mysql.*` in SQL): schemas and
//! their tables listed when the session starts, and scans that need no column.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::error::Result as DFResult;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{Stream, TryStreamExt};

/// A database's schemas (MySQL's databases), each with the tables listed when it was loaded.
#[derive(Debug)]
pub struct ListedCatalog<S> {
    schemas: BTreeMap<String, Arc<S>>,
}

impl<S> ListedCatalog<S> {
    /// Groups `(schema, table)` rows into schemas made by `schema(name, tables)`.
    pub fn from_rows(
        rows: impl IntoIterator<Item = (String, String)>,
        schema: impl Fn(&str, Vec<String>) -> S,
    ) -> Self {
        let mut tables: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, table) in rows {
            tables.entry(name).or_default().push(table);
        }
        let schemas = tables
            .into_iter()
            .map(|(name, tables)| {
                let provider = Arc::new(schema(&name, tables));
                (name, provider)
            })
            .collect();
        Self { schemas }
    }
}

impl<S: SchemaProvider + 'static> CatalogProvider for ListedCatalog<S> {
    fn schema_names(&self) -> Vec<String> {
        self.schemas.keys().cloned().collect()
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas
            .get(name)
            .map(|s| s.clone() as Arc<dyn SchemaProvider>)
    }
}

/// A live scan's batches as `schema` wants them: when the scan needs no column (e.g.
/// `count(*)`), its query read a constant, and the batches keep their row counts without it.
pub fn scan_batches(
    schema: SchemaRef,
    batches: impl Stream<Item = DFResult<RecordBatch>> + Send + 'static,
) -> SendableRecordBatchStream {
    let wanted = schema.clone();
    let batches = batches.and_then(move |batch| {
        let schema = wanted.clone();
        async move {
            if !schema.fields().is_empty() {
                return Ok(batch);
            }
            let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
            Ok(RecordBatch::try_new_with_options(schema, vec![], &options)?)
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, batches))
}
