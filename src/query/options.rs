//! gamelake's own session settings, beside DataFusion's: `SET gamelake.<name> = <value>`,
//! listed by `SHOW ALL`. They switch gamelake's plan rules, e.g. to compare a query with and
//! without one.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Settings of gamelake's plan rules (`SET gamelake.<name> = ...`).
    pub struct GamelakeOptions {
        /// Skip rows in Parquet scans by the filters hash joins publish, while a filter keeps
        /// few of the rows it sees (`query::rules::join_filters`).
        pub adaptive_join_filters: bool, default = true

        /// Compute a subquery that appears twice in a plan (a CTE named twice) once
        /// (`query::rules::shared_subplans`).
        pub shared_subplans: bool, default = true

        /// Evaluate a filter's comparisons of fixed-width columns and literals before its
        /// string comparisons, `IN` lists, `LIKE` and functions (`query::rules::filter_order`).
        pub cheap_filters_first: bool, default = true

        /// Compute a batch's `DECIMAL` products, sums and differences without an overflow
        /// check per value when the batch's magnitudes rule overflow out
        /// (`query::rules::decimal_arith`).
        pub fast_decimal_arithmetic: bool, default = true

        /// Join the relations of a chain of inner joins in the order that keeps the estimated
        /// intermediate results smallest, when that is much smaller than the written order's
        /// (`query::rules::join_order`).
        pub join_order: bool, default = true
    }
}

impl ConfigExtension for GamelakeOptions {
    const PREFIX: &'static str = "gamelake";
}

impl GamelakeOptions {
    /// The session's settings, or the defaults when the session has none registered (a plan
    /// made by a session gamelake did not build).
    pub fn of(config: &datafusion::common::config::ConfigOptions) -> Self {
        config
            .extensions
            .get::<GamelakeOptions>()
            .cloned()
            .unwrap_or_default()
    }
}
