//! The one integration-test binary: modules by subject.

mod benchmarks;
mod catalog;
mod cli;
mod cluster;
mod demo;
mod errors;
mod flight;
mod fuzz;
mod intake;
mod interop;
mod layers;
mod load;
mod migration;
mod mysql;
mod mysql_servers;
mod pg_types;
mod pipelines;
mod plans;
mod postgres;
mod reports;
mod s3;
mod scan;
mod schedule;
mod slt;
mod support;
mod write_path;
