#!/usr/bin/env bash
# One proxy_wrk.sh scenario (default the 1 KiB hit path, "1k c32", gateway mode) of several
# hoard variants, in alternating single runs of benches/proxy_wrk.sh (each against nginx in
# the same run):
#   new     this build ($CARGO_TARGET_DIR or ./target, release/hoard)
#   admin   this build with --admin 127.0.0.1:0 (dashboard and /metrics served, nobody watching)
#   logged  this build with its default logging (an access line per request; no -q)
#   old     another build: OLD_TARGET_DIR=<a target directory holding release/hoard>, e.g. one
#           built from an older commit with
#           `git worktree add /tmp/old <rev> && CARGO_TARGET_DIR=/tmp/old-target cargo build --release`
#   oldlogged  that other build with its default logging
#
#   ROUNDS=5 OLD_TARGET_DIR=/tmp/old-target benches/hit_alternating.sh
#   ROUNDS=5 VARIANTS="new logged" benches/hit_alternating.sh
#   ROUNDS=5 VARIANTS="new logged oldlogged" OLD_TARGET_DIR=/tmp/old-target benches/hit_alternating.sh
#   ROUNDS=5 SCENARIO="miss c32" VARIANTS="new old" OLD_TARGET_DIR=/tmp/old-target benches/hit_alternating.sh
#
# VARIANTS defaults to "new admin", plus "old" when OLD_TARGET_DIR is set. SCENARIO is one of
# proxy_wrk.sh's (a "rand" scenario fills RANDOM_URLS URLs in every run: set RANDOM_URLS small).
#
# Prints every run, then per variant the median (min..max) over the rounds of hoard's rps, p99
# and hoard/nginx rps ratio. Loopback only (proxy_wrk.sh); bounded by ROUNDS x variants runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4s}
NEW=${CARGO_TARGET_DIR:-$ROOT/target}
OLD=${OLD_TARGET_DIR:-}
SCENARIO=${SCENARIO:-1k c32}
if [[ -n ${VARIANTS:-} ]]; then
    read -r -a VARIANTS <<<"$VARIANTS"
else
    VARIANTS=(new admin)
    [[ -n $OLD ]] && VARIANTS+=(old)
fi
for v in "${VARIANTS[@]}"; do
    case $v in new | admin | logged) ;; old | oldlogged) [[ -n $OLD ]] || { echo "variant $v needs OLD_TARGET_DIR" >&2; exit 2; } ;;
        *) echo "unknown variant $v (new, admin, logged, old, oldlogged)" >&2; exit 2 ;; esac
done
[[ ${NO_BUILD:-0} == 1 ]] || (cd "$ROOT" && cargo build --release --bin hoard)
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for i in $(seq "$ROUNDS"); do
    for v in "${VARIANTS[@]}"; do
        quiet=1
        case $v in
            new) t=$NEW args="" ;;
            admin) t=$NEW args="--admin 127.0.0.1:0" ;;
            logged) t=$NEW args="" quiet=0 ;;
            old) t=$OLD args="" ;;
            oldlogged) t=$OLD args="" quiet=0 ;;
        esac
        line=$(CARGO_TARGET_DIR=$t HOARD_ARGS=$args HOARD_QUIET=$quiet NO_BUILD=1 ROUNDS=1 DURATION=$DURATION \
            SCENARIOS="$SCENARIO" VARNISH=0 SQUID=0 RSS_TEST=0 "$ROOT/benches/proxy_wrk.sh" 2>/dev/null |
            grep -E "^$SCENARIO +(hoard-gw|nginx) " | tr -s ' ' | tr '\n' '|' || true)
        echo "$i $v $line" | tee -a "$OUT"
    done
done
python3 - "$OUT" "$SCENARIO" <<'PY'
import re, statistics as st, sys
runs = {}
for l in open(sys.argv[1]):
    v = l.split()[1]
    m = re.findall(re.escape(sys.argv[2]) + r' (hoard-gw|nginx) (\d+) \(\S+\) ([\d.]+) ([\d.]+)', l)
    if len(m) == 2:
        runs.setdefault(v, []).append((float(m[0][1]), float(m[0][3]), float(m[0][1]) / float(m[1][1])))
def f(xs, fmt):
    return (fmt + " (" + fmt + ".." + fmt + ")") % (st.median(xs), min(xs), max(xs))
for v, rs in runs.items():
    print(f"{v:6} rounds={len(rs)} hoard rps {f([r[0] for r in rs], '%.0f')}  p99 ms {f([r[1] for r in rs], '%.2f')}  hoard/nginx {f([r[2] for r in rs], '%.2f')}")
PY
