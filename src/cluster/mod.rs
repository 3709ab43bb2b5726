//! Distributed mode on Apache Ballista: the scheduler and executor roles of the `gamelake`
//! binary, and the client side of `--cluster df://host:port`.
//!
//! Nothing distributed is written here; Ballista plans stages, ships them and shuffles. gamelake
//! adds what Ballista cannot know:
//! - the catalog plans lake tables as
//!   [`LakeFilesTable`](crate::catalog::files_table::LakeFilesTable)s, DataFusion Parquet scans,
//!   so every physical plan has a protobuf form (deltalake's own scan node has none);
//! - [`codec::LakeLogicalCodec`]: how those tables travel from the client to the scheduler;
//! - [`stores::LakeStores`]: object stores (`file://`, `s3://` with `AWS_*`) made on first use
//!   on the scheduler and executors;
//! - [`remote::remote_input`]: a write's input query run on the cluster and read by the local
//!   Delta writer;
//! - [`roles`]: `gamelake scheduler` and `gamelake executor`, loopback-only unless told
//!   otherwise, because Ballista's endpoints have no authentication.

pub mod codec;
pub mod remote;
pub mod roles;
pub mod stores;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionConfig;
use url::Url;

use crate::catalog::files_table::LakeFilesTable;
use crate::error::{Error, Result};

/// Where Ballista's scheduler listens when no port is given.
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// A parsed `--cluster` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterUrl {
    /// Scheduler host name or address.
    pub host: String,
    /// Scheduler port.
    pub port: u16,
}

impl ClusterUrl {
    /// Parses `df://host:port` (the port defaults to 50050); `host:port` alone is accepted too.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |reason: &str| {
            Error::Cluster(format!(
                "'{text}' {reason}; write df://host:port, e.g. df://127.0.0.1:50050"
            ))
        };
        let with_scheme = if text.contains("://") {
            text.to_string()
        } else {
            format!("df://{text}")
        };
        let url = Url::parse(&with_scheme).map_err(|_| bad("is not an address"))?;
        if url.scheme() != "df" {
            return Err(bad("has another scheme than df://"));
        }
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("has no host"))?;
        Ok(Self {
            host: host.trim_matches(['[', ']']).to_string(),
            port: url.port().unwrap_or(DEFAULT_SCHEDULER_PORT),
        })
    }

    /// `host:port`, for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Fails with a clear message when nothing listens at the scheduler's address.
    pub async fn check_reachable(&self) -> Result<()> {
        let address = self.address();
        let connect = tokio::net::TcpStream::connect(&address);
        match tokio::time::timeout(Duration::from_secs(5), connect).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.unreachable(&e.to_string())),
            Err(_) => Err(self.unreachable("no answer within 5 s")),
        }
    }

    fn unreachable(&self, why: &str) -> Error {
        Error::Cluster(format!(
            "no Ballista scheduler at df://{} ({why}); start one with `gamelake scheduler --bind {}` \
             and at least one `gamelake executor --scheduler {}`, or drop --cluster to run here",
            self.address(),
            self.address(),
            self.address()
        ))
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}", self.address())
    }
}

/// The client side: a session state whose queries are planned here and run on the cluster.
pub fn client_state(state: SessionState, cluster: &ClusterUrl) -> Result<SessionState> {
    let config = state
        .config()
        .clone()
        .with_ballista_logical_extension_codec(Arc::new(codec::LakeLogicalCodec::default()));
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    state
        .upgrade_for_ballista(format!("http://{}", cluster.address()))
        .map_err(Error::from_datafusion)
}

/// Fails, naming the table, when a plan reads something the cluster cannot: anything but lake
/// tables, file paths and views over them (`pg.*`, `table$history`, in-memory tables). Plans
/// that read only `information_schema` are fine: Ballista answers them in the client.
pub fn check_shippable(plan: &LogicalPlan) -> Result<()> {
    let mut refused = None;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let name = &scan.table_name;
            if name.schema() == Some("information_schema") {
                return Ok(TreeNodeRecursion::Continue);
            }
            let provider = source_as_provider(&scan.source)?;
            if let Some(view) = provider.get_logical_plan() {
                check_shippable(&view).map_err(|e| DataFusionError::External(Box::new(e)))?;
            } else if provider.downcast_ref::<LakeFilesTable>().is_none()
                && provider.downcast_ref::<ListingTable>().is_none()
            {
                refused = Some(name.to_string());
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .map_err(Error::from_datafusion)?;
    match refused {
        None => Ok(()),
        Some(table) => Err(Error::Cluster(format!(
            "{table} cannot be read on the cluster (only lake tables, file paths and views over \
             them can; not pg.*, table$history or in-memory tables): run this statement without \
             --cluster"
        ))),
    }
}

/// The session configuration the scheduler and executors start from.
fn base_config() -> SessionConfig {
    SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(codec::LakeLogicalCodec::default()))
}

/// Refuses to listen beyond this machine unless the operator said the network is private.
pub fn check_bind(bind: &SocketAddr, private_network: bool, role: &str) -> Result<()> {
    if bind.ip().is_loopback() || private_network {
        return Ok(());
    }
    Err(Error::Cluster(format!(
        "refusing to run the {role} on {bind}: Ballista's scheduler and executor endpoints have no \
         authentication, so anyone who reaches them can run plans and read shuffle data. Bind to \
         127.0.0.1, or pass --private-network if {bind} is only reachable from your cluster's \
         private network"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        let url = ClusterUrl::parse("df://10.0.0.5:6000").unwrap();
        assert_eq!(url.address(), "10.0.0.5:6000");
        assert_eq!(ClusterUrl::parse("df://sched").unwrap().port, 50050);
        assert_eq!(
            ClusterUrl::parse("127.0.0.1:7").unwrap().to_string(),
            "df://127.0.0.1:7"
        );
        let err = ClusterUrl::parse("http://x:1").unwrap_err().to_string();
        assert!(err.contains("df://host:port"), "{err}");
    }

    #[test]
    fn only_loopback_without_the_flag() {
        let local: SocketAddr = "127.0.0.1:50050".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:50050".parse().unwrap();
        assert!(check_bind(&local, false, "scheduler").is_ok());
        let err = check_bind(&any, false, "scheduler")
            .unwrap_err()
            .to_string();
        assert!(err.contains("--private-network"), "{err}");
        assert!(check_bind(&any, true, "scheduler").is_ok());
    }
}
