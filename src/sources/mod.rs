//! Where data comes from: PostgreSQL today (pipelines, files and log receivers build on it).

pub mod postgres;
