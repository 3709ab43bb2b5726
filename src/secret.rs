//! Secrets that must never be printed: a [`Secret`] shows `***` in `Debug` and `Display`, so a
//! struct that holds one can derive `Debug` without leaking it; [`redact_url`] keeps only where
//! a URL goes (scheme, host and port), for records and messages.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;

/// A string that is a secret (a key, a URL with a password or a token in it).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that uses it (never for a message).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self::new(s))
    }
}

/// The names of storage options, sorted, for `Debug` output that must not show their values
/// (keys and secrets).
pub fn option_names(options: &std::collections::HashMap<String, String>) -> Vec<&String> {
    let mut names: Vec<&String> = options.keys().collect();
    names.sort();
    names
}

/// Where a URL goes, without what may be secret in it: `https://hooks.example.com/…` for
/// `https://user:pw@hooks.example.com/services/T0/B0/token?key=x`. Tokens hide in user info,
/// paths and query strings alike, so only the scheme, host and port are kept.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(parsed) => {
            let host = parsed.host_str().unwrap_or_default();
            let port = parsed.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if parsed.path().len() > 1 || parsed.query().is_some() {
                "/…"
            } else {
                ""
            };
            format!("{}://{host}{port}{rest}", parsed.scheme())
        }
        Err(_) => "<unreadable URL>".to_string(),
    }
}

/// A connection URL as it is, but its password and the query parameters `secret` names shown
/// as `***` (`mysql://u:***@h/db?password=***`).
pub fn hide_passwords(url: &url::Url, secret: impl Fn(&str) -> bool) -> String {
    let mut url = url.clone();
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let value = if secret(&k) {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_urls_do_not_show() {
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            key: Secret,
        }
        let holder = Holder {
            key: Secret::new("hunter2"),
        };
        assert_eq!(format!("{holder:?}"), "Holder { key: *** }");
        assert_eq!(holder.key.expose(), "hunter2");
        assert_eq!(
            redact_url("https://u:pw@hooks.slack.com/services/T0/B0/XYZ?token=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("smtps://user:pw@smtp.example.com:465"),
            "smtps://smtp.example.com:465"
        );
        assert_eq!(redact_url("not a url"), "<unreadable URL>");
    }
}
