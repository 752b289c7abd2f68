//! Maintenance of the shared tier for `hoard stats`, `ls`, `evict` and `clear`: the keys under
//! the prefix are found with `SCAN` on every master (never `KEYS`), rows are read by their
//! header only (`GETRANGE`), and keys go with `UNLINK`, all in pipelined batches.
//!
//! Invariants: only keys this tier names ([`codec::key_kind`]) are ever counted or removed,
//! whatever else shares the prefix; each page and batch is one bounded round trip (at most
//! [`BATCH`] keys), so Redis never blocks on a maintenance command; a URL is removed through
//! [`SharedTier::purge_rows`], which publishes its invalidation like any purge.

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use super::codec::{self, KeyKind};
use super::{CONNECT_TIMEOUT, SharedTier, tls};

/// Keys per SCAN page, per GETRANGE/STRLEN pipeline and per UNLINK batch.
pub const BATCH: usize = 500;
/// Bytes of a row read to decode its row key and head (a head is rarely over a few KiB).
const HEADER_PEEK: usize = 16 * 1024;

/// Why a maintenance command could not do its work.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A node could not be reached.
    #[error("{0}: not reachable: {1}")]
    Unreachable(String, String),
    /// A node refused or failed a command.
    #[error("{0}: {1}")]
    Command(String, String),
}

/// One master, as `INFO` describes it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ServerInfo {
    /// `host:port`.
    pub addr: String,
    /// `used_memory` in bytes.
    pub used_memory: u64,
    /// `maxmemory` in bytes (0: no limit).
    pub maxmemory: u64,
    /// `maxmemory_policy`.
    pub maxmemory_policy: String,
    /// `evicted_keys` since the server started.
    pub evicted_keys: u64,
    /// Keys of this tier on it.
    pub keys: u64,
}

/// What the tier holds, from a SCAN of every master.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Census {
    /// Stored responses (one per URL or Vary variant).
    pub rows: u64,
    /// URLs (their row sets).
    pub urls: u64,
    /// Fetch leases held now.
    pub leases: u64,
    /// Bytes of the rows (heads and bodies).
    pub row_bytes: u64,
    /// Every master.
    pub servers: Vec<ServerInfo>,
}

/// A row's identity and head, read from its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRow {
    /// The full row key (URL key, then the variant).
    pub row_key: Vec<u8>,
    /// The meta (the encoded head), when it fits in the bytes read.
    pub meta: Option<Vec<u8>>,
    /// Bytes of the whole row.
    pub bytes: u64,
}

struct Node {
    addr: String,
    conn: MultiplexedConnection,
}

impl SharedTier {
    /// A connection to every master: the one server, or every master `CLUSTER NODES` lists.
    async fn masters(&self) -> Result<Vec<Node>, AdminError> {
        let url = &self.inner.url;
        let (host, port) = url.nodes[0].clone();
        let first = self.node(&host, port).await?;
        if !url.cluster {
            return Ok(vec![first]);
        }
        let mut c = first.conn.clone();
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut c)
            .await
            .map_err(|e| AdminError::Command(first.addr.clone(), e.to_string()))?;
        let mut out = Vec::new();
        for (h, p) in cluster_masters(&text) {
            out.push(self.node(&h, p).await?);
        }
        Ok(out)
    }

    async fn node(&self, host: &str, port: u16) -> Result<Node, AdminError> {
        let addr = format!("{host}:{port}");
        let down = |e: String| AdminError::Unreachable(addr.clone(), e);
        let client = tls::client(&self.inner.url.node_url(host, port), &self.inner.roots)
            .map_err(|e| down(e.to_string()))?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(self.inner.cfg.timeout));
        let conn = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|e| down(e.to_string()))?;
        Ok(Node { addr, conn })
    }

    /// Every key of this tier on `node`, one SCAN page (at most [`BATCH`]) at a time.
    async fn scan_pages(
        &self,
        node: &mut Node,
        mut page: impl AsyncFnMut(&mut Node, Vec<(Vec<u8>, KeyKind)>) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let prefix = &self.inner.cfg.prefix;
        let pattern = codec::scan_pattern(prefix);
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut node.conn)
                .await
                .map_err(|e| AdminError::Command(node.addr.clone(), e.to_string()))?;
            let ours: Vec<_> = keys
                .into_iter()
                .filter_map(|k| codec::key_kind(prefix, &k).map(|kind| (k, kind)))
                .collect();
            if !ours.is_empty() {
                page(node, ours).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Count what the tier holds on every master, with each master's memory figures.
    pub async fn census(&self) -> Result<Census, AdminError> {
        let mut census = Census::default();
        for mut node in self.masters().await? {
            let mut keys = 0u64;
            let mut counted = Census::default();
            self.scan_pages(&mut node, async |node, page| {
                keys += page.len() as u64;
                let rows: Vec<&Vec<u8>> = page
                    .iter()
                    .filter(|(_, kind)| *kind == KeyKind::Row)
                    .map(|(k, _)| k)
                    .collect();
                counted.rows += rows.len() as u64;
                counted.urls += page.iter().filter(|(_, k)| *k == KeyKind::Rows).count() as u64;
                counted.leases += page.iter().filter(|(_, k)| *k == KeyKind::Lease).count() as u64;
                let mut pipe = redis::pipe();
                for k in &rows {
                    pipe.cmd("STRLEN").arg(k);
                }
                let lens: Vec<u64> = pipe
                    .query_async(&mut node.conn)
                    .await
                    .map_err(|e| AdminError::Command(node.addr.clone(), e.to_string()))?;
                counted.row_bytes += lens.iter().sum::<u64>();
                Ok(())
            })
            .await?;
            census.rows += counted.rows;
            census.urls += counted.urls;
            census.leases += counted.leases;
            census.row_bytes += counted.row_bytes;
            let info: String = redis::cmd("INFO")
                .arg("memory")
                .arg("stats")
                .query_async(&mut node.conn)
                .await
                .map_err(|e| AdminError::Command(node.addr.clone(), e.to_string()))?;
            census.servers.push(server_info(&node.addr, &info, keys));
        }
        Ok(census)
    }

    /// Call `f` with every row of the tier (row key, head, size), master by master.
    pub async fn for_each_row(&self, mut f: impl FnMut(RawRow)) -> Result<(), AdminError> {
        for mut node in self.masters().await? {
            self.scan_pages(&mut node, async |node, page| {
                let rows: Vec<&Vec<u8>> = page
                    .iter()
                    .filter(|(_, kind)| *kind == KeyKind::Row)
                    .map(|(k, _)| k)
                    .collect();
                let mut pipe = redis::pipe();
                for k in &rows {
                    pipe.cmd("GETRANGE").arg(k).arg(0).arg(HEADER_PEEK - 1);
                    pipe.cmd("STRLEN").arg(k);
                }
                let got: Vec<redis::Value> = pipe
                    .query_async(&mut node.conn)
                    .await
                    .map_err(|e| AdminError::Command(node.addr.clone(), e.to_string()))?;
                for pair in got.chunks(2) {
                    let (redis::Value::BulkString(start), redis::Value::Int(len)) =
                        (&pair[0], &pair[1])
                    else {
                        continue; // gone between SCAN and GETRANGE
                    };
                    if let Some((row_key, meta)) = codec::peek_header(start) {
                        f(RawRow {
                            row_key,
                            meta,
                            bytes: u64::try_from(*len).unwrap_or(0),
                        });
                    }
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }

    /// UNLINK every key of this tier (rows, row sets, leases) on every master, in batches;
    /// returns how many keys went. Publishes nothing (purge the URLs first for that).
    pub async fn unlink_all(&self) -> Result<u64, AdminError> {
        let mut removed = 0u64;
        for mut node in self.masters().await? {
            self.scan_pages(&mut node, async |node, page| {
                // One UNLINK per key: a cluster refuses a multi-key command across slots.
                let mut pipe = redis::pipe();
                for (k, _) in &page {
                    pipe.cmd("UNLINK").arg(k);
                }
                let n: Vec<u64> = pipe
                    .query_async(&mut node.conn)
                    .await
                    .map_err(|e| AdminError::Command(node.addr.clone(), e.to_string()))?;
                removed += n.iter().sum::<u64>();
                Ok(())
            })
            .await?;
        }
        Ok(removed)
    }
}

/// `(host, port)` of every master `CLUSTER NODES` lists that is not failed.
fn cluster_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_id, addr, flags) = (f.next()?, f.next()?, f.next()?);
            let flags: Vec<&str> = flags.split(',').collect();
            if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
                return None;
            }
            let hostport = addr.split(['@', ',']).next()?;
            let (h, p) = hostport.rsplit_once(':')?;
            let h = h.trim_start_matches('[').trim_end_matches(']');
            Some((h.to_string(), p.parse().ok()?))
        })
        .collect()
}

fn server_info(addr: &str, info: &str, keys: u64) -> ServerInfo {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    };
    let num = |name: &str| field(name).and_then(|v| v.parse().ok()).unwrap_or(0);
    ServerInfo {
        addr: addr.to_string(),
        used_memory: num("used_memory"),
        maxmemory: num("maxmemory"),
        maxmemory_policy: field("maxmemory_policy").unwrap_or_default(),
        evicted_keys: num("evicted_keys"),
        keys,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masters_of_cluster_nodes() {
        let text = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002,node-c master,fail - 0 0 3 connected 10923-16383
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 [::1]:7004@17004 master - 0 0 4 connected
";
        assert_eq!(
            cluster_masters(text),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001),
                ("::1".to_string(), 7004)
            ]
        );
    }

    #[test]
    fn info_fields() {
        let info = "# Memory\r\nused_memory:1024\r\nused_memory_human:1K\r\nmaxmemory:4096\r\n\
                    maxmemory_policy:allkeys-lru\r\n# Stats\r\nevicted_keys:7\r\n";
        let s = server_info("h:1", info, 3);
        assert_eq!(
            (
                s.used_memory,
                s.maxmemory,
                s.maxmemory_policy.as_str(),
                s.evicted_keys,
                s.keys
            ),
            (1024, 4096, "allkeys-lru", 7, 3)
        );
    }
}
