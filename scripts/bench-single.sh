#!/usr/bin/env bash
# Compares a single member of ours with a single member of the real etcd
# (Debian's etcd-server) on loopback, in the same run, with etcd-bench:
# serializable range and put with 1 client, put with 256 clients on 16
# connections, linearizable and serializable range with 256 clients, txn-put
# with 256 clients; then each server's peak RSS. Release build; every load is bounded by --total.
#
#   scripts/bench-single.sh [total-puts]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-40000}
. scripts/lib/bench.sh


run() {
    local label=$1 ep=127.0.0.1:$2
    echo "=== $label"
    # A serializable read with one client: the round trip without raft or
    # the disk, the floor under "put 1 client" (which adds one fsync).
    echo "range s 1 client:    $("$BENCH" range --endpoints "$ep" --conns 1 --clients 1 --total $((TOTAL / 10)) --consistency s | summary)"
    echo "put 1 client:        $("$BENCH" put --endpoints "$ep" --conns 1 --clients 1 --total $((TOTAL / 20)) | summary)"
    echo "put 256 clients:     $("$BENCH" put --endpoints "$ep" --conns 16 --clients 256 --total "$TOTAL" | summary)"
    echo "range l 256 clients: $("$BENCH" range --endpoints "$ep" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency l | summary)"
    echo "range s 256 clients: $("$BENCH" range --endpoints "$ep" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency s | summary)"
    echo "txn-put 256 clients: $("$BENCH" txn-put --endpoints "$ep" --conns 16 --clients 256 --total "$TOTAL" | summary)"
}

echo "=== disk: $("$BENCH" fsync --dir "$ROOT" --count 2000 | summary)"
start "$OURS" ours 24800
start "$REAL" etcd 25800
run ours 24800
run "etcd $($REAL --version | head -1 | awk '{print $3}')" 25800
echo "=== peak RSS (KiB)"
for pid in "${PIDS[@]}"; do echo "$(grep VmHWM /proc/$pid/status | awk '{print $2}') $(tr '\0' ' ' </proc/$pid/cmdline | awk '{print $1}')"; done
