#!/usr/bin/env bash
# CPU per 1 KiB hit of two hoard builds, alternating: each round starts each build on a fresh
# cache directory (pinned to PROXY_CPU), warms one URL, and measures `perf stat -e task-clock`
# of the hoard process around `h2load --h1 -n REQUESTS -c 32` (pinned to WRK_CPU). Prints
# every round, then per build the median (min..max) of microseconds of CPU per request.
#
#   OLD_TARGET_DIR=/tmp/old-target ROUNDS=4 benches/hit_cpu_alternating.sh
#   OLD_TARGET_DIR=/tmp/old-target ROUNDS=4 CLIENT=wrk benches/hit_cpu_alternating.sh
#
# CLIENT=wrk measures around `wrk -t1 -c32 -d DURATION` (default 4s) instead of h2load: wrk
# handles an answer faster than h2load, so it sleeps between answers, and a server that wakes
# it once per answer pays for each wake-up (see README, `proxy::write_round`).
#
# LOGGED=1 runs both builds with their default logging instead of -q: an access line per
# request to stderr, redirected to a file in the run directory (what the line costs).
#
# OLD_TARGET_DIR holds release/hoard of the other build (e.g. `git worktree add /tmp/old <rev>
# && CARGO_TARGET_DIR=/tmp/old-target cargo build --release`); the new one is
# $CARGO_TARGET_DIR (or ./target)/release/hoard. Loopback only: the origin is a Python
# http.server on 127.0.0.1 (benches/lib/origin.py) answering 1 KiB with max-age=3600. Bounded: ROUNDS x 2 runs of
# REQUESTS requests, each under a timeout.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NEW=${CARGO_TARGET_DIR:-$ROOT/target}/release/hoard
OLD=${OLD_TARGET_DIR:?set OLD_TARGET_DIR to a target directory holding release/hoard}/release/hoard
ROUNDS=${ROUNDS:-4}
REQUESTS=${REQUESTS:-100000}
CLIENT=${CLIENT:-h2load}
DURATION=${DURATION:-4s}
LOGGED=${LOGGED:-0}
QUIET=(-q)
[[ $LOGGED == 1 ]] && QUIET=()
[[ $CLIENT == h2load || $CLIENT == wrk ]] || { echo "CLIENT must be h2load or wrk" >&2; exit 2; }
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
for t in perf "$CLIENT" python3 curl taskset; do command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 2; }; done
[[ -x $NEW && -x $OLD ]] || { echo "missing $NEW or $OLD" >&2; exit 2; }
source "$ROOT/benches/lib/ports.sh"
RUN=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT
ORIGIN_PORT=$(pick_port)
python3 "$ROOT/benches/lib/origin.py" "$ORIGIN_PORT" &
PIDS+=($!)
OUT=$RUN/results
for r in $(seq "$ROUNDS"); do
    for b in old new; do
        bin=$OLD; [[ $b == new ]] && bin=$NEW
        port=$(pick_port)
        taskset -c "$PROXY_CPU" "$bin" "${QUIET[@]}" --listen "127.0.0.1:$port" --cache-dir "$RUN/cache-$b-$r" \
            --upstream "http://127.0.0.1:$ORIGIN_PORT" 2>"$RUN/stderr-$b-$r" &
        hp=$!
        PIDS+=("$hp")
        for _ in $(seq 100); do curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/1k" && break; sleep 0.1; done
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/1k"
        url="http://127.0.0.1:$port/1k"
        if [[ $CLIENT == wrk ]]; then
            timeout 60 taskset -c "$WRK_CPU" wrk -t1 -c32 -d1s "$url" >/dev/null 2>&1
            out=$(timeout 120 perf stat -x, -e task-clock -p "$hp" -- \
                taskset -c "$WRK_CPU" wrk -t1 -c32 -d"$DURATION" "$url" 2>&1)
            n=$(awk '/requests in/ { print $1 }' <<<"$out")
            rps=$(awk '/^Requests\/sec/ { print $2 }' <<<"$out")
        else
            timeout 60 taskset -c "$WRK_CPU" h2load --h1 -n 20000 -c 32 "$url" >/dev/null 2>&1
            out=$(timeout 120 perf stat -x, -e task-clock -p "$hp" -- \
                taskset -c "$WRK_CPU" h2load --h1 -n "$REQUESTS" -c 32 "$url" 2>&1)
            n=$REQUESTS
            rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
        fi
        ms=$(awk -F, '$3 == "task-clock" { print $1 }' <<<"$out")
        us=$(awk -v m="$ms" -v n="$n" 'BEGIN { printf "%.1f", m * 1000 / n }')
        echo "round $r $b: $us us/request, $rps rps"
        echo "$b $us" >>"$OUT"
        kill "$hp"; wait "$hp" 2>/dev/null || true
    done
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
for b in old new; do
    awk -v b="$b" '$1 == b { print $2 }' "$OUT" | sort -n | awk -v b="$b" '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%s: median %.1f us per request (%.1f..%.1f) over %d rounds\n", b, m, v[1], v[NR], NR }'
done
