//! `gamelake scheduler` and `gamelake executor`: Ballista's two roles, started with gamelake's
//! codec and object stores so that lake tables can be planned and read anywhere in the cluster.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballista_core::extension::{
    ballista_aggregate_functions, ballista_scalar_functions, ballista_window_functions,
};
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::{create_scheduler, start_grpc_service_with_listener};
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::prelude::SessionConfig;
use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

use super::codec::LakeLogicalCodec;
use super::stores::LakeStores;
use super::{base_config, check_bind};
use crate::error::{Error, Result};

/// How the scheduler is run.
#[derive(Clone, Debug)]
pub struct SchedulerOptions {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    pub bind: SocketAddr,
    /// Host name executors and clients reach this scheduler by (default: the bind address).
    pub external_host: Option<String>,
    /// Listen beyond loopback.
    pub private_network: bool,
    /// An executor silent for this long is dropped and its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// How an executor is run.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// The scheduler, `host:port`.
    pub scheduler: String,
    /// Address of the executor's Flight endpoint (shuffle data); its gRPC task endpoint
    /// listens on `grpc_port` of the same host.
    pub bind: SocketAddr,
    /// Port of the task endpoint.
    pub grpc_port: u16,
    /// Host name the scheduler and other executors reach this one by (default: bind address).
    pub external_host: Option<String>,
    /// Tasks run at once (default: the number of cores).
    pub concurrency: usize,
    /// Where shuffle files go (default: a temporary folder).
    pub work_dir: Option<String>,
    /// How often the executor tells the scheduler it is alive.
    pub heartbeat: Duration,
    /// Listen beyond loopback.
    pub private_network: bool,
}

/// The runtime every cluster session gets: object stores made on first use.
fn runtime(stores: &Arc<LakeStores>) -> datafusion::error::Result<Arc<RuntimeEnv>> {
    RuntimeEnvBuilder::new()
        .with_object_store_registry(stores.clone())
        .build_arc()
}

/// Runs the scheduler until the process is stopped.
pub async fn run_scheduler(options: SchedulerOptions) -> Result<()> {
    check_bind(&options.bind, options.private_network, "scheduler")?;
    let listener = tokio::net::TcpListener::bind(options.bind)
        .await
        .map_err(|e| Error::Cluster(format!("cannot listen on {}: {e}", options.bind)))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Cluster(e.to_string()))?;
    let stores = Arc::new(LakeStores::default());
    let mut config = SchedulerConfig::default()
        .with_hostname(
            options
                .external_host
                .clone()
                .unwrap_or_else(|| bound.ip().to_string()),
        )
        .with_port(bound.port())
        .with_override_config_producer(Arc::new(base_config))
        .with_override_session_builder(Arc::new(move |config: SessionConfig| {
            Ok(SessionStateBuilder::new()
                .with_config(config)
                .with_runtime_env(runtime(&stores)?)
                .with_default_features()
                .with_scalar_functions(ballista_scalar_functions())
                .with_aggregate_functions(ballista_aggregate_functions())
                .with_window_functions(ballista_window_functions())
                .build())
        }));
    config.bind_host = bound.ip().to_string();
    config.bind_port = bound.port();
    config.executor_timeout_seconds = options.executor_timeout.as_secs().max(1);
    config.expire_dead_executor_interval_seconds = (options.executor_timeout.as_secs() / 3).max(1);
    config.override_logical_codec = Some(Arc::new(LakeLogicalCodec::default()));
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(ballista_error)?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(ballista_error)?;
    println!("gamelake scheduler listening on {bound} (clients: --cluster df://{bound})");
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(ballista_error)
}

/// Runs an executor until the process is stopped (Ctrl-C or SIGTERM).
pub async fn run_executor(options: ExecutorOptions) -> Result<()> {
    check_bind(&options.bind, options.private_network, "executor")?;
    let (scheduler_host, scheduler_port) = split_host_port(&options.scheduler)?;
    let stores = Arc::new(LakeStores::default());
    let config = ExecutorProcessConfig {
        bind_host: options.bind.ip().to_string(),
        port: options.bind.port(),
        grpc_port: options.grpc_port,
        external_host: options.external_host.clone(),
        scheduler_host,
        scheduler_port,
        scheduler_connect_timeout_seconds: 30,
        vcores: options.concurrency,
        work_dir: options.work_dir.clone(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: options.heartbeat.as_secs().max(1),
        override_config_producer: Some(Arc::new(base_config)),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| runtime(&stores))),
        override_logical_codec: Some(Arc::new(LakeLogicalCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    println!(
        "gamelake executor on {} (tasks on port {}), scheduler {}",
        options.bind, options.grpc_port, options.scheduler
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(ballista_error)
}

fn split_host_port(address: &str) -> Result<(String, u16)> {
    let address = address.strip_prefix("df://").unwrap_or(address);
    let (host, port) = address.rsplit_once(':').ok_or_else(|| {
        Error::Cluster(format!(
            "--scheduler {address}: write host:port, e.g. 127.0.0.1:50050"
        ))
    })?;
    let port = port
        .parse()
        .map_err(|_| Error::Cluster(format!("--scheduler {address}: '{port}' is not a port")))?;
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

fn ballista_error(e: ballista_core::error::BallistaError) -> Error {
    Error::Cluster(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses() {
        assert_eq!(
            split_host_port("df://10.1.2.3:50050").unwrap(),
            ("10.1.2.3".to_string(), 50050)
        );
        assert_eq!(split_host_port("[::1]:9").unwrap(), ("::1".to_string(), 9));
        assert!(split_host_port("sched").is_err());
        assert!(split_host_port("sched:x").is_err());
    }
}
