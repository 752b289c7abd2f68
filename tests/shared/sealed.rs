//! Sealed rows (`shared-secret-file`) against a real `redis-server`: hoards with the fleet's
//! secret share rows and invalidations; a row or a message written without it (another
//! secret, no secret, bytes changed in Redis) is never used.

use std::time::Duration;

use bytes::Bytes;
use hoard::entries::shared::SharedTier;

use super::{Redis, TEST_TIMEOUT, have_redis, row_key_name, tier, tier_with};

const U: &str = "GET http://sealed.test/a";

async fn sealed(url: &str, secret: &std::path::Path) -> SharedTier {
    let secret = secret.to_path_buf();
    tier_with(url, "s:", move |c| {
        c.timeout = TEST_TIMEOUT;
        c.secret_file = Some(secret);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_rows_and_invalidations_are_used_only_with_the_fleets_secret() {
    if !have_redis("sealed_rows_and_invalidations_are_used_only_with_the_fleets_secret") {
        return;
    }
    let r = Redis::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (fleet, stranger) = (dir.path().join("fleet"), dir.path().join("stranger"));
    std::fs::write(&fleet, "fleet secret 0123456789abcdef\n").unwrap();
    std::fs::write(&stranger, "some other secret 0123456789\n").unwrap();
    let a = sealed(&r.url(), &fleet).await;
    let b = sealed(&r.url(), &fleet).await;
    let other = sealed(&r.url(), &stranger).await;
    let plain = tier(&r.url(), "s:").await;
    let ttl = Duration::from_secs(60);
    let key = row_key_name("s:", U, U.as_bytes());

    // The fleet shares rows, and a 304 refresh of the head keeps the body verifiable.
    assert!(a.put(U, U.as_bytes(), b"head-1", b"the body", ttl).await);
    let e = b.get(U, U.as_bytes()).await.expect("fleet hit");
    assert_eq!(
        (e.meta.as_slice(), e.body.clone()),
        (&b"head-1"[..], Bytes::from_static(b"the body"))
    );
    assert!(b.put_meta(U, U.as_bytes(), b"head-2", ttl).await);
    let e = a.get(U, U.as_bytes()).await.expect("refreshed hit");
    assert_eq!(
        (e.meta.as_slice(), e.body),
        (&b"head-2"[..], Bytes::from_static(b"the body"))
    );

    // Without the secret, or with another: a miss, and the row is left for the fleet.
    assert_eq!(plain.get(U, U.as_bytes()).await, None);
    assert_eq!(other.get(U, U.as_bytes()).await, None);
    assert_eq!(other.status().forged, 1);
    assert_eq!(r.cli(&["EXISTS", &key]), "1");
    // An unsealed head spliced in by a process without the secret is refused by the script.
    assert!(!plain.put_meta(U, U.as_bytes(), b"evil head", ttl).await);
    assert_eq!(a.get(U, U.as_bytes()).await.unwrap().meta, b"head-2");

    // Bytes changed in Redis (the last body byte, then a byte of the head): never served,
    // counted, and the next fill's write replaces the row.
    let len: usize = r.cli(&["STRLEN", &key]).parse().unwrap();
    r.cli(&["SETRANGE", &key, &(len - 1).to_string(), "X"]);
    assert_eq!(a.get(U, U.as_bytes()).await, None);
    assert!(a.put(U, U.as_bytes(), b"head-3", b"the body", ttl).await);
    r.cli(&["SETRANGE", &key, &(9 + U.len() + 1).to_string(), "X"]);
    assert_eq!(a.get(U, U.as_bytes()).await, None);
    assert_eq!(a.status().forged, 2);
    // A row the stranger writes is the same to the fleet as one written by hand.
    assert!(other.put(U, U.as_bytes(), b"evil", b"evil body", ttl).await);
    assert_eq!(a.get(U, U.as_bytes()).await, None);
    assert_eq!(a.status().forged, 3);
    // An unsealed row is another version: a miss for the fleet, served to unsealed hoards.
    assert!(
        plain
            .put(U, U.as_bytes(), b"plain", b"plain body", ttl)
            .await
    );
    assert_eq!(a.get(U, U.as_bytes()).await, None);
    assert!(plain.get(U, U.as_bytes()).await.is_some());

    // Invalidations: one published without the secret is ignored, the fleet's arrives.
    let mut seen = a.invalidations();
    assert!(plain.purge("GET http://sealed.test/unsigned").await);
    assert!(b.purge("GET http://sealed.test/signed").await);
    let got = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the fleet's invalidation arrives")
        .unwrap();
    assert_eq!(
        got, "GET http://sealed.test/signed",
        "the unsigned one came first"
    );
    assert!(seen.try_recv().is_err());
    assert!(a.status().forged >= 4, "{:?}", a.status());
}
