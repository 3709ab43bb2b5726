//! A PostgreSQL connection for bulk binary COPY, whose rows are read where they lie in one
//! read buffer.
//!
//! Written here rather than using tokio-postgres's `copy_out`: PostgreSQL sends one CopyData
//! message per row, and tokio-postgres parses each message, splits it off its read buffer and
//! passes it through a channel to the caller; that per-message work profiled at about a fifth
//! of a snapshot's client time. Only the connection loop is ours: the connection string is
//! tokio-postgres's `Config`, and the messages, the MD5 hash and SCRAM-SHA-256 are
//! postgres-protocol's (the protocol crate tokio-postgres is built on). TLS is asked for and
//! checked as [`super::tls`] says, as [`super::connect`] does.

use std::str::FromStr;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{self, ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::{DataRowBody, ErrorFields, Header, Message};
use postgres_protocol::message::frontend;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::{Config, Host};
use tokio_rustls::TlsConnector;

use super::tls::{SslMode, Tls};
use super::{failed, redact};
use crate::error::{Error, Result};

/// Bytes asked of the socket per read: many rows per system call.
const READ_SIZE: usize = 256 * 1024;

/// A byte stream to the server (TCP or a Unix socket).
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// What [`CopyConnection::drain`] stopped at.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every whole message in the buffer was read: [`CopyConnection::fill`] reads more.
    NeedMore,
    /// The caller's function asked to pause; the next drain goes on from there.
    Paused,
    /// The COPY's data ended; [`CopyConnection::finish`] reads its completion.
    Done,
}

/// A connection that runs statements and then one binary COPY out.
pub struct CopyConnection {
    io: Box<dyn Io>,
    /// Bytes read and not yet handled.
    buf: BytesMut,
    /// What errors name: the connection string without its password, then the COPY's query.
    context: String,
}

impl CopyConnection {
    /// Connects and logs in with the connection string's user and password (trust, password,
    /// MD5 or SCRAM-SHA-256), trying its hosts in order.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::open_session(url, false).await
    }

    /// Connects as a logical replication client of the database (`replication=database`):
    /// the session that creates a replication slot and exports its snapshot. Needs a role with
    /// REPLICATION.
    pub async fn connect_replication(url: &str) -> Result<Self> {
        Self::open_session(url, true).await
    }

    async fn open_session(url: &str, replication: bool) -> Result<Self> {
        let context = redact(url);
        let fail = |detail: String| failed(&context, detail);
        let tls = Tls::of(url).map_err(|e| fail(e.to_string()))?;
        let config = Config::from_str(&tls.url).map_err(|e| fail(e.to_string()))?;
        let user = match config.get_user() {
            Some(user) => user.to_string(),
            None => whoami::username().map_err(|e| fail(format!("no user given: {e}")))?,
        };
        // Where to connect, as tokio-postgres does: `hostaddr` (an IP address) before `host`.
        let hosts: Vec<Host> = (0..config.get_hosts().len().max(config.get_hostaddrs().len()))
            .filter_map(|i| match config.get_hostaddrs().get(i) {
                Some(ip) => Some(Host::Tcp(ip.to_string())),
                None => config.get_hosts().get(i).cloned(),
            })
            .collect();
        if hosts.is_empty() {
            return Err(fail(
                "no host given (host=... or postgres://host/...)".into(),
            ));
        }
        let mut last = None;
        for (i, host) in hosts.iter().enumerate() {
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            let io = match open(host, port, config.get_connect_timeout()).await {
                Ok(io) => io,
                Err(e) => {
                    let name = host_name(host);
                    last = Some(fail(format!("cannot connect to {name} port {port}: {e}")));
                    continue;
                }
            };
            // TLS over TCP only: a Unix socket stays on the machine, as with libpq.
            let io = match (&tls.config, host) {
                (Some(settings), Host::Tcp(name)) => negotiate(io, settings, name, tls.mode)
                    .await
                    .map_err(|e| fail(format!("{name} port {port}: {e}")))?,
                _ => io,
            };
            let mut connection = Self {
                io,
                buf: BytesMut::with_capacity(READ_SIZE),
                context: context.clone(),
            };
            connection.log_in(&config, &user, replication).await?;
            tracing::debug!(host = %host_name(host), port, user = %user, "bulk connection ready");
            return Ok(connection);
        }
        Err(last.unwrap_or_else(|| fail("no host to connect to".into())))
    }

    /// Sends the startup message, authenticates, and waits until the server is ready.
    async fn log_in(&mut self, config: &Config, user: &str, replication: bool) -> Result<()> {
        let mut params = vec![("client_encoding", "UTF8"), ("user", user)];
        if replication {
            params.push(("replication", "database"));
        }
        if let Some(db) = config.get_dbname() {
            params.push(("database", db));
        }
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        if let Some(name) = config.get_application_name() {
            params.push(("application_name", name));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(params, &mut out).map_err(|e| self.io_error(e))?;
        self.send(&out).await?;
        let mut scram: Option<ScramSha256> = None;
        loop {
            let mut out = BytesMut::new();
            match self.message().await? {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(self.password(config)?, &mut out)
                        .map_err(|e| self.io_error(e))?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(user.as_bytes(), self.password(config)?, body.salt());
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| self.io_error(e))?;
                }
                Message::AuthenticationSasl(body) => {
                    let mechanisms: Vec<String> = body
                        .mechanisms()
                        .map(|m| Ok(m.to_string()))
                        .collect()
                        .map_err(|e| self.io_error(e))?;
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(self.error(&format!(
                            "the server offers SASL {mechanisms:?}; gamelake speaks SCRAM-SHA-256"
                        )));
                    }
                    let client =
                        ScramSha256::new(self.password(config)?, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        client.message(),
                        &mut out,
                    )
                    .map_err(|e| self.io_error(e))?;
                    scram = Some(client);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let client = scram.as_mut().ok_or_else(|| self.unexpected())?;
                    client.update(body.data()).map_err(|e| self.io_error(e))?;
                    frontend::sasl_response(client.message(), &mut out)
                        .map_err(|e| self.io_error(e))?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let mut client = scram.take().ok_or_else(|| self.unexpected())?;
                    client.finish(body.data()).map_err(|e| self.io_error(e))?;
                }
                Message::ReadyForQuery(_) => return Ok(()),
                Message::ErrorResponse(body) => return Err(self.error(&error_text(body.fields()))),
                Message::BackendKeyData(_)
                | Message::ParameterStatus(_)
                | Message::NoticeResponse(_) => {}
                _ => return Err(self.unexpected()),
            }
            if !out.is_empty() {
                self.send(&out).await?;
            }
        }
    }

    /// The connection string's password, for a server that asks for one.
    fn password<'c>(&self, config: &'c Config) -> Result<&'c [u8]> {
        config.get_password().ok_or_else(|| {
            self.error("the server asks for a password and the connection string has none")
        })
    }

    /// Runs statements (the simple query protocol, several separated by `;`) and waits until
    /// they are done; the first error is returned.
    pub async fn execute(&mut self, sql: &str) -> Result<()> {
        self.query(sql).await?;
        self.until_ready(|_| Ok(())).await
    }

    /// Runs one statement that answers one row (a replication command such as
    /// `CREATE_REPLICATION_SLOT`) and returns its fields as text.
    pub async fn query_row(&mut self, sql: &str) -> Result<Vec<Option<String>>> {
        self.query(sql).await?;
        let mut row = None;
        self.until_ready(|body| {
            if row.is_none() {
                let buffer = body.buffer();
                row = Some(
                    body.ranges()
                        .map(|r| {
                            Ok(r.and_then(|r| buffer.get(r))
                                .map(|b| String::from_utf8_lossy(b).into_owned()))
                        })
                        .collect()?,
                );
            }
            Ok(())
        })
        .await?;
        row.ok_or_else(|| self.error(&format!("{sql} answered no row")))
    }

    /// Starts `COPY (query) TO STDOUT (FORMAT binary)` and returns its column count. From
    /// here on, errors name the query rather than the connection.
    pub async fn copy_out(&mut self, query: &str) -> Result<usize> {
        self.context = query.to_string();
        self.query(&super::copy_statement(query)).await?;
        loop {
            match self.message().await? {
                Message::CopyOutResponse(body) => {
                    let columns: usize = body
                        .column_formats()
                        .count()
                        .map_err(|e| self.io_error(e))?;
                    tracing::debug!(query, columns, "COPY started");
                    return Ok(columns);
                }
                Message::ErrorResponse(body) => {
                    let detail = error_text(body.fields());
                    // The statement is over; let the server come back to ready.
                    self.until_ready(|_| Ok(())).await?;
                    return Err(self.error(&detail));
                }
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => return Err(self.unexpected()),
            }
        }
    }

    /// Hands the payload of each whole CopyData message in the buffer to `data`, in order,
    /// until `data` returns `false` (pause), the buffer runs out, or the COPY's data ends.
    pub fn drain(&mut self, mut data: impl FnMut(&[u8]) -> Result<bool>) -> Result<Drained> {
        let mut at = 0;
        let result = loop {
            let header = match Header::parse(&self.buf[at..]) {
                Ok(Some(header)) => header,
                Ok(None) => break Ok(Drained::NeedMore),
                Err(e) => break Err(self.io_error(e)),
            };
            // A message is gathered whole before it is read: one longer than the longest row
            // PostgreSQL can send is refused before its bytes pile up.
            if header.len() as usize > super::frames::MAX_ROW_BYTES + 4096 {
                break Err(self.error(&format!(
                    "a message of {} bytes announced; the longest row PostgreSQL sends is 1 GiB",
                    header.len()
                )));
            }
            let end = at + 1 + header.len() as usize;
            if header.tag() != b'd' {
                // Anything else (the end, an error, a notice) is read as a whole message.
                self.buf.advance(at);
                at = 0;
                let Some(message) = Message::parse(&mut self.buf).map_err(|e| self.io_error(e))?
                else {
                    break Ok(Drained::NeedMore);
                };
                match message {
                    Message::CopyDone => break Ok(Drained::Done),
                    Message::ErrorResponse(body) => {
                        break Err(self.error(&error_text(body.fields())));
                    }
                    Message::NoticeResponse(_) | Message::ParameterStatus(_) => continue,
                    _ => break Err(self.unexpected()),
                }
            }
            if end > self.buf.len() {
                break Ok(Drained::NeedMore);
            }
            let go_on = data(&self.buf[at + 5..end]);
            at = end;
            match go_on {
                Ok(true) => {}
                Ok(false) => break Ok(Drained::Paused),
                Err(e) => break Err(e),
            }
        };
        self.buf.advance(at);
        result
    }

    /// Reads more bytes from the server; an error if the connection closed.
    pub async fn fill(&mut self) -> Result<()> {
        self.buf.reserve(READ_SIZE);
        let read = self
            .io
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| self.io_error(e))?;
        if read == 0 {
            return Err(self.error("the server closed the connection"));
        }
        Ok(())
    }

    /// After [`Drained::Done`]: reads the COPY's completion, so the connection is ready again.
    pub async fn finish(&mut self) -> Result<()> {
        self.until_ready(|_| Ok(())).await
    }

    /// Reads messages until the server is ready for the next query, handing each data row to
    /// `on_row`; returns the first error among them.
    async fn until_ready(
        &mut self,
        mut on_row: impl FnMut(DataRowBody) -> std::io::Result<()>,
    ) -> Result<()> {
        let mut failed = None;
        loop {
            match self.message().await? {
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(body) => {
                    failed.get_or_insert_with(|| error_text(body.fields()));
                }
                Message::DataRow(body) => on_row(body).map_err(|e| self.io_error(e))?,
                _ => {}
            }
        }
        failed.map_or(Ok(()), |detail| Err(self.error(&detail)))
    }

    /// Says goodbye, so the server ends the session without logging a lost client; errors are
    /// ignored (the connection is dropped next either way).
    pub async fn terminate(&mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.send(&out).await;
    }

    /// Sends one simple-protocol query.
    async fn query(&mut self, sql: &str) -> Result<()> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).map_err(|e| self.io_error(e))?;
        self.send(&out).await
    }

    /// The next whole message, reading as needed.
    async fn message(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = Message::parse(&mut self.buf).map_err(|e| self.io_error(e))? {
                return Ok(message);
            }
            self.fill().await?;
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| self.io_error(e))?;
        self.io.flush().await.map_err(|e| self.io_error(e))
    }

    fn error(&self, detail: &str) -> Error {
        failed(&self.context, detail)
    }

    fn io_error(&self, e: impl std::fmt::Display) -> Error {
        self.error(&e.to_string())
    }

    fn unexpected(&self) -> Error {
        self.error("the server sent a message out of protocol order")
    }
}

/// A host as the user wrote it: a name or address, or a socket folder.
fn host_name(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        #[cfg(unix)]
        Host::Unix(dir) => dir.display().to_string(),
    }
}

/// Opens the byte stream to one host.
async fn open(host: &Host, port: u16, timeout: Option<&Duration>) -> std::io::Result<Box<dyn Io>> {
    let connect = async {
        Ok::<Box<dyn Io>, std::io::Error>(match host {
            Host::Tcp(name) => {
                let stream = tokio::net::TcpStream::connect((name.as_str(), port)).await?;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
            #[cfg(unix)]
            Host::Unix(dir) => Box::new(
                tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}"))).await?,
            ),
        })
    };
    match timeout {
        Some(limit) => tokio::time::timeout(*limit, connect)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))?,
        None => connect.await,
    }
}

/// Asks the server for TLS (SSLRequest) and, when it agrees, shakes hands; `prefer` goes on in
/// plain text when it does not.
async fn negotiate(
    mut io: Box<dyn Io>,
    settings: &Arc<ClientConfig>,
    name: &str,
    mode: SslMode,
) -> std::result::Result<Box<dyn Io>, String> {
    let mut out = BytesMut::new();
    frontend::ssl_request(&mut out);
    io.write_all(&out).await.map_err(|e| e.to_string())?;
    io.flush().await.map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    io.read_exact(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    match answer[0] {
        b'S' => {
            let server = ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?;
            let stream = TlsConnector::from(settings.clone())
                .connect(server, io)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            Ok(Box::new(stream))
        }
        b'N' if mode == SslMode::Prefer => Ok(io),
        b'N' => Err(
            "the server does not accept TLS connections; turn ssl on in its postgresql.conf, or use sslmode=prefer".into(),
        ),
        _ => Err("the server answered the TLS request out of protocol".into()),
    }
}

/// An error response's message, with its detail and hint when the server gave them.
fn error_text(mut fields: ErrorFields<'_>) -> String {
    let (mut message, mut detail, mut hint) = (String::new(), None, None);
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'M' => message = value,
            b'D' => detail = Some(value),
            b'H' => hint = Some(value),
            _ => {}
        }
    }
    for extra in [detail, hint].into_iter().flatten() {
        message = format!("{message} ({extra})");
    }
    message
}
