//! The daemon's bearer token as a client holds it: who may use the API over TCP.
//!
//! The Unix socket is private by its mode (0600 in a 0700 data directory), so it needs
//! nothing more. TCP has no such guard, so every request on it must carry
//! `authorization: Bearer <token>`. The daemon writes the token in hex to
//! `<data-dir>/token` (mode 0600) on its first start and keeps it across restarts; a
//! client reads it from there ([`Token::read`]) or takes it as text ([`Token::parse`],
//! from `HONEYDEW_TOKEN` / `--token`), and [`BearerToken`] sends it. Generating the
//! token and checking it on the server are the daemon's (`honeydew::api`). The
//! token's value is never shown in a `Debug` form or an error: only the file's path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The token's file name in the data directory.
pub const TOKEN_FILE_NAME: &str = "token";

/// How many random bytes a token has (written as twice as many hex digits).
pub const TOKEN_BYTES: usize = 32;

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

    /// Whether `offered` is this token, compared in time that depends on the length
    /// only, not on where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        expected.len() == offered.len()
            && expected
                .iter()
                .zip(offered)
                .fold(0u8, |difference, (a, b)| difference | (a ^ b))
                == 0
    }

    /// The token as the `authorization` metadata value, `Bearer <token>`.
    fn header_value(&self) -> AsciiMetadataValue {
        MetadataValue::try_from(format!("Bearer {}", self.0))
            .expect("a hex token is a valid metadata value")
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

    const TEXT: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn a_token_file_is_read_trimmed_and_a_missing_one_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Token::read(dir.path()).unwrap(), None);
        fs::write(
            Token::path_in(dir.path()),
            format!("{}\n", TEXT.to_uppercase()),
        )
        .unwrap();
        assert_eq!(
            Token::read(dir.path()).unwrap(),
            Some(Token::parse(TEXT).unwrap())
        );
    }

    #[test]
    fn a_malformed_token_file_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(Token::path_in(dir.path()), "not a token\n").unwrap();
        let err = Token::read(dir.path()).unwrap_err().to_string();
        assert!(err.contains("remove it and restart the daemon"), "{err}");
    }

    #[test]
    fn only_64_hex_digits_parse() {
        assert!(Token::parse(TEXT).is_ok());
        assert!(Token::parse(&TEXT[1..]).is_err());
        assert!(Token::parse(&TEXT.replace('a', "g")).is_err());
    }

    #[test]
    fn the_debug_form_hides_the_value() {
        let token = Token::parse(TEXT).unwrap();
        assert!(!format!("{token:?}").contains(TEXT));
    }

    #[test]
    fn only_the_exact_token_matches() {
        let token = Token::parse(TEXT).unwrap();
        assert!(token.matches(TEXT.as_bytes()));
        assert!(!token.matches(&TEXT.as_bytes()[1..]));
        let mut wrong = TEXT.as_bytes().to_vec();
        wrong[63] = if wrong[63] == b'0' { b'1' } else { b'0' };
        assert!(!token.matches(&wrong));
    }

    #[test]
    fn the_bearer_header_is_sent_only_with_a_token() {
        let token = Token::parse(TEXT).unwrap();
        let request = BearerToken::new(Some(&token))
            .call(Request::new(()))
            .unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            &format!("Bearer {TEXT}")
        );
        let request = BearerToken::new(None).call(Request::new(())).unwrap();
        assert!(request.metadata().get("authorization").is_none());
    }
}
