//! The daemon's bearer token: who may use the API over TCP.
//!
//! The Unix socket is private by its mode (0600 in a 0700 data directory), so it needs
//! nothing more. TCP has no such guard, so every request on it must carry
//! `authorization: Bearer <token>`. The token is 32 bytes from the operating system's
//! random source, written in hex to `<data-dir>/token` (mode 0600) on the first start
//! and kept across restarts; the CLI reads it from there (or from `HONEYDEW_TOKEN` /
//! `--token`). [`RequireToken`] is the server's check, [`BearerToken`] the client's
//! side. The token's value is never logged or shown in an error: only the file's path.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::TryRngCore;
use rand::rngs::OsRng;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

/// The token's file name in the data directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// How many random bytes a token has (written as twice as many hex digits).
const TOKEN_BYTES: usize = 32;

/// Why the token could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The token file could not be read, created or written.
    #[error("cannot use the token file {path}: {source}")]
    Io {
        /// The token file.
        path: PathBuf,
        /// What the file system said.
        source: io::Error,
    },
    /// The token file holds something that is not a token.
    #[error(
        "the token file {path} does not hold a token ({TOKEN_BYTES} bytes in hex): \
         remove it and restart the daemon to generate a new one"
    )]
    Malformed {
        /// The token file.
        path: PathBuf,
    },
    /// A token given by flag or environment is not a token.
    #[error(
        "the token given is not a valid bearer token: copy it from <data-dir>/{TOKEN_FILE_NAME}"
    )]
    Invalid,
}

/// A bearer token. Its `Debug` form hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Arc<str>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    /// A fresh token from the operating system's random source.
    pub fn generate() -> io::Result<Token> {
        let mut bytes = [0u8; TOKEN_BYTES];
        OsRng.try_fill_bytes(&mut bytes).map_err(io::Error::other)?;
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Ok(Token(hex.into()))
    }

    /// A token given as text (flag, environment, file); surrounding white space is
    /// ignored.
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let text = text.trim();
        let well_formed =
            text.len() == TOKEN_BYTES * 2 && text.bytes().all(|byte| byte.is_ascii_hexdigit());
        if well_formed {
            Ok(Token(text.to_ascii_lowercase().into()))
        } else {
            Err(TokenError::Invalid)
        }
    }

    /// The token's path in `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(TOKEN_FILE_NAME)
    }

    /// Reads the token of `data_dir`; `Ok(None)` when there is none yet.
    pub fn read(data_dir: &Path) -> Result<Option<Token>, TokenError> {
        let path = Self::path_in(data_dir);
        match fs::read_to_string(&path) {
            Ok(text) => Token::parse(&text)
                .map(Some)
                .map_err(|_| TokenError::Malformed { path }),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TokenError::Io { path, source }),
        }
    }

    /// Reads the token of `data_dir`, or generates one there (mode 0600) when there is
    /// none. The caller holds the data directory's lock, so no one races the creation.
    pub fn load_or_create(data_dir: &Path) -> Result<Token, TokenError> {
        if let Some(token) = Self::read(data_dir)? {
            return Ok(token);
        }
        let path = Self::path_in(data_dir);
        let io_error = |source| TokenError::Io {
            path: path.clone(),
            source,
        };
        let token = Token::generate().map_err(io_error)?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_error)?;
        // The mode given at creation is narrowed by the umask only, never widened.
        file.set_permissions(fs::Permissions::from_mode(0o600))
            .and_then(|()| writeln!(file, "{}", token.0))
            .and_then(|()| file.sync_all())
            .map_err(io_error)?;
        tracing::info!(token_file = %path.display(), "generated the bearer token for tcp clients");
        Ok(token)
    }

    /// The token as the `authorization` metadata value, `Bearer <token>`.
    fn header_value(&self) -> AsciiMetadataValue {
        MetadataValue::try_from(format!("Bearer {}", self.0))
            .expect("a hex token is a valid metadata value")
    }

    /// Compares in time that depends on the length only, not on where they differ.
    fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        expected.len() == offered.len()
            && expected
                .iter()
                .zip(offered)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }
}

/// The server's check: a request that did not come over the Unix socket must carry
/// the daemon's token, or it ends UNAUTHENTICATED before it reaches any service
/// (health and reflection included). It fails closed: only a connection known to be
/// the Unix socket's passes without a token.
#[derive(Clone, Debug)]
pub struct RequireToken {
    token: Token,
    token_file: Arc<Path>,
}

impl RequireToken {
    /// Requires `token`, which lives at `token_file` (named in the refusal).
    pub fn new(token: Token, token_file: &Path) -> Self {
        Self {
            token,
            token_file: token_file.into(),
        }
    }
}

impl RequireToken {
    /// Passes `request` when it came over the Unix socket or carries the token.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        if request.extensions().get::<UdsConnectInfo>().is_some() {
            return Ok(request);
        }
        let how = || {
            format!(
                "send the metadata `authorization: Bearer <token>` with the token in {} \
                 (the CLI reads it from there, or from HONEYDEW_TOKEN)",
                self.token_file.display()
            )
        };
        let Some(value) = request.metadata().get("authorization") else {
            return Err(Status::unauthenticated(format!(
                "this tcp listener requires the daemon's bearer token: {}",
                how()
            )));
        };
        let offered = value.as_bytes();
        let token = offered
            .strip_prefix(b"Bearer ")
            .or_else(|| offered.strip_prefix(b"bearer "));
        match token {
            Some(token) if self.token.matches(token) => Ok(request),
            _ => Err(Status::unauthenticated(format!(
                "the bearer token is wrong: {}",
                how()
            ))),
        }
    }
}

impl Interceptor for RequireToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        self.check(request)
    }
}

/// The client's side: adds `authorization: Bearer <token>` to every request when it
/// has a token (over TCP), nothing otherwise (over the Unix socket).
#[derive(Clone, Debug, Default)]
pub struct BearerToken {
    header: Option<AsciiMetadataValue>,
}

impl BearerToken {
    /// Sends `token`, or nothing when `None`.
    pub fn new(token: Option<&Token>) -> Self {
        Self {
            header: token.map(Token::header_value),
        }
    }
}

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_private_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Token::load_or_create(dir.path()).unwrap();
        let path = Token::path_in(dir.path());
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = Token::load_or_create(dir.path()).unwrap();
        assert_eq!(first, again);
        assert_eq!(Token::read(dir.path()).unwrap(), Some(first));
    }

    #[test]
    fn two_generated_tokens_differ_and_are_64_hex_digits() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.0.len(), 64);
        assert!(Token::parse(&a.0).is_ok());
    }

    #[test]
    fn a_malformed_token_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Token::path_in(dir.path()), "not a token\n").unwrap();
        let err = Token::load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("remove it and restart the daemon"), "{err}");
    }

    #[test]
    fn the_debug_form_hides_the_value() {
        let token = Token::generate().unwrap();
        assert!(!format!("{token:?}").contains(&*token.0));
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token::generate().unwrap();
        assert!(token.matches(token.0.as_bytes()));
        assert!(!token.matches(&token.0.as_bytes()[1..]));
        let mut wrong = token.0.as_bytes().to_vec();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(!token.matches(&wrong));
    }
}
