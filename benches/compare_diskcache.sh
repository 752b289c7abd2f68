#!/usr/bin/env bash
# Compares hoard's store with Python diskcache 5.6.3 on the same workload
# (10,000 keys of 1 KiB: get hit, get miss, set, delete, LRU get), plus hoard's get at
# 1,000,000 keys. Installs diskcache in a virtualenv under target/. Release mode.
# Each side runs RUNS times (default 3) and the fastest run per operation counts, which
# filters out noise from other processes on a shared machine.
# Usage: [RUNS=3] benches/compare_diskcache.sh [--no-big]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/diskcache-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q diskcache==5.6.3

cargo build -q --release --example store_compare
work=$(mktemp -d "${TMPDIR:-/tmp}/hoard-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

runs=${RUNS:-3}
for i in $(seq "$runs"); do
  rm -rf "$work/rust" "$work/py"
  ./target/release/examples/store_compare "$work/rust" >> "$work/rust.all"
  "$venv/bin/python" benches/compare_diskcache.py "$work/py" >> "$work/py.all"
done
# Fastest run per operation (column 2: wall, column 3: CPU), in first-seen order.
best() { awk -v c="$2" '!($1 in m) { order[++n] = $1; m[$1] = $c } $c < m[$1] { m[$1] = $c } END { for (i = 1; i <= n; i++) print order[i], m[order[i]] }' "$1"; }
echo "fastest of $runs runs each; load average: $(cut -d' ' -f1-3 /proc/loadavg)"

table() {
  local col=$1 title=$2
  best "$work/rust.all" "$col" > "$work/rust.txt"
  best "$work/py.all" "$col" > "$work/py.txt"
  echo
  echo "== $title (microseconds per operation) =="
  printf '%-10s %14s %12s %10s %s\n' op diskcache_us hoard_us speedup target
  while read -r op py; do
    rs=$(awk -v op="$op" '$1 == op { print $2 }' "$work/rust.txt")
    case "$op" in
      get_hit | set) goal=5 ;;
      lru_get) goal=20 ;;
      *) goal=- ;;
    esac
    awk -v op="$op" -v py="$py" -v rs="$rs" -v goal="$goal" 'BEGIN {
      s = (rs > 0) ? py / rs : 0
      verdict = (goal == "-") ? "-" : ((s >= goal) ? ">=" goal "x ok" : ">=" goal "x MISSED")
      printf "%-10s %14.3f %12.3f %9.1fx %s\n", op, py, rs, s, verdict
    }'
  done < "$work/py.txt"
}
table 2 "wall time"
table 3 "CPU time (user + system, all threads)"

if [ "${1:-}" != "--no-big" ]; then
  rm -rf "$work/rust"
  ./target/release/examples/store_compare "$work/rust" 1000000 > "$work/big.txt"
  echo
  for col in 2 3; do
    small=$(best "$work/rust.all" "$col" | awk '$1 == "get_hit" { print $2 }')
    big=$(awk -v c="$col" '$1 == "get_hit_1000000" { print $c }' "$work/big.txt")
    awk -v s="$small" -v b="$big" -v what="$([ "$col" = 2 ] && echo wall || echo cpu)" 'BEGIN {
      r = b / s
      printf "hoard get_hit (%s) at 1M keys %.3f us vs 10k keys %.3f us: %.2fx (target <= 2x: %s)\n", what, b, s, r, (r <= 2 ? "ok" : "MISSED")
    }'
  done
fi
