//! Each column's number of distinct values, as `ANALYZE` last counted them, kept in the table's
//! properties (`gamelake.distinctCounts`, a JSON object of column name to count).
//!
//! The Delta log holds each file's minimum, maximum and null count, but not how many distinct
//! values a column has, and without that the planner guesses how many rows `brand = 'x'` keeps
//! (a fifth, whatever the column) and so how big a join's build side is. With it, DataFusion
//! estimates an equality as one value in that many. The counts are estimates from the start
//! (a HyperLogLog sketch) and age as the table changes: the planner uses them as inexact,
//! never above the table's current row count.

use std::collections::{BTreeMap, HashMap};

use deltalake::DeltaTable;

use super::TableRef;
use crate::error::{Error, Result};

/// The table property holding the counts.
pub const PROP_DISTINCT_COUNTS: &str = "gamelake.distinctCounts";

/// Column name to its count of distinct values.
pub type DistinctCounts = BTreeMap<String, u64>;

/// The counts recorded in a table's properties; none when the table was never analyzed. A
/// malformed value (written by hand) counts as none, with a warning: estimates are not worth
/// failing a query over.
pub fn from_properties(props: &HashMap<String, String>) -> DistinctCounts {
    let Some(text) = props.get(PROP_DISTINCT_COUNTS) else {
        return DistinctCounts::new();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(
            "table property {PROP_DISTINCT_COUNTS} is not a JSON object of column to count ({e}); \
             run ANALYZE on the table again"
        );
        DistinctCounts::new()
    })
}

/// Records `counts` in the table's properties, over what an earlier `ANALYZE` recorded for
/// other columns. One commit, which changes no data.
pub async fn record(dt: &DeltaTable, table: &TableRef, counts: &DistinctCounts) -> Result<()> {
    let snapshot = dt
        .snapshot()
        .map_err(|e| Error::delta(table.to_string(), e))?;
    let mut merged = from_properties(snapshot.metadata().configuration());
    merged.extend(counts.iter().map(|(k, v)| (k.clone(), *v)));
    let value = serde_json::to_string(&merged)
        .map_err(|e| Error::Internal(format!("{table}: distinct counts: {e}")))?;
    dt.clone()
        .set_tbl_properties()
        .with_properties(HashMap::from([(PROP_DISTINCT_COUNTS.to_string(), value)]))
        .with_raise_if_not_exists(false)
        .await
        .map_err(|e| Error::delta(table.to_string(), e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_round_trip_and_bad_values_count_as_none() {
        let counts = DistinctCounts::from([("brand".into(), 25), ("id".into(), 200_000)]);
        let props = HashMap::from([(
            PROP_DISTINCT_COUNTS.to_string(),
            serde_json::to_string(&counts).unwrap(),
        )]);
        assert_eq!(from_properties(&props), counts);
        let bad = HashMap::from([(PROP_DISTINCT_COUNTS.to_string(), "brand=25".to_string())]);
        assert!(from_properties(&bad).is_empty());
        assert!(from_properties(&HashMap::new()).is_empty());
    }
}
