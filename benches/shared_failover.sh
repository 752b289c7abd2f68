#!/usr/bin/env bash
# Redis killed (SIGKILL) and restarted under a wrk load through two hoards sharing it
# (issue #14, done-criteria 3 and 4): counts the responses that were not 2xx and wrk's socket
# errors, and how long after Redis is back a URL filled through hoard A is a shared hit
# through hoard B (probes every 50 ms from the moment Redis answers PING, each a new URL; on
# a cluster, also when the restarted master reports cluster_state:ok: until then Redis
# refuses the keys of its slots, and when both hoards have closed the breakers of every slot
# range: every key shared again).
#
#   benches/shared_failover.sh                    # standalone Redis, 30 s, kill at 10 s, restart at 15 s
#   MODE=cluster benches/shared_failover.sh       # 3-master Redis Cluster; one master is killed
#
# Environment:
#   MODE        standalone (default) | cluster
#   DURATION    seconds of wrk load (default 30)
#   KILL_AT     seconds into the load when Redis (a master, for a cluster) is SIGKILLed (10)
#   RESTART_AT  seconds into the load when it is started again on its port (15)
#   CONNS       wrk connections per hoard (default 16); THREADS wrk threads per hoard (1)
#   URLS        shared URLs /s1../sN both wrks ask for at random (default 1000); every other
#               request is a URL new to the fleet (a Redis miss, lease and fill)
#   MAX_AGE     the origin's max-age (default 5): shared URLs are filled again and again
#   NO_BUILD    1: do not run cargo build
#   PROFILE     release (default) | debug: which build of hoard and the origin to run (debug:
#               a quick check of the script, not figures)
#
# Everything listens on 127.0.0.1; the script starts its own origin (examples/slow_origin),
# redis-server(s) and two hoards (release build, each its own cache directory, --shared with
# every other option at its default but --upstream and --access-log off), and stops only what
# it started, by PID. Every wait is bounded. Needs redis-server, redis-cli, wrk, curl (it
# installs wrk with apt-get if it can, and skips with a message when redis-server is missing).
set -euo pipefail

MODE=${MODE:-standalone}
DURATION=${DURATION:-30}
KILL_AT=${KILL_AT:-10}
RESTART_AT=${RESTART_AT:-15}
CONNS=${CONNS:-16}
THREADS=${THREADS:-1}
URLS=${URLS:-1000}
MAX_AGE=${MAX_AGE:-5}
NO_BUILD=${NO_BUILD:-0}
PROFILE=${PROFILE:-release}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

log() { printf '[shared_failover %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || {
    log "skipped: redis-server/redis-cli not installed (apt-get install redis-server)"
    exit 0
}
command -v curl >/dev/null || die "curl is required"
command -v wrk >/dev/null ||
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null 2>&1 ||
    die "wrk is required (apt-get install wrk)"
[[ $MODE == standalone || $MODE == cluster ]] || die "MODE is standalone or cluster"
((KILL_AT < RESTART_AT && RESTART_AT < DURATION)) || die "need KILL_AT < RESTART_AT < DURATION"

[[ $PROFILE == release || $PROFILE == debug ]] || die "PROFILE is release or debug"
if [[ $NO_BUILD != 1 ]]; then
    log "cargo build --profile ${PROFILE/debug/dev} --bin hoard --example slow_origin"
    (cd "$ROOT" && cargo build --profile "${PROFILE/debug/dev}" --quiet --bin hoard --example slow_origin)
fi
HOARD=$TARGET_DIR/$PROFILE/hoard
ORIGIN_BIN=$TARGET_DIR/$PROFILE/examples/slow_origin
[[ -x $HOARD && -x $ORIGIN_BIN ]] || die "no $PROFILE build in $TARGET_DIR (unset NO_BUILD)"

RUN=$(mktemp -d)
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port whose cluster bus port (+10000) is free too.
source "$ROOT/benches/lib/ports.sh"
wait_http() { # port pid: until something answers HTTP there (10 s at most)
    for _ in $(seq 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$1/__count" && return 0
        kill -0 "$2" 2>/dev/null || die "process $2 exited"
        sleep 0.1
    done
    die "nothing answered on 127.0.0.1:$1"
}
ping_redis() { [[ $(redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null) == PONG ]]; }

# --- Redis ---------------------------------------------------------------------------------------
declare -A REDIS_PID=()
start_redis() { # port [extra args...]: in its own dir (a cluster node keeps nodes.conf there)
    local port=$1
    shift
    mkdir -p "$RUN/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$RUN/redis-$port" "$@" >"$RUN/redis-$port.log" 2>&1 &
    REDIS_PID[$port]=$!
    PIDS+=($!)
    for _ in $(seq 100); do ping_redis "$port" && return 0; sleep 0.05; done
    die "redis-server on $port not ready"
}
CLUSTER_ARGS=(--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 1000)
REDIS_PORTS=()
if [[ $MODE == standalone ]]; then
    REDIS_PORTS=("$(pick_port)")
    start_redis "${REDIS_PORTS[0]}"
    SHARED="redis://127.0.0.1:${REDIS_PORTS[0]}"
    VICTIM=${REDIS_PORTS[0]}
    VICTIM_ARGS=()
else
    for _ in 1 2 3; do
        p=$(pick_port 10000) # its cluster bus port (+10000) free too
        REDIS_PORTS+=("$p")
        start_redis "$p" "${CLUSTER_ARGS[@]}"
    done
    redis-cli -h 127.0.0.1 -p "${REDIS_PORTS[0]}" --cluster create \
        $(printf '127.0.0.1:%s ' "${REDIS_PORTS[@]}") --cluster-replicas 0 --cluster-yes >/dev/null
    for p in "${REDIS_PORTS[@]}"; do
        for _ in $(seq 200); do
            redis-cli -h 127.0.0.1 -p "$p" CLUSTER INFO | grep -q 'cluster_state:ok' && break
            sleep 0.1
        done
    done
    SHARED="redis+cluster://$(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}")"
    SHARED=${SHARED%,}
    VICTIM=${REDIS_PORTS[2]}
    VICTIM_ARGS=("${CLUSTER_ARGS[@]}")
fi
log "Redis ($MODE) on ports ${REDIS_PORTS[*]}; the one killed: $VICTIM"

# --- origin and hoards ---------------------------------------------------------------------------
ORIGIN_PORT=$(pick_port)
"$ORIGIN_BIN" --listen "127.0.0.1:$ORIGIN_PORT" --delay-ms 0 --max-age "$MAX_AGE" >"$RUN/origin.log" 2>&1 &
ORIGIN_PID=$!
PIDS+=($ORIGIN_PID)
wait_http "$ORIGIN_PORT" "$ORIGIN_PID"

start_hoard() { # name: sets PORT (not in a subshell: PIDS must keep its PID)
    PORT=$(pick_port)
    mkdir -p "$RUN/cache-$1"
    "$HOARD" --listen "127.0.0.1:$PORT" --cache-dir "$RUN/cache-$1" \
        --upstream "http://127.0.0.1:$ORIGIN_PORT" --shared "$SHARED" --access-log off \
        >"$RUN/hoard-$1.log" 2>&1 &
    PIDS+=($!)
    wait_http "$PORT" $!
}
start_hoard a
A=$PORT
start_hoard b
B=$PORT
log "origin :$ORIGIN_PORT, hoard A :$A, hoard B :$B, --shared $SHARED"

# Is PATH a shared hit through B after a fetch through A?
cache_status() { curl -s -o /dev/null -D - --max-time 5 "http://127.0.0.1:$1$2" | tr -d '\r' | grep -i '^cache-status:' || true; }
shared_hit() {
    cache_status "$A" "$1" >/dev/null
    [[ $(cache_status "$B" "$1") == *detail=shared* ]]
}
for _ in $(seq 100); do shared_hit "/warm-$RANDOM$RANDOM" && break; sleep 0.1; done
shared_hit "/before-$RANDOM$RANDOM" || die "no sharing before the kill (see $RUN/hoard-*.log)"

# --- load ----------------------------------------------------------------------------------------
cat >"$RUN/mix.lua" <<'LUA'
-- Half the requests: one of URLS shared URLs at random; half: a URL new to the fleet.
local threads = {}
local counter = 1
function setup(thread)
    thread:set("id", counter)
    counter = counter + 1
    table.insert(threads, thread)
end
function init(args)
    n, bad = 0, 0
    urls = tonumber(os.getenv("URLS") or "1000")
    tag = (os.getenv("TAG") or "x") .. "-" .. id
    math.randomseed(os.time() * 1000 + id)
end
function request()
    n = n + 1
    if n % 2 == 0 then
        return wrk.format("GET", "/s" .. math.random(1, urls))
    end
    return wrk.format("GET", "/u-" .. tag .. "-" .. n)
end
function response(status, headers, body)
    if status < 200 or status > 299 then bad = bad + 1 end
end
function done(summary, latency, requests)
    local total = 0
    for _, t in ipairs(threads) do total = total + t:get("bad") end
    io.write(string.format("NON2XX %d\n", total))
end
LUA

run_wrk() { # name port
    URLS=$URLS TAG=$1 wrk -t "$THREADS" -c "$CONNS" -d "${DURATION}s" --timeout 10s \
        -s "$RUN/mix.lua" "http://127.0.0.1:$2/" >"$RUN/wrk-$1.out" 2>&1
}
START=$(date +%s.%N)
run_wrk a "$A" &
WRK_A=$!
PIDS+=($WRK_A)
run_wrk b "$B" &
WRK_B=$!
PIDS+=($WRK_B)
sub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a - b }'; }
since() { sub "$(date +%s.%N)" "$START"; }
sleep_until() { local d; d=$(sub "$1" "$(since)"); [[ $d == -* ]] || sleep "$d"; }

sleep_until "$KILL_AT"
kill -KILL "${REDIS_PID[$VICTIM]}"
wait "${REDIS_PID[$VICTIM]}" 2>/dev/null || true
log "SIGKILL redis :$VICTIM at $(since) s"
sleep_until "$RESTART_AT"
for _ in $(seq 100); do ss -Htln "sport = :$VICTIM" | grep -q . || break; sleep 0.05; done
start_redis "$VICTIM" "${VICTIM_ARGS[@]}"
BACK=$(date +%s.%N)
log "redis :$VICTIM answers again at $(since) s"
CLUSTER_OK=""
if [[ $MODE == cluster ]]; then
    # In the background, so the probes below start as soon as the master answers PING: a
    # restarted master refuses its own slots for 2 s (Redis' writable delay) while the other
    # masters may already serve theirs.
    (
        for _ in $(seq 200); do
            if redis-cli -h 127.0.0.1 -p "$VICTIM" CLUSTER INFO | grep -q 'cluster_state:ok'; then
                sub "$(date +%s.%N)" "$BACK" >"$RUN/cluster_ok"
                break
            fi
            sleep 0.05
        done
    ) &
    OK_WATCH=$!
    PIDS+=($OK_WATCH)
fi
RESUMED=""
for i in $(seq 400); do # every URL new: filled through A, then asked of B
    if shared_hit "/probe-$i-$RANDOM"; then
        RESUMED=$(sub "$(date +%s.%N)" "$BACK")
        break
    fi
    sleep 0.05
done
log "sharing resumed ${RESUMED:-never} s after Redis came back"
if [[ $MODE == cluster ]]; then
    wait "$OK_WATCH" 2>/dev/null || true
    CLUSTER_OK=$(cat "$RUN/cluster_ok" 2>/dev/null || true)
    log "cluster_state:ok on the restarted master ${CLUSTER_OK:-never} s after it answered PING"
    # Every key shared again: both hoards logged that their last slot range closed.
    ALL_CLOSED=""
    for _ in $(seq 100); do
        t_a=$(grep -h 'every slot range, breakers closed' "$RUN/hoard-a.log" | tail -1 | cut -d' ' -f1 || true)
        t_b=$(grep -h 'every slot range, breakers closed' "$RUN/hoard-b.log" | tail -1 | cut -d' ' -f1 || true)
        if [[ -n $t_a && -n $t_b ]]; then
            latest=$(printf '%s\n%s\n' "$t_a" "$t_b" | sort | tail -1)
            ALL_CLOSED=$(sub "$(date -d "$latest" +%s.%N)" "$BACK")
            break
        fi
        sleep 0.1
    done
    log "every slot range closed again on both hoards ${ALL_CLOSED:-never} s after PING"
fi

wait "$WRK_A" || true
wait "$WRK_B" || true

# --- report --------------------------------------------------------------------------------------
report() { # name
    local f=$RUN/wrk-$1.out reqs rps non2xx sock
    reqs=$(awk '/requests in/ {print $1}' "$f")
    rps=$(awk '/Requests\/sec/ {print $2}' "$f")
    non2xx=$(awk '/^NON2XX/ {print $2}' "$f")
    sock=$(grep -o 'Socket errors:.*' "$f" || echo "Socket errors: none")
    printf '| %s | %s | %s | %s | %s |\n' "$1" "${reqs:-?}" "${rps:-?}" "${non2xx:-?}" "$sock"
    [[ ${non2xx:-1} == 0 && $sock == "Socket errors: none" ]]
}
echo
echo "MODE=$MODE PROFILE=$PROFILE DURATION=${DURATION}s KILL_AT=${KILL_AT}s RESTART_AT=${RESTART_AT}s CONNS=$CONNS per hoard, URLS=$URLS, max-age=$MAX_AGE"
echo "| hoard | requests | req/s | non-2xx | socket errors |"
echo "|---|---|---|---|---|"
ok=0
report a || ok=1
report b || ok=1
echo "origin requests: $(curl -s --max-time 5 "http://127.0.0.1:$ORIGIN_PORT/__count")"
echo "sharing resumed: ${RESUMED:-never} s after Redis answered again"
if [[ $MODE == cluster ]]; then
    echo "cluster_state:ok (restarted master): ${CLUSTER_OK:-never} s after it answered again"
    echo "every slot range shared again (both hoards): ${ALL_CLOSED:-never} s after it answered again"
fi
echo "hoard logs (A and B, by time):"
grep -h 'shared tier' "$RUN"/hoard-*.log | sort | cut -c1-200 | sed 's/^/  /' | head -20 || true
if [[ -z $RESUMED ]]; then # keep the evidence: the last shared-tier lines of each hoard, whole
    for h in a b; do
        echo "hoard $h, last shared-tier lines:"
        grep -h 'shared tier' "$RUN/hoard-$h.log" | tail -8 | sed 's/^/  /' || true
    done
fi
[[ $ok == 0 && -n $RESUMED ]]
