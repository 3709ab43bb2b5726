//! Reports: declared in `reports/NAME.toml` ([`config`]), run with relative-date parameters
//! ([`crate::query::dates`]) into a self-contained HTML page with SVG charts ([`html`], [`chart`]) plus CSV
//! and Parquet of each result, under `<lake>/_reports/NAME/<run time>/` ([`run`]), then
//! announced by webhooks ([`deliver`]).

pub mod chart;
pub mod config;
pub mod deliver;
pub mod html;
pub mod run;

pub use config::{Report, load_all};
pub use run::{Destination, RunSummary, run_report};
