#!/usr/bin/env bash
# hoard vs nginx proxy_cache (and varnish, if installable) on cached hits, with wrk.
#
#   benches/proxy_wrk.sh                      # defaults: DURATION=10s REPEAT=2
#   DURATION=5s REPEAT=3 benches/proxy_wrk.sh
#
# Environment:
#   DURATION   wrk -d per run (default 10s)
#   REPEAT     interleaved repetitions of every (scenario, server) pair (default 2); the table
#              shows the best run by rps (p50/p99 from that same run)
#   VARNISH    auto (default: use varnishd, installing it if possible) | 0 (skip)
#   RSS_TEST   1 (default): peak RSS of hoard streaming a 1 GiB miss | 0 (skip)
#   NO_BUILD   1: do not run cargo build --release
#   PROXY_CPU / WRK_CPU  cores for the servers / for wrk (default 0 / 1)
#   KEEP       1: keep the run directory (configs, logs) under target/bench-proxy/
#   PERF       a scenario such as "1k c32" or "1m c32" (optionally "... fwd" for forward mode):
#              after the measured runs, one extra hoard run of that scenario under
#              `perf record -g -p PID`, and the top 20 symbols of `perf report --no-children
#              --sort symbol` are printed (not part of the table)
#
# Everything listens on 127.0.0.1 only. All servers (origin, hoard, nginx, varnish) are pinned to
# PROXY_CPU and wrk to WRK_CPU; only one proxy is loaded at a time. The trap stops only the
# processes this script started, by PID.
set -euo pipefail

DURATION=${DURATION:-10s}
REPEAT=${REPEAT:-2}
VARNISH=${VARNISH:-auto}
RSS_TEST=${RSS_TEST:-1}
NO_BUILD=${NO_BUILD:-0}
PERF=${PERF:-}
PROXY_CPU=${PROXY_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
KEEP=${KEEP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BENCH_DIR=$TARGET_DIR/bench-proxy
DATA=$BENCH_DIR/data

log() { printf '[proxy_wrk %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- tools -------------------------------------------------------------------------------------
as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1; }

command -v taskset >/dev/null || die "taskset (util-linux) is required"
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

if [[ $NO_BUILD != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release --quiet)
fi
HOARD=$TARGET_DIR/release/hoard
[[ -x $HOARD ]] || die "$HOARD not built"

# --- run directory and cleanup -----------------------------------------------------------------
mkdir -p "$BENCH_DIR" "$DATA"
RUN=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
PIDS=()
cleanup() {
    local rc=$? pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [[ $KEEP == 1 || $rc -ne 0 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (nothing listening on it now).
pick_port() {
    local p
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range (32768-)
        if ! ss -Htln "sport = :$p" | grep -q .; then echo "$p"; return; fi
    done
    die "no free port"
}
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
VARNISH_PORT=$(pick_port)
USER_LINE=""
[[ $(id -u) -eq 0 ]] && USER_LINE="user root;" # workers must read $DATA and write $RUN

nginx_conf() { # name extra-http-block server-block
    local d=$RUN/$1
    mkdir -p "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
$USER_LINE
worker_processes 1;
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
    taskset -c "$PROXY_CPU" "$NGINX" -c "$1" -p "$(dirname "$1")" &
    PIDS+=($!)
}

# Origin: static files with Cache-Control: max-age=3600.
conf=$(nginx_conf origin "" "$ORIGIN_PORT" "root $DATA; location / { add_header Cache-Control \"max-age=3600\"; }")
start_nginx "$conf"
wait_port "$ORIGIN_PORT" $! "$RUN/origin/error.log"

# nginx proxy_cache, configured like hoard: honours the origin's Cache-Control, lock on, keepalive upstream.
conf=$(nginx_conf nginx \
    "proxy_cache_path $RUN/nginx/cache levels=1:2 keys_zone=bench:16m max_size=4g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }" \
    "$NGINX_PORT" \
    "location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_cache bench;
            proxy_cache_lock on;
            add_header X-Cache \$upstream_cache_status;
        }")
start_nginx "$conf"
NGINX_PID=$!

# hoard in gateway mode; the same process also serves the forward-mode runs.
mkdir -p "$RUN/hoard"
taskset -c "$PROXY_CPU" "$HOARD" -q --listen "127.0.0.1:$HOARD_PORT" --cache-dir "$RUN/hoard/cache" \
    --upstream "http://127.0.0.1:$ORIGIN_PORT" 2>"$RUN/hoard/stderr.log" &
PIDS+=($!)
HOARD_PID=$!

VARNISH_PID=""
if [[ -n $VARNISHD ]]; then
    mkdir -p "$RUN/varnish"
    chmod 755 "$RUN" "$RUN/varnish"
    taskset -c "$PROXY_CPU" "$VARNISHD" -a "127.0.0.1:$VARNISH_PORT" -b "127.0.0.1:$ORIGIN_PORT" \
        -s malloc,256m -n "$RUN/varnish/n" -F >"$RUN/varnish/stdout.log" 2>&1 &
    PIDS+=($!)
    VARNISH_PID=$!
fi

wait_port "$NGINX_PORT" "$NGINX_PID" "$RUN/nginx/error.log"
wait_port "$HOARD_PORT" "$HOARD_PID" "$RUN/hoard/stderr.log"
if [[ -n $VARNISH_PID ]]; then
    if ! (wait_port "$VARNISH_PORT" "$VARNISH_PID" "$RUN/varnish/stdout.log" 20); then
        log "varnishd did not start (see $RUN/varnish/stdout.log); skipping its rows"
        stop_pid "$VARNISH_PID"; VARNISH_PID=""
    fi
fi

# --- warm every cache and check the second response is a hit ------------------------------------
headers() { curl -s -D - -o /dev/null --max-time 30 "$@"; }
warm() { # server path
    local server=$1 path=$2 h=""
    for _ in 1 2; do
        case $server in
            hoard-gw) h=$(headers "http://127.0.0.1:$HOARD_PORT$path") ;;
            hoard-fwd) h=$(headers -x "http://127.0.0.1:$HOARD_PORT" "http://127.0.0.1:$ORIGIN_PORT$path") ;;
            nginx) h=$(headers "http://127.0.0.1:$NGINX_PORT$path") ;;
            varnish) h=$(headers "http://127.0.0.1:$VARNISH_PORT$path") ;;
        esac
    done
    case $server in
        hoard-*) grep -qi '^cache-status: hoard; hit' <<<"$h" ;;
        nginx) grep -qi '^x-cache: HIT' <<<"$h" ;;
        varnish) grep -qiE '^x-varnish: [0-9]+ [0-9]+' <<<"$h" ;;
    esac || { printf '%s\n' "$h" >&2; die "$server $path: second request was not a hit"; }
}
SERVERS=(hoard-gw nginx)
[[ -n $VARNISH_PID ]] && SERVERS+=(varnish)
SERVERS+=(hoard-fwd)
for s in "${SERVERS[@]}"; do for p in /1k /1m; do warm "$s" "$p"; done; done
log "caches warm (second request a hit on ${SERVERS[*]})"

# --- wrk runs ----------------------------------------------------------------------------------
dur_s() { local d=$1; case $d in *ms) echo 1 ;; *m) echo $((${d%m} * 60)) ;; *h) echo $((${d%h} * 3600)) ;; *s) echo "${d%s}" ;; *) echo "$d" ;; esac; }
WRK_LIMIT=$(($(dur_s "$DURATION") + 30))

to_ms() { # "123.45us" -> ms
    awk -v v="$1" 'BEGIN { n = v + 0; u = v; sub(/^[0-9.]+/, "", u);
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000;
        printf "%.3f", n }'
}
RESULTS=$RUN/results.tsv # scenario server rep rps p50 p99 errors
: >"$RESULTS"
run_wrk() { # scenario server conns path
    local scen=$1 server=$2 c=$3 path=$4 url lua=() out rps p50 p99 errs
    case $server in
        hoard-gw) url="http://127.0.0.1:$HOARD_PORT$path" ;;
        nginx) url="http://127.0.0.1:$NGINX_PORT$path" ;;
        varnish) url="http://127.0.0.1:$VARNISH_PORT$path" ;;
        hoard-fwd)
            url="http://127.0.0.1:$HOARD_PORT/"
            printf 'wrk.method = "GET"\nwrk.path = "http://127.0.0.1:%s%s"\nwrk.headers["Host"] = "127.0.0.1:%s"\n' \
                "$ORIGIN_PORT" "$path" "$ORIGIN_PORT" >"$RUN/fwd-${path#/}.lua"
            lua=(-s "$RUN/fwd-${path#/}.lua") ;;
    esac
    out=$(timeout "$WRK_LIMIT" taskset -c "$WRK_CPU" wrk -t1 "-c$c" "-d$DURATION" --timeout 5s --latency "${lua[@]}" "$url" 2>&1) || true
    printf '== %s %s rep %s\n%s\n' "$scen" "$server" "$rep" "$out" >>"$RUN/wrk.log"
    rps=$(awk '/^Requests\/sec:/ { print $2 }' <<<"$out")
    p50=$(awk '$1 == "50%" { print $2 }' <<<"$out")
    p99=$(awk '$1 == "99%" { print $2 }' <<<"$out")
    errs=$(awk '/Non-2xx/ { n += $NF } /Socket errors/ { gsub(/,/, ""); n += $4 + $6 + $8 + $10 } END { print n + 0 }' <<<"$out")
    [[ -n $rps && -n $p50 && -n $p99 ]] || { printf '%s\n' "$out" >&2; die "could not parse wrk output ($scen $server)"; }
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scen" "$server" "$rep" "$rps" "$(to_ms "$p50")" "$(to_ms "$p99")" "$errs" >>"$RESULTS"
    log "$(printf '%-14s %-9s rep %s: %10s rps  p50 %s  p99 %s  errors %s' "$scen" "$server" "$rep" "$rps" "$p50" "$p99" "$errs")"
}

SCENARIOS=("1k c32" "1k c1" "1m c32" "1m c1")
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "wrk: $((${#SCENARIOS[@]} * ${#SERVERS[@]} * REPEAT)) runs of $DURATION (servers on cpu $PROXY_CPU, wrk on cpu $WRK_CPU)"
for rep in $(seq "$REPEAT"); do
    order=("${SERVERS[@]}")
    if ((rep % 2 == 0)); then # alternate the order so no server always runs first
        order=()
        for ((i = ${#SERVERS[@]} - 1; i >= 0; i--)); do order+=("${SERVERS[$i]}"); done
    fi
    for sc in "${SCENARIOS[@]}"; do
        read -r size conns <<<"$sc"
        for s in "${order[@]}"; do run_wrk "$size ${conns}" "$s" "${conns#c}" "/$size"; done
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- optional profile of one hoard scenario (not part of the table) ----------------------------
PERF_OUT=""
if [[ -n $PERF ]]; then
    command -v perf >/dev/null || die "PERF set but perf is not installed (apt-get install linux-perf)"
    read -r size conns mode <<<"$PERF"
    server=hoard-gw; [[ ${mode:-} == fwd ]] && server=hoard-fwd
    rep=perf
    timeout "$WRK_LIMIT" perf record -q -g -o "$RUN/perf.data" -p "$HOARD_PID" 2>"$RUN/perf.err" &
    perf_pid=$!
    sleep 0.5
    run_wrk "$size $conns perf" "$server" "${conns#c}" "/$size"
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
        mkdir -p "$RUN/rss"
        RSS_PORT=$(pick_port) # picked now: minutes have passed since the others
        taskset -c "$PROXY_CPU" "$HOARD" -q --listen "127.0.0.1:$RSS_PORT" --cache-dir "$RUN/rss/cache" \
            --upstream "http://127.0.0.1:$ORIGIN_PORT" --max-object-size 2GiB --size-limit 4GiB \
            2>"$RUN/rss/stderr.log" &
        PIDS+=($!)
        RSS_PID=$!
        wait_port "$RSS_PORT" "$RSS_PID" "$RUN/rss/stderr.log"
        hwm() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$RSS_PID/status"; }
        base=$(hwm)
        miss=$(timeout 300 taskset -c "$WRK_CPU" curl -s -o /dev/null -D "$RUN/rss/miss.h" \
            -w '%{size_download} %{time_total}' "http://127.0.0.1:$RSS_PORT/1g")
        sleep 1 # let the store commit
        miss_hwm=$(hwm)
        hit=$(timeout 300 taskset -c "$WRK_CPU" curl -s -o /dev/null -D "$RUN/rss/hit.h" \
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
echo "hoard vs nginx proxy_cache$([[ -n $VARNISH_PID ]] && echo " vs varnish"): cached hits, wrk -t1 -d$DURATION --latency"
echo "servers pinned to cpu $PROXY_CPU, wrk to cpu $WRK_CPU; REPEAT=$REPEAT interleaved runs per pair, best run by rps shown"
echo "(p50/p99 from that run); load average before $LOAD_BEFORE, after $LOAD_AFTER. Shared, noisy machine:"
echo "compare ratios within this run, not absolute numbers across runs."
echo "hoard-gw = gateway mode (--upstream); hoard-fwd = forward mode (absolute-form via wrk Lua); nginx/varnish gateway."
echo
awk -F'\t' -v order="${SERVERS[*]}" '
    { k = $1 SUBSEP $2; if (!(k in rps) || $4 + 0 > rps[k] + 0) { rps[k] = $4; p50[k] = $5; p99[k] = $6; err[k] = $7 }
      if (!($1 in seen)) { seen[$1] = 1; scen[++ns] = $1 } }
    function ratio(a, b, what,   x, y) {
        x = (what == "rps") ? rps[a] : p99[a]; y = (what == "rps") ? rps[b] : p99[b]
        return (y + 0 > 0) ? sprintf("%.2fx", x / y) : "-" }
    function row(s, a, b, label,   r, q, t) {
        if (!((s SUBSEP a) in rps) || !((s SUBSEP b) in rps)) return
        r = ratio(s SUBSEP a, s SUBSEP b, "rps"); q = ratio(s SUBSEP a, s SUBSEP b, "p99"); t = ""
        if (b == "nginx" && a ~ /^hoard/) {
            if (s ~ /^1k/) t = (r + 0 >= 1.1 && q + 0 <= 1.0) ? "target met (>=1.1x rps, p99<=1x)" : "target MISSED (>=1.1x rps, p99<=1x)"
            else t = (r + 0 >= 1.7) ? "target met (>=1.7x rps)" : "target MISSED (>=1.7x rps)"
        }
        printf "%-8s %-26s %10s %10s   %s\n", s, label, r, q, t }
    END {
        n = split(order, srv, " ")
        printf "%-8s %-10s %10s %10s %10s %7s\n", "scenario", "server", "rps", "p50 ms", "p99 ms", "errors"
        for (i = 1; i <= ns; i++) for (j = 1; j <= n; j++) { k = scen[i] SUBSEP srv[j]
            if (k in rps) printf "%-8s %-10s %10.0f %10.3f %10.3f %7d\n", scen[i], srv[j], rps[k], p50[k], p99[k], err[k] }
        printf "\n%-8s %-26s %10s %10s\n", "scenario", "ratio", "rps", "p99"
        for (i = 1; i <= ns; i++) {
            row(scen[i], "hoard-gw", "nginx", "hoard-gw / nginx")
            row(scen[i], "hoard-fwd", "nginx", "hoard-fwd / nginx-gw")
            row(scen[i], "varnish", "nginx", "varnish / nginx")
            row(scen[i], "hoard-gw", "varnish", "hoard-gw / varnish")
        }
    }' "$RESULTS"
echo
echo "$RSS_LINE"
if [[ -n $PERF_OUT ]]; then
    echo
    echo "perf (hoard, $PERF, extra run not in the table): top symbols, perf report --no-children --sort symbol"
    echo "$PERF_OUT"
fi
echo
echo "raw wrk output: $RUN/wrk.log$([[ $KEEP == 1 ]] || echo " (deleted; KEEP=1 keeps it)")"
