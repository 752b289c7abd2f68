//! Leases across two tiers (two "processes"), `wait_filled`, purge and invalidations.

use std::time::{Duration, Instant};

use hoard::entries::shared::{POLL_INTERVAL, SharedLease};

use super::{Redis, eventually, have_redis, tier};

const U: &str = "GET http://lease.test/x";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_exclusive_across_processes_and_released_on_drop() {
    if !have_redis("lease_is_exclusive_across_processes_and_released_on_drop") {
        return;
    }
    let r = Redis::start(&[]);
    let (a, b) = (tier(&r.url(), "l1:").await, tier(&r.url(), "l1:").await);
    let ttl = Duration::from_secs(30);
    let SharedLease::Acquired(guard) = a.lease(U, ttl).await else {
        panic!("A takes the free lease");
    };
    assert!(matches!(b.lease(U, ttl).await, SharedLease::HeldElsewhere));
    assert!(
        matches!(a.lease(U, ttl).await, SharedLease::HeldElsewhere),
        "not reentrant"
    );
    assert!(matches!(
        b.lease("GET http://other/", ttl).await,
        SharedLease::Acquired(_)
    ));
    drop(guard); // released by a spawned task
    let lease_key = hoard::entries::shared::codec::UrlKeys::new("l1:", U).lease;
    assert!(
        eventually(Duration::from_secs(2), || r.cli(&["EXISTS", &lease_key])
            == "0")
        .await
    );
    assert!(matches!(b.lease(U, ttl).await, SharedLease::Acquired(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_and_retaken_lease_is_not_released_by_its_old_holder() {
    if !have_redis("an_expired_and_retaken_lease_is_not_released_by_its_old_holder") {
        return;
    }
    let r = Redis::start(&[]);
    let (a, b) = (tier(&r.url(), "l2:").await, tier(&r.url(), "l2:").await);
    let SharedLease::Acquired(old) = a.lease(U, Duration::from_millis(200)).await else {
        panic!("A takes the lease");
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let SharedLease::Acquired(new) = b.lease(U, Duration::from_secs(30)).await else {
        panic!("B takes the expired lease");
    };
    assert!(
        !old.finish().await,
        "the old holder's release deletes nothing"
    );
    let lease_key = hoard::entries::shared::codec::UrlKeys::new("l2:", U).lease;
    assert_eq!(r.cli(&["GET", &lease_key]), new.token(), "B still holds it");
    assert!(matches!(
        a.lease(U, Duration::from_secs(1)).await,
        SharedLease::HeldElsewhere
    ));
    assert!(new.finish().await);
    assert_eq!(r.cli(&["EXISTS", &lease_key]), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_filled_wakes_on_finish_well_before_the_poll() {
    if !have_redis("wait_filled_wakes_on_finish_well_before_the_poll") {
        return;
    }
    let r = Redis::start(&[]);
    let (a, b) = (tier(&r.url(), "l3:").await, tier(&r.url(), "l3:").await);

    // Nobody holds the lease: returns at once (one Redis round trip; the bound is half the
    // poll interval, so a wait for the first poll would fail it, while a loaded CI machine's
    // scheduling does not).
    let t0 = Instant::now();
    assert!(b.wait_filled(U, Duration::from_secs(5)).await);
    let at_once = hoard::entries::shared::POLL_INTERVAL / 2;
    assert!(t0.elapsed() < at_once, "{:?}", t0.elapsed());

    let SharedLease::Acquired(guard) = a.lease(U, Duration::from_secs(30)).await else {
        panic!("A takes the lease");
    };
    // Held and never finished within max: false after max.
    let t0 = Instant::now();
    assert!(!b.wait_filled(U, Duration::from_millis(150)).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(150) && t0.elapsed() < Duration::from_millis(400)
    );

    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let woke = b.wait_filled(U, Duration::from_secs(10)).await;
            (woke, Instant::now())
        })
    };
    // Let B make its first lease check and start waiting (first poll at +500 ms).
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        a.put(
            U,
            U.as_bytes(),
            b"m",
            b"filled body",
            Duration::from_secs(30)
        )
        .await
    );
    let finished = Instant::now();
    assert!(guard.finish().await);
    let (woke, at) = waiter.await.unwrap();
    assert!(woke);
    let after = at.duration_since(finished);
    assert!(
        after < POLL_INTERVAL / 2,
        "woken by the message {after:?} after finish, not by the {POLL_INTERVAL:?} poll"
    );
    assert_eq!(
        b.get(U, U.as_bytes()).await.unwrap().body,
        &b"filled body"[..]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_removes_every_row_and_reaches_the_other_process() {
    if !have_redis("purge_removes_every_row_and_reaches_the_other_process") {
        return;
    }
    let r = Redis::start(&[]);
    let (a, b) = (tier(&r.url(), "l4:").await, tier(&r.url(), "l4:").await);
    let (mut a_inv, mut b_inv) = (a.invalidations(), b.invalidations());
    let ttl = Duration::from_secs(30);
    let rows: [&[u8]; 3] = [U.as_bytes(), b"variant 1", b"variant 2"];
    for row in rows {
        assert!(a.put(U, row, b"m", b"b", ttl).await);
    }
    assert!(
        a.put("GET http://keep/", b"GET http://keep/", b"m", b"b", ttl)
            .await
    );
    assert!(a.purge(U).await);
    let got = tokio::time::timeout(Duration::from_secs(2), b_inv.recv())
        .await
        .expect("B hears of the purge")
        .unwrap();
    assert_eq!(got, U);
    for row in rows {
        assert_eq!(b.get(U, row).await, None);
    }
    assert!(
        b.get("GET http://keep/", b"GET http://keep/")
            .await
            .is_some(),
        "other URLs stay"
    );
    assert_eq!(
        r.cli(&["KEYS", "l4:*"]).lines().count(),
        2,
        "the kept row and its rows set"
    );
    // A does not hear its own purge; B's purge reaches A.
    assert!(b.purge("GET http://keep/").await);
    let got = tokio::time::timeout(Duration::from_secs(2), a_inv.recv())
        .await
        .expect("A hears of B's purge")
        .unwrap();
    assert_eq!(got, "GET http://keep/");
    assert!(
        a_inv.try_recv().is_err(),
        "nothing else (A's own purge was skipped)"
    );
    assert_eq!(b.status().invalidations_received, 1);
    assert_eq!(r.cli(&["DBSIZE"]), "0");
}
