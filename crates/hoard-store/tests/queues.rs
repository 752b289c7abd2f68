//! Queue operations (`push`/`pull`/`peek`), `Deque` and `Index`, in one process and
//! across OS processes (this test binary re-invoked as children with an env var).

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use hoard_store::{Cache, Deque, Index, ManualClock, Side};

const CHILD_ENV: &str = "HOARD_STORE_QUEUE_CHILD";

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

#[test]
fn push_pull_peek_follow_diskcache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::open(dir.path()).unwrap();
    assert_eq!(cache.pull(None, Side::Front).unwrap(), None);
    let k1 = cache.push(b"1", None, Side::Back, None, None).unwrap();
    let k2 = cache.push(b"2", None, Side::Back, None, None).unwrap();
    let k0 = cache.push(b"0", None, Side::Front, None, None).unwrap();
    assert_eq!(k1, b"500000000000000");
    assert_eq!(k2, b"500000000000001");
    assert_eq!(k0, b"499999999999999");
    // Queues with different prefixes (and plain keys) do not mix.
    cache
        .push(b"x", Some("other"), Side::Back, None, None)
        .unwrap();
    cache.set(b"zzz", b"plain", None, None).unwrap();
    assert_eq!(
        cache.peek(None, Side::Front).unwrap(),
        Some((k0.clone(), b("0")))
    );
    assert_eq!(
        cache.peek(None, Side::Back).unwrap(),
        Some((k2.clone(), b("2")))
    );
    assert_eq!(cache.pull(None, Side::Front).unwrap(), Some((k0, b("0"))));
    assert_eq!(cache.pull(None, Side::Back).unwrap(), Some((k2, b("2"))));
    assert_eq!(cache.pull(None, Side::Back).unwrap(), Some((k1, b("1"))));
    assert_eq!(cache.pull(None, Side::Back).unwrap(), None);
    assert_eq!(
        cache.pull(Some("other"), Side::Front).unwrap(),
        Some((b("other-500000000000000"), b("x")))
    );
    assert_eq!(cache.get(b"zzz").unwrap(), Some(b("plain")));
}

#[test]
fn pull_and_peek_skip_and_remove_expired_items() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000_000.0);
    let cache = Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    let big = vec![1u8; 100_000]; // a value file
    cache
        .push(
            &big,
            Some("q"),
            Side::Back,
            Some(Duration::from_secs(1)),
            Some("t"),
        )
        .unwrap();
    cache
        .push(b"live", Some("q"), Side::Back, None, None)
        .unwrap();
    clock.advance(2.0);
    assert_eq!(
        cache.peek(Some("q"), Side::Front).unwrap().unwrap().1,
        b("live")
    );
    assert_eq!(cache.len().unwrap(), 1, "the expired item was removed");
    assert_eq!(
        cache.pull(Some("q"), Side::Front).unwrap().unwrap().1,
        b("live")
    );
    assert!(cache.check(false).unwrap().is_empty());
}

#[test]
fn deque_operations() {
    let dir = tempfile::tempdir().unwrap();
    let d = Deque::open(dir.path()).unwrap();
    assert!(d.is_empty().unwrap());
    assert_eq!(d.pop().unwrap(), None);
    d.extend(["b", "c"]).unwrap();
    d.appendleft(b"a").unwrap();
    d.append(b"d").unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("a"), b("b"), b("c"), b("d")]);
    assert_eq!(d.get(1).unwrap(), Some(b("b")));
    assert_eq!(d.get(-1).unwrap(), Some(b("d")));
    assert_eq!(d.get(9).unwrap(), None);
    d.rotate(1).unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("d"), b("a"), b("b"), b("c")]);
    d.rotate(-2).unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("b"), b("c"), b("d"), b("a")]);
    assert_eq!(d.peek().unwrap(), Some(b("a")));
    assert_eq!(d.peekleft().unwrap(), Some(b("b")));
    assert_eq!(d.pop().unwrap(), Some(b("a")));
    assert_eq!(d.popleft().unwrap(), Some(b("b")));
    d.extendleft(["x", "y"]).unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("y"), b("x"), b("c"), b("d")]);
    assert_eq!(d.len().unwrap(), 4);
    d.clear().unwrap();
    assert!(d.is_empty().unwrap());
    // A second handle on the directory sees the same deque.
    d.append(b"shared").unwrap();
    assert_eq!(
        Deque::open(dir.path()).unwrap().popleft().unwrap(),
        Some(b("shared"))
    );
}

#[test]
fn deque_maxlen_drops_from_the_other_end() {
    let dir = tempfile::tempdir().unwrap();
    let d = Deque::open(dir.path()).unwrap().with_maxlen(Some(2));
    d.extend(["1", "2", "3"]).unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("2"), b("3")]);
    d.appendleft(b"0").unwrap();
    assert_eq!(d.to_vec().unwrap(), [b("0"), b("2")]);
    let zero = Deque::open(dir.path()).unwrap().with_maxlen(Some(0));
    zero.append(b"never").unwrap();
    assert_eq!(zero.len().unwrap(), 2);
}

#[test]
fn index_is_an_ordered_map() {
    let dir = tempfile::tempdir().unwrap();
    let index = Index::open(dir.path()).unwrap();
    for (k, v) in [("c", "3"), ("a", "1"), ("b", "2")] {
        index.set(k.as_bytes(), v.as_bytes()).unwrap();
    }
    index.set(b"c", b"33").unwrap();
    let keys: Vec<_> = index.keys().collect::<Result<_, _>>().unwrap();
    assert_eq!(keys, [b("c"), b("a"), b("b")]);
    let values: Vec<_> = index.values().collect::<Result<_, _>>().unwrap();
    assert_eq!(values, [b("33"), b("1"), b("2")]);
    assert_eq!(index.peekitem(false).unwrap(), Some((b("c"), b("33"))));
    assert_eq!(index.peekitem(true).unwrap(), Some((b("b"), b("2"))));
    assert_eq!(index.popitem(true).unwrap(), Some((b("b"), b("2"))));
    assert_eq!(index.setdefault(b"a", b"other").unwrap(), b("1"));
    assert_eq!(index.setdefault(b"d", b"4").unwrap(), b("4"));
    assert!(index.delete(b"a").unwrap());
    assert!(!index.delete(b"a").unwrap());
    let items: Vec<_> = index.items().collect::<Result<_, _>>().unwrap();
    assert_eq!(items, [(b("c"), b("33")), (b("d"), b("4"))]);
    let mut calls = 0;
    for _ in 0..2 {
        let v = index
            .memoize(b"m", || {
                calls += 1;
                Ok(b("computed"))
            })
            .unwrap();
        assert_eq!(v, b("computed"));
    }
    assert_eq!(calls, 1);
    index.push(b"q1", Some("jobs"), Side::Back).unwrap();
    assert_eq!(
        index.pull(Some("jobs"), Side::Front).unwrap().unwrap().1,
        b("q1")
    );
    assert_eq!(index.len().unwrap(), 3);
}

/// Runs this test binary as a child doing `role` on `dir`; returns its stdout.
fn child(test: &str, dir: &std::path::Path, role: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{role}:{}", dir.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Producers in 2 processes push 200 items each while consumers in 2 other processes pull
/// from the front: every item is consumed exactly once.
#[test]
fn processes_share_a_deque_without_loss_or_duplicates() {
    const TEST: &str = "processes_share_a_deque_without_loss_or_duplicates";
    const PER: usize = 200;
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (role, dir) = arg.split_once(':').unwrap();
        let d = Deque::open(dir).unwrap();
        if let Some(id) = role.strip_prefix("produce") {
            for i in 0..PER {
                if i % 2 == 0 {
                    d.append(format!("{id}-{i}").as_bytes()).unwrap();
                } else {
                    d.appendleft(format!("{id}-{i}").as_bytes()).unwrap();
                }
            }
        } else {
            // Consume until the producers are done and the deque is empty.
            let done = std::path::Path::new(dir).join("producers-done");
            loop {
                match d.popleft().unwrap() {
                    Some(v) => println!("GOT {}", String::from_utf8(v).unwrap()),
                    None if done.exists() => break,
                    None => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    Deque::open(dir.path()).unwrap(); // create the directory once
    let consumers: Vec<_> = (0..2).map(|_| child(TEST, dir.path(), "consume")).collect();
    let producers: Vec<_> = (0..2)
        .map(|i| child(TEST, dir.path(), &format!("produce{i}")))
        .collect();
    for p in producers {
        assert!(p.wait_with_output().unwrap().status.success());
    }
    std::fs::write(dir.path().join("producers-done"), b"").unwrap();
    let mut seen = HashSet::new();
    for c in consumers {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            // The first line follows the harness's "test name ... " without a newline.
            if let Some((_, item)) = line.split_once("GOT ") {
                assert!(seen.insert(item.to_string()), "{item} pulled twice");
            }
        }
    }
    let left = Deque::open(dir.path()).unwrap().to_vec().unwrap();
    assert!(left.is_empty(), "left over: {left:?}");
    let missing: Vec<_> = (0..2)
        .flat_map(|p| (0..PER).map(move |i| format!("{p}-{i}")))
        .filter(|k| !seen.contains(k))
        .collect();
    assert!(missing.is_empty(), "never pulled: {missing:?}");
}

/// Two processes insert into one index; both see every key, in one insertion order.
#[test]
fn processes_share_an_index() {
    const TEST: &str = "processes_share_an_index";
    if let Ok(arg) = std::env::var(CHILD_ENV) {
        let (role, dir) = arg.split_once(':').unwrap();
        let index = Index::open(dir).unwrap();
        for i in 0..100 {
            index
                .set(format!("{role}-{i:03}").as_bytes(), b"v")
                .unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    Index::open(dir.path()).unwrap();
    let kids: Vec<_> = ["a", "b"]
        .iter()
        .map(|r| child(TEST, dir.path(), r))
        .collect();
    for k in kids {
        assert!(k.wait_with_output().unwrap().status.success());
    }
    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.len().unwrap(), 200);
    let keys: Vec<_> = index.keys().collect::<Result<_, _>>().unwrap();
    // Each writer's keys appear in the order it inserted them.
    for role in ["a", "b"] {
        let mine: Vec<_> = keys
            .iter()
            .filter(|k| k.starts_with(role.as_bytes()))
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "{role} out of order");
    }
}

/// `remove`, `reverse`, `count`, set/delete at an index and comparisons against a
/// `VecDeque` model, step by step.
#[test]
fn deque_parity_operations_follow_a_model() {
    use std::collections::VecDeque;
    let dir = tempfile::tempdir().unwrap();
    let d = Deque::open(dir.path()).unwrap();
    let mut model: VecDeque<Vec<u8>> = VecDeque::new();
    let big = vec![9u8; 50_000]; // a value file, moved around by reverse
    for v in [b("a"), b("b"), big.clone(), b("b"), b("c")] {
        d.append(&v).unwrap();
        model.push_back(v);
    }
    enum Op {
        Set(i64, &'static str, bool),
        Delete(i64, bool),
        Remove(&'static str, bool),
        Reverse,
        Count(&'static str, u64),
    }
    let ops = [
        Op::Count("b", 2),
        Op::Set(0, "A", true),
        Op::Set(-1, "C", true),
        Op::Set(5, "x", false),
        Op::Set(-6, "x", false),
        Op::Reverse,
        Op::Remove("b", true),
        Op::Remove("zz", false),
        Op::Count("b", 1),
        Op::Delete(-1, true),
        Op::Delete(0, true),
        Op::Delete(9, false),
        Op::Reverse,
    ];
    let index = |model: &VecDeque<Vec<u8>>, i: i64| {
        let i = if i < 0 { model.len() as i64 + i } else { i };
        usize::try_from(i).ok().filter(|&i| i < model.len())
    };
    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Set(i, v, ok) => {
                assert_eq!(d.set(i, v.as_bytes()).unwrap(), ok, "step {step}");
                if let Some(i) = index(&model, i) {
                    model[i] = b(v);
                }
            }
            Op::Delete(i, ok) => {
                assert_eq!(d.delete(i).unwrap(), ok, "step {step}");
                if let Some(i) = index(&model, i) {
                    model.remove(i);
                }
            }
            Op::Remove(v, ok) => {
                assert_eq!(d.remove(v.as_bytes()).unwrap(), ok, "step {step}");
                if let Some(i) = model.iter().position(|m| m == v.as_bytes()) {
                    model.remove(i);
                }
            }
            Op::Reverse => {
                d.reverse().unwrap();
                model.make_contiguous().reverse();
            }
            Op::Count(v, n) => assert_eq!(d.count(v.as_bytes()).unwrap(), n, "step {step}"),
        }
        // (No Debug print: one item is 50 kB.)
        assert!(model == d.to_vec().unwrap(), "step {step}");
        assert!(d.equals(&model).unwrap(), "step {step}");
    }
    assert!(model == [b("b"), big.clone()]);
    let cases: &[(&[&[u8]], std::cmp::Ordering)] = &[
        (&[b"b", &big], std::cmp::Ordering::Equal),
        (&[b"b"], std::cmp::Ordering::Greater),
        (&[b"b", &big, b""], std::cmp::Ordering::Less),
        (&[b"b", b"\x09"], std::cmp::Ordering::Greater),
        (&[b"zzz"], std::cmp::Ordering::Less),
    ];
    for (other, want) in cases {
        assert_eq!(d.compare(other.iter()).unwrap(), *want, "{:?}", other.len());
    }
    assert!(
        d.cache().check(false).unwrap().is_empty(),
        "no orphan value file"
    );
}

/// Reverse iteration (over several pages), `equals`, `equals_map` and `transact` on `Index`.
#[test]
fn index_reverse_iteration_equality_and_transact() {
    let dir = tempfile::tempdir().unwrap();
    let a = Index::open(dir.path().join("a")).unwrap();
    let b_ = Index::open(dir.path().join("b")).unwrap();
    let keys: Vec<Vec<u8>> = (0..2500).map(|i| format!("k{i}").into_bytes()).collect();
    a.transact(|_| {
        for k in &keys {
            a.set(k, k)?;
        }
        Ok(())
    })
    .unwrap();
    let rev: Vec<Vec<u8>> = a.keys_rev().collect::<Result<_, _>>().unwrap();
    let mut want = keys.clone();
    want.reverse();
    assert_eq!(rev, want);
    let vals: Vec<Vec<u8>> = a.values_rev().take(2).collect::<Result<_, _>>().unwrap();
    assert_eq!(vals, [b("k2499"), b("k2498")]);
    assert_eq!(
        a.cache().iter_keys_rev().next().unwrap().unwrap(),
        b("k2499")
    );

    assert!(!a.equals(&b_).unwrap());
    for k in keys.iter().rev() {
        b_.set(k, k).unwrap();
    }
    assert!(!a.equals(&b_).unwrap(), "same items, other order");
    assert!(a.equals_map(keys.iter().rev().map(|k| (k, k))).unwrap());
    assert!(!a.equals_map(keys.iter().take(10).map(|k| (k, k))).unwrap());
    b_.clear().unwrap();
    for k in &keys {
        b_.set(k, k).unwrap();
    }
    assert!(a.equals(&b_).unwrap());
    b_.set(b"k7", b"changed").unwrap();
    assert!(!a.equals(&b_).unwrap());

    // A failing transaction leaves nothing behind.
    let r: hoard_store::Result<()> = a.transact(|tx| {
        tx.set(b"new", b"1", None, None)?;
        a.delete(b"k0")?;
        Err(hoard_store::Error::KeyNotFound)
    });
    assert!(r.is_err());
    assert!(!a.contains(b"new").unwrap());
    assert!(a.contains(b"k0").unwrap());
}

/// `pull_entry`/`peek_entry` return the item's expire time and tag.
#[test]
fn pull_and_peek_entries_carry_expire_time_and_tag() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_000.0);
    let cache = Cache::builder(dir.path())
        .clock(clock.shared())
        .open()
        .unwrap();
    cache
        .push(
            b"1",
            Some("q"),
            Side::Back,
            Some(Duration::from_secs(10)),
            Some("t"),
        )
        .unwrap();
    cache.push(b"2", Some("q"), Side::Back, None, None).unwrap();
    let (_, e) = cache.peek_entry(Some("q"), Side::Front).unwrap().unwrap();
    assert_eq!(
        (e.value, e.expire_time, e.tag),
        (b("1"), Some(1_010.0), Some("t".into()))
    );
    let (_, e) = cache.pull_entry(Some("q"), Side::Front).unwrap().unwrap();
    assert_eq!(
        (e.expire_time, e.tag.as_deref()),
        (Some(1_010.0), Some("t"))
    );
    let (_, e) = cache.pull_entry(Some("q"), Side::Back).unwrap().unwrap();
    assert_eq!((e.value, e.expire_time, e.tag), (b("2"), None, None));
    assert_eq!(cache.pull_entry(Some("q"), Side::Back).unwrap(), None);
}
