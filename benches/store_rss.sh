#!/usr/bin/env bash
# What random hits read from the store cost in memory: a hoard with the memory front off
# (every hit a SQLite read) serves random hits over URLS stored URLs from 32 connections for
# DURATION; the table gives, per build, the median over the rounds (min..max) of its RssAnon
# at the end (the heap: SQLite's page caches live there), of `hoard_sqlite_heap_bytes` (what
# SQLite itself counts), of the SQLite connections open (`cache.db` descriptors), of the
# rps and of the CPU per request (perf stat task-clock over the run / wrk's request count).
#
#   benches/store_rss.sh
#   OLD_HOARD=/path/to/old/hoard ROUNDS=3 benches/store_rss.sh    # two builds, alternating
#   URLS=200000 DURATION=30s NO_BUILD=1 benches/store_rss.sh
#
# Environment:
#   HOARD       the build to measure (default $CARGO_TARGET_DIR/release/hoard, built unless NO_BUILD=1)
#   OLD_HOARD   a second build: every round runs both, the order reversed every other round
#               (a build without the gauge shows "-" in its column)
#   URLS        stored URLs (default 60000: about 130 MB of cache.db, twice its 64 MiB mmap)
#   ROUNDS      rounds (default 3)
#   DURATION    wrk -d of each run (default 20s)
#   HOARD_ARGS  hoard's arguments besides listen/cache/upstream (default "--memory-cache-size 0";
#               HOARD_ARGS="" measures the default memory front)
#   PROXY_CPU / WRK_CPU  cores for hoard and the origin / for wrk (default 0 / 1)
#
# The store is filled once (wrk -c16 over the URLs in order until each was asked for) into a
# template; each run starts on a fresh copy of it, so every run reads the same database.
# OLD_HOARD fills it when given: the store persists its SQLite settings, so a build that sets
# them (the page cache) must not leave them for a build that does not. Loopback only: the origin is benches/lib/origin.py on 127.0.0.1. Bounded: every
# wrk run has -d and a timeout; the fill has FILL_TIME (default 300 s). Stops only the
# processes it started, by PID.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
URLS=${URLS:-60000}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
FILL_TIME=${FILL_TIME:-300}
HOARD_ARGS=${HOARD_ARGS---memory-cache-size 0}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
NO_BUILD=${NO_BUILD:-0}
log() { printf '[store_rss %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 2; }
for t in wrk python3 curl perf; do command -v "$t" >/dev/null || die "needs $t"; done
[[ $URLS =~ ^[1-9][0-9]*$ && $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "URLS and ROUNDS must be positive integers"
if [[ $NO_BUILD != 1 && -z ${HOARD:-} ]]; then
    (cd "$ROOT" && cargo build --release --quiet --bin hoard)
fi
HOARD=${HOARD:-$TARGET_DIR/release/hoard}
[[ -x $HOARD ]] || die "$HOARD not built"
[[ -z ${OLD_HOARD:-} || -x $OLD_HOARD ]] || die "$OLD_HOARD is not executable"
PIN_PROXY=(taskset -c "$PROXY_CPU")
PIN_WRK=(taskset -c "$WRK_CPU")
taskset -c "$PROXY_CPU" true 2>/dev/null && taskset -c "$WRK_CPU" true 2>/dev/null || { PIN_PROXY=(); PIN_WRK=(); log "not pinned"; }
source "$ROOT/benches/lib/ports.sh"
RUN=$(mktemp -d "$TARGET_DIR/store-rss.XXXXXX")
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$RUN"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
read -r -a EXTRA <<<"$HOARD_ARGS"

ORIGIN_PORT=$(pick_port)
"${PIN_PROXY[@]}" python3 "$ROOT/benches/lib/origin.py" "$ORIGIN_PORT" &
PIDS+=($!)
for _ in $(seq 50); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ORIGIN_PORT/" && break; sleep 0.1; done

start_hoard() { # binary cache-dir -> sets HP, PORT, ADMIN
    PORT=$(pick_port)
    ADMIN=$(pick_port)
    "${PIN_PROXY[@]}" "$1" -q --listen "127.0.0.1:$PORT" --admin "127.0.0.1:$ADMIN" --cache-dir "$2" \
        --size-limit 8GiB --upstream "http://127.0.0.1:$ORIGIN_PORT" "${EXTRA[@]}" 2>>"$RUN/hoard.log" &
    HP=$!
    PIDS+=("$HP")
    for _ in $(seq 100); do curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$ADMIN/healthz" && return; sleep 0.1; done
    die "hoard did not start: $(tail -3 "$RUN/hoard.log")"
}
stop_hoard() { kill "$HP" 2>/dev/null || true; wait "$HP" 2>/dev/null || true; }

cat >"$RUN/fill.lua" <<LUA
local n = 0
function request()
    n = n + 1
    if n > $URLS then n = 1 end
    return wrk.format("GET", "/1k?r=" .. n)
end
LUA
cat >"$RUN/rand.lua" <<LUA
function init() math.randomseed(os.time()) end
function request() return wrk.format("GET", "/1k?r=" .. math.random(1, $URLS)) end
LUA

# The fill: wrk until the store holds every URL (each URL is asked for in order, again and
# again, so the first pass stores them all; the rest are hits).
start_hoard "${OLD_HOARD:-$HOARD}" "$RUN/template"
log "filling $URLS URLs"
deadline=$((SECONDS + FILL_TIME))
while :; do
    timeout 60 "${PIN_WRK[@]}" wrk -t1 -c16 -d10s -s "$RUN/fill.lua" "http://127.0.0.1:$PORT/" >/dev/null
    have=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "hoard_store_entries" { print $2 }')
    ((${have:-0} >= URLS)) && break
    ((SECONDS < deadline)) || die "the fill stored ${have:-0} of $URLS URLs in ${FILL_TIME}s"
done
stop_hoard
log "filled: $(du -sh "$RUN/template" | cut -f1)"

BUILDS=(new)
[[ -n ${OLD_HOARD:-} ]] && BUILDS=(old new)
bin_of() { if [[ $1 == old ]]; then echo "$OLD_HOARD"; else echo "$HOARD"; fi; }
: >"$RUN/results"
for r in $(seq "$ROUNDS"); do
    order=("${BUILDS[@]}")
    ((r % 2 == 0)) && order=($(printf '%s\n' "${BUILDS[@]}" | tac))
    for b in "${order[@]}"; do
        rm -rf "$RUN/run" && cp -r "$RUN/template" "$RUN/run"
        start_hoard "$(bin_of "$b")" "$RUN/run"
        perf stat -e task-clock -x, -p "$HP" -o "$RUN/perf" -- sleep "$(( ${DURATION%s} + 1 ))" &
        PS=$!
        out=$(timeout $(( ${DURATION%s} + 30 )) "${PIN_WRK[@]}" wrk -t1 -c32 -d"$DURATION" -s "$RUN/rand.lua" "http://127.0.0.1:$PORT/")
        wait "$PS" || true
        n=$(awk '/requests in/ { print $1 }' <<<"$out")
        rps=$(awk '/Requests\/sec/ { print $2 }' <<<"$out")
        ms=$(awk -F, '/task-clock/ { print $1 }' "$RUN/perf")
        anon=$(awk '$1 == "RssAnon:" { print $2 }' "/proc/$HP/status")
        heap=$(curl -s --max-time 5 "http://127.0.0.1:$ADMIN/metrics" | awk '$1 == "hoard_sqlite_heap_bytes" { print $2 }')
        conns=$(ls -l "/proc/$HP/fd" | grep -c 'cache\.db$' || true)
        printf '%s %d %s %s %s %s %s\n' "$b" "$r" "$rps" "$(awk -v m="$ms" -v n="$n" 'BEGIN { printf "%.1f", m * 1000 / n }')" \
            "$((anon / 1024))" "${heap:--}" "$conns" >>"$RUN/results"
        log "$b round $r: $(tail -1 "$RUN/results")"
        stop_hoard
    done
done

echo "store_rss: $URLS URLs, $ROUNDS rounds of $DURATION, wrk -t1 -c32 random hits, hoard ${HOARD_ARGS}; $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-5s %-24s %-22s %-26s %-14s %-20s\n' build "RssAnon MiB" "SQLite heap MiB" "cache.db descriptors" rps "CPU us/request"
for b in "${BUILDS[@]}"; do
    awk -v b="$b" '
        function med(col,   n, i, j, t, v) {
            n = 0
            for (i = 1; i <= rows; i++) if (vals[i, col] != "-") v[++n] = vals[i, col] + 0
            if (n == 0) return "-"
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            return sprintf("%.1f (%.1f..%.1f)", (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), v[1], v[n])
        }
        $1 == b { rows++; vals[rows, 3] = $3; vals[rows, 4] = $4; vals[rows, 5] = $5;
                  vals[rows, 6] = ($6 == "-" ? "-" : $6 / 1048576); vals[rows, 7] = $7 }
        END { printf "%-5s %-24s %-22s %-26s %-14s %-20s\n", b, med(5), med(6), med(7), med(3), med(4) }
    ' "$RUN/results"
done
echo "new: $HOARD${OLD_HOARD:+; old: $OLD_HOARD}"
