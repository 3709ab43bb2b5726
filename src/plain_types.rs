//! Plain Arrow types for results that leave gamelake: DataFusion reads parquet strings as
//! Utf8View, but JDBC-based tools (through Flight SQL) and some writers cannot read view,
//! run-end or dictionary encodings, so results are cast to plain Utf8/Binary/List types.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::arrow::error::ArrowError;

/// The type a client reads for `data_type`.
pub fn plain_type(data_type: &DataType) -> DataType {
    match data_type {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        DataType::Dictionary(_, value) => plain_type(value),
        DataType::RunEndEncoded(_, values) => plain_type(values.data_type()),
        DataType::List(f) | DataType::ListView(f) => DataType::List(plain_field(f)),
        DataType::LargeList(f) | DataType::LargeListView(f) => DataType::LargeList(plain_field(f)),
        DataType::FixedSizeList(f, n) => DataType::FixedSizeList(plain_field(f), *n),
        DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
        DataType::Map(f, sorted) => DataType::Map(plain_field(f), *sorted),
        other => other.clone(),
    }
}

fn plain_field(field: &FieldRef) -> FieldRef {
    Arc::new(
        Field::new(
            field.name(),
            plain_type(field.data_type()),
            field.is_nullable(),
        )
        .with_metadata(field.metadata().clone()),
    )
}

/// The schema a client sees for `schema`.
pub fn plain_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(plain_field).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// Casts a batch to `target` (a schema made by [`plain_schema`] from the batch's own).
pub fn to_plain(batch: RecordBatch, target: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    if batch.schema().fields() == target.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(target.fields())
        .map(|(column, field)| {
            if column.data_type() == field.data_type() {
                Ok(column.clone())
            } else {
                cast(column, field.data_type())
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(target.clone(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ListBuilder, StringViewBuilder};

    #[test]
    fn views_become_plain_types_nested_too() {
        let mut list = ListBuilder::new(StringViewBuilder::new());
        list.values().append_value("a");
        list.append(true);
        list.append(false);
        let array = Arc::new(list.finish());
        let schema = Schema::new(vec![Field::new("l", array.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema.clone()), vec![array]).unwrap();
        let target = plain_schema(&schema);
        assert_eq!(
            target.field(0).data_type(),
            &DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
        );
        let out = to_plain(batch, &target).unwrap();
        assert_eq!(out.schema(), target);
        assert_eq!(out.column(0).null_count(), 1);
    }
}
