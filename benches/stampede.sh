#!/usr/bin/env bash
# Stampede benchmark: CONNS concurrent keep-alive clients GET one hot URL whose origin is slow
# (DELAY_MS) and says max-age=1, for DURATION seconds (so ~DURATION expiries). For each
# server/config it reports origin fetches per second (= per expiry), the largest herd (fetches
# started while another was in flight), and p99 latency during expiry (requests started within
# WINDOW_MS of an origin fetch, or while it runs) vs steady state.
#
#   benches/stampede.sh                      # hoard (XFetch on / off), nginx (lock / lock+stale)
#   DURATION=20 CONNS=1000 DELAY_MS=100 benches/stampede.sh
#
# Needs nginx for its rows (apt-get install nginx-light); skipped if absent. Everything binds
# 127.0.0.1; every process started here is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-20}
CONNS=${CONNS:-1000}
DELAY_MS=${DELAY_MS:-100}
WINDOW_MS=${WINDOW_MS:-100}
ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin hoard --example slow_origin --example stampede_load
BIN=${CARGO_TARGET_DIR:-target}/release
WORK=$(mktemp -d /tmp/hoard-stampede.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# run LABEL PROXY_PORT: warm the URL once, then load it.
run() {
    local label=$1 port=$2
    curl -s -o /dev/null "http://127.0.0.1:$port/hot"
    sleep 1.2
    "$BIN/examples/stampede_load" --url "http://127.0.0.1:$port/hot" --origin "http://127.0.0.1:$ORIGIN_PORT" \
        --label "$label" --connections "$CONNS" --duration-s "$DURATION" \
        --delay-ms "$DELAY_MS" --window-ms "$WINDOW_MS" | tee -a "$WORK/results" >&2
}

# A fresh origin per row, so its fetch log is that row's alone.
start_origin() {
    ORIGIN_PORT=$(free_port)
    "$BIN/examples/slow_origin" --listen "127.0.0.1:$ORIGIN_PORT" --delay-ms "$DELAY_MS" --max-age 1 >"$WORK/origin.log" &
    ORIGIN_PID=$!; PIDS+=("$ORIGIN_PID")
    wait_port "$ORIGIN_PORT"
}
stop() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

hoard_row() {
    local label=$1 beta=$2 swr=${3:-off}
    start_origin
    local port; port=$(free_port)
    local dir="$WORK/hoard-$beta-$swr"
    mkdir -p "$dir"
    "$BIN/hoard" -q --listen "127.0.0.1:$port" --cache-dir "$dir" \
        --upstream "http://127.0.0.1:$ORIGIN_PORT" --xfetch-beta "$beta" \
        --stale-while-revalidate "$swr" 2>"$WORK/hoard.log" &
    local pid=$!; PIDS+=("$pid")
    wait_port "$port"
    run "$label" "$port"
    stop "$pid"; stop "$ORIGIN_PID"
}

nginx_row() {
    local label=$1 extra=$2
    start_origin
    local port; port=$(free_port)
    local dir; dir="$WORK/nginx-$(printf %s "$label" | tr -c "a-z0-9" "-")"
    mkdir -p "$dir/cache" "$dir/tmp"
    cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
    uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=hot:10m;
    upstream origin { server 127.0.0.1:$ORIGIN_PORT; keepalive 64; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache hot;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 5s;
            $extra
        }
    }
}
CONF
    nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' &
    local pid=$!; PIDS+=("$pid")
    wait_port "$port"
    run "$label" "$port"
    stop "$pid"; stop "$ORIGIN_PID"
}

hoard_row "hoard (XFetch beta=1)" 1
hoard_row "hoard (--xfetch-beta 0.3)" 0.3
hoard_row "hoard (--xfetch-beta 0)" 0
hoard_row "hoard (--xfetch-beta 0 --stale-while-revalidate 1s)" 0 1s
if command -v nginx >/dev/null; then
    nginx_row "nginx proxy_cache_lock" ""
    nginx_row "nginx lock + use_stale updating" "proxy_cache_use_stale updating; proxy_cache_background_update on;"
else
    echo "nginx not installed: skipping its rows (apt-get install nginx-light)" >&2
fi

echo
echo "$CONNS clients, origin delay ${DELAY_MS} ms, max-age=1, ${DURATION} s per row"
echo "fetches/s: origin fetches per second (max-age=1: one expiry a second); max herd: most fetches"
echo "started while another was in flight; p99 expiry: requests near an origin fetch"
printf '| %-32s | %7s | %9s | %8s | %11s | %11s | %5s | %9s | %6s |\n' \
    server/config fetches fetches/s "max herd" "p99 steady" "p99 expiry" ratio requests errors
printf '|%s|\n' "----------------------------------|---------|-----------|----------|-------------|-------------|-------|-----------|--------"
grep '^RESULT' "$WORK/results" | while IFS=$'\t' read -r _ label fetches secs exp per max ps pe ratio reqs errs; do
    rate=$(awk -v f="$fetches" -v s="$secs" 'BEGIN { printf "%.2f", f / s }')
    printf '| %-32s | %7s | %9s | %8s | %8s ms | %8s ms | %5s | %9s | %6s |\n' \
        "$label" "$fetches" "$rate" "$max" "$ps" "$pe" "$ratio" "$reqs" "$errs"
done
