//! Honeydew's gRPC API as its clients see it: the protobuf messages and tonic services
//! generated from `proto/honeydew/v1` ([`pb`]), and how a client reaches the daemon:
//! the data directory and the socket in it ([`data_dir`]), the bearer token that TCP
//! needs ([`token`]), and the connection itself ([`client`]).
//!
//! This crate is the one owner of the code generation; the daemon's `api` module serves
//! the generated services and the `honeydew` CLI calls them, both through [`pb`]. It
//! must stay client-side: no tonic server, no domain types, no store, no runtime, so
//! that a client linking it links none of the daemon.

pub mod client;
pub mod data_dir;
pub mod token;

pub use client::{
    Address, CLIENT_MAX_RESPONSE_BYTES, ClientError, Connection, connect, connect_with_token,
};
pub use data_dir::{DataDirArg, DataDirError, SOCKET_FILE_NAME};
pub use token::{BearerToken, TOKEN_FILE_NAME, Token, TokenError};

/// The generated protobuf messages, tonic clients and service traits of
/// `proto/honeydew/v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    tonic::include_proto!("honeydew.v1");

    /// The encoded descriptor set of every .proto file, served by the daemon's
    /// reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("honeydew_descriptor");
}
