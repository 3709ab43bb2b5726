//! Flight SQL: the real server (in-process on port 0, or the `gamelake serve` binary) with
//! real clients — arrow-flight's `FlightSqlServiceClient` and Python's ADBC driver. By subject:
//! answers and metadata ([`queries`]), who may do what ([`access`]), bounds and load
//! ([`limits`]); the helpers below start servers and clients.

mod access;
mod limits;
mod queries;
mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetTables, SqlInfo};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightInfo,
};
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::TryStreamExt;
use gamelake::flight::{Access, FlightOptions};
use gamelake::serving::{Directory, Limits, Role, Signer, User, hash_password};
use gamelake::{QuerySettings, Session};
use prost::Message;
use tokio::sync::oneshot;
use tonic::transport::Channel;

use crate::support::{ServeProcess, TempLake, gamelake_err, render, rows};

/// An in-process Flight SQL server over a lake; stopped on drop.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Server {
    async fn start(lake: &TempLake, users: Vec<User>, limits: Limits, secret: &[u8]) -> Self {
        Self::with_directory(
            lake,
            Arc::new(Directory::new(users).unwrap()),
            limits,
            secret,
        )
        .await
    }

    /// A server over `users`, which the caller may change while it runs.
    async fn with_directory(
        lake: &TempLake,
        users: Arc<Directory>,
        limits: Limits,
        secret: &[u8],
    ) -> Self {
        let options = FlightOptions {
            access: Access {
                users,
                signer: Signer::new(secret),
                token_ttl: Duration::from_secs(600),
                ticket_ttl: Duration::from_secs(60),
            },
            limits,
            tls: None,
            max_message_bytes: 16 << 20,
            query_log: true,
        };
        Self::with_options(lake, options).await
    }

    async fn with_options(lake: &TempLake, options: FlightOptions) -> Self {
        let settings = QuerySettings {
            deny_file_paths: true,
            catalog_ttl: Duration::from_millis(200),
            ..QuerySettings::default()
        };
        let lake = Arc::new(gamelake::Lake::open(&lake.location()).unwrap());
        let session = Session::new(lake, &settings).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            gamelake::flight::serve(listener, session, options, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and waits until it has written its query log.
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn users() -> Vec<User> {
    vec![
        User::new("ana", hash_password("ana-pw").unwrap(), Role::Reader),
        User::new("bo", hash_password("bo-pw").unwrap(), Role::Reader),
        User::new("root", hash_password("root-pw").unwrap(), Role::Admin),
    ]
}

async fn lake_with_players() -> TempLake {
    let lake = TempLake::new();
    lake.session()
        .await
        .sql(
            "CREATE TABLE game.players AS SELECT * FROM (VALUES \
             (1, 'ana', 'cn', 10.5), (2, 'bo', 'us', 0.0), (3, 'cy', 'cn', 99.9)) \
             v(player_id, name, region, spent)",
        )
        .await
        .unwrap();
    lake
}

pub(crate) async fn connect(
    addr: SocketAddr,
    user: Option<(&str, &str)>,
) -> FlightSqlServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    if let Some((name, password)) = user {
        client.handshake(name, password).await.unwrap();
    }
    client
}

pub(crate) async fn fetch(
    client: &mut FlightSqlServiceClient<Channel>,
    info: FlightInfo,
) -> Result<Vec<RecordBatch>, String> {
    let mut batches = Vec::new();
    for endpoint in info.endpoint {
        let ticket = endpoint.ticket.expect("ticket");
        let stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
        batches.extend(
            stream
                .try_collect::<Vec<_>>()
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(batches)
}

pub(crate) async fn query(
    client: &mut FlightSqlServiceClient<Channel>,
    sql: &str,
) -> Result<Vec<RecordBatch>, String> {
    let info = client
        .execute(sql.to_string(), None)
        .await
        .map_err(|e| e.to_string())?;
    fetch(client, info).await
}

/// `gamelake serve --flight 127.0.0.1:0` as a child process with users ana (reader) and root
/// (admin), signing with `secret`; `extra_config` is prepended to the config (e.g. `[flight]`).
fn start_flight(lake: &TempLake, secret: &str, extra_config: &str) -> ServeProcess {
    let config = lake.path().join("gamelake.toml");
    if !config.exists() {
        let mut text = extra_config.to_string();
        for (name, password, role) in [("ana", "ana-pw", "reader"), ("root", "root-pw", "admin")] {
            text.push_str(&format!(
                "[[users]]\nname = \"{name}\"\npassword_hash = \"{}\"\nrole = \"{role}\"\n",
                hash_password(password).unwrap()
            ));
        }
        std::fs::write(&config, text).unwrap();
    }
    ServeProcess::spawn(
        lake,
        &config,
        &["--flight", "127.0.0.1:0"],
        &[("GAMELAKE_TOKEN_SECRET", secret)],
    )
}
