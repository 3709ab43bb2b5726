//! Serving an HTTP router to the network with the bounds a server facing unknown peers needs,
//! which `axum::serve` leaves out: at most `max_connections` connections at once (more are
//! closed at accept), and a peer that takes longer than `read_timeout` to send a request's
//! headers (or stays idle that long between requests) is disconnected. Built on hyper-util's
//! connection builder, as `axum::serve` is, with hyper's own header timer.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// Limits on the connections of one listener.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Connections open at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// How long a peer may take to send a request's headers, or stay idle between requests.
    pub read_timeout: Duration,
}

/// Serves `router` on `listener` within `bounds` until `shutdown` completes, then lets the
/// requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(bounds.max_connections.max(1)));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                "{peer} refused: {} connections are open (the listener's max_connections)",
                bounds.max_connections
            );
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(bounds.read_timeout);
            builder
                .http2()
                .timer(TokioTimer::new())
                .keep_alive_interval(bounds.read_timeout);
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::pin!(connection);
            loop {
                tokio::select! {
                    result = connection.as_mut() => {
                        if let Err(e) = result {
                            tracing::debug!("connection from {peer} ended: {e}");
                        }
                        break;
                    }
                    _ = stopping.wait_for(|s| *s) => connection.as_mut().graceful_shutdown(),
                }
            }
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Requests in progress finish (each connection closes after its current request); wait
    // for them, at most a read timeout more.
    let all = u32::try_from(bounds.max_connections.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(bounds.read_timeout, slots.acquire_many(all)).await;
    Ok(())
}
