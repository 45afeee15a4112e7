#!/usr/bin/env bash
# Two builds of ours side by side (say, before and after a change): put with
# 256 clients on 16 connections and linearizable range with 256 clients
# against one fresh member of each, ROUNDS rounds in alternating order.
# Each line also gives the server's CPU time per request (user + system,
# from /proc), which is steadier than throughput on a noisy machine.
# EXTRA_A / EXTRA_B: environment for A's / B's server (e.g. ETCD_SWIFT_UNMETERED=1).
# Every load is bounded by --total.
#
#   scripts/bench-ab.sh ETCD_A ETCD_B [total-puts] [rounds]
set -euo pipefail
A=$(realpath "$1")
B=$(realpath "$2")
cd "$(dirname "$0")/.."
TOTAL=${3:-40000}
ROUNDS=${4:-3}
. scripts/lib/bench.sh

# Each runs through a wrapper that sets its EXTRA_ variables (exec keeps the pid).
printf '#!/bin/sh\nexec env %s "%s" "$@"\n' "${EXTRA_A:-}" "$A" >"$ROOT/a.sh"
printf '#!/bin/sh\nexec env %s "%s" "$@"\n' "${EXTRA_B:-}" "$B" >"$ROOT/b.sh"
chmod +x "$ROOT/a.sh" "$ROOT/b.sh"
start "$ROOT/a.sh" a 24700
PID_A=$PID
start "$ROOT/b.sh" b 24710
PID_B=$PID

# run WHO PORT PID LABEL REQUESTS BENCH-ARGS...: one load, its summary and
# the server's CPU per request.
run() {
    local who=$1 port=$2 pid=$3 label=$4 requests=$5 before out
    shift 5
    before=$(cpu "$pid")
    out=$("$BENCH" "$@" --endpoints "127.0.0.1:$port" --total "$requests" | summary)
    echo "round $round $who $label $out; server CPU $(cpu_us_per "$before" "$(cpu "$pid")" "$requests") us/req"
}
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
    for who in $order; do
        if [ "$who" = a ]; then port=24700 pid=$PID_A; else port=24710 pid=$PID_B; fi
        run "$who" "$port" "$pid" "put 256:    " "$TOTAL" put --conns 16 --clients 256
        run "$who" "$port" "$pid" "range l 256:" $((TOTAL * 2)) range --conns 16 --clients 256 --consistency l
    done
done
