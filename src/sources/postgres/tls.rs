//! TLS for every PostgreSQL connection gamelake makes (statements, bulk COPY, live `pg.*`
//! tables, sinks, archive, change capture): libpq's `sslmode` and `sslrootcert`, with rustls.
//!
//! | sslmode | Encrypted | Server checked |
//! |---|---|---|
//! | `disable` (and absent: gamelake's default, as before) | no | — |
//! | `prefer` | if the server agrees | no |
//! | `require` | yes | no (as libpq: unless `sslrootcert` is given, then as `verify-ca`) |
//! | `verify-ca` | yes | certificate chain against `sslrootcert` |
//! | `verify-full` | yes | chain, and the host name or IP in the certificate |
//!
//! tokio-postgres's own parser knows only disable/prefer/require and no `sslrootcert`, so both
//! settings are taken out of the connection string here and the rest is passed on.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, DigitallySignedStruct, Error as TlsError, RootCertStore, SignatureScheme,
};

use crate::error::{Error, Result};

/// How a connection uses TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unchecked.
    Prefer,
    /// TLS, the server unchecked.
    Require,
    /// TLS, the certificate chain checked.
    VerifyCa,
    /// TLS, the chain and the host name checked.
    VerifyFull,
}

/// A connection string's TLS settings, and the string without them.
#[derive(Clone, Debug)]
pub struct Tls {
    /// The connection string for tokio-postgres: `sslrootcert` removed, `sslmode` written as
    /// the nearest mode it knows.
    pub url: String,
    /// The mode asked for.
    pub mode: SslMode,
    /// rustls's settings, unless the mode is `disable`.
    pub config: Option<Arc<ClientConfig>>,
}

impl Tls {
    /// Reads `sslmode` and `sslrootcert` from a URL's query or a key=value string.
    pub fn of(url: &str) -> Result<Self> {
        let (rest, settings) = take_settings(url);
        let mut mode = SslMode::Disable;
        let mut root = None;
        for (key, value) in settings {
            match key.as_str() {
                "sslmode" => {
                    mode = match value.as_str() {
                        "disable" | "allow" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(Error::Invalid(format!(
                                "sslmode={other}: expected disable, prefer, require, verify-ca or verify-full"
                            )));
                        }
                    }
                }
                _ => root = Some(value),
            }
        }
        if mode == SslMode::Require && root.is_some() {
            mode = SslMode::VerifyCa;
        }
        let config = match mode {
            SslMode::Disable => None,
            SslMode::Prefer | SslMode::Require => Some(unchecked()?),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let path = root.ok_or_else(|| {
                    Error::Invalid(
                        "sslmode=verify-ca and verify-full need sslrootcert=PATH: the PEM file of the CA that signed the server's certificate".into(),
                    )
                })?;
                Some(verified(&path, mode == SslMode::VerifyFull)?)
            }
        };
        let passed = match mode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            _ => "require",
        };
        let url = if rest.starts_with("postgres://") || rest.starts_with("postgresql://") {
            let glue = if rest.contains('?') { '&' } else { '?' };
            format!("{rest}{glue}sslmode={passed}")
        } else {
            format!("{rest} sslmode={passed}")
        };
        Ok(Self { url, mode, config })
    }
}

/// The string without its `sslmode` and `sslrootcert`, and those settings.
fn take_settings(url: &str) -> (String, Vec<(String, String)>) {
    let wanted = |key: &str| key == "sslmode" || key == "sslrootcert";
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return (url.to_string(), taken);
        };
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if wanted(key) {
                    taken.push((key.to_string(), percent_decode(value)));
                    false
                } else {
                    true
                }
            })
            .collect();
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return (rest, taken);
    }
    // key=value pairs: these two keys take no quoting in practice (a mode, a path).
    let kept: Vec<&str> = url
        .split_whitespace()
        .filter(|pair| match pair.split_once('=') {
            Some((key, value)) if wanted(key) => {
                taken.push((key.to_string(), value.trim_matches('\'').to_string()));
                false
            }
            _ => true,
        })
        .collect();
    (kept.join(" "), taken)
}

/// `%2F` and friends in a URL's query value.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS whose server is not checked (`prefer`, `require`): encrypted against eavesdroppers, not
/// against a server in the middle.
fn unchecked() -> Result<Arc<ClientConfig>> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS settings: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Unchecked(provider())))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// TLS that checks the chain against the CA in `path`, and the name when `full`.
fn verified(path: &str, full: bool) -> Result<Arc<ClientConfig>> {
    let bad = |what: String| Error::Invalid(format!("sslrootcert={path}: {what}"));
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(e.to_string()))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    if certs.is_empty() {
        return Err(bad("no PEM certificate in the file".into()));
    }
    for cert in certs {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| bad(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?;
    let config = if full {
        builder.with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// Accepts any certificate, still checking that the server holds its key.
#[derive(Debug)]
struct Unchecked(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> std::result::Result<ServerCertVerified, TlsError> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to the CA; the name in the certificate is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, TlsError> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(TlsError::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, TlsError> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_taken_out_of_both_forms() {
        let tls = Tls::of("postgres://u:p@h/db?application_name=x&sslmode=require").unwrap();
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(
            tls.url,
            "postgres://u:p@h/db?application_name=x&sslmode=require"
        );
        let tls = Tls::of("host=h user=u sslmode=prefer dbname=d").unwrap();
        assert_eq!(
            (tls.mode, tls.url.as_str()),
            (SslMode::Prefer, "host=h user=u dbname=d sslmode=prefer")
        );
        let plain = Tls::of("postgres://u@h/db").unwrap();
        assert_eq!(plain.mode, SslMode::Disable);
        assert!(plain.config.is_none());
        let err = Tls::of("host=h sslmode=verify-full")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslrootcert"), "{err}");
        let err = Tls::of("host=h sslmode=verify-full sslrootcert=/nonexistent.pem")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
        assert!(Tls::of("host=h sslmode=sometimes").is_err());
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
    }
}
