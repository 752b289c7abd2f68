#!/usr/bin/env bash
# Compares hoard's store with Python diskcache 5.6.3 on the same workload: 10,000 keys of
# 1 KiB (get hit, get miss, set, delete, LRU get), Deque append+popleft, Index set/get,
# memoize hits, Lock acquire+release, FanoutCache(8) set/get from 4 processes at once,
# 1 MiB values (value files) set/get; plus the floor SQLite itself sets for one `set` (the
# same UPDATE in its own transaction, from Python's sqlite3), and hoard's get at 1,000,000
# keys (see below). Release build. Installs diskcache in a virtualenv in cargo's target
# directory.
#
# ROUNDS rounds (default 3), hoard and diskcache alternating within each round; each figure
# is the MEDIAN of the rounds with the spread (min..max). Never the best run: on a shared
# machine the spread says how much the figures moved.
# Usage: [ROUNDS=3] [CARGO_TARGET_DIR=...] benches/compare_diskcache.sh [--no-big]
set -euo pipefail
cd "$(dirname "$0")/.."
# Binaries and the virtualenv live in cargo's target directory ($CARGO_TARGET_DIR if set).
TARGET_DIR=${CARGO_TARGET_DIR:-target}

venv=$TARGET_DIR/diskcache-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q diskcache==5.6.3

cargo build -q --release -p hoard-store --example store_compare
bin=$TARGET_DIR/release/examples/store_compare
work=$(mktemp -d "${TMPDIR:-/tmp}/hoard-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

rounds=${ROUNDS:-${RUNS:-3}}
for i in $(seq "$rounds"); do
  rm -rf "$work/rust" "$work/py"
  "$bin" "$work/rust" >> "$work/rust.all"
  "$venv/bin/python" benches/compare_diskcache.py "$work/py" >> "$work/py.all"
done
# Per operation, in first-seen order: `op median min max` of column $2 (2: wall, 3: CPU).
stat() {
  awk -v c="$2" '
    { if (!($1 in n)) order[++k] = $1; v[$1, ++n[$1]] = $c }
    END {
      for (i = 1; i <= k; i++) {
        op = order[i]; m = n[op]
        for (a = 1; a <= m; a++) s[a] = v[op, a]
        for (a = 2; a <= m; a++) { x = s[a]; b = a - 1; while (b > 0 && s[b] > x) { s[b + 1] = s[b]; b-- } s[b + 1] = x }
        med = (m % 2) ? s[(m + 1) / 2] : (s[m / 2] + s[m / 2 + 1]) / 2
        print op, med, s[1], s[m]
      }
    }' "$1"
}
echo "median of $rounds rounds (spread min..max); $(nproc) cores; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

table() {
  local col=$1 title=$2
  stat "$work/rust.all" "$col" > "$work/rust.txt"
  stat "$work/py.all" "$col" > "$work/py.txt"
  echo
  echo "== $title (microseconds per operation) =="
  printf '%-22s %24s %24s %9s %s\n' op diskcache_us hoard_us speedup target
  while read -r op py pmin pmax; do
    line=$(awk -v op="$op" '$1 == op { print $2, $3, $4 }' "$work/rust.txt")
    if [ -z "$line" ]; then
      printf '%-22s %10.3f (%.2f..%.2f) %24s %9s %s\n' "$op" "$py" "$pmin" "$pmax" - - "(SQLite alone, Python sqlite3: the floor for a durable set)"
      continue
    fi
    case "$op" in
      get_hit | set) goal=5 ;;
      delete) goal=3 ;;
      lru_get) goal=20 ;;
      *) goal=- ;;
    esac
    echo "$line" | awk -v op="$op" -v py="$py" -v pmin="$pmin" -v pmax="$pmax" -v goal="$goal" '{
      rs = $1
      s = (rs > 0) ? py / rs : 0
      verdict = (goal == "-") ? "-" : ((s >= goal) ? ">=" goal "x ok" : ">=" goal "x MISSED")
      printf "%-22s %10.3f (%.2f..%.2f) %10.3f (%.2f..%.2f) %8.1fx %s\n", op, py, pmin, pmax, rs, $2, $3, s, verdict
    }'
  done < "$work/py.txt"
}
table 2 "wall time"
table 3 "CPU time (user + system, all threads; 10 ms ticks)"

if [ "${1:-}" != "--no-big" ]; then
  # Get at 1M keys against get at 10k keys. The read pattern is uniform over all keys in
  # both, so at 1M almost every read is the key's first and comes from SQLite, while at 10k
  # a key is read 10 times and 9 of those come from the memory layer: that ratio compares
  # memory with disk, not how the store scales. The index path is compared with the memory
  # layer off in both runs (STORE_COMPARE_MEMORY=0); the default configuration is shown too.
  rm -rf "$work/rust"
  "$bin" "$work/rust" 1000000 > "$work/big.txt"
  # Index path: both runs measured in steady state (after loading, 3 s for the background
  # checkpoint, then sync(2): right after writing 1.4 GB the kernel's writeback competes with
  # the reads, which measures the disk, not the index).
  rm -rf "$work/rust"
  STORE_COMPARE_SETTLE=3 STORE_COMPARE_MEMORY=0 "$bin" "$work/rust" 1000000 > "$work/big0.txt"
  for i in $(seq "$rounds"); do
    rm -rf "$work/rust"
    STORE_COMPARE_CACHE_ONLY=1 STORE_COMPARE_SETTLE=3 STORE_COMPARE_MEMORY=0 "$bin" "$work/rust" >> "$work/small0.all"
  done
  echo
  ratio() { # label small big col target
    awk -v s="$2" -v b="$3" -v what="$1" -v col="$([ "$4" = 2 ] && echo wall || echo cpu)" -v t="$5" 'BEGIN {
      r = b / s
      printf "%s (%s): 1M keys %.3f us vs 10k keys %.3f us (median): %.2fx%s\n", what, col, b, s, r, (t == "" ? "" : (r <= t ? " (target <= " t "x: ok)" : " (target <= " t "x: MISSED)"))
    }'
  }
  for col in 2 3; do
    small0=$(stat "$work/small0.all" "$col" | awk '$1 == "get_hit" { print $2 }')
    big0=$(awk -v c="$col" '$1 == "get_hit_1000000" { print $c }' "$work/big0.txt")
    ratio "get_hit, index path (memory layer off)" "$small0" "$big0" "$col" 2
  done
  for col in 2 3; do
    small=$(stat "$work/rust.all" "$col" | awk '$1 == "get_hit" { print $2 }')
    big=$(awk -v c="$col" '$1 == "get_hit_1000000" { print $c }' "$work/big.txt")
    ratio "get_hit, default (memory layer on; ~95% first reads at 1M)" "$small" "$big" "$col" ""
  done
fi
