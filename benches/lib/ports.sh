# Sourced by the bench scripts (after they define `die`): free loopback ports.

# pick_port [OFFSET...]: a port p below the ephemeral range (32768-) on which nothing listens,
# nor on p+OFFSET for each OFFSET given (e.g. 10000: a Redis Cluster node's bus port).
pick_port() {
    local p o busy
    for _ in $(seq 200); do
        p=$((20000 + RANDOM % 12000))
        busy=0
        for o in 0 "$@"; do
            if ss -Htln "sport = :$((p + o))" | grep -q .; then busy=1; break; fi
        done
        if [[ $busy == 0 ]]; then echo "$p"; return; fi
    done
    die "no free port"
}
