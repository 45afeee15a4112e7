#!/usr/bin/env bash
# Compares a 3-member cluster of ours with a 3-member cluster of the real
# etcd (Debian's etcd-server) on loopback, in the same run, with etcd-bench:
# put with 256 clients to the leader and to all members, and linearizable
# range with 256 clients. Release build; every load is bounded by --total.
#
#   scripts/bench-cluster.sh [total-puts]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-40000}
. scripts/lib/bench.sh

# start_cluster BINARY NAME-PREFIX BASE-PORT
start_cluster() {
    local binary=$1 prefix=$2 base=$3 cluster="" i
    for i in 0 1 2; do cluster+="${cluster:+,}$prefix$i=http://127.0.0.1:$((base + 10 * i + 1))"; done
    for i in 0 1 2; do
        "$binary" --name "$prefix$i" --data-dir "$ROOT/$prefix$i" \
            --listen-client-urls "http://127.0.0.1:$((base + 10 * i))" --advertise-client-urls "http://127.0.0.1:$((base + 10 * i))" \
            --listen-peer-urls "http://127.0.0.1:$((base + 10 * i + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 10 * i + 1))" \
            --initial-cluster "$cluster" --initial-cluster-token "bench-$prefix" --log-level warn 2>"$ROOT/$prefix$i.log" &
        PIDS+=($!)
    done
}

# leader_endpoint BASE-PORT: the client endpoint of the member that leads.
leader_endpoint() {
    local base=$1 i
    for _ in $(seq 100); do
        for i in 0 1 2; do
            local ep="127.0.0.1:$((base + 10 * i))"
            if ETCDCTL_API=3 etcdctl --endpoints="$ep" endpoint status -w table 2>/dev/null | grep -q "| *true *|"; then
                echo "$ep"; return
            fi
        done
        sleep 0.2
    done
    echo "no leader on $base" >&2; exit 1
}

run() {
    local label=$1 base=$2 leader all
    leader=$(leader_endpoint "$base")
    all="127.0.0.1:$base,127.0.0.1:$((base + 10)),127.0.0.1:$((base + 20))"
    echo "=== $label: put, 256 clients, leader ($leader)"
    "$BENCH" put --endpoints "$leader" --conns 16 --clients 256 --total "$TOTAL"
    echo "=== $label: put, 256 clients, all members"
    "$BENCH" put --endpoints "$all" --conns 16 --clients 256 --total "$TOTAL"
    echo "=== $label: range (linearizable), 256 clients, all members"
    "$BENCH" range --endpoints "$all" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency l
}

start_cluster "$OURS" ours 24700
start_cluster "$REAL" etcd 25700
run "ours" 24700
run "etcd $($REAL --version | head -1 | awk '{print $3}')" 25700
echo "=== RSS (KiB) after the runs"
for pid in "${PIDS[@]}"; do ps -o rss=,args= -p "$pid" | awk '{print $1, $2, $4}'; done
