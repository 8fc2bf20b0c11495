//! A tiny HTTP/1.1 server on 127.0.0.1 standing in for an external API: it counts the
//! requests, records them, and answers each from a handler. Enough for the plugins'
//! requests (bodies of declared length only, one request per connection).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The most body bytes the stub reads from one request.
const MAX_REQUEST_BODY_BYTES: usize = 1 << 20;

/// One request as received: the request line, the headers (lowercased names) and the
/// body (as much as `content-length` declared).
#[derive(Clone, Debug)]
pub struct Received {
    pub line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// One answer: its status, headers besides the stub's own (`content-type:
/// application/json` unless the reply names one, `content-length`, `connection:
/// close`), and body.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn new(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    /// A binary answer (an archive, say) of `content_type`.
    pub fn bytes(status: u16, content_type: &str, body: Vec<u8>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.to_owned())],
            body,
        }
    }

    /// A redirect with `status` to `location`, with a body of its own (the host must not
    /// hand it to the plugin when it follows).
    pub fn redirect(status: u16, location: &str) -> Self {
        Self {
            status,
            headers: vec![("location".into(), location.to_owned())],
            body: b"the redirect's own body".to_vec(),
        }
    }
}

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
        Self::start_replying(move |request, number| {
            let (status, body) = handler(request, number);
            Reply::new(status, &body)
        })
        .await
    }

    /// Like [`HttpStub::start`], with headers in the answers.
    pub async fn start_replying(
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
                    let headers: Vec<(String, String)> = lines
                        .filter_map(|header| header.split_once(':'))
                        .map(|(name, value)| {
                            (name.trim().to_ascii_lowercase(), value.trim().to_owned())
                        })
                        .collect();
                    let length = headers
                        .iter()
                        .find(|(name, _)| name == "content-length")
                        .and_then(|(_, value)| value.parse::<usize>().ok())
                        .unwrap_or(0)
                        .min(MAX_REQUEST_BODY_BYTES);
                    let body_start = head_end + 4;
                    while bytes.len() < body_start + length {
                        match socket.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => bytes.extend_from_slice(&buffer[..n]),
                        }
                    }
                    let body_end = bytes.len().min(body_start + length);
                    let body = String::from_utf8_lossy(&bytes[body_start..body_end]).into_owned();
                    let request = Received {
                        line,
                        headers,
                        body,
                    };
                    let number = {
                        let mut log = log.lock().unwrap();
                        log.push(request.clone());
                        log.len() as u64
                    };
                    let Reply {
                        status,
                        headers,
                        body,
                    } = handler(&request, number);
                    let extra: String = headers
                        .iter()
                        .map(|(name, value)| format!("{name}: {value}\r\n"))
                        .collect();
                    let content_type = if headers.iter().any(|(name, _)| name == "content-type") {
                        ""
                    } else {
                        "content-type: application/json\r\n"
                    };
                    let head = format!(
                        "HTTP/1.1 {status} X\r\n{content_type}content-length: {}\r\n{extra}connection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(&body).await;
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
