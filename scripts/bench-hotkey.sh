#!/usr/bin/env bash
# #23's write-path comparison: put with 256 clients on 16 connections, all
# to one key (etcd's benchmark default) and over 100,000 keys, against one
# fresh member of ours and of the real etcd, ROUNDS rounds in alternating
# order; each line gives throughput, latency and the server's CPU per put.
# Then each server's peak RSS and its anonymous/file-backed split. Every load is bounded by --total.
#
#   scripts/bench-hotkey.sh [total-puts] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-40000}
ROUNDS=${2:-3}
. scripts/lib/bench.sh

start "$OURS" ours 24900
PID_OURS=$PID
start "$REAL" etcd 24910
PID_ETCD=$PID

# run WHO PORT PID KEYS: one put load over KEYS distinct keys.
run() {
    local before out
    before=$(cpu "$3")
    out=$("$BENCH" put --endpoints "127.0.0.1:$2" --conns 16 --clients 256 --key-space-size "$4" --total "$TOTAL" | summary)
    printf 'round %s %-4s keys %-6s %s; server CPU %s us/put\n' "$round" "$1" "$4" "$out" "$(cpu_us_per "$before" "$(cpu "$3")" "$TOTAL")"
}
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="ours etcd"; else order="etcd ours"; fi
    for who in $order; do
        if [ "$who" = ours ]; then port=24900 pid=$PID_OURS; else port=24910 pid=$PID_ETCD; fi
        run "$who" "$port" "$pid" 1
        run "$who" "$port" "$pid" 100000
    done
done
echo "memory ours: $(memory "$PID_OURS")"
echo "memory etcd: $(memory "$PID_ETCD")"
