"""Same workload as crates/hoard-store/examples/store_compare.rs, on Python diskcache.
Prints `op wall_us_per_op cpu_us_per_op`."""
import os
import random
import sqlite3
import subprocess
import sys
import time

import diskcache


def key(i):
    return b"key-%08d" % i


def populate(cache, n, value):
    with cache.transact():
        for i in range(n):
            cache.set(key(i), value)


def cpu_seconds():
    t = os.times()
    return t.user + t.system


def timed(label, ops, f):
    """Prints `op wall_us_per_op cpu_us_per_op` (CPU = user + system, all threads)."""
    cpu = cpu_seconds()
    start = time.perf_counter()
    for i in range(ops):
        f(i)
    wall = (time.perf_counter() - start) * 1e6 / ops
    print(f"{label} {wall:.3f} {(cpu_seconds() - cpu) * 1e6 / ops:.3f}", flush=True)


def sqlite_floor(path, reads, value):
    """What SQLite alone costs for a set of an existing 1 KiB value: the UPDATE diskcache
    runs (row, store_time index), in its own BEGIN IMMEDIATE transaction, WAL, synchronous
    NORMAL, with Python's sqlite3. Neither store can do a durable set for less."""
    c = sqlite3.connect(path, isolation_level=None)
    c.execute("PRAGMA synchronous = NORMAL")

    def one(i):
        now = time.time()
        c.execute("BEGIN IMMEDIATE")
        c.execute(
            "UPDATE Cache SET store_time = ?, access_time = ?, value = ? WHERE key = ? AND raw = 1",
            (now, now, value, reads[i]),
        )
        c.execute("COMMIT")

    timed("sqlite_set_floor", 10_000, one)
    c.close()


FANOUT_PROCS = 4
FANOUT_SETS = 5_000
FANOUT_GETS = 25_000


def measure(ops, f):
    cpu = cpu_seconds()
    start = time.perf_counter()
    for i in range(ops):
        f(i)
    return time.perf_counter() - start, cpu_seconds() - cpu


def fanout_worker(d, wid):
    """Sets its own keys, then reads them; prints `set wall cpu`, `get wall cpu` (seconds).
    diskcache's default timeout (10 ms): a busy shard makes a set return False (counted on
    stderr) and a get a miss, as in hoard."""
    fc = diskcache.FanoutCache(d, shards=8)
    value = b"\x07" * 1024

    def k(i):
        return b"w%d-%06d" % (wid, i % FANOUT_SETS)

    failed = [0]

    def one_set(i):
        if not fc.set(k(i), value):
            failed[0] += 1

    w, c = measure(FANOUT_SETS, one_set)
    print(f"set {w} {c}", flush=True)
    rng = random.Random(wid)
    w, c = measure(FANOUT_GETS, lambda i: fc.get(k(rng.randrange(FANOUT_SETS))))
    print(f"get {w} {c}", flush=True)
    if failed[0]:
        print(f"worker {wid}: {failed[0]} sets timed out (fail-soft)", file=sys.stderr)


def fanout(d):
    """FanoutCache(8) under 4 processes at once: per operation, the slowest worker's wall
    time over all operations, and all workers' CPU time over all operations."""
    diskcache.FanoutCache(d, shards=8).close()
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--fanout-worker", d, str(i)], stdout=subprocess.PIPE
        )
        for i in range(FANOUT_PROCS)
    ]
    sums = {}
    for p in procs:
        out, _ = p.communicate()
        assert p.returncode == 0
        for line in out.decode().splitlines():
            op, w, c = line.split()
            prev = sums.get(op, (0.0, 0.0))
            sums[op] = (max(prev[0], float(w)), prev[1] + float(c))
    for op, ops in (("set", FANOUT_SETS), ("get", FANOUT_GETS)):
        w, c = sums[op]
        n = ops * FANOUT_PROCS
        print(f"fanout8_{op}_4p {w * 1e6 / n:.3f} {c * 1e6 / n:.3f}", flush=True)


def structures(d, value):
    """Deque, Index, memoize, Lock and 1 MiB values (value files)."""
    dq = diskcache.Deque(directory=d + "/deque")

    def push_pop(i):
        dq.append(value[: 64 + i % 64])
        dq.popleft()

    timed("deque_push_pop", 10_000, push_pop)
    ix = diskcache.Index(d + "/index")
    timed("index_set", 10_000, lambda i: ix.__setitem__(key(i), value))
    rng = random.Random(2)
    reads = [key(rng.randrange(10_000)) for _ in range(100_000)]
    timed("index_get", len(reads), lambda i: ix[reads[i]])
    memo = diskcache.Cache(d + "/memo")

    @memo.memoize()
    def compute(k):
        return value

    for i in range(1000):
        compute(key(i))
    timed("memoize_hit", 100_000, lambda i: compute(key(i % 1000)))
    lock = diskcache.Lock(memo, "lock", expire=60)

    def acquire_release(i):
        lock.acquire()
        lock.release()

    timed("lock_acquire_release", 10_000, acquire_release)
    files = diskcache.Cache(d + "/files", size_limit=1 << 40)
    big = b"\x09" * (1 << 20)
    timed("file_set_1mib", 200, lambda i: files.set(key(i % 50), big))
    timed("file_get_1mib", 500, lambda i: files.get(key(i % 50)))


def main():
    if sys.argv[1] == "--fanout-worker":
        fanout_worker(sys.argv[2], int(sys.argv[3]))
        return
    d = sys.argv[1]
    n = 10_000
    value = b"\x07" * 1024
    rng = random.Random(1)
    reads = [key(rng.randrange(n)) for _ in range(100_000)]
    misses = [b"miss-%d" % i for i in range(100_000)]

    cache = diskcache.Cache(d + "/lrs", size_limit=1 << 40)
    populate(cache, n, value)
    timed("get_hit", len(reads), lambda i: cache.get(reads[i]))
    timed("get_miss", len(misses), lambda i: cache.get(misses[i]))
    timed("set", 10_000, lambda i: cache.set(reads[i], value))
    sqlite_floor(d + "/lrs/cache.db", reads, value)
    timed("delete", 10_000, lambda i: cache.delete(key(i)))

    lru = diskcache.Cache(d + "/lru", size_limit=1 << 40, eviction_policy="least-recently-used")
    populate(lru, n, value)
    timed("lru_get", len(reads), lambda i: lru.get(reads[i]))
    structures(d, value)
    fanout(d + "/fanout")


if __name__ == "__main__":
    main()
