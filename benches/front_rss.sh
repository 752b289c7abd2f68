#!/usr/bin/env bash
# The memory front's count against the process's memory, by body size: for each size, a fresh
# hoard (gateway mode, --admin) stores N URLs of that size (misses), then reads them all once
# (hits read from the store, each kept in the front), and the growth of its RSS over the read
# pass is set against the growth of `hoard_memory_front_bytes` (what the front counts, what
# `memory-cache-size` bounds). Prints one line per size and the ratio (target: within 15%).
#
#   benches/front_rss.sh
#   SIZES="1024 65536" COUNTED_MIB=64 NO_BUILD=1 benches/front_rss.sh
#   HOARD=/path/to/hoard benches/front_rss.sh        # another build (needs the gauge)
#
# Environment:
#   SIZES        body sizes in bytes (default "1024 16384 65536 262144 1048576")
#   COUNTED_MIB  about how many MiB the front should count after the read pass (default 128);
#                N = COUNTED_MIB / (size + 4 KiB), at least 32
#   HOARD_ARGS   extra hoard arguments (e.g. "--threads 2")
#   HOARD_ENV    environment for hoard (e.g. "MALLOC_ARENA_MAX=1")
#   NO_BUILD     1: do not run cargo build --release
#
# RSS is VmRSS, and RssAnon (heap: what the front's entries live in; VmRSS also has the store's
# mmap of cache.db, which a read pass through SQLite grows). Loopback only: the origin is a
# Python http.server on 127.0.0.1 (benches/lib/origin.py) answering /SIZE/i with SIZE bytes, max-age=3600; clients are
# h2load (one connection, each URL once per pass). Bounded: two passes of N requests per size,
# each under a timeout. Stops only the processes it started, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SIZES=${SIZES:-1024 16384 65536 262144 1048576}
COUNTED_MIB=${COUNTED_MIB:-128}
HOARD_ARGS=${HOARD_ARGS:-}
HOARD_ENV=${HOARD_ENV:-}
NO_BUILD=${NO_BUILD:-0}
log() { printf '[front_rss %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 2; }
for t in h2load python3 curl; do command -v "$t" >/dev/null || die "needs $t"; done
if [[ $NO_BUILD != 1 && -z ${HOARD:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bin hoard)
fi
HOARD=${HOARD:-$TARGET_DIR/release/hoard}
[[ -x $HOARD ]] || die "$HOARD not built"
source "$ROOT/benches/lib/ports.sh"
RUN=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

ORIGIN_PORT=$(pick_port)
python3 "$ROOT/benches/lib/origin.py" "$ORIGIN_PORT" &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/1/0" && break; sleep 0.1; done

kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
front() { curl -s --max-time 5 "http://127.0.0.1:$1/metrics" | awk '$1 == "hoard_memory_front_bytes" { print $2 }'; }
pass() { # port urls-file n
    timeout 600 h2load --h1 -c 1 -m 1 -n "$3" -i "$2" >"$RUN/h2load.out" 2>&1 || die "h2load failed: $(tail -3 "$RUN/h2load.out")"
    grep -q "succeeded, 0 errored" "$RUN/h2load.out" || grep -q "$3 succeeded" "$RUN/h2load.out" ||
        die "requests failed: $(grep -E 'requests:' "$RUN/h2load.out")"
}

printf '%-8s %6s %10s %10s %10s %9s %9s %9s %8s %8s\n' size urls idle_MiB fill_MiB front_MiB dRSS_MiB dAnon_MiB RSS_MiB rss/cnt anon/cnt
for size in $SIZES; do
    n=$(((COUNTED_MIB << 20) / (size + 4096)))
    ((n < 32)) && n=32
    port=$(pick_port)
    admin=$(pick_port)
    env $HOARD_ENV "$HOARD" -q --listen "127.0.0.1:$port" --admin "127.0.0.1:$admin" \
        --cache-dir "$RUN/cache-$size" --size-limit 4GiB --upstream "http://127.0.0.1:$ORIGIN_PORT" \
        $HOARD_ARGS 2>"$RUN/hoard-$size.log" &
    hp=$!
    PIDS+=("$hp")
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$admin/healthz" && break; sleep 0.1; done
    rss0=$(kib "$hp" VmRSS)
    seq 0 $((n - 1)) | sed "s|^|http://127.0.0.1:$port/$size/|" >"$RUN/urls"
    pass "$port" "$RUN/urls" "$n" # misses: stored (some fills enter the front)
    sleep 1                       # the last group commit
    rss1=$(kib "$hp" VmRSS); anon1=$(kib "$hp" RssAnon); f1=$(front "$admin")
    pass "$port" "$RUN/urls" "$n" # hits: read from the store into the front
    rss2=$(kib "$hp" VmRSS); anon2=$(kib "$hp" RssAnon); f2=$(front "$admin")
    awk -v s="$size" -v n="$n" -v r0="$rss0" -v f1="$f1" -v f2="$f2" -v r1="$rss1" -v r2="$rss2" -v a1="$anon1" -v a2="$anon2" 'BEGIN {
        df = (f2 - f1) / 1048576; dr = (r2 - r1) / 1024; da = (a2 - a1) / 1024
        printf "%-8s %6d %10.1f %10.1f %10.1f %9.1f %9.1f %9.1f %8.2f %8.2f\n", s, n, r0 / 1024, r1 / 1024, f2 / 1048576, dr, da, r2 / 1024,
            (df > 0 ? dr / df : 0), (df > 0 ? da / df : 0) }'
    log "size $size: SQLite connections $(ls -l /proc/$hp/fd 2>/dev/null | grep -c 'cache.db$'), threads $(ls /proc/$hp/task | wc -l), front $f1 -> $f2 B, VmRSS $rss1 -> $rss2 KiB, RssAnon $anon1 -> $anon2 KiB"
    kill "$hp"; wait "$hp" 2>/dev/null || true
    rm -rf "$RUN/cache-$size"
done
echo "hoard: $HOARD ${HOARD_ENV:+(env $HOARD_ENV)} ${HOARD_ARGS:+(args $HOARD_ARGS)}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "idle: VmRSS before the fill pass; fill: after it (fills enter the front too, up to a sixteenth)"
echo "dRSS, dAnon: growth over the read pass, against the growth of hoard_memory_front_bytes (front_MiB: after it)"
