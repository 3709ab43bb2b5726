//! How a lake table travels in a logical plan from a gamelake client to Ballista's scheduler.
//!
//! Everything else in the plan (expressions, built-in functions, Ballista's own nodes, listing
//! tables of file paths) is Ballista's and DataFusion's protobuf; only our table provider needs
//! a codec. Physical plans need none: [`crate::catalog::files_table::LakeFilesTable`] plans DataFusion's own
//! Parquet scan.

use std::sync::Arc;

use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

use crate::catalog::files_table::{FileList, LakeFilesTable};

/// Marks our tables' bytes, so anything else goes to Ballista's codec.
const TAG: &[u8] = b"gamelake-files:";

/// Ballista's logical codec plus lake tables (encoded as their [`FileList`] in JSON).
#[derive(Debug, Default)]
pub struct LakeLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LakeLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DFResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DFResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DFResult<Arc<dyn TableProvider>> {
        let Some(json) = buf.strip_prefix(TAG) else {
            return self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        let list: FileList = serde_json::from_slice(json).map_err(|e| {
            DataFusionError::Internal(format!("lake table {table_ref} arrived damaged: {e}"))
        })?;
        let table = LakeFilesTable::from_list(list, schema)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        Ok(Arc::new(table))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DFResult<()> {
        let Some(table) = node.downcast_ref::<LakeFilesTable>() else {
            return self
                .ballista
                .try_encode_table_provider(table_ref, node, buf)
                .map_err(|e| {
                    DataFusionError::Plan(format!(
                        "table {table_ref} cannot be sent to the cluster ({e}); only lake tables, \
                         views over them and file paths can: run this query without --cluster"
                    ))
                });
        };
        buf.extend_from_slice(TAG);
        serde_json::to_writer(buf, table.file_list())
            .map_err(|e| DataFusionError::Internal(format!("encoding {table_ref}: {e}")))
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> DFResult<Arc<dyn datafusion::datasource::file_format::FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn datafusion::datasource::file_format::FileFormatFactory>,
    ) -> DFResult<()> {
        self.ballista.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<ScalarUDF>> {
        self.ballista.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> DFResult<()> {
        self.ballista.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<AggregateUDF>> {
        self.ballista.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> DFResult<()> {
        self.ballista.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> DFResult<Arc<WindowUDF>> {
        self.ballista.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> DFResult<()> {
        self.ballista.try_encode_udwf(node, buf)
    }
}
