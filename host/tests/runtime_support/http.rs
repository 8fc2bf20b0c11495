//! A fake HTTP server on 127.0.0.1 for the egress tests: records every request and
//! answers by path.
//!
//! - `/count` counts the requests to it and answers the count as text (for `flaky`);
//! - `/bytes/N` answers `N` bytes of `b`;
//! - `/headers/N` answers with a header `x-padding` of `N` bytes of `h`;
//! - `/hold` answers only after [`FakeServer::release`], so a job stays in flight;
//! - anything else answers `hello from the fake server`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{HeaderMap, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

/// The body of an ordinary answer.
pub const HELLO: &str = "hello from the fake server";

/// A request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
}

#[derive(Default)]
struct State {
    seen: Vec<Seen>,
    count: u64,
}

/// A running fake server; it stops with the test's tokio runtime.
pub struct FakeServer {
    address: SocketAddr,
    state: Arc<Mutex<State>>,
    hold: Arc<Hold>,
}

/// Requests to `/hold` wait here.
struct Hold {
    arrived: Notify,
    release: Semaphore,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State::default()));
        let hold = Arc::new(Hold {
            arrived: Notify::new(),
            release: Semaphore::new(0),
        });
        let (shared_state, shared_hold) = (Arc::clone(&state), Arc::clone(&hold));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = Arc::clone(&shared_state);
                let hold = Arc::clone(&shared_hold);
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        let hold = Arc::clone(&hold);
                        async move { Ok::<_, Infallible>(answer(&state, &hold, request).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FakeServer {
            address,
            state,
            hold,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn origin(&self) -> String {
        format!("http://{}", self.address)
    }

    /// `origin` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits until a request to `/hold` has arrived (at once if one came already).
    pub async fn held(&self) {
        self.hold.arrived.notified().await;
    }

    /// Lets one request to `/hold` be answered.
    pub fn release(&self) {
        self.hold.release.add_permits(1);
    }
}

async fn answer(
    state: &Mutex<State>,
    hold: &Hold,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    state.lock().unwrap().seen.push(Seen {
        path: path.clone(),
        headers: request.headers().clone(),
    });
    if path == "/hold" {
        hold.arrived.notify_one();
        hold.release.acquire().await.unwrap().forget();
    }
    if let Some(size) = path.strip_prefix("/headers/") {
        let padding = "h".repeat(size.parse().unwrap());
        let mut response = Response::new(Full::new(Bytes::from(HELLO)));
        response
            .headers_mut()
            .insert("x-padding", padding.parse().unwrap());
        return response;
    }
    let mut state = state.lock().unwrap();
    let body = if path == "/count" {
        state.count += 1;
        state.count.to_string()
    } else if let Some(size) = path.strip_prefix("/bytes/") {
        "b".repeat(size.parse().unwrap())
    } else {
        HELLO.to_owned()
    };
    Response::new(Full::new(Bytes::from(body)))
}
