//! A loopback server that holds a plugin's request until the test lets it go: the job
//! that calls it stays running, halfway, for as long as the test needs. The test
//! releases one answer with [`Hold::release`], or a program it runs (the browser test)
//! with a GET of [`Hold::release_url`].

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub struct Hold {
    /// What the plugin GETs: answered `{}` once released.
    pub url: String,
    /// A GET here releases one held answer, answered at once.
    pub release_url: String,
    release: Arc<Semaphore>,
}

impl Hold {
    /// Serves until the test's runtime ends.
    pub async fn start() -> Hold {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let release = Arc::new(Semaphore::new(0));
        let permits = Arc::clone(&release);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let permits = Arc::clone(&permits);
                tokio::spawn(async move {
                    let Some(head) = read_head(&mut socket).await else {
                        return;
                    };
                    if head.starts_with(b"GET /release ") {
                        permits.add_permits(1);
                    } else {
                        let Ok(permit) = permits.acquire().await else {
                            return;
                        };
                        permit.forget();
                    }
                    answer_empty_json(socket).await;
                });
            }
        });
        Hold {
            url: format!("http://{address}/hold"),
            release_url: format!("http://{address}/release"),
            release,
        }
    }

    /// Lets one held answer go.
    pub fn release(&self) {
        self.release.add_permits(1);
    }
}

/// Reads a request's head (through the blank line); `None` if the client went away.
pub async fn read_head(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        match socket.read(&mut buffer).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buffer[..n]),
        }
    }
    Some(head)
}

/// Answers `200` with `{}` and closes the connection.
pub async fn answer_empty_json(mut socket: TcpStream) {
    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                 content-length: 2\r\nconnection: close\r\n\r\n{}";
    let _ = socket.write_all(reply.as_bytes()).await;
    let _ = socket.shutdown().await;
}
