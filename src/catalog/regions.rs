//! `lakes.<schema>.<table>`: one table over every regional lake (`[lakes]` in the config) that
//! holds it, with a `lake` column naming where each row lives.
//!
//! The table is a view: a union by column name of each lake's table, each under a projection
//! that adds its lake's name as a constant. A filter on `lake` is pushed into each branch,
//! where it folds to true or false, and DataFusion drops the false branches before planning
//! their scans, so `WHERE lake = 'bj'` reads one lake only. (The column is `lake`, not
//! `region`, because the game's own tables already have a `region`: the player's.)

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::common::{Column, TableReference};
use datafusion::datasource::{ViewTable, provider_as_source};
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{Expr, LogicalPlanBuilder, col, lit};

use super::LakeCatalog;

/// The catalog holding the union of the regional lakes.
pub const LAKES: &str = "lakes";

/// The column naming each row's lake.
pub const LAKE_COLUMN: &str = "lake";

/// The regional lakes, by name, in the config's order.
pub type Regions = Arc<Vec<(String, Arc<LakeCatalog>)>>;

/// `lakes`: a schema per schema name any regional lake has.
#[derive(Debug)]
pub struct LakesCatalog {
    regions: Regions,
}

impl LakesCatalog {
    /// The union catalog over `regions`.
    pub fn new(regions: Regions) -> Self {
        Self { regions }
    }
}

impl CatalogProvider for LakesCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .regions
            .iter()
            .flat_map(|(_, c)| c.schema_names())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.regions
            .iter()
            .any(|(_, c)| c.schema_names().iter().any(|s| s == name))
            .then(|| {
                Arc::new(LakesSchema {
                    name: name.to_string(),
                    regions: self.regions.clone(),
                }) as Arc<dyn SchemaProvider>
            })
    }
}

/// One schema name across the regional lakes.
#[derive(Debug)]
struct LakesSchema {
    name: String,
    regions: Regions,
}

#[async_trait]
impl SchemaProvider for LakesSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .regions
            .iter()
            .filter_map(|(_, c)| c.schema(&self.name))
            .flat_map(|s| s.table_names())
            .collect();
        names.sort();
        names.dedup();
        names
    }

    async fn table(&self, name: &str) -> DFResult<Option<Arc<dyn TableProvider>>> {
        let mut union: Option<LogicalPlanBuilder> = None;
        for (region, catalog) in self.regions.iter() {
            let Some(schema) = catalog.schema(&self.name) else {
                continue;
            };
            let Some(table) = schema.table(name).await? else {
                continue;
            };
            let source = TableReference::full(region.as_str(), self.name.as_str(), name);
            if table.schema().field_with_name(LAKE_COLUMN).is_ok() {
                return Err(DataFusionError::Plan(format!(
                    "{source} has a column named {LAKE_COLUMN} of its own, which {LAKES}.{}.{name} would add; query each lake's table by its own name",
                    self.name
                )));
            }
            let columns: Vec<Expr> = std::iter::once(lit(region.as_str()).alias(LAKE_COLUMN))
                .chain(
                    table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| col(Column::new(Some(source.clone()), f.name().as_str()))),
                )
                .collect();
            let branch = LogicalPlanBuilder::scan(source, provider_as_source(table), None)?
                .project(columns)?
                .build()?;
            union = Some(match union {
                None => LogicalPlanBuilder::from(branch),
                Some(built) => built.union_by_name(branch)?,
            });
        }
        let Some(union) = union else {
            return Ok(None);
        };
        Ok(Some(Arc::new(ViewTable::new(union.build()?, None))))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.regions
            .iter()
            .filter_map(|(_, c)| c.schema(&self.name))
            .any(|s| s.table_exist(name))
    }
}
