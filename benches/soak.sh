#!/usr/bin/env bash
# Soak: a bounded run of wrk at 256 connections against hoard (gateway mode, small size limit)
# over a mix of hits, misses (with evictions) and revalidations; reports errors (target 0),
# RSS at start and end (target: flat), and the store's volume against its size limit (target:
# never above the limit plus one object).
#
#   benches/soak.sh                     # DURATION=60s
#   DURATION=30s benches/soak.sh
#
# Environment:
#   DURATION     wrk -d (default 60s)
#   CONNECTIONS  wrk -c (default 256)
#   WARMUP       a first wrk run of the same mix before RSS is first sampled, so the in-memory
#                front (--memory-cache-size) is full when "start" is measured (default 10s)
#   SIZE_LIMIT   hoard --size-limit (default 20MiB)
#   NO_BUILD     1: do not run cargo build --release
#   KEEP         1: keep the run directory (configs, logs, cache) under target/soak/
#   HOARD_ARGS   extra hoard arguments (e.g. "--memory-cache-size 0")
#
# The mix (wrk Lua, per request): 60% one of 200 hot paths (8 KiB, max-age=3600: hits), 25% a
# random never-seen path (64 KiB, max-age=3600: misses that fill the store and force eviction),
# 15% one of 100 paths with max-age=1 and an ETag (16 KiB: stale entries revalidated with
# If-None-Match, answered 304 by the origin). The origin is nginx (installed with apt-get if
# missing). Everything listens on 127.0.0.1; the trap stops only the processes this script
# started, by PID. Exit status 1 when a target is missed.
set -euo pipefail

DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-256}
SIZE_LIMIT=${SIZE_LIMIT:-20MiB}
WARMUP=${WARMUP:-10s}
NO_BUILD=${NO_BUILD:-0}
KEEP=${KEEP:-0}
HOARD_ARGS=${HOARD_ARGS:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SOAK_DIR=$TARGET_DIR/soak

log() { printf '[soak %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 2; }
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }

command -v curl >/dev/null || apt_install curl || die "curl is required"
command -v wrk >/dev/null || apt_install wrk || die "could not install wrk"
NGINX=$(command -v nginx || true)
if [[ -z $NGINX ]]; then
    apt_install nginx-light || apt_install nginx || die "could not install nginx"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
if [[ $NO_BUILD != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
HOARD=$TARGET_DIR/release/hoard
[[ -x $HOARD ]] || die "$HOARD not built"

to_bytes() { # 20MiB -> bytes (B, KiB, MiB, GiB)
    local v=$1 n unit
    n=${v%%[!0-9]*}
    unit=${v#"$n"}
    case $unit in
        "" | B) echo "$n" ;;
        K | KiB) echo $((n << 10)) ;;
        M | MiB) echo $((n << 20)) ;;
        G | GiB) echo $((n << 30)) ;;
        *) die "SIZE_LIMIT: use B, KiB, MiB or GiB" ;;
    esac
}
LIMIT_BYTES=$(to_bytes "$SIZE_LIMIT")
LARGEST_OBJECT=$((64 << 10))

mkdir -p "$SOAK_DIR"
RUN=$(mktemp -d "$SOAK_DIR/run.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || ($rc -ne 0 && $rc -ne 1) ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

source "$ROOT/benches/lib/ports.sh"
wait_port() { # port pid logfile
    for _ in $(seq 150); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/hot/0" && return 0
        kill -0 "$2" 2>/dev/null || { tail -5 "$3" >&2 || true; die "process $2 exited"; }
        sleep 0.1
    done
    die "nothing answered on 127.0.0.1:$1"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# The heap alone: VmRSS also counts the pages of cache.db the store's connections have mapped
# (page cache, shared and reclaimable; up to its 64 MiB mmap_size).
anon_kib() { awk '/^RssAnon:/ {print $2}' "/proc/$1/status"; }
# The memory front's own count (`hoard_memory_front_bytes`, KiB; "?" from a build without it).
front_kib() {
    curl -s --max-time 5 "http://127.0.0.1:$ADMIN_PORT/metrics" |
        awk '$1 == "hoard_memory_front_bytes" { printf "%d", $2 / 1024; f = 1 } END { if (!f) print "?" }'
}

# --- origin data and nginx -------------------------------------------------------------------
DATA=$RUN/data
mkdir -p "$DATA/hot" "$DATA/reval"
head -c $((8 << 10)) /dev/urandom >"$DATA/hot.bin"
head -c $((64 << 10)) /dev/urandom >"$DATA/miss.bin"
head -c $((16 << 10)) /dev/urandom >"$DATA/reval.bin"
for i in $(seq 0 199); do ln "$DATA/hot.bin" "$DATA/hot/$i"; done
for i in $(seq 0 99); do ln "$DATA/reval.bin" "$DATA/reval/$i"; done

ORIGIN_PORT=$(pick_port)
USER_LINE=""
[[ $(id -u) -eq 0 ]] && USER_LINE="user root;"
mkdir -p "$RUN/nginx/tmp"
cat >"$RUN/nginx/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
daemon off;
pid $RUN/nginx/nginx.pid;
error_log $RUN/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $RUN/nginx/tmp/body;
    proxy_temp_path $RUN/nginx/tmp/proxy;
    fastcgi_temp_path $RUN/nginx/tmp/fastcgi;
    uwsgi_temp_path $RUN/nginx/tmp/uwsgi;
    scgi_temp_path $RUN/nginx/tmp/scgi;
    server {
        listen 127.0.0.1:$ORIGIN_PORT;
        root $DATA;
        location /hot/ { add_header Cache-Control "max-age=3600"; }
        location /reval/ { add_header Cache-Control "max-age=1"; etag on; }
        location /miss/ { rewrite ^ /miss.bin break; add_header Cache-Control "max-age=3600"; }
    }
}
EOF
"$NGINX" -c "$RUN/nginx/nginx.conf" -p "$RUN/nginx" &
PIDS+=($!)
wait_port "$ORIGIN_PORT" "$!" "$RUN/nginx/error.log"

# --- hoard -----------------------------------------------------------------------------------
HOARD_PORT=$(pick_port)
ADMIN_PORT=$(pick_port)
CACHE=$RUN/cache
"$HOARD" --listen "127.0.0.1:$HOARD_PORT" --upstream "http://127.0.0.1:$ORIGIN_PORT" \
    --admin "127.0.0.1:$ADMIN_PORT" --cache-dir "$CACHE" --size-limit "$SIZE_LIMIT" -q \
    $HOARD_ARGS 2>"$RUN/hoard.log" &
HOARD_PID=$!
PIDS+=("$HOARD_PID")
wait_port "$HOARD_PORT" "$HOARD_PID" "$RUN/hoard.log"
# Warm the hot and revalidated paths so the run starts from the steady state.
for i in $(seq 0 199); do curl -s -o /dev/null "http://127.0.0.1:$HOARD_PORT/hot/$i"; done
for i in $(seq 0 99); do curl -s -o /dev/null "http://127.0.0.1:$HOARD_PORT/reval/$i"; done

cat >"$RUN/mix.lua" <<'EOF'
-- 60% hot hits, 25% never-seen misses (evictions), 15% max-age=1 revalidations.
local counter = 0
function setup(thread)
    counter = counter + 1
    thread:set("id", counter)
end
function init(args)
    math.randomseed(os.time() * 1000 + id)
end
function request()
    local r = math.random(100)
    local path
    if r <= 60 then
        path = "/hot/" .. math.random(0, 199)
    elseif r <= 85 then
        path = "/miss/" .. id .. "-" .. math.random(1, 1000000000)
    else
        path = "/reval/" .. math.random(0, 99)
    end
    return wrk.format("GET", path)
end
EOF

log "warm-up: wrk -c$CONNECTIONS -d$WARMUP"
wrk -t2 -c"$CONNECTIONS" -d"$WARMUP" --timeout 10s -s "$RUN/mix.lua" \
    "http://127.0.0.1:$HOARD_PORT" >"$RUN/warmup.log" 2>&1
RSS_START=$(rss_kib "$HOARD_PID")
ANON_START=$(anon_kib "$HOARD_PID")
FRONT_START=$(front_kib)

# --- the run, sampling volume and RSS every 2 s ------------------------------------------------
log "wrk -t2 -c$CONNECTIONS -d$DURATION against hoard (size limit $SIZE_LIMIT)"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --timeout 10s -s "$RUN/mix.lua" \
    "http://127.0.0.1:$HOARD_PORT" >"$RUN/wrk.log" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
MAX_VOLUME=0
MAX_WAL=0
MAX_DISK=0
MAX_RSS=$RSS_START
MAX_ANON=$ANON_START
SAMPLES=0
while kill -0 "$WRK_PID" 2>/dev/null; do
    sleep 2
    v=$("$HOARD" stats --json --cache-dir "$CACHE" 2>/dev/null |
        sed -n 's/.*"bytes": *\([0-9]*\).*/\1/p' | head -1 || true)
    if [[ -n $v ]]; then
        SAMPLES=$((SAMPLES + 1))
        ((v > MAX_VOLUME)) && MAX_VOLUME=$v
    fi
    r=$(rss_kib "$HOARD_PID" 2>/dev/null || echo 0)
    ((r > MAX_RSS)) && MAX_RSS=$r
    a=$(anon_kib "$HOARD_PID" 2>/dev/null || echo 0)
    ((a > MAX_ANON)) && MAX_ANON=$a
    w=$(stat -c %s "$CACHE/cache.db-wal" 2>/dev/null || echo 0)
    ((w > MAX_WAL)) && MAX_WAL=$w
    # du exits 1 when files vanish under it (culling); its total is still printed.
    d=$({ du -sb "$CACHE" 2>/dev/null || true; } | cut -f1 | head -1)
    d=${d:-0}
    ((d > MAX_DISK)) && MAX_DISK=$d
done
wait "$WRK_PID" || true
RSS_END=$(rss_kib "$HOARD_PID")
ANON_END=$(anon_kib "$HOARD_PID")
FRONT_END=$(front_kib)
STATS=$("$HOARD" stats --json --cache-dir "$CACHE")
END_VOLUME=$(sed -n 's/.*"bytes": *\([0-9]*\).*/\1/p' <<<"$STATS" | head -1)
((END_VOLUME > MAX_VOLUME)) && MAX_VOLUME=$END_VOLUME
DISK=$({ du -sb "$CACHE" 2>/dev/null || true; } | cut -f1 | head -1)
DISK=${DISK:-0}
((DISK > MAX_DISK)) && MAX_DISK=$DISK
kill -0 "$HOARD_PID" 2>/dev/null || die "hoard died during the run (log $RUN/hoard.log)"

# --- summary ---------------------------------------------------------------------------------
REQUESTS=$(awk '/requests in/ {print $1}' "$RUN/wrk.log")
RPS=$(awk '/^Requests\/sec/ {print $2}' "$RUN/wrk.log")
NON2XX=$(awk -F': *' '/Non-2xx or 3xx responses/ {print $2}' "$RUN/wrk.log")
NON2XX=${NON2XX:-0}
SOCKET=$(sed -n 's/.*Socket errors: connect \([0-9]*\), read \([0-9]*\), write \([0-9]*\), timeout \([0-9]*\).*/\1 \2 \3 \4/p' "$RUN/wrk.log")
SOCKET_ERRORS=0
for n in $SOCKET; do SOCKET_ERRORS=$((SOCKET_ERRORS + n)); done
ERRORS=$((NON2XX + SOCKET_ERRORS))
BOUND=$((LIMIT_BYTES + LARGEST_OBJECT))
HOARD_ERRORS=$(grep -c -E ' (ERROR|WARN) ' "$RUN/hoard.log" || true)

echo
echo "soak: wrk -t2 -c$CONNECTIONS -d$DURATION after a $WARMUP warm-up, mix 60% hits / 25% misses+evictions / 15% revalidations"
printf '  requests        %s (%s req/s)\n' "${REQUESTS:-?}" "${RPS:-?}"
printf '  errors          %d (non-2xx %d, socket %s)   target 0\n' "$ERRORS" "$NON2XX" "${SOCKET:-0 0 0 0} (connect read write timeout)"
printf '  RSS             start %d KiB, end %d KiB, max %d KiB (with mapped cache.db pages)\n' "$RSS_START" "$RSS_END" "$MAX_RSS"
printf '  heap (RssAnon)  start %d KiB, end %d KiB, max %d KiB   target flat\n' "$ANON_START" "$ANON_END" "$MAX_ANON"
printf '  memory front    start %s KiB, end %s KiB counted (hoard_memory_front_bytes)\n' "$FRONT_START" "$FRONT_END"
printf '  volume          max %d B over %d samples, end %d B; limit %d B + one object %d B = %d B\n' \
    "$MAX_VOLUME" "$SAMPLES" "$END_VOLUME" "$LIMIT_BYTES" "$LARGEST_OBJECT" "$BOUND"
printf '  cache dir       max %d B on disk, end %d B (database, WAL, value files, directories)\n' "$MAX_DISK" "$DISK"
printf '  WAL             max %d B (cache.db-wal)\n' "$MAX_WAL"
printf '  hoard log       %d warning/error lines\n' "$HOARD_ERRORS"
echo "  hoard stats     $(tr -d '\n' <<<"$STATS" | head -c 300)"

FAIL=0
((ERRORS == 0)) || { echo "FAIL: $ERRORS errors"; FAIL=1; }
((MAX_VOLUME <= BOUND)) || { echo "FAIL: volume $MAX_VOLUME above $BOUND"; FAIL=1; }
# "Flat": the end is within 25% (and 16 MiB) of the start after warm-up.
if ((RSS_END > RSS_START * 5 / 4 && RSS_END - RSS_START > 16384)); then
    echo "FAIL: RSS grew from $RSS_START to $RSS_END KiB"
    FAIL=1
fi
((FAIL == 0)) && echo "soak: all targets met"
exit "$FAIL"
