//! The intake's life inside `gamelake serve`: open the write-ahead log, start the HTTP and
//! forward listeners, the committer and the maintenance, and stop them in the order that loses
//! nothing (listeners first, then a last commit of everything acknowledged).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Intake, IntakeConfig, Metrics};
use crate::error::{Error, Result};
use crate::query::Session;

/// The bound listeners of the intake: HTTP (`--http`) and Fluentd forward (`--forward`).
#[derive(Default)]
pub struct Listeners {
    /// POST /ingest/<schema>.<table>, /healthz, /readyz, /metrics.
    pub http: Option<TcpListener>,
    /// Fluentd's forward protocol.
    pub forward: Option<TcpListener>,
}

/// Opens the intake over `session` and prepares its listeners; the returned future serves
/// until `stopped` turns true, then commits what was acknowledged and returns.
pub async fn start(
    session: &Session,
    config: &IntakeConfig,
    listeners: Listeners,
    stopped: watch::Receiver<bool>,
) -> Result<(impl Future<Output = Result<()>> + use<>, Arc<Metrics>)> {
    let location = session.lake().location();
    let local = location
        .is_local()
        .then(|| location.url().to_file_path().ok())
        .flatten();
    let settings = config.settings(local)?;
    let interval = settings.commit_interval;
    let compact_interval = settings.compact_interval;
    let wal_dir = settings.wal_dir.clone();
    let (intake, committer) = Intake::open(session, config, settings).await?;
    let maintenance = (!compact_interval.is_zero()).then(|| {
        super::maintenance::run(
            session.lake().clone(),
            intake.tables.clone(),
            compact_interval,
            intake.metrics.clone(),
            stopped.clone(),
        )
    });
    let mut servers: Vec<tokio::task::JoinHandle<Result<()>>> = Vec::new();
    if let Some(listener) = listeners.http {
        let bound = bound(&listener);
        println!(
            "gamelake serve: log intake on http://{bound}/ingest/<schema>.<table> ({} tables, write-ahead log in {})",
            intake.tables.len(),
            wal_dir.display()
        );
        let router = super::http::router(intake.clone());
        let bounds = crate::http_serve::Bounds {
            max_connections: intake.settings.max_connections,
            read_timeout: intake.settings.read_timeout,
        };
        let stopped = stopped.clone();
        servers.push(tokio::spawn(async move {
            crate::http_serve::serve(listener, router, bounds, until(stopped))
                .await
                .map_err(|e| Error::Unavailable(format!("log intake on {bound} failed: {e}")))
        }));
    }
    if let Some(listener) = listeners.forward {
        println!(
            "gamelake serve: Fluentd forward intake on tcp://{} ({} tables, write-ahead log in {})",
            bound(&listener),
            intake.tables.len(),
            wal_dir.display()
        );
        servers.push(tokio::spawn(super::forward::serve(
            listener,
            intake.clone(),
            until(stopped.clone()),
        )));
    }
    let metrics = intake.metrics.clone();
    let server = async move {
        let (commit_stop, commit_stopped) = watch::channel(false);
        let committing = tokio::spawn(committer.run(interval, commit_stopped));
        let maintaining = maintenance.map(tokio::spawn);
        let mut result = Ok(());
        for server in servers {
            let outcome = server
                .await
                .map_err(|e| Error::Internal(format!("log intake failed: {e}")))
                .and_then(|r| r);
            if result.is_ok() {
                result = outcome;
            }
        }
        // Every acknowledged request is in the log now; commit it before stopping.
        let _ = commit_stop.send(true);
        let _ = committing.await;
        if let Some(task) = maintaining {
            let _ = task.await;
        }
        result
    };
    Ok((server, metrics))
}

/// Completes when `stopped` turns true (or its sender is gone).
async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn bound(listener: &TcpListener) -> String {
    listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string())
}
