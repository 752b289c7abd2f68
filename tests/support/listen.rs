//! The accept loop of the tests' servers: bind `127.0.0.1:0`, hand each connection to its own
//! task.
//!
//! Invariant: the accept loop is aborted when the [`Listening`] handle is dropped.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running accept loop on loopback; dropping it stops accepting.
#[derive(Debug)]
pub struct Listening {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and runs `serve` on each accepted connection in its own task.
pub async fn listen<F, Fut>(serve: F) -> Listening
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    Listening { addr, task }
}
