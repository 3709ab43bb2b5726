//! Deliveries of a report run: a webhook message (generic JSON, Slack, DingTalk or WeCom robot
//! format) with the title, one summary line per query and a link to the run's page. Each is
//! retried with backoff; every attempt is recorded in the run's `deliveries.json`. A delivery
//! runs after the run's files are written, so a failed one never loses them.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};

/// `[[delivery]]` of a report.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DeliveryConfig {
    /// An HTTP POST of a JSON message.
    Webhook {
        /// Where to POST; use `${VAR}` for URLs that hold a secret token.
        url: String,
        /// The message's shape (default json).
        #[serde(default)]
        format: WebhookFormat,
    },
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
}

/// The body of a webhook message in a format.
pub fn body(format: WebhookFormat, message: &Message) -> Value {
    let Message { title, lines, link } = message;
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
        .map_err(|e| Error::Unsupported(format!("cannot build an HTTP client: {e}")))?;
    let mut records = Vec::new();
    for delivery in deliveries {
        let DeliveryConfig::Webhook { url, format } = delivery;
        let payload = body(*format, message).to_string();
        let mut wait = first_wait;
        let mut record = Delivered {
            target: url.split('?').next().unwrap_or_default().to_string(),
            attempts: 0,
            outcome: String::new(),
        };
        while record.attempts < attempts.max(1) {
            record.attempts += 1;
            let sent = client
                .post(url)
                .header("content-type", "application/json")
                .body(payload.clone())
                .send()
                .await;
            record.outcome = match sent {
                Ok(response) if response.status().is_success() => "ok".to_string(),
                Ok(response) => format!("HTTP {}", response.status()),
                Err(e) => e.without_url().to_string(),
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
