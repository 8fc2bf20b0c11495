//! A tiny HTTP/1.1 server on 127.0.0.1 standing in for an external API: it counts the
//! requests, records them, and answers each from a handler. Enough for the plugins'
//! GETs and GraphQL POSTs (a body read by its `content-length`, one request per
//! connection).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request as received: the request line and the headers, lowercased names.
#[derive(Clone, Debug)]
pub struct Received {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// An answer: the status, headers beside `content-type` and `content-length`, the body.
pub type Reply = (u16, Vec<(String, String)>, String);

type Handler = dyn Fn(&Received, u64) -> Reply + Send + Sync;

pub struct HttpStub {
    pub base_url: String,
    received: Arc<Mutex<Vec<Received>>>,
}

impl HttpStub {
    /// Serves until the test's runtime ends; `handler` gets each request and its 1-based
    /// number and returns the status and body.
    pub async fn start(
        handler: impl Fn(&Received, u64) -> (u16, String) + Send + Sync + 'static,
    ) -> Self {
        Self::start_with_headers(move |request, number| {
            let (status, body) = handler(request, number);
            (status, Vec::new(), body)
        })
        .await
    }

    /// Like [`HttpStub::start`], with headers in each answer (`retry-after`, `date`).
    pub async fn start_with_headers(
        handler: impl Fn(&Received, u64) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind stub");
        let base_url = format!("http://{}", listener.local_addr().expect("address"));
        let received = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let handler = Arc::clone(&handler);
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    let mut buffer = [0u8; 4096];
                    let head_end = loop {
                        if let Some(at) = bytes.windows(4).position(|window| window == b"\r\n\r\n")
                        {
                            break at;
                        }
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                        }
                    };
                    let text = String::from_utf8_lossy(&bytes[..head_end]).into_owned();
                    let mut lines = text.split("\r\n");
                    let line = lines.next().unwrap_or_default().to_owned();
                    let headers = lines
                        .filter_map(|header| header.split_once(':'))
                        .map(|(name, value)| {
                            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                        })
                        .collect();
                    let request = Received { line, headers };
                    // Read the whole body before answering: closing a socket with
                    // unread bytes resets the connection under the client's feet.
                    let length: usize = request
                        .header("content-length")
                        .and_then(|length| length.parse().ok())
                        .unwrap_or(0);
                    while bytes.len() < head_end + 4 + length {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let number = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() as u64
                    };
                    let (status, headers, body) = handler(&request, number);
                    let headers: String = headers
                        .iter()
                        .map(|(name, value)| format!("{name}: {value}\r\n"))
                        .collect();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{headers}connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(response.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Self { base_url, received }
    }

    /// The requests so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
