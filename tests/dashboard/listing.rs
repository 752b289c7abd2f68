//! `/api/urls` of the real admin server: every match counted, the first `limit` returned in
//! URL order with their heads, and many calls at once all answered (the store walks run at
//! most two at a time, `dashboard::heavy`; the memory bound itself is pinned by the unit
//! tests `ops::tests::first_of_holds_at_most_limit_items_whatever_the_count` and
//! `listing::tests::rows_group_by_url_one_url_at_a_time`).

use serde_json::Value;

use crate::ops::{Origin, get, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_urls_counts_every_match_and_returns_the_first_limit_in_url_order() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let p = crate::ops::proxy(dir.path(), |c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let admin = p.admin_addr().unwrap();
    // Stored in an order other than the URL order.
    for i in (0..30).rev() {
        let (code, _, _) = get(p.local_addr(), &origin.url(&format!("/list/{i:02}")), &[]).await;
        assert_eq!(code, 200);
    }
    get(p.local_addr(), &origin.url("/other"), &[]).await;
    // A client has its whole body before the fill commits: wait until every one is stored.
    for i in 0..30 {
        let url = origin.url(&format!("/list/{i:02}"));
        crate::proxy::harness::wait_stored(p.local_addr(), &url).await;
    }
    crate::proxy::harness::wait_stored(p.local_addr(), &origin.url("/other")).await;

    let urls = |v: &Value| -> Vec<String> {
        v["urls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["url"].as_str().unwrap().to_string())
            .collect()
    };
    let (code, _, body) = request(admin, "GET", "/api/urls?q=%2Flist%2F&limit=5", &[]).await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["total"], 30);
    let want: Vec<String> = (0..5)
        .map(|i| origin.url(&format!("/list/{i:02}")))
        .collect();
    assert_eq!(urls(&v), want);
    assert_eq!(v["urls"][0]["status"], 200);
    assert_eq!(v["urls"][0]["fresh"], true);

    let (_, _, body) = request(admin, "GET", "/api/urls?q=nomatch", &[]).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((v["total"].as_u64(), urls(&v).len()), (Some(0), 0));

    // Eight calls at once: each waits its turn and gets the whole answer.
    let calls: Vec<_> = (0..8)
        .map(|_| tokio::spawn(request(admin, "GET", "/api/urls?limit=200", &[])))
        .collect();
    for c in calls {
        let (code, _, body) = c.await.unwrap();
        assert_eq!(code, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["total"].as_u64(), urls(&v).len()), (Some(31), 31));
    }
    p.shutdown().await;
}
