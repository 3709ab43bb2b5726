//! `gamelake serve`: the long-running server. Its flags, and the composition of the parts
//! each module starts by itself: the query servers ([`super::query_servers`]), the log intake
//! ([`crate::intake::server::start`]), the scheduler ([`crate::schedule::prepare`]) and
//! `/metrics` ([`crate::metrics::serve`]), all stopped by one signal.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::watch;

use super::Context;
pub use super::serve_args::ServeArgs;
use super::serve_args::{bind, check_open_access, until};
use crate::error::{Error, Result};

/// Runs `gamelake serve` until Ctrl-C or SIGTERM.
pub async fn run(context: &Context, args: ServeArgs) -> Result<()> {
    if args.flight.is_none()
        && args.pg.is_none()
        && args.http.is_none()
        && args.forward.is_none()
        && !args.schedule
    {
        return Err(Error::Invalid(
            "nothing to serve: give --flight ADDR and/or --pg ADDR (queries: Flight SQL, PostgreSQL protocol), --http ADDR and/or --forward ADDR (log intake), and/or --schedule (scheduled reports and pipelines), e.g. --pg 127.0.0.1:5433".to_string(),
        ));
    }
    let (stop, stopped) = watch::channel(false);
    let mut servers = Vec::new();
    let mut exposed = Exposed::default();
    if args.flight.is_some() || args.pg.is_some() {
        let (server, metrics) =
            super::query_servers::start(context, &args, stopped.clone()).await?;
        exposed.queries = Some(metrics);
        servers.push(tokio::spawn(server));
    }
    if args.http.is_some() || args.forward.is_some() {
        let (server, metrics) = intake(context, &args, stopped.clone()).await?;
        exposed.intake = Some(metrics);
        servers.push(tokio::spawn(server));
    }
    if args.schedule {
        let session = context.session().await?;
        let reports = crate::schedule::folder(args.reports.as_deref(), "reports")?;
        let pipelines = crate::schedule::folder(args.pipelines.as_deref(), "pipelines")?;
        let runner = crate::schedule::prepare(
            &session,
            reports.as_deref(),
            pipelines.as_deref(),
            &context.config.replicas,
            args.schedule_heartbeat,
        )?;
        println!(
            "gamelake serve: scheduler running {} (records in {}/_schedule)",
            runner.job_names().join(", "),
            context.location
        );
        exposed.schedule = Some(runner.metrics());
        servers.push(tokio::spawn(Arc::new(runner).run(stopped.clone())));
    }
    if let Some(addr) = args.metrics {
        let (listener, bound) = bind(addr).await?;
        println!("gamelake serve: metrics on http://{bound}/metrics");
        servers.push(tokio::spawn(crate::metrics::serve(
            listener,
            move || exposed.render(),
            until(stopped.clone()),
        )));
    }
    std::io::stdout().flush().ok();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        let _ = stop.send(true);
    });
    let mut result = Ok(());
    for server in servers {
        let outcome = server
            .await
            .map_err(|e| Error::Internal(format!("server task failed: {e}")))
            .and_then(|r| r);
        if result.is_ok() {
            result = outcome;
        }
    }
    result?;
    println!("gamelake serve: stopped");
    Ok(())
}

/// The metrics that `--metrics` shows.
#[derive(Clone, Default)]
struct Exposed {
    intake: Option<Arc<crate::intake::Metrics>>,
    schedule: Option<Arc<crate::schedule::Metrics>>,
    queries: Option<Arc<crate::serving::query_metrics::QueryMetrics>>,
}

impl Exposed {
    fn render(&self) -> String {
        let intake = self.intake.as_ref().map(|m| m.registry());
        let schedule = self.schedule.as_ref().map(|m| m.registry());
        let queries = self.queries.as_ref().map(|m| m.registry());
        let registries: Vec<_> = intake.into_iter().chain(schedule).chain(queries).collect();
        crate::metrics::exposition(&registries)
    }
}

/// Binds the log intake's listeners (refusing open access off loopback) and starts it.
async fn intake(
    context: &Context,
    args: &ServeArgs,
    stopped: watch::Receiver<bool>,
) -> Result<(
    impl Future<Output = Result<()>> + use<>,
    Arc<crate::intake::Metrics>,
)> {
    let config = &context.config.intake;
    let mut listeners = crate::intake::server::Listeners::default();
    for (addr, slot) in [
        (args.http, &mut listeners.http),
        (args.forward, &mut listeners.forward),
    ] {
        if let Some(addr) = addr {
            if config.tokens.is_empty() {
                check_open_access(args, addr, "[[intake.tokens]]")?;
            }
            *slot = Some(bind(addr).await?.0);
        }
    }
    let session = context.session().await?;
    crate::intake::server::start(&session, config, listeners, stopped).await
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    #[test]
    fn secrets_on_the_command_line_never_show_in_debug_output() {
        let secret = "k".repeat(40);
        let cli = super::super::Cli::try_parse_from([
            "gamelake",
            "--pg-url",
            "postgres://u:pg-password@h/db",
            "serve",
            "--flight",
            "127.0.0.1:0",
            "--token-secret",
            &secret,
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains(&secret), "{shown}");
        assert!(!shown.contains("pg-password"), "{shown}");
    }
}
