//! `hoard export --har` and `hoard import --har` through the real binary: a round trip
//! served offline with the same bytes, bad entries refused with nothing stored, `--ttl`.

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Origin, get, hoard, proxy, run};

/// GET through a proxy; (status, Cache-Status, body bytes).
async fn fetch(proxy: std::net::SocketAddr, url: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let req = format!("GET {url} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let at = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head");
    let head = String::from_utf8_lossy(&buf[..at]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cs = head
        .lines()
        .find_map(|l| l.strip_prefix("cache-status: "))
        .unwrap_or("")
        .to_string();
    (status, cs, buf[at + 4..].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn har_round_trip_is_served_offline_with_the_same_bytes() {
    let origin = Origin::start().await;
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let home = tempfile::tempdir().unwrap();
    let (ca, cb) = (a.path().to_str().unwrap(), b.path().to_str().unwrap());
    let p = proxy(a.path(), |_| {}).await;
    let urls = [origin.url("/text"), origin.url("/bin")];
    let mut want = Vec::new();
    for u in &urls {
        let r = fetch(p.local_addr(), u, "").await;
        assert!(r.1.contains("stored"), "{}", r.1);
        want.push(r.2);
    }
    let vary = origin.url("/vary");
    get(p.local_addr(), &vary, &[("accept-encoding", "gzip")]).await;
    p.shutdown().await;
    assert_eq!(want[1].len(), 256);

    let har = home.path().join("out.har");
    let h = har.to_str().unwrap();
    let (code, out, err) = run(hoard(home.path()).args(["export", "--har", h, "--cache-dir", ca]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("wrote 3 response(s)"), "{out}");
    let doc: Value = serde_json::from_slice(&std::fs::read(&har).unwrap()).unwrap();
    assert_eq!(doc["log"]["version"], "1.2");
    let entries = doc["log"]["entries"].as_array().unwrap();
    let bin = entries
        .iter()
        .find(|e| e["request"]["url"] == urls[1])
        .unwrap();
    assert_eq!(bin["response"]["content"]["encoding"], "base64");
    let text = entries
        .iter()
        .find(|e| e["request"]["url"] == urls[0])
        .unwrap();
    assert_eq!(text["response"]["content"]["text"], "/text");
    // --host and --prefix select.
    let (code, out, _) = run(hoard(home.path()).args([
        "export",
        "--har",
        h,
        "--cache-dir",
        ca,
        "--prefix",
        &origin.url("/bi"),
        "--json",
    ]));
    assert_eq!(
        (
            code,
            serde_json::from_str::<Value>(&out).unwrap()["entries"].clone()
        ),
        (0, json!(1))
    );
    let (code, _, _) = run(hoard(home.path()).args([
        "export",
        "--har",
        h,
        "--cache-dir",
        ca,
        "--host",
        "elsewhere.example",
    ]));
    assert_eq!(code, 1, "nothing exported");
    run(hoard(home.path()).args(["export", "--har", h, "--cache-dir", ca]));

    // Import into an empty directory and serve it offline: the origin is not asked.
    let (code, out, err) = run(hoard(home.path()).args(["import", "--har", h, "--cache-dir", cb]));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("stored 3 response(s)"), "{out}");
    let before = origin.hits();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--cache-dir",
        cb,
        "--offline",
        "-q",
    ];
    let (mut child, addr) = crate::proxy::harness::spawn_hoard(args).await;
    for (u, body) in urls.iter().zip(&want) {
        let (s, cs, got) = fetch(addr, u, "").await;
        assert_eq!((s, &got), (200, body), "{u}: {cs}");
        assert!(cs.contains("hit"), "{cs}");
    }
    let (s, cs, got) = fetch(addr, &vary, "Accept-Encoding: gzip\r\n").await;
    assert_eq!((s, got.as_slice()), (200, &b"/vary"[..]), "{cs}");
    assert!(cs.contains("hit"), "{cs}");
    assert_eq!(origin.hits(), before);
    child.kill().await.unwrap();
}

fn entry(url: &str, content: Value) -> Value {
    json!({
        "startedDateTime": "2024-05-01T12:00:00.000Z",
        "time": 12.5,
        "request": {"method": "GET", "url": url, "httpVersion": "HTTP/2",
                    "headers": [{"name": ":authority", "value": "x"}]},
        "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/2",
                     "headers": [{"name": "content-type", "value": "text/plain"},
                                 {"name": "content-encoding", "value": "br"},
                                 {"name": "date", "value": "Wed, 01 May 2024 12:00:00 GMT"},
                                 {"name": "cache-control", "value": "max-age=60"}],
                     "content": content},
    })
}

#[test]
fn har_import_refuses_bad_entries_atomically_and_forces_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let c = dir.path().to_str().unwrap();
    let har = home.path().join("in.har");
    let h = har.to_str().unwrap();
    let write = |entries: Vec<Value>| {
        std::fs::write(
            &har,
            json!({"log": {"version": "1.2", "entries": entries}}).to_string(),
        )
        .unwrap();
    };
    let good = entry(
        "http://a.example/ok",
        json!({"size": 2, "mimeType": "text/plain", "text": "ok"}),
    );
    let cases: Vec<(Value, &str)> = vec![
        (
            entry(
                "http://a.example/b64",
                json!({"size": 3, "text": "!!!", "encoding": "base64"}),
            ),
            "entry 1 (http://a.example/b64): response.content.text is not valid base64",
        ),
        (
            json!({"request": {"method": "GET", "url": "http://a.example/x"}}),
            "entry 1 (http://a.example/x): missing field",
        ),
        (
            entry("not a url", json!({"text": ""})),
            "entry 1 (not a url): request.url is not a URL",
        ),
    ];
    for (bad, msg) in cases {
        write(vec![good.clone(), bad]);
        let (code, _, err) = run(hoard(home.path()).args(["import", "--har", h, "--cache-dir", c]));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(msg) && err.contains("nothing was imported"),
            "{err}"
        );
        let (_, out, _) = run(hoard(home.path()).args(["ls", "--json", "--cache-dir", c]));
        assert_eq!(out.trim(), "[]", "nothing partial is stored");
    }
    std::fs::write(&har, "{\"not\": \"a har\"}").unwrap();
    let (code, _, err) = run(hoard(home.path()).args(["import", "--har", h, "--cache-dir", c]));
    assert_eq!(code, 2);
    assert!(err.contains("not a HAR file"), "{err}");

    // A browser HAR: decoded body (Content-Encoding dropped), skipped entries counted,
    // and --ttl makes the old response fresh from now.
    let post = {
        let mut e = entry("http://a.example/p", json!({"text": "x"}));
        e["request"]["method"] = json!("POST");
        e
    };
    let data = entry("data:text/plain,hi", json!({"text": "hi"}));
    write(vec![good, post, data]);
    let (code, out, err) =
        run(hoard(home.path()).args(["import", "--har", h, "--cache-dir", c, "--ttl", "1h"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("stored 1 response(s)")
            && out.contains("skipped 1: method")
            && out.contains("skipped 1: scheme"),
        "{out}"
    );
    let (code, out, _) =
        run(hoard(home.path()).args(["show", "--json", "http://a.example/ok", "--cache-dir", c]));
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    let var = &v["variants"][0];
    assert_eq!(
        (
            var["fresh"].clone(),
            var["rule"].clone(),
            var["body_len"].clone()
        ),
        (json!(true), json!("import"), json!(2)),
        "{v}"
    );
    let headers = var["headers"].as_array().unwrap();
    assert!(!headers.iter().any(|h| h[0] == "content-encoding"), "{v}");
    assert!(
        headers
            .iter()
            .any(|h| h[0] == "content-length" && h[1] == "2"),
        "{v}"
    );
}
