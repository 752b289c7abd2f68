//! The listening sockets of the per-core mode (`scheduler = "per-core"`): one socket per
//! single-threaded runtime, all bound to the same address with `SO_REUSEPORT`, so the kernel
//! spreads new connections over them (by a hash of the connection's addresses) and each
//! runtime accepts and serves its own, with no hand-over between threads.
//!
//! Invariants: a port another socket already listens on is refused (`EADDRINUSE`) as with
//! one listener: a probe without `SO_REUSEPORT` is bound first, so a second hoard started on
//! the same port fails instead of silently taking half of the first one's connections
//! (Linux lets only sockets of the same user join a `SO_REUSEPORT` group at all); with port
//! 0 the first socket picks the port and the others join it.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Pending connections per listener (tokio's `TcpListener::bind` uses the same).
const BACKLOG: u32 = 1024;

/// The pause after a failed accept.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

/// The next connection on `listener` (the proxy's or the admin server's, named by `what` in
/// the warning). A failed accept (EMFILE and friends) is logged and followed by a brief pause
/// instead of a spin, then `None`. Cancel-safe: a caller's `select!` may drop it any time.
pub(super) async fn accept_or_pause(
    listener: &TcpListener,
    what: &'static str,
) -> Option<(TcpStream, SocketAddr)> {
    match listener.accept().await {
        Ok(conn) => Some(conn),
        Err(e) => {
            tracing::warn!(error = %e, listener = what, "accept failed");
            tokio::time::sleep(ACCEPT_PAUSE).await;
            None
        }
    }
}

/// `n` (at least 1) listeners on `addr` sharing its port: the first registered with the
/// current runtime, the others as standard sockets (non-blocking) for runtimes of their own.
/// With `n` = 1 this is a plain listener, without `SO_REUSEPORT`.
pub fn bind_group(
    addr: SocketAddr,
    n: usize,
) -> io::Result<(TcpListener, Vec<std::net::TcpListener>)> {
    if n <= 1 {
        return Ok((listen(addr, false)?, Vec::new()));
    }
    if addr.port() != 0 {
        // Refused when anything listens there already (with or without SO_REUSEPORT).
        drop(socket(addr, false)?);
    }
    let first = listen(addr, true)?;
    let port = first.local_addr()?.port();
    let mut rest = Vec::with_capacity(n - 1);
    for _ in 1..n {
        let l = listen(SocketAddr::new(addr.ip(), port), true)?;
        rest.push(l.into_std()?);
    }
    Ok((first, rest))
}

/// A socket bound to `addr` (address reuse on, as tokio's `bind` sets it: a restart is not
/// refused for connections of the last run in TIME_WAIT).
fn socket(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpSocket> {
    let s = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    s.set_reuseaddr(true)?;
    if reuse_port {
        #[cfg(unix)]
        s.set_reuseport(true)?;
        #[cfg(not(unix))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT (scheduler = per-core) needs a Unix system",
        ));
    }
    s.bind(addr)?;
    Ok(s)
}

fn listen(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    socket(addr, reuse_port)?.listen(BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_shares_one_port_and_each_listener_accepts() {
        let (first, rest) = bind_group("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = first.local_addr().unwrap();
        let mut all = vec![first];
        for l in rest {
            assert_eq!(l.local_addr().unwrap(), addr);
            all.push(TcpListener::from_std(l).unwrap());
        }
        // Connections from many source ports land on every listener of the group.
        let mut conns = Vec::new();
        for _ in 0..64 {
            conns.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut accepted = vec![0; all.len()];
        for (i, l) in all.iter().enumerate() {
            while let Ok(Ok(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(50), l.accept()).await
            {
                accepted[i] += 1;
            }
        }
        assert_eq!(accepted.iter().sum::<i32>(), 64, "{accepted:?}");
        assert!(
            accepted.iter().all(|&a| a > 0),
            "a listener got none: {accepted:?}"
        );
    }

    #[tokio::test]
    async fn a_port_in_use_is_refused_even_by_a_group() {
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = plain.local_addr().unwrap();
        let e = bind_group(addr, 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        // And a group is not joined by a second group (a second hoard on the same port).
        let (group, _rest) = bind_group("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let e = bind_group(group.local_addr().unwrap(), 2).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
