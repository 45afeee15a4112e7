#!/usr/bin/env bash
# Two builds of ours side by side (say, before and after a change): put with
# 256 clients on 16 connections and linearizable range with 256 clients
# against one fresh member of each, ROUNDS rounds in alternating order.
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
start "$ROOT/b.sh" b 24710
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
    for who in $order; do
        if [ "$who" = a ]; then port=24700; else port=24710; fi
        echo "round $round $who put 256:     $("$BENCH" put --endpoints "127.0.0.1:$port" --conns 16 --clients 256 --total "$TOTAL" | summary)"
        echo "round $round $who range l 256: $("$BENCH" range --endpoints "127.0.0.1:$port" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency l | summary)"
    done
done
