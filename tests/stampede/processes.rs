//! Cross-process coalescing: several `hoard` processes on one cache directory fetch a key
//! once between them (the store lease), the others read the entry from the store.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Child;

use super::{Act, Origin, burst};
use crate::proxy::harness::{IO_TIMEOUT, pattern, reply};

/// Child `hoard` processes, killed by PID when dropped (also on a failed assertion).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

async fn spawn_hoard(
    children: &mut Children,
    dir: &std::path::Path,
    upstream: SocketAddr,
) -> SocketAddr {
    let mut args: Vec<std::ffi::OsString> = ["--listen", "127.0.0.1:0", "--cache-dir"]
        .map(Into::into)
        .to_vec();
    args.push(dir.into());
    args.extend(["--upstream".into(), format!("http://{upstream}").into()]);
    let (child, addr) = crate::proxy::harness::spawn_hoard(args).await;
    children.0.push(child);
    addr
}

#[tokio::test]
async fn four_processes_on_one_directory_fetch_once() {
    let body = pattern(50_000);
    let origin = Origin::start_with({
        let body = body.clone();
        move |_, _| {
            Act::Reply(
                Duration::from_millis(300),
                reply(200, &[("cache-control", "max-age=60")], body.clone()),
            )
        }
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let mut children = Children(Vec::new());
    let mut proxies = Vec::new();
    for _ in 0..4 {
        proxies.push(spawn_hoard(&mut children, dir.path(), origin.addr).await);
    }
    let results = burst(&proxies, "/shared", 200).await;
    for (res, _) in &results {
        assert_eq!(res.status, 200, "{:?}", res.cache_status().raw);
        assert!(
            res.body == body,
            "body differs: {:?}",
            res.cache_status().raw
        );
    }
    assert_eq!(
        origin.hits(),
        1,
        "4 processes, 200 clients, one cold URL -> exactly 1 upstream request"
    );
    for c in &mut children.0 {
        c.start_kill().expect("kill hoard");
        let _ = tokio::time::timeout(IO_TIMEOUT, c.wait()).await;
    }
}
