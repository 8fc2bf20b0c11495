//! The daemon's side of the bearer token: who may use the API over TCP.
//!
//! The token itself, how a client reads and sends it, and the file's name are
//! [`honeydew_proto::token`]'s. Here the daemon makes it: 32 bytes from the operating
//! system's random source, written in hex to `<data-dir>/token` (mode 0600) on the
//! first start and kept across restarts ([`load_or_create_token`]); and checks it:
//! [`RequireToken`] refuses a TCP request without it. The token's value is never
//! logged or shown in an error: only the file's path.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use honeydew_proto::token::TOKEN_BYTES;
use rand::TryRngCore;
use rand::rngs::OsRng;
use tonic::service::Interceptor;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Request, Status};

pub use honeydew_proto::token::{BearerToken, TOKEN_FILE_NAME, Token, TokenError};

/// A fresh token from the operating system's random source.
pub fn generate_token() -> io::Result<Token> {
    Ok(parse_generated(&generate_hex()?))
}

/// A fresh token's text: [`TOKEN_BYTES`] random bytes in hex.
fn generate_hex() -> io::Result<String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.try_fill_bytes(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|byte| format!("{byte:02x}")).collect())
}

fn parse_generated(hex: &str) -> Token {
    Token::parse(hex).expect("a generated token is well formed")
}

/// Reads the token of `data_dir`, or generates one there (mode 0600) when there is
/// none. The caller holds the data directory's lock, so no one races the creation.
pub fn load_or_create_token(data_dir: &Path) -> Result<Token, TokenError> {
    if let Some(token) = Token::read(data_dir)? {
        return Ok(token);
    }
    let path = Token::path_in(data_dir);
    let io_error = |source| TokenError::Io {
        path: path.clone(),
        source,
    };
    let hex = generate_hex().map_err(io_error)?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io_error)?;
    // The mode given at creation is narrowed by the umask only, never widened.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .and_then(|()| writeln!(file, "{hex}"))
        .and_then(|()| file.sync_all())
        .map_err(io_error)?;
    tracing::info!(token_file = %path.display(), "generated the bearer token for tcp clients");
    Ok(parse_generated(&hex))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_created_private_once_and_kept_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_token(dir.path()).unwrap();
        let path = Token::path_in(dir.path());
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create_token(dir.path()).unwrap();
        assert_eq!(first, again);
        assert_eq!(Token::read(dir.path()).unwrap(), Some(first));
    }

    #[test]
    fn two_generated_tokens_differ_and_are_64_hex_digits() {
        let (a, b) = (generate_hex().unwrap(), generate_hex().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert!(Token::parse(&a).is_ok());
    }

    #[test]
    fn a_malformed_token_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Token::path_in(dir.path()), "not a token\n").unwrap();
        let err = load_or_create_token(dir.path()).unwrap_err().to_string();
        assert!(err.contains("remove it and restart the daemon"), "{err}");
    }

    #[test]
    fn a_request_without_the_right_token_is_refused_naming_the_file() {
        let token = generate_token().unwrap();
        let check = RequireToken::new(token.clone(), Path::new("/data/token"));
        let mut bearing = BearerToken::new(Some(&token));
        assert!(check.check(bearing.call(Request::new(())).unwrap()).is_ok());
        let wrong = generate_token().unwrap();
        let mut wrong = BearerToken::new(Some(&wrong));
        for request in [Request::new(()), wrong.call(Request::new(())).unwrap()] {
            let refused = check.check(request).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains("/data/token"), "{refused:?}");
        }
    }
}
