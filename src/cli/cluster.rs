//! `gamelake scheduler` and `gamelake executor`: the roles of a Ballista cluster.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::cluster::roles::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};
use crate::error::Result;

/// Flags of `gamelake scheduler`.
#[derive(Debug, Args)]
#[command(
    after_help = "The scheduler plans distributed queries and hands their tasks to executors.
Clients send it queries with --cluster df://HOST:PORT (or GAMELAKE_CLUSTER).

Ballista's endpoints have no authentication: the scheduler listens on loopback unless
--private-network is given, and belongs on a network only the cluster can reach.

Examples:
  gamelake scheduler                                   127.0.0.1:50050
  gamelake scheduler --bind 10.0.0.5:50050 --private-network
  gamelake executor --scheduler 127.0.0.1:50050        (in another terminal, one or more)
  gamelake --lake ./lake --cluster df://127.0.0.1:50050 sql -c \"SELECT count(*) FROM game.sessions\""
)]
pub struct SchedulerArgs {
    /// Address to listen on; port 0 picks a free port (the address is printed).
    #[arg(long, default_value = "127.0.0.1:50050", value_name = "ADDR")]
    pub bind: SocketAddr,

    /// Host name executors reach the scheduler by, when not the bind address (e.g. a
    /// Kubernetes Service name).
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,

    /// Allow listening on a non-loopback address: only on a private network.
    #[arg(long)]
    pub private_network: bool,

    /// Drop an executor that has not sent a heartbeat for this long and run its tasks elsewhere.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub executor_timeout: Duration,
}

/// Flags of `gamelake executor`.
#[derive(Debug, Args)]
#[command(
    after_help = "An executor runs the tasks of distributed queries: it reads the lake
(local folder or s3:// with the AWS_* variables of its environment) and serves shuffle data
to other executors.

Examples:
  gamelake executor --scheduler 127.0.0.1:50050
  gamelake executor --scheduler 127.0.0.1:50050 --bind 127.0.0.1:50061 --grpc-port 50062
  gamelake executor --scheduler sched:50050 --bind 0.0.0.0:50051 --external-host $POD_IP --private-network"
)]
pub struct ExecutorArgs {
    /// The scheduler's address, host:port.
    #[arg(long, env = "GAMELAKE_SCHEDULER", value_name = "HOST:PORT")]
    pub scheduler: String,

    /// Address of the executor's Flight endpoint, which serves shuffle data.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "ADDR")]
    pub bind: SocketAddr,

    /// Port of the executor's task endpoint, on the same host.
    #[arg(long, default_value_t = 50052, value_name = "PORT")]
    pub grpc_port: u16,

    /// Host name the scheduler and other executors reach this executor by.
    #[arg(long, value_name = "HOST")]
    pub external_host: Option<String>,

    /// Tasks run at once (default: the number of cores).
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,

    /// Folder for shuffle files (default: a temporary folder).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<String>,

    /// How often the executor tells the scheduler it is alive.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub heartbeat: Duration,

    /// Allow listening on a non-loopback address: only on a private network.
    #[arg(long)]
    pub private_network: bool,
}

/// Runs `gamelake scheduler`.
pub async fn scheduler(args: SchedulerArgs) -> Result<()> {
    run_scheduler(SchedulerOptions {
        bind: args.bind,
        external_host: args.external_host,
        private_network: args.private_network,
        executor_timeout: args.executor_timeout,
    })
    .await
}

/// Runs `gamelake executor`.
pub async fn executor(args: ExecutorArgs) -> Result<()> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    run_executor(ExecutorOptions {
        scheduler: args.scheduler,
        bind: args.bind,
        grpc_port: args.grpc_port,
        external_host: args.external_host,
        concurrency: args.concurrency.unwrap_or(cores).max(1),
        work_dir: args.work_dir,
        heartbeat: args.heartbeat,
        private_network: args.private_network,
    })
    .await
}
