"""Same workload as examples/store_compare.rs, on Python diskcache. Prints `op us_per_op`."""
import os
import random
import sqlite3
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


def main():
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


if __name__ == "__main__":
    main()
