//! TLS to the server, as libpq's `sslmode` and `sslrootcert` say, so that one
//! connection string serves the daemon and `psql` alike.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require`, and refuses every
//! other key. [`connection`] therefore takes libpq's TLS keys (`sslmode`,
//! `sslrootcert`, `sslcert`, `sslkey`) out of the string, in either form (URL or
//! `key=value` pairs), hands the rest to tokio-postgres, and builds the rustls
//! configuration that the mode asks for:
//!
//! | `sslmode` | TLS | What is checked of the server's certificate |
//! |---|---|---|
//! | `disable` | never | – |
//! | `allow`, `prefer` (the default) | when the server offers it | nothing; its chain when a root certificate is given |
//! | `require` | always | the same |
//! | `verify-ca` | always | its chain, up to the root certificate |
//! | `verify-full` | always | its chain, and that it names the host |
//!
//! The root certificate is `sslrootcert` (a PEM file, or `system` for the platform's
//! store), else `~/.postgresql/root.crt` when it exists, as libpq does; the verifying
//! modes refuse to start without one. `sslcert` and `sslkey` give a client
//! certificate. Unix-socket connections never use TLS (PostgreSQL offers none there;
//! libpq ignores `sslmode` for them too).

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore};
use tokio_postgres::config::{Host, SslMode};
pub(super) use tokio_postgres_rustls::MakeRustlsConnect;

/// The keys taken out of the connection string.
const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// How to reach the server: the settings tokio-postgres knows, and the TLS connector.
#[derive(Clone)]
pub(super) struct Connection {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
    /// `sslmode` as given (`prefer` when absent), for the log and errors.
    pub mode: &'static str,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The config holds the password: never printed.
        f.debug_struct("Connection")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// What libpq's TLS keys said.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsKeys {
    mode: Option<String>,
    root_cert: Option<String>,
    cert: Option<String>,
    key: Option<String>,
}

impl TlsKeys {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "sslmode" => self.mode = Some(value),
            "sslrootcert" => self.root_cert = Some(value),
            "sslcert" => self.cert = Some(value),
            _ => self.key = Some(value),
        }
    }
}

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

/// Parses `conninfo` (a URL or `key=value` pairs) with libpq's TLS keys.
pub(super) fn connection(conninfo: &str) -> Result<Connection, String> {
    let (rest, keys) = split_tls_keys(conninfo)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|err| err.to_string())?;
    let (mode, ssl_mode, verify) = match keys.mode.as_deref().unwrap_or("prefer") {
        "disable" => ("disable", SslMode::Disable, Verify::Nothing),
        "allow" => ("allow", SslMode::Prefer, Verify::Nothing),
        "prefer" => ("prefer", SslMode::Prefer, Verify::Nothing),
        "require" => ("require", SslMode::Require, Verify::Nothing),
        "verify-ca" => ("verify-ca", SslMode::Require, Verify::Chain),
        "verify-full" => ("verify-full", SslMode::Require, Verify::ChainAndName),
        other => {
            return Err(format!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, \
                 verify-full"
            ));
        }
    };
    let only_sockets = !config.get_hosts().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|host| matches!(host, Host::Unix(_)));
    let ssl_mode = if only_sockets {
        SslMode::Disable
    } else {
        ssl_mode
    };
    config.ssl_mode(ssl_mode);
    // Without TLS no root is read: a stray `~/.postgresql/root.crt` cannot stop a
    // connection over a socket or with `sslmode=disable`.
    let roots = match (ssl_mode, keys.root_cert.as_deref()) {
        (SslMode::Disable, _) => None,
        (_, Some(given)) => Some(Roots::given(given)),
        (_, None) => default_root_cert().map(Roots::File),
    };
    let verify = match ssl_mode {
        SslMode::Disable => Verify::Nothing,
        _ => verify,
    };
    // As libpq: a root certificate at hand makes `prefer` and `require` check the chain.
    let verify = match (verify, &roots) {
        (Verify::Nothing, Some(_)) => Verify::Chain,
        (verify, _) => verify,
    };
    let tls =
        client_config(verify, roots, &keys).map_err(|err| format!("sslmode={mode}: {err}"))?;
    Ok(Connection {
        config,
        tls: MakeRustlsConnect::new(tls),
        mode,
    })
}

/// Where the trusted roots come from.
enum Roots {
    File(PathBuf),
    System,
}

impl Roots {
    fn given(value: &str) -> Self {
        match value {
            "system" => Roots::System,
            path => Roots::File(PathBuf::from(path)),
        }
    }

    fn load(&self) -> Result<RootCertStore, String> {
        let mut store = RootCertStore::empty();
        match self {
            Roots::File(path) => {
                for cert in CertificateDer::pem_file_iter(path)
                    .map_err(|err| format!("cannot read sslrootcert {}: {err}", path.display()))?
                {
                    let cert = cert.map_err(|err| {
                        format!("cannot read sslrootcert {}: {err}", path.display())
                    })?;
                    store.add(cert).map_err(|err| {
                        format!("a certificate in sslrootcert {}: {err}", path.display())
                    })?;
                }
                if store.is_empty() {
                    return Err(format!(
                        "sslrootcert {} holds no certificate",
                        path.display()
                    ));
                }
            }
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                store.add_parsable_certificates(found.certs);
                if store.is_empty() {
                    return Err(format!(
                        "sslrootcert=system found no certificate in the platform's store{}",
                        found
                            .errors
                            .first()
                            .map(|err| format!(" ({err})"))
                            .unwrap_or_default()
                    ));
                }
            }
        }
        Ok(store)
    }
}

/// libpq's default root certificate, when it exists.
fn default_root_cert() -> Option<PathBuf> {
    let path = Path::new(&std::env::var_os("HOME")?).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

fn client_config(
    verify: Verify,
    roots: Option<Roots>,
    keys: &TlsKeys,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = match verify {
        Verify::Nothing => None,
        Verify::Chain | Verify::ChainAndName => {
            let roots = roots.ok_or(
                "no root certificate to verify the server with: set sslrootcert=PATH (a PEM \
                 file) or sslrootcert=system, or put one at ~/.postgresql/root.crt",
            )?;
            let webpki = WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots.load()?),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|err| err.to_string())?;
            Some(webpki)
        }
    };
    let verifier = Arc::new(ServerCheck {
        provider: Arc::clone(&provider),
        chain,
        name: verify == Verify::ChainAndName,
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| err.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (&keys.cert, &keys.key) {
        (None, None) => Ok(builder.with_no_client_auth()),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|err| format!("cannot read sslcert {cert}: {err}"))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|err| format!("cannot read sslkey {key}: {err}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|err| format!("sslcert and sslkey: {err}"))
        }
        _ => Err("sslcert and sslkey go together: give both or neither".to_owned()),
    }
}

/// What is checked of the server's certificate. Without a chain to check, whatever it
/// shows is accepted, and only the handshake's signature by its key is verified:
/// encryption against a passive eavesdropper, as libpq's `prefer` and `require` give
/// without a root certificate. With one, webpki checks the chain and then the name
/// (so a name mismatch means the chain was good), and `verify-ca` forgives the name.
#[derive(Debug)]
struct ServerCheck {
    provider: Arc<CryptoProvider>,
    chain: Option<Arc<WebPkiServerVerifier>>,
    name: bool,
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.name => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Takes libpq's TLS keys out of `conninfo`: what is left, in the same form, and the
/// keys' values.
fn split_tls_keys(conninfo: &str) -> Result<(String, TlsKeys), String> {
    let mut keys = TlsKeys::default();
    if conninfo.starts_with("postgres://") || conninfo.starts_with("postgresql://") {
        let Some((base, query)) = conninfo.split_once('?') else {
            return Ok((conninfo.to_owned(), keys));
        };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode_str(key).decode_utf8_lossy();
            if TLS_KEYS.contains(&key.as_ref()) {
                let value = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| format!("{key} is not UTF-8"))?;
                keys.set(&key, value.into_owned());
            } else {
                kept.push(pair);
            }
        }
        let rest = match kept.is_empty() {
            true => base.to_owned(),
            false => format!("{base}?{}", kept.join("&")),
        };
        return Ok((rest, keys));
    }
    let mut kept = Vec::new();
    let mut pairs = Pairs { rest: conninfo };
    while let Some(pair) = pairs.next_pair()? {
        if TLS_KEYS.contains(&pair.key) {
            keys.set(pair.key, pair.value);
        } else {
            kept.push(pair.raw);
        }
    }
    Ok((kept.join(" "), keys))
}

/// One `key = value` of a libpq connection string, with the text it was read from.
struct Pair<'a> {
    key: &'a str,
    value: String,
    raw: &'a str,
}

/// Reads libpq's `key=value` pairs: whitespace between pairs and around `=`; a value
/// is single-quoted or ends at whitespace; a backslash takes the next character as is.
struct Pairs<'a> {
    rest: &'a str,
}

impl<'a> Pairs<'a> {
    fn next_pair(&mut self) -> Result<Option<Pair<'a>>, String> {
        let start = self.rest.trim_start();
        if start.is_empty() {
            return Ok(None);
        }
        let key_end = start
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(start.len());
        let key = &start[..key_end];
        let after_key = start[key_end..].trim_start();
        let Some(after_eq) = after_key.strip_prefix('=') else {
            return Err(format!(
                "missing `=` after {key:?} in the connection string"
            ));
        };
        let value_text = after_eq.trim_start();
        let mut value = String::new();
        let mut chars = value_text.char_indices();
        let quoted = value_text.starts_with('\'');
        if quoted {
            chars.next();
        }
        let mut end = value_text.len();
        let mut closed = !quoted;
        while let Some((at, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, escaped)) => value.push(escaped),
                    None => return Err(format!("{key}: the value ends in a backslash")),
                },
                '\'' if quoted => {
                    end = at + 1;
                    closed = true;
                    break;
                }
                c if !quoted && c.is_whitespace() => {
                    end = at;
                    break;
                }
                c => value.push(c),
            }
        }
        if !closed {
            return Err(format!("{key}: unterminated quoted value"));
        }
        let consumed = start.len() - value_text.len() + end;
        let raw = &start[..consumed];
        self.rest = &start[consumed..];
        Ok(Some(Pair { key, value, raw }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_keys_leave_urls_and_the_rest_is_kept() {
        let (rest, keys) = split_tls_keys(
            "postgres://u:p@db.example:5433/jobs?sslmode=verify-full&application_name=hd\
             &sslrootcert=%2Fetc%2Fca%20file.pem",
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p@db.example:5433/jobs?application_name=hd"
        );
        assert_eq!(keys.mode.as_deref(), Some("verify-full"));
        assert_eq!(keys.root_cert.as_deref(), Some("/etc/ca file.pem"));
        let (rest, keys) = split_tls_keys("postgresql://db/jobs?sslmode=disable").unwrap();
        assert_eq!(
            (rest.as_str(), keys.mode.as_deref()),
            ("postgresql://db/jobs", Some("disable"))
        );
        assert_eq!(
            split_tls_keys("postgres://db/jobs").unwrap().0,
            "postgres://db/jobs"
        );
    }

    #[test]
    fn tls_keys_leave_key_value_strings_with_quotes_and_escapes() {
        let (rest, keys) = split_tls_keys(
            "host=db user=postgres sslmode = require sslrootcert='/a b/c\\'d.pem' \
             options='-c search_path=x' password=p\\ q",
        )
        .unwrap();
        assert_eq!(
            rest,
            "host=db user=postgres options='-c search_path=x' password=p\\ q"
        );
        assert_eq!(keys.mode.as_deref(), Some("require"));
        assert_eq!(keys.root_cert.as_deref(), Some("/a b/c'd.pem"));
        let config = tokio_postgres::Config::from_str(&rest).unwrap();
        assert_eq!(config.get_password(), Some(&b"p q"[..]));
        assert!(split_tls_keys("host=db sslmode='require").is_err());
        assert!(split_tls_keys("host").is_err());
    }

    #[test]
    fn modes_are_libpqs_and_unknown_ones_are_refused() {
        let prefer = connection("host=127.0.0.1 user=postgres").unwrap();
        assert_eq!(prefer.mode, "prefer");
        assert_eq!(prefer.config.get_ssl_mode(), SslMode::Prefer);
        let socket = connection("host=/var/run/postgresql sslmode=require").unwrap();
        assert_eq!(
            socket.config.get_ssl_mode(),
            SslMode::Disable,
            "no TLS on a socket"
        );
        let err = connection("host=db sslmode=verify-everything").unwrap_err();
        assert!(err.contains("verify-everything"), "{err}");
        let err =
            connection("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem").unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
        assert!(
            connection("host=db sslmode=disable sslrootcert=/nonexistent/ca.pem").is_ok(),
            "no root is read without TLS"
        );
        let err = connection("host=db sslcert=/c.pem").unwrap_err();
        assert!(err.contains("sslcert and sslkey"), "{err}");
    }
}
