#!/usr/bin/env bash
# hoard vs nginx proxy_cache (and varnish and squid, if installable) under wrk: cached hits (1 KiB, 1 MiB),
# misses (every request a new URL, stored by every cache), and hits over many stored URLs in
# random order.
#
#   benches/proxy_wrk.sh                      # defaults: DURATION=10s ROUNDS=5
#   ROUNDS=1 DURATION=2s RANDOM_URLS=2000 VARNISH=0 RSS_TEST=0 benches/proxy_wrk.sh   # smoke run
#
# Environment:
#   DURATION   wrk -d per run (default 10s)
#   ROUNDS     rounds (default 5; REPEAT is accepted as an old name): every round runs every
#              (scenario, server) pair once, the order of the servers reversed every other
#              round; the table shows the MEDIAN of the rounds with the spread (min..max)
#   SCENARIOS  comma-separated subset of: 1k c32, 1k c1, 1m c32, 1m c1, miss c32, rand c32,
#              h2 c4 (default: all). "miss": GET /1k?m=<run>-<counter>, a new URL every request
#              (wrk Lua), fetched from the origin and stored by hoard and nginx alike. "rand": GET
#              /1k?r=<math.random(1, RANDOM_URLS)> after all RANDOM_URLS URLs were stored.
#              "h2 cN": 1 KiB hits over HTTP/2 (h2c, prior knowledge) with h2load -cN -m32 (32
#              streams per connection), hoard gateway mode against nginx `listen ... http2`
#              with the same proxy_cache; p50/p99 from h2load's per-request log.
#   RANDOM_URLS  URLs stored for "rand" (default 100000)
#   FILL_TIME  seconds the fill of RANDOM_URLS URLs (wrk, 32 connections, each URL requested
#              exactly once) may take per server (default 600)
#   VARNISH    auto (default: use varnishd, installing it if possible) | 0 (skip)
#   SQUID      auto (default: use squid, installing it if possible) | 0 (skip). Squid is a
#              forward proxy like hoard: it gets the same absolute-form requests as hoard-fwd
#              (wrk Lua), one worker (`workers 1`), a 256 MiB memory cache and a ufs cache_dir
#              (its defaults: small objects served from memory, everything written to disk)
#   RSS_TEST   1 (default): peak RSS of hoard streaming a 1 GiB miss | 0 (skip)
#   NO_BUILD   1: do not run cargo build --release
#   PROXY_CPU / WRK_CPU  cores for the servers / for wrk (default 0 / 1); pinning with taskset
#              when it is installed and both cores exist, else nothing is pinned (said in the output);
#              a list such as PROXY_CPU=0,1 gives the servers two cores
#   NGINX_WORKERS  nginx's worker_processes (default 1; with two server cores, 2 against hoard's
#              `--threads auto`, which counts the cores taskset leaves it)
#   MAX_TIME   seconds the whole script may run (default: estimated from the runs, plus 15 min);
#              a watchdog ends it (and everything it started) after that
#   HOARD_QUIET 1 (default): the measured hoard runs with -q (no access lines, like nginx's
#              access_log off) | 0: hoard's default logging, one access line per request to
#              stderr (redirected to a file in the run directory)
#   HOARD_ARGS extra arguments for the measured hoard (word-split), e.g.
#              HOARD_ARGS="--admin 127.0.0.1:0" to measure with the dashboard listening
#   KEEP       1: keep the run directory (configs, logs) under $CARGO_TARGET_DIR/bench-proxy/
#   CPU        1: measure CPU time per request of every wrk run with `perf stat -e task-clock`
#              on the server's processes and, separately, on the origin's (which shares the
#              servers' core): a second table shows the median microseconds per request of
#              each (task-clock over wrk's request count), independent of how busy the machine is
#   PERF       a scenario such as "1k c32" or "miss c32" (optionally "... fwd" for forward mode):
#              after the measured runs, one extra hoard run of that scenario under
#              `perf record -g -p PID`, and the top 20 symbols of `perf report --no-children
#              --sort symbol` are printed (not part of the table)
#
# Everything listens on 127.0.0.1 only. All servers (origin, hoard, nginx, varnish) are pinned to
# PROXY_CPU and wrk to WRK_CPU; only one proxy is loaded at a time. Every wrk run has -d and a
# timeout. The trap stops only the processes this script started, by PID.
set -euo pipefail

INVOCATION="$0${*:+ $*}"
DURATION=${DURATION:-10s}
ROUNDS=${ROUNDS:-${REPEAT:-5}}
SCENARIO_LIST=${SCENARIOS:-1k c32,1k c1,1m c32,1m c1,miss c32,rand c32,h2 c4}
RANDOM_URLS=${RANDOM_URLS:-100000}
MAX_TIME=${MAX_TIME:-}
VARNISH=${VARNISH:-auto}
SQUID=${SQUID:-auto}
RSS_TEST=${RSS_TEST:-1}
NO_BUILD=${NO_BUILD:-0}
PERF=${PERF:-}
CPU=${CPU:-0}
PROXY_CPU=${PROXY_CPU:-0}
NGINX_WORKERS=${NGINX_WORKERS:-1}
WRK_CPU=${WRK_CPU:-1}
KEEP=${KEEP:-0}
HOARD_ARGS=${HOARD_ARGS:-}
HOARD_QUIET=${HOARD_QUIET:-1}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_DIR=$TARGET_DIR/bench-proxy
DATA=$BENCH_DIR/data

log() { printf '[proxy_wrk %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }

command -v curl >/dev/null || apt_install curl || die "curl is required"
command -v wrk >/dev/null || apt_install wrk || die "could not install wrk"
NGINX=$(command -v nginx || true)
if [[ -z $NGINX ]]; then
    apt_install nginx-light || apt_install nginx || die "could not install nginx"
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi
VARNISHD=""
if [[ $VARNISH != 0 ]]; then
    VARNISHD=$(command -v varnishd || true)
    if [[ -z $VARNISHD ]] && apt_install varnish; then VARNISHD=$(command -v varnishd || true); fi
    [[ -n $VARNISHD ]] || log "varnish not available; skipping its rows"
fi
SQUIDBIN=""
if [[ $SQUID != 0 ]]; then
    SQUIDBIN=$(command -v squid || true)
    if [[ -z $SQUIDBIN ]] && apt_install squid; then SQUIDBIN=$(command -v squid || echo /usr/sbin/squid); fi
    [[ -n $SQUIDBIN && -x $SQUIDBIN ]] || { SQUIDBIN=""; log "squid not available; skipping its rows"; }
fi

if [[ $NO_BUILD != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
HOARD=$TARGET_DIR/release/hoard
[[ -x $HOARD ]] || die "$HOARD not built"

IFS=, read -r -a SCENARIOS <<<"$SCENARIO_LIST"
for sc in "${SCENARIOS[@]}"; do
    [[ $sc =~ ^(1k|1m|miss|rand|h2)\ c[0-9]+$ ]] || die "unknown scenario '$sc' (SCENARIOS)"
    if [[ $sc == h2\ * ]] && ! command -v h2load >/dev/null; then
        die "scenario '$sc' needs h2load (apt-get install nghttp2-client)"
    fi
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ $CPU != 1 ]] || command -v perf >/dev/null || die "CPU=1 needs perf (apt-get install linux-perf)"
[[ $RANDOM_URLS =~ ^[1-9][0-9]*$ ]] || die "RANDOM_URLS must be a positive integer"

# Pinning: servers on PROXY_CPU, wrk on WRK_CPU, when taskset exists and both cores do.
CORES=$(nproc)
CORES_ALL=$(nproc --all 2>/dev/null || echo "$CORES")
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
PIN_PROXY=()
PIN_WRK=()
if command -v taskset >/dev/null && taskset -c "$PROXY_CPU" true 2>/dev/null && taskset -c "$WRK_CPU" true 2>/dev/null; then
    PIN_PROXY=(taskset -c "$PROXY_CPU")
    PIN_WRK=(taskset -c "$WRK_CPU")
    PINNING="servers pinned to cpu $PROXY_CPU, wrk to cpu $WRK_CPU (taskset)"
else
    PINNING="NOT pinned (taskset missing or cpu $PROXY_CPU/$WRK_CPU unavailable)"
    log "warning: $PINNING"
fi

# --- run directory and cleanup -----------------------------------------------------------------
mkdir -p "$BENCH_DIR" "$DATA"
RUN=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid
    [[ -z ${WATCHDOG:-} ]] || kill "$WATCHDOG" 2>/dev/null || true
    [[ -z ${CURRENT:-} ]] || kill -TERM "$CURRENT" 2>/dev/null || true # wrk or curl, under timeout
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || $rc -ne 0 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

dur_s() { local d=$1; case $d in *ms) echo 1 ;; *m) echo $((${d%m} * 60)) ;; *h) echo $((${d%h} * 3600)) ;; *s) echo "${d%s}" ;; *) echo "$d" ;; esac; }
# The whole script is bounded: a watchdog (a subshell waiting in `read -t`, no child of its
# own) sends TERM to this script after MAX_TIME seconds; the EXIT trap then stops the rest.
[[ -n $MAX_TIME ]] || MAX_TIME=$((${#SCENARIOS[@]} * 4 * ROUNDS * ($(dur_s "$DURATION") + 3) + 900))
(read -r -t "$MAX_TIME" <> <(:) || true; log "MAX_TIME (${MAX_TIME}s) reached: stopping"; kill -TERM $$) 2>/dev/null &
WATCHDOG=$!

source "$ROOT/benches/lib/ports.sh"
wait_port() { # port pid log [seconds]: until something answers HTTP on the port
    local _i
    for _i in $(seq $((${4:-15} * 10))); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" && return 0
        kill -0 "$2" 2>/dev/null || { tail -5 "$3" >&2 || true; die "process $2 exited (log $3)"; }
        sleep 0.1
    done
    tail -5 "$3" >&2 || true
    die "nothing answered on 127.0.0.1:$1 (log $3)"
}
# Stop one process we started and forget it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# --- test data (generated once) ----------------------------------------------------------------
[[ -s $DATA/1k ]] || head -c 1024 /dev/urandom >"$DATA/1k"
[[ -s $DATA/1m ]] || head -c 1048576 /dev/urandom >"$DATA/1m"
[[ $(stat -c %s "$DATA/1g" 2>/dev/null || echo 0) -eq 1073741824 ]] || truncate -s 1G "$DATA/1g" # sparse

ORIGIN_PORT=$(pick_port)
HOARD_PORT=$(pick_port)
NGINX_PORT=$(pick_port)
NGINX_H2_PORT=$(pick_port)
VARNISH_PORT=$(pick_port)
SQUID_PORT=$(pick_port)
USER_LINE=""
[[ $(id -u) -eq 0 ]] && USER_LINE="user root;" # workers must read $DATA and write $RUN

nginx_conf() { # name extra-http-block server-block
    local d=$RUN/$1
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
$USER_LINE
worker_processes $NGINX_WORKERS;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    $2
    server {
        listen 127.0.0.1:$3;
        $4
    }
}
EOF
    echo "$d/nginx.conf"
}
start_nginx() { # conf
    "${PIN_PROXY[@]}" "$NGINX" -c "$1" -p "$(dirname "$1")" &
    PIDS+=($!)
}

# Origin: static files with Cache-Control: max-age=3600.
conf=$(nginx_conf origin "" "$ORIGIN_PORT" "root $DATA; location / { add_header Cache-Control \"max-age=3600\"; }")
start_nginx "$conf"
ORIGIN_PID=$!
wait_port "$ORIGIN_PORT" "$ORIGIN_PID" "$RUN/origin/error.log"

# nginx proxy_cache, configured like hoard: honours the origin's Cache-Control, lock on, keepalive upstream.
# Its keys zone holds about 8,000 keys per MiB (nginx's documentation): sized for RANDOM_URLS,
# or the first URLs of the "rand" fill are forgotten (1,000,000 URLs in 16 MiB kept ~125,000).
NGINX_ZONE_MB=$((RANDOM_URLS / 8000 + 16))
NGINX_LOCATION="location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache bench;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }"
# The same proxy_cache also answers HTTP/2 (h2c, prior knowledge) on a port of its own.
conf=$(nginx_conf nginx \
    "proxy_cache_path $RUN/nginx/cache levels=1:2 keys_zone=bench:${NGINX_ZONE_MB}m max_size=16g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    server { listen 127.0.0.1:$NGINX_H2_PORT http2; $NGINX_LOCATION }" \
    "$NGINX_PORT" \
    "$NGINX_LOCATION")
start_nginx "$conf"
NGINX_PID=$!

# hoard in gateway mode; the same process also serves the forward-mode runs.
mkdir -p "$RUN/hoard"
read -r -a HOARD_EXTRA <<<"$HOARD_ARGS"
QUIET_ARG=(-q)
[[ $HOARD_QUIET == 1 ]] || QUIET_ARG=()
HOARD_CMD=("$HOARD" "${QUIET_ARG[@]}" --listen "127.0.0.1:$HOARD_PORT" --cache-dir "$RUN/hoard/cache"
    --upstream "http://127.0.0.1:$ORIGIN_PORT" "${HOARD_EXTRA[@]}")
# The store may hold as much as nginx's proxy_cache (max_size=16g) and squid's cache_dir (16 GiB):
# with hoard's default 1 GiB, five rounds of the miss scenario (about 450,000 new 1 KiB entries)
# evicted the random-URL set stored before them, and the rand rows measured misses. From the
# environment, so HOARD_ARGS="--size-limit ..." still decides.
HOARD_SIZE_LIMIT=${HOARD_SIZE_LIMIT:-16GiB} "${PIN_PROXY[@]}" "${HOARD_CMD[@]}" 2>"$RUN/hoard/stderr.log" &
PIDS+=($!)
HOARD_PID=$!

VARNISH_PID=""
if [[ -n $VARNISHD ]]; then
    mkdir -p "$RUN/varnish"
    chmod 755 "$RUN" "$RUN/varnish"
    "${PIN_PROXY[@]}" "$VARNISHD" -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" \
        -s malloc,256m -n "$RUN/varnish/n" -F >"$RUN/varnish/stdout.log" 2>&1 &
    PIDS+=($!)
    VARNISH_PID=$!
fi

SQUID_PID=""
if [[ -n $SQUIDBIN ]]; then
    # Squid drops root for cache_effective_user: its directory must be that user's.
    d=$RUN/squid
    mkdir -p "$d/cache"
    SQUID_USER=""
    if [[ $(id -u) -eq 0 ]]; then
        SQUID_USER="cache_effective_user proxy"
        chmod 755 "$RUN"
        chown -R proxy "$d"
    fi
    cat >"$d/squid.conf" <<SQUIDCONF
http_port 127.0.0.1:$SQUID_PORT
http_access allow all
workers 1
cache_mem 256 MB
maximum_object_size 2 GB
maximum_object_size_in_memory 1 MB
cache_dir ufs $d/cache 16384 16 256
access_log none
cache_store_log none
cache_log $d/cache.log
pid_filename $d/squid.pid
coredump_dir $d
shutdown_lifetime 1 seconds
$SQUID_USER
SQUIDCONF
    if "$SQUIDBIN" -z -N -f "$d/squid.conf" >"$d/init.log" 2>&1; then
        "${PIN_PROXY[@]}" "$SQUIDBIN" -N -f "$d/squid.conf" >"$d/stdout.log" 2>&1 &
        PIDS+=($!)
        SQUID_PID=$!
    else
        log "squid -z failed (see $d/init.log); skipping its rows"
    fi
fi

wait_port "$NGINX_PORT" "$NGINX_PID" "$RUN/nginx/error.log"
wait_port "$HOARD_PORT" "$HOARD_PID" "$RUN/hoard/stderr.log"
if [[ -n $VARNISH_PID ]]; then
    if ! (wait_port "$VARNISH_PORT" "$VARNISH_PID" "$RUN/varnish/stdout.log" 20); then
        log "varnishd did not start (see $RUN/varnish/stdout.log); skipping its rows"
        stop_pid "$VARNISH_PID"; VARNISH_PID=""
    fi
fi
if [[ -n $SQUID_PID ]]; then
    # Squid answers a request for its own address with an error page: wait for the port.
    for _ in $(seq 150); do
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$SQUID_PORT/" && break
        kill -0 "$SQUID_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! kill -0 "$SQUID_PID" 2>/dev/null; then
        log "squid did not start (see $RUN/squid/cache.log); skipping its rows"
        SQUID_PID=""
    fi
fi

# --- warm every cache and check the second response is a hit ------------------------------------
headers() { curl -s -D - -o /dev/null --max-time 30 "$@"; }
fetch_headers() { # server path
    case $1 in
        hoard-gw) headers "http://127.0.0.1:$HOARD_PORT$2" ;;
        hoard-fwd) headers -x "http://127.0.0.1:$HOARD_PORT" "http://127.0.0.1:$ORIGIN_PORT$2" ;;
        nginx) headers "http://127.0.0.1:$NGINX_PORT$2" ;;
        varnish) headers "http://127.0.0.1:$VARNISH_PORT$2" ;;
        squid) headers -x "http://127.0.0.1:$SQUID_PORT" "http://127.0.0.1:$ORIGIN_PORT$2" ;;
    esac
}
is_hit() { # server headers
    case $1 in
        hoard-*) grep -qi '^cache-status: hoard; hit' <<<"$2" ;;
        nginx) grep -qi '^x-cache: HIT' <<<"$2" ;;
        varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+' <<<"$2" ;;
        squid) grep -qiE '^x-cache: HIT' <<<"$2" ;;
    esac
}
warm() { # server path
    local h=""
    for _ in 1 2; do h=$(fetch_headers "$1" "$2"); done
    is_hit "$1" "$h" || { printf '%s\n' "$h" >&2; die "$1 $2: second request was not a hit"; }
}
SERVERS=(hoard-gw nginx)
[[ -n $VARNISH_PID ]] && SERVERS+=(varnish)
SERVERS+=(hoard-fwd)
[[ -n $SQUID_PID ]] && SERVERS+=(squid)
for s in "${SERVERS[@]}"; do for p in /1k /1m; do warm "$s" "$p"; done; done
log "caches warm (second request a hit on ${SERVERS[*]})"

# --- wrk ---------------------------------------------------------------------------------------
WRK_LIMIT=$(($(dur_s "$DURATION") + 30))
# Dynamic requests (misses, random hits). Arguments after `--`:
# KIND PATH N TAG [HOST]; PATH is /1k (gateway) or http://127.0.0.1:ORIGIN/1k (forward mode,
# with HOST as the Host header).
cat >"$RUN/dynamic.lua" <<'LUA'
local kind, path, n, tag
local counter = 0
local headers = {}
function init(args)
    kind, path, n, tag = args[1], args[2], tonumber(args[3]), args[4]
    if args[5] ~= nil and args[5] ~= "" then headers["Host"] = args[5] end
    math.randomseed(os.time())
end
function request()
    counter = counter + 1
    if kind == "miss" then
        return wrk.format("GET", path .. "?m=" .. tag .. "-" .. counter, headers)
    end
    return wrk.format("GET", path .. "?r=" .. math.random(1, n), headers)
end
LUA

to_ms() { # "123.45us" -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}
RESULTS=$RUN/results.tsv # scenario server rep rps p50 p99 errors
: >"$RESULTS"
COMMANDS=$RUN/commands.txt # the exact wrk command of every (scenario, server) pair, round 1
: >"$COMMANDS"
# Sets WRK_CMD for: server kind(1k|1m|miss|rand) conns duration tag
wrk_cmd() {
    local server=$1 kind=$2 c=$3 d=$4 tag=$5 url path host="" lua=()
    case $server in
        hoard-gw) url="http://127.0.0.1:$HOARD_PORT/" ;;
        nginx) url="http://127.0.0.1:$NGINX_PORT/" ;;
        varnish) url="http://127.0.0.1:$VARNISH_PORT/" ;;
        hoard-fwd) url="http://127.0.0.1:$HOARD_PORT/" ;;
        squid) url="http://127.0.0.1:$SQUID_PORT/" ;;
    esac
    case $kind in
        1k | 1m)
            if [[ $server == hoard-fwd || $server == squid ]]; then
                printf 'wrk.method = "GET"\nwrk.path = "http://127.0.0.1:%s/%s"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' \
                    "$ORIGIN_PORT" "$kind" "$ORIGIN_PORT" >"$RUN/fwd-$kind.lua"
                lua=(-s "$RUN/fwd-$kind.lua")
            else
                url+=$kind
            fi ;;
        *)
            path=/1k
            [[ $server == hoard-fwd || $server == squid ]] && { path="http://127.0.0.1:$ORIGIN_PORT/1k"; host="127.0.0.1:$ORIGIN_PORT"; }
            lua=(-s "$RUN/dynamic.lua") ;;
    esac
    WRK_CMD=(timeout "$(($(dur_s "$d") + 30))" "${PIN_WRK[@]}" wrk -t1 "-c$c" "-d$d" --timeout 5s --latency "${lua[@]}" "$url")
    if [[ $kind == miss || $kind == rand ]]; then
        WRK_CMD+=(-- "$kind" "$path" "$RANDOM_URLS" "$tag" "$host")
    fi
}
# HTTP/2 hits: h2load, 32 streams per connection, its per-request log kept for percentiles.
h2load_cmd() { # server conns
    local url
    case $1 in
        hoard-gw) url="http://127.0.0.1:$HOARD_PORT/1k" ;;
        nginx) url="http://127.0.0.1:$NGINX_H2_PORT/1k" ;;
    esac
    : >"$RUN/h2.log"
    WRK_CMD=(timeout "$(($(dur_s "$DURATION") + 30))" "${PIN_WRK[@]}" h2load -t1 "-c$2" -m32
        -D "$(dur_s "$DURATION")" --log-file="$RUN/h2.log" "$url")
}
# Runs WRK_CMD (wrk or h2load) in the background and waits for it, so a TERM (MAX_TIME,
# Ctrl-C) is handled at once; its output goes to wrk.log and into `out`.
run_load() { # scenario server
    [[ $rep == 1 ]] && printf '%-9s %-9s %s\n' "$1" "$2" "${WRK_CMD[*]}" >>"$COMMANDS"
    [[ $CPU == 1 ]] && cpu_start "$2"
    "${WRK_CMD[@]}" >"$RUN/wrk.out" 2>&1 &
    CURRENT=$!
    wait "$CURRENT" || true
    CURRENT=""
    [[ $CPU == 1 ]] && cpu_stop "$1" "$2"
    out=$(<"$RUN/wrk.out")
    printf '== %s %s rep %s: %s\n%s\n' "$1" "$2" "$rep" "${WRK_CMD[*]}" "$out" >>"$RUN/wrk.log"
}
# CPU=1: `perf stat` on a process and its children (nginx's workers), counting task-clock.
CPU_TSV=$RUN/cpu.tsv # scenario server rep requests server-ms origin-ms
: >"$CPU_TSV"
proc_tree() { echo "$1$(pgrep -P "$1" | sed 's/^/,/' | tr -d '\n')"; }
cpu_start() { # server
    local p
    case $1 in hoard-*) p=$HOARD_PID ;; nginx) p=$NGINX_PID ;; varnish) p=$VARNISH_PID ;; squid) p=$SQUID_PID ;; esac
    perf stat -x, -e task-clock -p "$(proc_tree "$p")" -o "$RUN/cpu-server.txt" 2>/dev/null &
    CPU_SERVER=$!
    perf stat -x, -e task-clock -p "$(proc_tree "$ORIGIN_PID")" -o "$RUN/cpu-origin.txt" 2>/dev/null &
    CPU_ORIGIN=$!
}
cpu_stop() { # scenario server
    local n ms_s ms_o
    kill -INT "$CPU_SERVER" "$CPU_ORIGIN" 2>/dev/null || true
    wait "$CPU_SERVER" "$CPU_ORIGIN" 2>/dev/null || true
    n=$(awk '/ requests in / { print $1 }' "$RUN/wrk.out")
    ms_s=$(awk -F, '$3 == "task-clock" { print $1 }' "$RUN/cpu-server.txt")
    ms_o=$(awk -F, '$3 == "task-clock" { print $1 }' "$RUN/cpu-origin.txt")
    [[ -n $n && -n $ms_s && -n $ms_o ]] || { log "CPU: no figures for $1 $2 (see $RUN/cpu-*.txt)"; return 0; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$rep" "$n" "$ms_s" "$ms_o" >>"$CPU_TSV"
}
run_wrk() { # scenario server conns kind
    local scen=$1 server=$2 c=$3 kind=$4 out rps p50 p99 errs
    if [[ $kind == h2 ]]; then
        [[ $server == hoard-gw || $server == nginx ]] || return 0 # h2: gateway mode against nginx only
        h2load_cmd "$server" "$c"
        run_load "$scen" "$server"
        rps=$(awk '/^finished in/ { print $4 }' <<<"$out")
        errs=$(awk '/^requests:/ { n += $10 + $12 + $14 } /^status codes:/ { n += $5 + $7 + $9 } END { print n + 0 }' <<<"$out")
        # Third column of the log: microseconds until the end of the response.
        read -r p50 p99 < <(cut -f3 "$RUN/h2.log" | sort -n | awk '{ v[NR] = $1 }
            END { if (NR) printf "%.3fms %.3fms\n", v[int(NR * 0.50) + (NR * 0.50 > int(NR * 0.50))] / 1000,
                                                  v[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))] / 1000 }')
        [[ -n $rps && -n ${p50:-} && -n ${p99:-} ]] || { printf '%s\n' "$out" >&2; die "could not parse h2load output ($scen $server)"; }
    else
        wrk_cmd "$server" "$kind" "$c" "$DURATION" "r$rep-$server-$(date +%s%N)"
        run_load "$scen" "$server"
        rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
        p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
        p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
        errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
        [[ -n $rps && -n $p50 && -n $p99 ]] || { printf '%s\n' "$out" >&2; die "could not parse wrk output ($scen $server)"; }
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$server" "$rep" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$errs" >>"$RESULTS"
    log "$(printf '%-9s %-9s rep %s: %10s rps  p50 %s  p99 %s  errors %s' "$scen" "$server" "$rep" "$rps" "$p50" "$p99" "$errs")"
}

# --- "rand": store RANDOM_URLS URLs in every cache first ---------------------------------------
# wrk requests /1k?r=1..N once each over 32 connections and exits (os.exit: wrk itself would
# run for its whole -d) when all N have answered, or when 8,192 answers in a row came after
# the last of them was sent without one of them among them (a request lost with its
# connection is not sent again: wrk sends a new one), saying "filled OK of N (F not 200)".
# A connection that finds all N sent asks for /1k-fill-done (a 404 the origin answers, stored
# by nobody, not counted). FILL_TIME bounds it.
cat >"$RUN/fill.lua" <<'LUA'
local path, n, headers = "/1k", 0, {}
local sent, ok, failed, idle, checked = 0, 0, 0, 0, false
function init(args)
    path, n = args[1], tonumber(args[2])
    if args[3] ~= nil and args[3] ~= "" then headers["Host"] = args[3] end
end
function request()
    -- wrk calls this once to check the script before it connects: that one is never sent.
    if sent >= n or not checked then
        checked = true
        return wrk.format("GET", path .. "-fill-done", headers)
    end
    sent = sent + 1
    return wrk.format("GET", path .. "?r=" .. sent, headers)
end
function response(status, hdrs, body)
    if status == 404 then
        idle = idle + 1
    else
        idle = 0
        if status == 200 then ok = ok + 1 else failed = failed + 1 end
    end
    if ok + failed >= n or (sent >= n and idle >= 8192) then
        io.write(string.format("filled %d of %d (%d not 200)\n", ok, n, failed))
        io.flush()
        os.exit(0)
    end
end
LUA
if [[ ,$SCENARIO_LIST, == *,rand\ * ]]; then
    for s in "${SERVERS[@]}"; do
        started=$(date +%s)
        host=""
        case $s in
            hoard-gw) url="http://127.0.0.1:$HOARD_PORT/" path=/1k ;;
            hoard-fwd) url="http://127.0.0.1:$HOARD_PORT/" path="http://127.0.0.1:$ORIGIN_PORT/1k" host="127.0.0.1:$ORIGIN_PORT" ;;
            squid) url="http://127.0.0.1:$SQUID_PORT/" path="http://127.0.0.1:$ORIGIN_PORT/1k" host="127.0.0.1:$ORIGIN_PORT" ;;
            nginx) url="http://127.0.0.1:$NGINX_PORT/" path=/1k ;;
            varnish) url="http://127.0.0.1:$VARNISH_PORT/" path=/1k ;;
        esac
        fill_time=${FILL_TIME:-600}
        timeout "$((fill_time + 10))" "${PIN_WRK[@]}" wrk -t1 -c32 "-d${fill_time}s" --timeout 10s \
            -s "$RUN/fill.lua" "$url" -- "$path" "$RANDOM_URLS" "$host" >"$RUN/fill.out" 2>&1 &
        CURRENT=$!
        wait "$CURRENT" || log "$s: the fill ended with status $? (see $RUN/fill.log)"
        CURRENT=""
        cat "$RUN/fill.out" >>"$RUN/fill.log"
        filled=$(awk '/^filled / { print $2 }' "$RUN/fill.out")
        # A few requests lost with their connections are misses later, nothing more.
        ((${filled:-0} * 1000 >= RANDOM_URLS * 999)) ||
            die "$s: ${filled:-no} of $RANDOM_URLS URLs answered 200 within ${fill_time}s (see $RUN/fill.log)"
        sleep 1 # let the last fills commit
        for r in 1 $(((RANDOM_URLS + 1) / 2)) "$RANDOM_URLS"; do
            h=$(fetch_headers "$s" "/1k?r=$r")
            is_hit "$s" "$h" || { printf '%s\n' "$h" >&2; die "$s: /1k?r=$r not a hit after the fill (see $RUN/fill.log)"; }
        done
        log "$s: $filled of $RANDOM_URLS URLs stored in $(($(date +%s) - started)) s"
    done
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "wrk: $((${#SCENARIOS[@]} * ${#SERVERS[@]} * ROUNDS)) runs of $DURATION ($PINNING)"
for rep in $(seq "$ROUNDS"); do
    order=("${SERVERS[@]}")
    if ((rep % 2 == 0)); then # alternate the order so no server always runs first
        order=()
        for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[$i]}"); done
    fi
    for sc in "${SCENARIOS[@]}"; do
        read -r kind conns <<<"$sc"
        for s in "${order[@]}"; do run_wrk "$sc" "$s" "${conns#c}" "$kind"; done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- optional profile of one hoard scenario (not part of the table) ----------------------------
PERF_OUT=""
if [[ -n $PERF ]]; then
    command -v perf >/dev/null || die "PERF set but perf is not installed (apt-get install linux-perf)"
    read -r kind conns mode <<<"$PERF"
    server=hoard-gw; [[ ${mode:-} == fwd ]] && server=hoard-fwd
    rep=perf
    timeout "$WRK_LIMIT" perf record -q -g -o "$RUN/perf.data" -p "$HOARD_PID" 2>"$RUN/perf.err" &
    perf_pid=$!
    sleep 0.5
    run_wrk "$kind $conns" "$server" "${conns#c}" "$kind"
    kill -INT "$perf_pid" 2>/dev/null || true
    wait "$perf_pid" 2>/dev/null || true
    sed -i '$d' "$RESULTS" # the profiled run is not part of the table
    perf report -i "$RUN/perf.data" --no-children --sort symbol --stdio -g none >"$RUN/perf.txt" 2>/dev/null || true
    PERF_OUT=$(grep -E '^ +[0-9.]+%' "$RUN/perf.txt" | head -20 | sed -E 's/ +- +- *$//') || true
fi

# --- peak RSS of a 1 GiB miss ------------------------------------------------------------------
RSS_LINE="skipped (RSS_TEST=0)"
if [[ $RSS_TEST == 1 ]]; then
    avail_kib=$(df -Pk "$BENCH_DIR" | awk 'NR == 2 { print $4 }')
    if ((avail_kib < 5 * 1024 * 1024)); then
        RSS_LINE="skipped: under 5 GiB free on $(df -Ph "$BENCH_DIR" | awk 'NR == 2 { print $6 " (" $4 " free)" }')"
    else
        # Free the other servers' memory and CPU first.
        stop_pid "$HOARD_PID"; stop_pid "$NGINX_PID"
        [[ -n $VARNISH_PID ]] && stop_pid "$VARNISH_PID"
        [[ -n $SQUID_PID ]] && stop_pid "$SQUID_PID"
        mkdir -p "$RUN/rss"
        RSS_PORT=$(pick_port) # picked now: minutes have passed since the others
        "${PIN_PROXY[@]}" "$HOARD" -q --listen "127.0.0.1:$RSS_PORT" --cache-dir "$RUN/rss/cache" \
            --upstream "http://127.0.0.1:$ORIGIN_PORT" --max-object-size 2GiB --size-limit 4GiB \
            2>"$RUN/rss/stderr.log" &
        PIDS+=($!)
        RSS_PID=$!
        wait_port "$RSS_PORT" "$RSS_PID" "$RUN/rss/stderr.log"
        hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$RSS_PID/status"; }
        base=$(hwm)
        miss=$(timeout 300 "${PIN_WRK[@]}" curl -s -o /dev/null -D "$RUN/rss/miss.h" \
            -w '%{size_download} %{time_total}' "http://127.0.0.1:$RSS_PORT/1g")
        sleep 1 # let the store commit
        miss_hwm=$(hwm)
        hit=$(timeout 300 "${PIN_WRK[@]}" curl -s -o /dev/null -D "$RUN/rss/hit.h" \
            -w '%{size_download} %{time_total}' "http://127.0.0.1:$RSS_PORT/1g")
        hit_hwm=$(hwm)
        miss_cs=$(awk -F': ' 'tolower($1) == "cache-status" { sub(/\r$/, "", $2); print $2 }' "$RUN/rss/miss.h")
        hit_cs=$(awk -F': ' 'tolower($1) == "cache-status" { sub(/\r$/, "", $2); print $2 }' "$RUN/rss/hit.h")
        read -r miss_bytes miss_t <<<"$miss"
        read -r hit_bytes hit_t <<<"$hit"
        RSS_LINE=$(printf '1 GiB miss: %s bytes in %.2f s, peak RSS (VmHWM) %s MiB (idle %s MiB) [%s] -> %s (target <= 64 MiB)\n' \
            "$miss_bytes" "$miss_t" "$miss_hwm" "$base" "$miss_cs" \
            "$(awk -v m="$miss_hwm" 'BEGIN { print (m <= 64 ? "met" : "MISSED") }')")
        RSS_LINE+=$(printf '\n1 GiB hit afterwards: %s bytes in %.2f s, VmHWM now %s MiB [%s]' \
            "$hit_bytes" "$hit_t" "$hit_hwm" "$hit_cs")
        stop_pid "$RSS_PID"
    fi
fi

# --- report ------------------------------------------------------------------------------------
echo
echo "hoard vs nginx proxy_cache$([[ -n $VARNISH_PID ]] && echo " vs varnish")$([[ -n $SQUID_PID ]] && echo " vs squid"): wrk -t1 -d$DURATION --latency"
echo "command: ROUNDS=$ROUNDS DURATION=$DURATION SCENARIOS=\"$SCENARIO_LIST\" RANDOM_URLS=$RANDOM_URLS VARNISH=$VARNISH SQUID=$SQUID RSS_TEST=$RSS_TEST PROXY_CPU=$PROXY_CPU WRK_CPU=$WRK_CPU NGINX_WORKERS=$NGINX_WORKERS $INVOCATION"
echo "machine: $CORES cores usable ($CORES_ALL online)${CPU_MODEL:+, $CPU_MODEL}; $PINNING"
echo "hoard: HOARD_SIZE_LIMIT=${HOARD_SIZE_LIMIT:-16GiB} ${HOARD_CMD[*]}"
echo "$("$HOARD" --version 2>/dev/null); $("$NGINX" -v 2>&1)${VARNISHD:+; $("$VARNISHD" -V 2>&1 | head -1)}${SQUID_PID:+; $("$SQUIDBIN" -v 2>&1 | head -1)}"
echo "$ROUNDS rounds, each running every (scenario, server) pair once, server order reversed every other round;"
echo "shown: the MEDIAN of the rounds (rps, p50, p99 each), with the spread of rps and p99 as min..max."
echo "Load average before $LOAD_BEFORE, after $LOAD_AFTER. Shared, noisy machine: compare ratios within"
echo "this run, not absolute numbers across runs."
echo "hoard-gw = gateway mode (--upstream); hoard-fwd = forward mode (absolute-form via wrk Lua); nginx/varnish gateway;"
echo "squid = forward proxy, the same absolute-form requests as hoard-fwd."
echo "1k/1m: hits on one URL; miss: every request a new URL (/1k?m=<run>-<n>), fetched and stored;"
echo "rand: hits on /1k?r=<math.random(1, $RANDOM_URLS)>, all $RANDOM_URLS URLs stored first."
echo "h2: 1 KiB hits over HTTP/2 (h2c prior knowledge), h2load -cN -m32 (the h2 rows are h2load's, not wrk's)."
echo
awk -F'\t' -v order="${SERVERS[*]}" '
    function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t } }
    function median(list,   a, n) { n = split(list, a, " "); sort(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
    function lo(list,   a, n) { n = split(list, a, " "); sort(a, n); return a[1] }
    function hi(list,   a, n) { n = split(list, a, " "); sort(a, n); return a[n] }
    { k = $1 SUBSEP $2; R[k] = R[k] " " $4; P50[k] = P50[k] " " $5; P99[k] = P99[k] " " $6; E[k] += $7
      if (!($1 in seen)) { seen[$1] = 1; scen[++ns] = $1 } }
    function ratio(a, b, what,   x, y) {
        x = (what == "rps") ? median(R[a]) : median(P99[a]); y = (what == "rps") ? median(R[b]) : median(P99[b])
        return (y + 0 > 0) ? sprintf("%.2fx", x / y) : "-" }
    function row(s, a, b, label,   r, q, t) {
        if (!((s SUBSEP a) in R) || !((s SUBSEP b) in R)) return
        r = ratio(s SUBSEP a, s SUBSEP b, "rps"); q = ratio(s SUBSEP a, s SUBSEP b, "p99"); t = ""
        if (b == "nginx" && a ~ /^hoard/) {
            if (s ~ /^1k/) t = (r + 0 >= 1.2 && q + 0 <= 1.0) ? "target met (>=1.2x rps, p99<=1x)" : "target MISSED (>=1.2x rps, p99<=1x)"
            else if (s ~ /^1m/) t = (r + 0 >= 1.7) ? "target met (>=1.7x rps)" : "target MISSED (>=1.7x rps)"
        }
        printf "%-9s %-22s %8s %8s   %s\n", s, label, r, q, t }
    END {
        n = split(order, srv, " ")
        printf "%-9s %-9s %9s %-19s %8s %8s %-17s %7s\n", "scenario", "server", "rps", "(min..max)", "p50 ms", "p99 ms", "(min..max)", "errors"
        for (i = 1; i <= ns; i++) for (j = 1; j <= n; j++) { k = scen[i] SUBSEP srv[j]
            if (k in R) printf "%-9s %-9s %9.0f %-19s %8.3f %8.3f %-17s %7d\n", scen[i], srv[j], median(R[k]),
                sprintf("(%.0f..%.0f)", lo(R[k]), hi(R[k])), median(P50[k]), median(P99[k]),
                sprintf("(%.2f..%.2f)", lo(P99[k]), hi(P99[k])), E[k] }
        printf "\n%-9s %-22s %8s %8s   (ratios of medians)\n", "scenario", "ratio", "rps", "p99"
        for (i = 1; i <= ns; i++) {
            row(scen[i], "hoard-gw", "nginx", "hoard-gw / nginx")
            row(scen[i], "hoard-fwd", "nginx", "hoard-fwd / nginx-gw")
            row(scen[i], "varnish", "nginx", "varnish / nginx")
            row(scen[i], "hoard-gw", "varnish", "hoard-gw / varnish")
            row(scen[i], "hoard-fwd", "squid", "hoard-fwd / squid")
        }
    }' "$RESULTS"
echo
echo "wrk commands (round 1; later rounds differ only in the miss tag):"
sed 's/^/  /' "$COMMANDS"
echo
if [[ -s $CPU_TSV ]]; then
    echo
    echo "CPU per request (CPU=1: perf stat -e task-clock over each wrk run / wrk's request count;"
    echo "median of the rounds, min..max), of the server's processes and of the origin's:"
    awk -F'\t' -v order="${SERVERS[*]}" '
        function sort(a, n,   i, j, t) { for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t } }
        function med(list,   a, n) { n = split(list, a, " "); sort(a, n); return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
        function span(list,   a, n) { n = split(list, a, " "); sort(a, n); return sprintf("(%.1f..%.1f)", a[1], a[n]) }
        $3 != "perf" && $4 > 0 { k = $1 SUBSEP $2; S[k] = S[k] " " $5 * 1000 / $4; O[k] = O[k] " " $6 * 1000 / $4
            if (!($1 in seen)) { seen[$1] = 1; scen[++ns] = $1 } }
        END {
            n = split(order, srv, " ")
            printf "%-9s %-9s %10s %-14s %10s %-14s\n", "scenario", "server", "server us", "(min..max)", "origin us", "(min..max)"
            for (i = 1; i <= ns; i++) for (j = 1; j <= n; j++) { k = scen[i] SUBSEP srv[j]
                if (k in S) printf "%-9s %-9s %10.1f %-14s %10.1f %-14s\n", scen[i], srv[j], med(S[k]), span(S[k]), med(O[k]), span(O[k]) }
        }' "$CPU_TSV"
fi
echo
echo "$RSS_LINE"
if [[ -n $PERF_OUT ]]; then
    echo
    echo "perf (hoard, $PERF, extra run not in the table): top symbols, perf report --no-children --sort symbol"
    echo "$PERF_OUT"
fi
echo
echo "raw wrk output: $RUN/wrk.log$([[ $KEEP == 1 ]] || echo " (deleted; KEEP=1 keeps it)")"
