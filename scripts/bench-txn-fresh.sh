#!/usr/bin/env bash
# txn-put with 256 clients on 16 connections against a fresh single member,
# RUNS times, ours then the real etcd (Debian's etcd-server) each round:
# looks for the one-second stall of issue 23 (p99/max per run). Release
# build; every run is bounded by --total.
#
#   scripts/bench-txn-fresh.sh [runs] [total]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
TOTAL=${2:-40000}
. scripts/lib/bench.sh
for i in $(seq "$RUNS"); do
    for who in ours etcd; do
        if [ "$who" = ours ]; then binary=$OURS; else binary=$REAL; fi
        port=$((24960 + 4 * i))
        start "$binary" "$who-$i" "$port"
        echo "$who run $i: $("$BENCH" txn-put --endpoints "127.0.0.1:$port" --conns 16 --clients 256 --total "$TOTAL" | summary)"
        kill "$PID"
        wait "$PID" 2>/dev/null || true
        rm -rf "${ROOT:?}/$who-$i"
    done
done
