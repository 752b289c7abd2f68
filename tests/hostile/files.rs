//! Files of the store and the CA against other local accounts: everything hoard leaves on
//! disk is private whatever the umask, and a CA or cache directory another account could
//! read the key of or replace is refused. The real binary runs under `sh -c 'umask ...'`
//! (the umask is process-wide, so the test process keeps its own).

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::proxy::harness::{Origin, client_via, reply};

/// How long a start or a refusal may take on a loaded machine.
const START: Duration = Duration::from_secs(30);

/// The binary under `umask`, isolated from the caller's `HOARD_*` environment.
fn hoard(umask: &str, args: &[OsString]) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_hoard"))
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOARD_") || k == "RUST_LOG" {
            c.env_remove(k);
        }
    }
    c.env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", "/nonexistent-hoard-test-config")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// A proxy started by [`serve`]: running (with its address) or exited (with its code).
struct Started {
    child: Child,
    addr: Option<SocketAddr>,
    /// stderr up to `listening on` (or all of it when it exited).
    stderr: String,
}

impl Started {
    /// The exit code of a proxy that refused to start; panics if it is running.
    async fn exit_code(&mut self) -> i32 {
        assert!(
            self.addr.is_none(),
            "hoard started although it should have refused; stderr:\n{}",
            self.stderr
        );
        let status = tokio::time::timeout(START, self.child.wait())
            .await
            .expect("hoard exits")
            .expect("wait");
        status.code().unwrap_or(-1)
    }
}

/// `hoard serve ARGS --listen 127.0.0.1:0` under `umask`, read until it listens or exits.
async fn serve(umask: &str, args: &[OsString]) -> Started {
    let mut all: Vec<OsString> = vec!["--listen".into(), "127.0.0.1:0".into()];
    all.extend_from_slice(args);
    let mut child = hoard(umask, &all).spawn().expect("spawn hoard");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut stderr = String::new();
    let addr = tokio::time::timeout(START, async {
        while let Ok(Some(line)) = lines.next_line().await {
            stderr.push_str(&line);
            stderr.push('\n');
            if let Some((_, rest)) = line.split_once("listening on ") {
                return rest.split_whitespace().next().and_then(|a| a.parse().ok());
            }
        }
        None
    })
    .await
    .expect("hoard listens or exits in time");
    if addr.is_some() {
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    }
    Started {
        child,
        addr,
        stderr,
    }
}

/// Runs a subcommand to completion: (exit code, stdout, stderr).
async fn run(umask: &str, args: &[OsString]) -> (i32, String, String) {
    let out = tokio::time::timeout(START, hoard(umask, args).output())
        .await
        .expect("hoard finishes in time")
        .expect("run hoard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn os(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    args.iter().map(|a| a.as_ref().to_os_string()).collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn set_mode(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

/// Every directory and file under `root` (included), with its mode.
fn walk(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = vec![(root.to_path_buf(), mode(root), true)];
    let mut i = 0;
    while i < out.len() {
        let (p, _, is_dir) = out[i].clone();
        if is_dir {
            for e in std::fs::read_dir(&p).unwrap().flatten() {
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                out.push((e.path(), m.mode() & 0o7777, m.is_dir()));
            }
        }
        i += 1;
    }
    out
}

/// The modes promised: directories 0700, files 0600, the CA certificate (public) 0644.
fn assert_private(root: &Path) {
    let wrong: Vec<String> = walk(root)
        .into_iter()
        .filter(|(p, m, is_dir)| {
            let want = if *is_dir {
                0o700
            } else if p.file_name().is_some_and(|n| n == "hoard-ca.pem") {
                0o644
            } else {
                0o600
            };
            *m != want
        })
        .map(|(p, m, _)| format!("{} {m:04o}", p.display()))
        .collect();
    assert!(wrong.is_empty(), "not private: {wrong:#?}");
}

fn is_root() -> bool {
    hoard::store::effective_uid() == 0
}

/// `nobody`: another account, for ownership tests (only root can chown to it).
const NOBODY: u32 = 65534;

fn chown_nobody(p: &Path) {
    std::os::unix::fs::chown(p, Some(NOBODY), None).expect("chown as root");
}

#[tokio::test]
async fn hostile_store_and_ca_files_are_private_under_a_wide_umask() {
    for umask in ["022", "000"] {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("deep/cache");
        let big = vec![b'x'; 100 * 1024]; // over min_file_size: a value file
        let origin = Origin::start(move |req| {
            let body = if req.uri().path() == "/big" {
                big.clone()
            } else {
                b"small".to_vec()
            };
            reply(200, &[("cache-control", "max-age=600")], body)
        })
        .await;
        let mut p = serve(umask, &os(&[&"--cache-dir", &cache, &"--mitm"])).await;
        let addr = p
            .addr
            .unwrap_or_else(|| panic!("hoard starts:\n{}", p.stderr));
        let client = client_via(addr);
        for path in ["/big", "/small", "/big"] {
            let r = client.get(origin.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
        // The third request is a hit: the value file is committed; -wal and -shm are open.
        for name in [
            "cache.db",
            "cache.db-wal",
            "cache.db-shm",
            "cache.gen",
            "tmp",
        ] {
            assert!(cache.join(name).exists(), "{name} under umask {umask}");
        }
        let vals = walk(&cache)
            .iter()
            .filter(|(p, ..)| p.extension().is_some_and(|e| e == "val"))
            .count();
        assert_eq!(vals, 1, "one value file under umask {umask}");
        assert!(cache.join("ca/hoard-ca-key.pem").exists());
        assert_private(&cache);
        assert_eq!(
            mode(&tmp.path().join("deep")),
            0o700,
            "parents it creates too"
        );
        p.child.kill().await.unwrap();

        // `hoard ca` in a fresh directory.
        let ca = tmp.path().join("other/ca");
        let (code, out, err) = run(umask, &os(&[&"ca", &"--ca-dir", &ca])).await;
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("BEGIN CERTIFICATE"));
        assert_private(&ca);
    }
}

#[tokio::test]
async fn hostile_store_files_left_readable_by_an_earlier_version_are_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    {
        let c = hoard::store::Cache::open(&dir).unwrap();
        c.set(b"k", b"v", None, None).unwrap();
    }
    for name in ["cache.db", "cache.gen"] {
        set_mode(&dir.join(name), 0o644);
    }
    let c = hoard::store::Cache::open(&dir).unwrap();
    assert_eq!(c.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_private(&dir);
}

#[tokio::test]
async fn hostile_ca_key_readable_by_others_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    hoard::proxy::ca::CertAuthority::load_or_create(&ca).unwrap();
    let key = ca.join("hoard-ca-key.pem");
    let cache = tmp.path().join("cache");
    for key_mode in [0o644, 0o640, 0o604] {
        set_mode(&key, key_mode);
        let mut p = serve(
            "022",
            &os(&[&"--cache-dir", &cache, &"--mitm", &"--ca-dir", &ca]),
        )
        .await;
        assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
        assert!(
            p.stderr.contains(&key.display().to_string()) && p.stderr.contains("chmod 600"),
            "names the key and the fix: {}",
            p.stderr
        );
        let (code, out, err) = run("022", &os(&[&"ca", &"--ca-dir", &ca])).await;
        assert_eq!(code, 2, "hoard ca refuses too: {err}");
        assert!(!out.contains("BEGIN CERTIFICATE"));
    }
    // Fixed as the message says: it starts.
    set_mode(&key, 0o600);
    let mut p = serve(
        "022",
        &os(&[&"--cache-dir", &cache, &"--mitm", &"--ca-dir", &ca]),
    )
    .await;
    assert!(p.addr.is_some(), "{}", p.stderr);
    p.child.kill().await.unwrap();
}

#[tokio::test]
async fn hostile_ca_others_could_replace_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    hoard::proxy::ca::CertAuthority::load_or_create(&ca).unwrap();
    let cache = tmp.path().join("cache");
    let args = os(&[&"--cache-dir", &cache, &"--mitm", &"--ca-dir", &ca]);
    // A CA directory group or others may write: they could swap both files.
    for dir_mode in [0o770, 0o707, 0o1777] {
        set_mode(&ca, dir_mode);
        let mut p = serve("022", &args).await;
        assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
        assert!(
            p.stderr.contains(&ca.display().to_string()) && p.stderr.contains("writable"),
            "{}",
            p.stderr
        );
    }
    set_mode(&ca, 0o700);
    // A certificate others may write.
    let cert = ca.join("hoard-ca.pem");
    set_mode(&cert, 0o666);
    let mut p = serve("022", &args).await;
    assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
    set_mode(&cert, 0o644);

    if !is_root() {
        println!("skipped: files owned by another account need root to chown");
        return;
    }
    // Owned by another account: that account could replace it.
    for victim in [ca.join("hoard-ca-key.pem"), cert.clone(), ca.clone()] {
        chown_nobody(&victim);
        let mut p = serve("022", &args).await;
        assert_eq!(p.exit_code().await, 2, "{}: {}", victim.display(), p.stderr);
        assert!(p.stderr.contains("uid 65534"), "{}", p.stderr);
        std::os::unix::fs::chown(&victim, Some(0), None).unwrap();
    }
    let mut p = serve("022", &args).await;
    assert!(p.addr.is_some(), "root-owned CA is fine: {}", p.stderr);
    p.child.kill().await.unwrap();
}

#[tokio::test]
async fn hostile_cache_dir_others_may_write_is_refused_and_one_they_may_read_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // Made by the store, then opened up.
    hoard::store::Cache::open(&cache).unwrap();
    let args = os(&[&"--cache-dir", &cache]);
    for dir_mode in [0o770, 0o707, 0o1777] {
        set_mode(&cache, dir_mode);
        let mut p = serve("022", &args).await;
        assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
        assert!(
            p.stderr.contains(&cache.display().to_string()) && p.stderr.contains("writable"),
            "{}",
            p.stderr
        );
    }
    // A parent others may write (no sticky bit): the whole directory could be swapped.
    let parent = tmp.path().join("open");
    let inner = parent.join("cache");
    std::fs::create_dir(&parent).unwrap();
    set_mode(&parent, 0o777);
    let mut p = serve("022", &os(&[&"--cache-dir", &inner])).await;
    assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
    assert!(
        p.stderr.contains(&parent.display().to_string()),
        "{}",
        p.stderr
    );

    // Readable only: starts, with a warning naming the directory and the fix.
    set_mode(&cache, 0o755);
    let mut p = serve("022", &args).await;
    assert!(p.addr.is_some(), "{}", p.stderr);
    assert!(
        p.stderr.contains("WARN")
            && p.stderr.contains(&cache.display().to_string())
            && p.stderr.contains("chmod 700"),
        "{}",
        p.stderr
    );
    p.child.kill().await.unwrap();
    // `hoard check` reports it (exit 1), `--fix` narrows it, then nothing is left.
    let check = |fix: bool| {
        let mut a = os(&[&"check", &"--cache-dir", &cache]);
        if fix {
            a.push("--fix".into());
        }
        a
    };
    let (code, out, err) = run("022", &check(false)).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("accessible to group/others"), "{out}");
    assert_eq!(mode(&cache), 0o755, "check without --fix changes nothing");
    let (code, out, err) = run("022", &check(true)).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(mode(&cache), 0o700);
    let (code, out, err) = run("022", &check(false)).await;
    assert_eq!(code, 0, "{out}{err}");

    if !is_root() {
        println!("skipped: a cache directory owned by another account needs root to chown");
        return;
    }
    chown_nobody(&cache);
    let mut p = serve("022", &args).await;
    assert_eq!(p.exit_code().await, 2, "{}", p.stderr);
    assert!(p.stderr.contains("uid 65534"), "{}", p.stderr);
    let (code, out, _) = run("022", &check(true)).await;
    assert_eq!(
        code, 1,
        "--fix cannot take another account's directory: {out}"
    );
}
