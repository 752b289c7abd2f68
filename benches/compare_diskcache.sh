#!/usr/bin/env bash
# Compares hoard's store with Python diskcache 5.6.3 on the same workload
# (10,000 keys of 1 KiB: get hit, get miss, set, delete, LRU get), plus hoard's get at
# 1,000,000 keys. Installs diskcache in a virtualenv under target/. Release mode.
# Usage: benches/compare_diskcache.sh [--no-big]
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/diskcache-venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q diskcache==5.6.3

cargo build -q --release --example store_compare
work=$(mktemp -d "${TMPDIR:-/tmp}/hoard-compare.XXXXXX")
trap 'rm -rf "$work"' EXIT

./target/release/examples/store_compare "$work/rust" > "$work/rust.txt"
"$venv/bin/python" benches/compare_diskcache.py "$work/py" > "$work/py.txt"

# Targets: hoard time <= diskcache time / divisor.
printf '%-10s %14s %12s %10s %s\n' op diskcache_us hoard_us speedup target
while read -r op py; do
  rs=$(awk -v op="$op" '$1 == op { print $2 }' "$work/rust.txt")
  case "$op" in
    get_hit | set) goal=5 ;;
    lru_get) goal=20 ;;
    *) goal=- ;;
  esac
  awk -v op="$op" -v py="$py" -v rs="$rs" -v goal="$goal" 'BEGIN {
    s = py / rs
    verdict = (goal == "-") ? "-" : ((s >= goal) ? ">=" goal "x ok" : ">=" goal "x MISSED")
    printf "%-10s %14.3f %12.3f %9.1fx %s\n", op, py, rs, s, verdict
  }'
done < "$work/py.txt"

if [ "${1:-}" != "--no-big" ]; then
  rm -rf "$work/rust"
  ./target/release/examples/store_compare "$work/rust" 1000000 > "$work/big.txt"
  small=$(awk '$1 == "get_hit" { print $2 }' "$work/rust.txt")
  big=$(awk '$1 == "get_hit_1000000" { print $2 }' "$work/big.txt")
  awk -v s="$small" -v b="$big" 'BEGIN {
    r = b / s
    printf "hoard get_hit at 1M keys %.3f us vs 10k keys %.3f us: %.2fx (target <= 2x: %s)\n", b, s, r, (r <= 2 ? "ok" : "MISSED")
  }'
fi
