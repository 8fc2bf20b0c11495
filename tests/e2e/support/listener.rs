//! The daemon's HTTP listener (`--listen-http`) as tests talk to it: its address from
//! the start-up log, and one raw HTTP/1.1 exchange, so a test controls every header
//! (Origin, cookies, a forged host) the way a browser or a scraper would send it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Daemon, PATIENCE};

/// The address the daemon's HTTP listener reports in its start-up log.
pub fn http_address(daemon: &mut Daemon) -> String {
    let log = daemon.stderr();
    let line = log
        .lines()
        .find(|line| line.contains("http listener started"))
        .unwrap_or_else(|| panic!("no http listener in the log:\n{log}"));
    line.split_whitespace()
        .find_map(|field| field.strip_prefix("address="))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned()
}

/// One HTTP/1.1 answer: status, headers (names lowercase), body.
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Sends `request` (a whole HTTP/1.1 request with `Connection: close`) to `address`
/// and reads the answer to its end, within [`PATIENCE`].
pub async fn exchange(address: &str, request: &str) -> Answer {
    let talk = async {
        let mut socket = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect to the http listener");
        socket.write_all(request.as_bytes()).await.expect("send");
        let mut answer = Vec::new();
        socket.read_to_end(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(PATIENCE, talk)
        .await
        .expect("the http listener answered in time");
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: body.to_owned(),
    }
}
