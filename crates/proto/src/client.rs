//! Connecting to the daemon: an [`Address`] (its Unix socket, or a TCP `host:port`),
//! [`connect`] for a plain channel, [`connect_with_token`] for one that sends the
//! bearer token with every request (see [`crate::token`]), and the largest response a
//! client should accept. Used by the CLI, the end-to-end tests and the benchmarks;
//! nothing here serves.

use std::path::PathBuf;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::token::{BearerToken, Token};

/// The largest response a client should accept (results can be large); give it to
/// generated clients with `max_decoding_message_size`.
pub const CLIENT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Why a client could not reach the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("cannot reach the daemon at {address}: {reason}")]
    Unreachable {
        /// The socket path or TCP address.
        address: String,
        /// What the connection attempt said.
        reason: String,
    },
}

/// Where a client finds the daemon.
#[derive(Clone, Debug)]
pub enum Address {
    /// The Unix socket at this path.
    Unix(PathBuf),
    /// A TCP `host:port`.
    Tcp(String),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(path) => path.display().fmt(f),
            Address::Tcp(address) => address.fmt(f),
        }
    }
}

/// A connection to the daemon that sends a bearer token with every request when it
/// has one (see [`connect_with_token`]).
pub type Connection = InterceptedService<Channel, BearerToken>;

/// Opens a connection that sends `token` with every request (needed over TCP; the
/// Unix socket needs none); fails at once when nothing listens there.
pub async fn connect_with_token(
    address: &Address,
    token: Option<&Token>,
) -> Result<Connection, ClientError> {
    let channel = connect(address).await?;
    Ok(InterceptedService::new(channel, BearerToken::new(token)))
}

/// Opens a connection to the daemon; fails at once when nothing listens there.
pub async fn connect(address: &Address) -> Result<Channel, ClientError> {
    let unreachable = |reason: String| ClientError::Unreachable {
        address: address.to_string(),
        reason,
    };
    let uri = match address {
        Address::Unix(path) => format!("unix:{}", path.display()),
        Address::Tcp(address) => format!("http://{address}"),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|err| unreachable(err.to_string()))?;
    endpoint
        .connect()
        .await
        .map_err(|err| unreachable(error_chain(&err)))
}

/// An error and its sources, joined: tonic's own message alone says only "transport
/// error".
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
