//! The Prometheus text exposition (prometheus-client) of one or more metric registries: the
//! intake's, the scheduler's and the query doors' (by user), alone or on one `/metrics` page
//! ([`serve`]).

use prometheus_client::registry::Registry;

/// The registries' metrics, one after the other, closed by the single `# EOF` the format wants.
pub fn exposition(registries: &[&Registry]) -> String {
    let mut out = String::new();
    for registry in registries {
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, registry);
    }
    let _ = prometheus_client::encoding::text::encode_eof(&mut out);
    out
}

/// Serves `/metrics` (what `render` gives, as OpenMetrics text) and `/healthz` on `listener`
/// until `shutdown` completes. No login: bind it where only the monitoring reaches.
pub async fn serve(
    listener: tokio::net::TcpListener,
    render: impl Fn() -> String + Clone + Send + Sync + 'static,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> crate::Result<()> {
    // Scraped by a few monitors: a small bound, the usual timeout.
    let bounds = crate::http_serve::Bounds {
        max_connections: 64,
        read_timeout: std::time::Duration::from_secs(30),
    };
    use axum::routing::get;
    let bound = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a| a.to_string());
    let router = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = render();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    crate::http_serve::serve(listener, router, bounds, shutdown)
        .await
        .map_err(|e| crate::Error::Unavailable(format!("metrics on {bound} failed: {e}")))
}
