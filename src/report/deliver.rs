//! Deliveries of a report run: a webhook message (generic JSON, Slack, DingTalk or WeCom robot
//! format) with the title, one summary line per query and a link to the run's page; or an email
//! over SMTP (lettre) with the page inline and the results attached. Each is retried with
//! backoff; every attempt is recorded in the run's `deliveries.json`. A delivery runs after the
//! run's files are written, so a failed one never loses them.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::secret::{Secret, redact_url};

/// `[[delivery]]` of a report.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeliveryConfig {
    /// An HTTP POST of a JSON message.
    Webhook {
        /// Where to POST; use `${VAR}` for URLs that hold a secret token (never printed:
        /// records and messages show only its scheme and host).
        url: Secret,
        /// The message's shape (default json).
        #[serde(default)]
        format: WebhookFormat,
    },
    /// An email: the run's page as the HTML body (a plain-text summary beside it), each
    /// result attached.
    Email {
        /// The SMTP server: `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`
        /// (TLS), `smtp://host:25` (plain, for a relay on a private network). Credentials go in
        /// the URL: `smtps://user:${SMTP_PASSWORD}@smtp.example.com` (never printed).
        url: Secret,
        /// The sender: `Reports <reports@example.com>`.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// Which copies of each result to attach: `csv`, `parquet` (default `["csv"]`).
        #[serde(default = "default_attach")]
        attach: Vec<AttachKind>,
    },
}

/// Copies of a result an email carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachKind {
    /// The result as CSV (opens in a spreadsheet).
    Csv,
    /// The result as Parquet.
    Parquet,
}

fn default_attach() -> Vec<AttachKind> {
    vec![AttachKind::Csv]
}

impl DeliveryConfig {
    /// Checks what can be checked before a run: addresses and the SMTP URL. The error says
    /// what is expected.
    pub fn check(&self) -> std::result::Result<(), String> {
        let DeliveryConfig::Email { url, from, to, .. } = self else {
            return Ok(());
        };
        mailbox(from)?;
        if to.is_empty() {
            return Err(
                "email: to names no recipient; write to = [\"ops@example.com\"]".to_string(),
            );
        }
        for address in to {
            mailbox(address)?;
        }
        let parsed = url::Url::parse(url.expose()).map_err(|e| {
            format!("email: url '{}' is not a URL ({e}); write e.g. \"smtps://user:${{SMTP_PASSWORD}}@smtp.example.com\"", redact_url(url.expose()))
        })?;
        if !matches!(parsed.scheme(), "smtp" | "smtps") {
            return Err(format!(
                "email: url '{}' must start with smtp:// or smtps://",
                redact_url(url.expose())
            ));
        }
        Ok(())
    }

    /// Where it goes, without secrets (for records and errors).
    pub fn target(&self) -> String {
        match self {
            DeliveryConfig::Webhook { url, .. } => redact_url(url.expose()),
            DeliveryConfig::Email { url, to, .. } => {
                format!("{} to {}", redact_url(url.expose()), to.join(", "))
            }
        }
    }
}

fn mailbox(address: &str) -> std::result::Result<lettre::message::Mailbox, String> {
    address.parse().map_err(|e| {
        format!("email: '{address}' is not an address ({e}); write e.g. \"Reports <reports@example.com>\"")
    })
}

/// The message shapes robots and chat tools accept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"title", "summary": [...], "link"}`.
    #[default]
    Json,
    /// Slack incoming webhook: `{"text"}` in mrkdwn.
    Slack,
    /// DingTalk robot: `{"msgtype": "markdown", "markdown": {"title", "text"}}`.
    Dingtalk,
    /// WeCom (WeChat Work) robot: `{"msgtype": "markdown", "markdown": {"content"}}`.
    Wecom,
}

/// What a run tells its readers.
pub struct Message<'a> {
    /// The report's title.
    pub title: &'a str,
    /// One line per query.
    pub lines: &'a [String],
    /// The run's page.
    pub link: &'a str,
    /// The run's page itself (the body of emails).
    pub html: &'a str,
    /// The run's result files: name, bytes, and which copy they are.
    pub files: &'a [(String, bytes::Bytes, AttachKind)],
}

/// The body of a webhook message in a format.
pub fn body(format: WebhookFormat, message: &Message) -> Value {
    let Message {
        title, lines, link, ..
    } = message;
    match format {
        WebhookFormat::Json => json!({ "title": title, "summary": lines, "link": link }),
        WebhookFormat::Slack => {
            let mut text = format!("*{title}*\n");
            for line in *lines {
                text.push_str(&format!("• {line}\n"));
            }
            text.push_str(&format!("<{link}|Open the report>"));
            json!({ "text": text })
        }
        WebhookFormat::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": { "title": title, "text": markdown(message) },
        }),
        WebhookFormat::Wecom => json!({
            "msgtype": "markdown",
            "markdown": { "content": markdown(message) },
        }),
    }
}

fn markdown(message: &Message) -> String {
    let mut text = format!("### {}\n", message.title);
    for line in message.lines {
        text.push_str(&format!("- {line}\n"));
    }
    text.push_str(&format!("\n[Open the report]({})", message.link));
    text
}

/// One delivery's record: where, how many attempts, and the last error if it failed.
#[derive(Debug, serde::Serialize)]
pub struct Delivered {
    /// The webhook URL with its query string (often a token) removed.
    pub target: String,
    /// Attempts made.
    pub attempts: u32,
    /// `ok`, or the last error.
    pub outcome: String,
}

/// Sends every delivery, each retried up to `attempts` times with doubling waits from
/// `first_wait`. Answers the records (failed ones included).
pub async fn deliver_all(
    deliveries: &[DeliveryConfig],
    message: &Message<'_>,
    attempts: u32,
    first_wait: Duration,
) -> Result<Vec<Delivered>> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Internal(format!("cannot build an HTTP client: {e}")))?;
    let mut records = Vec::new();
    for delivery in deliveries {
        let mut wait = first_wait;
        let mut record = Delivered {
            target: delivery.target(),
            attempts: 0,
            outcome: String::new(),
        };
        while record.attempts < attempts.max(1) {
            record.attempts += 1;
            record.outcome = match send(&client, delivery, message).await {
                Ok(()) => "ok".to_string(),
                Err(e) => e,
            };
            if record.outcome == "ok" {
                break;
            }
            if record.attempts < attempts {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        records.push(record);
    }
    Ok(records)
}

/// One attempt at one delivery; the error is what the record shows.
async fn send(
    client: &reqwest::Client,
    delivery: &DeliveryConfig,
    message: &Message<'_>,
) -> std::result::Result<(), String> {
    match delivery {
        DeliveryConfig::Webhook { url, format } => {
            let sent = client
                .post(url.expose())
                .header("content-type", "application/json")
                .body(body(*format, message).to_string())
                .send()
                .await;
            match sent {
                Ok(response) if response.status().is_success() => Ok(()),
                Ok(response) => Err(format!("HTTP {}", response.status())),
                Err(e) => Err(e.without_url().to_string()),
            }
        }
        DeliveryConfig::Email {
            url,
            from,
            to,
            attach,
        } => {
            use lettre::AsyncTransport;
            let mail = email(message, from, to, attach)?;
            let transport =
                lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url.expose())
                    .map_err(|e| format!("SMTP URL {}: {e}", redact_url(url.expose())))?
                    .timeout(Some(Duration::from_secs(30)))
                    .build();
            transport
                .send(mail)
                .await
                .map(|_| ())
                .map_err(|e| format!("SMTP: {e}"))
        }
    }
}

/// The email of a run: the page as HTML with a plain-text summary beside it, and the chosen
/// copies of each result attached.
fn email(
    message: &Message<'_>,
    from: &str,
    to: &[String],
    attach: &[AttachKind],
) -> std::result::Result<lettre::Message, String> {
    use lettre::message::header::ContentType;
    use lettre::message::{Attachment, MultiPart};
    let mut builder = lettre::Message::builder()
        .from(mailbox(from)?)
        .subject(message.title);
    for address in to {
        builder = builder.to(mailbox(address)?);
    }
    let mut text = String::new();
    for line in message.lines {
        text.push_str(&format!("- {line}\n"));
    }
    text.push_str(&format!("\nThe report: {}\n", message.link));
    let mut mixed = MultiPart::mixed().multipart(MultiPart::alternative_plain_html(
        text,
        message.html.to_string(),
    ));
    for (name, bytes, kind) in message.files {
        if !attach.contains(kind) {
            continue;
        }
        let content_type = match kind {
            AttachKind::Csv => "text/csv; charset=utf-8",
            AttachKind::Parquet => "application/vnd.apache.parquet",
        };
        let content_type = ContentType::parse(content_type).map_err(|e| e.to_string())?;
        mixed = mixed.singlepart(Attachment::new(name.clone()).body(bytes.to_vec(), content_type));
    }
    builder
        .multipart(mixed)
        .map_err(|e| format!("cannot build the email: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_carries_the_title_lines_and_link() {
        let lines = vec!["DAU: 7 rows".to_string()];
        let message = Message {
            title: "Daily KPIs",
            lines: &lines,
            link: "http://lake/_reports/daily/x/index.html",
            html: "<html></html>",
            files: &[],
        };
        assert_eq!(
            body(WebhookFormat::Json, &message),
            json!({"title": "Daily KPIs", "summary": ["DAU: 7 rows"], "link": "http://lake/_reports/daily/x/index.html"})
        );
        let slack = body(WebhookFormat::Slack, &message)["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            slack.starts_with("*Daily KPIs*\n• DAU: 7 rows\n<http://lake/"),
            "{slack}"
        );
        let ding = body(WebhookFormat::Dingtalk, &message);
        assert_eq!(ding["msgtype"], "markdown");
        assert!(
            ding["markdown"]["text"]
                .as_str()
                .unwrap()
                .contains("- DAU: 7 rows")
        );
        let wecom = body(WebhookFormat::Wecom, &message);
        assert!(
            wecom["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains("[Open the report](http://lake/")
        );
    }
}
