#!/usr/bin/env bash
# Defragmentation under write load, ours against the real etcd (Debian's
# etcd-server) in the same run. Each server gets a store of STORE_MIB MiB
# (64 KiB values), then: put load alone (the baseline), and the same put
# load with a defrag started half a second in. Prints the defrag's duration
# and the load's throughput and latencies for both phases. Release build;
# every load is bounded by --total. Not part of CI (minutes, GiBs of disk).
#
#   scripts/bench-defrag.sh [store-mib] [puts-per-phase] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
STORE_MIB=${1:-1024}
PUTS=${2:-200000}
ROUNDS=${3:-2}
. scripts/lib/bench.sh


summary() { grep -E "requests/s|latency|errors" | tr -s ' ' | paste -sd' ' -; }
load() { "$BENCH" put --endpoints "$1" --conns 16 --clients 256 --total "$PUTS" --key-size 16 --key-space-size 100000 | summary; }
dbsize() { ETCDCTL_API=3 etcdctl --endpoints="$1" endpoint status -w json | grep -o '"dbSize":[0-9]*' | cut -d: -f2; }

fill() {
    local ep=127.0.0.1:$1 keys=$((STORE_MIB * 16))
    "$BENCH" put --endpoints "$ep" --conns 8 --clients 64 --total "$keys" --key-space-size "$keys" \
        --sequential-keys --val-size 65536 >/dev/null
    echo "  store: $(($(dbsize "$ep") / 1048576)) MiB"
}

phase() {
    local label=$1 ep=127.0.0.1:$2
    echo "  baseline:     $(load "$ep")"
    local out=$ROOT/during.out
    load "$ep" >"$out" &
    local loader=$!
    sleep 0.5
    local t0 t1
    t0=$(date +%s.%N)
    ETCDCTL_API=3 etcdctl --endpoints="$ep" --command-timeout=600s defrag >/dev/null
    t1=$(date +%s.%N)
    wait $loader
    echo "  during defrag: $(cat "$out")"
    echo "  defrag took $(echo "$t1 - $t0" | bc) s, store now $(($(dbsize "$ep") / 1048576)) MiB"
}

start "$OURS" ours 24800 --quota-backend-bytes 8589934592
start "$REAL" etcd 25800 --quota-backend-bytes 8589934592
echo "=== filling ours"; fill 24800
echo "=== filling etcd $($REAL --version | head -1 | awk '{print $3}')"; fill 25800
for round in $(seq "$ROUNDS"); do
    echo "=== round $round: ours"; phase ours 24800
    echo "=== round $round: etcd"; phase etcd 25800
done
