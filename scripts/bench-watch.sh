#!/usr/bin/env bash
# Watch fan-out and watch latency, ours beside the real etcd (Debian's
# etcd-server), one fresh single member each on loopback, in the same run,
# alternating A-B-B-A for ROUNDS rounds so that load from elsewhere on the
# machine falls on both alike.
#
# For every run it prints events/s, put->event latency and the server's CPU
# time (utime+stime from /proc/PID/stat, before and after) per delivered
# event: on a busy machine the CPU figure is the steadier one.
#
#   scripts/bench-watch.sh [rounds]
#   env: WATCHERS (1024) STREAMS (16) PUTS (2000) LAT_WATCHERS (16)
#        LAT_PUTS (2000) LAT_INTERVAL_MS (5: 200 puts/s) NO_BUILD SCRATCH (.build-release)
# Every run is bounded: etcd-bench waits at most 60 s for events.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-2}
WATCHERS=${WATCHERS:-1024}
STREAMS=${STREAMS:-16}
PUTS=${PUTS:-2000}
LAT_WATCHERS=${LAT_WATCHERS:-16}
LAT_PUTS=${LAT_PUTS:-2000}
LAT_INTERVAL_MS=${LAT_INTERVAL_MS:-5}
. scripts/lib/bench.sh

# measure LABEL PID PORT WATCHERS STREAMS PUTS INTERVAL
measure() {
    local label=$1 pid=$2 port=$3 before after out events eps lat
    before=$(cpu "$pid")
    out=$("$BENCH" watch --endpoints "127.0.0.1:$port" --conns "$5" --watchers "$4" --streams "$5" \
        --puts "$6" --put-interval-ms "$7")
    after=$(cpu "$pid")
    events=$(echo "$out" | sed -n 's/.*; \([0-9]*\) of .*/\1/p')
    eps=$(echo "$out" | awk '/events\/s/ {print $2}')
    # p50 and p99 of put sent -> event, then of put returned -> event.
    lat=$(echo "$out" | grep 'latency ms' | awk '{printf "%s/%s ms  ", $6, $10}')
    awk -v l="$label" -v e="$events" -v s="$eps" -v c=$((after - before)) -v t="$TICK" -v lat="$lat" 'BEGIN {
        printf "%-6s events %8d  events/s %8d  server cpu %6.2f s  %6.2f us/event  p50/p99 sent->event, returned->event: %s\n",
            l, e, s, c / t, (e > 0 ? c / t / e * 1e6 : 0), lat }'
}

start "$OURS" ours 24900; OURS_PID=$PID
start "$REAL" etcd 25900; ETCD_PID=$PID
echo "=== $($REAL --version | head -1); ours: $OURS"
echo "=== fan-out: $WATCHERS watchers of one key over $STREAMS streams, $PUTS puts back to back"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="ours etcd"; else order="etcd ours"; fi
    for who in $order; do
        if [ "$who" = ours ]; then measure ours "$OURS_PID" 24900 "$WATCHERS" "$STREAMS" "$PUTS" 0
        else measure etcd "$ETCD_PID" 25900 "$WATCHERS" "$STREAMS" "$PUTS" 0; fi
    done
done
echo "=== latency: $LAT_WATCHERS watchers on 1 stream, $LAT_PUTS puts every $LAT_INTERVAL_MS ms"
for round in $(seq "$ROUNDS"); do
    if [ $((round % 2)) -eq 1 ]; then order="ours etcd"; else order="etcd ours"; fi
    for who in $order; do
        if [ "$who" = ours ]; then measure ours "$OURS_PID" 24900 "$LAT_WATCHERS" 1 "$LAT_PUTS" "$LAT_INTERVAL_MS"
        else measure etcd "$ETCD_PID" 25900 "$LAT_WATCHERS" 1 "$LAT_PUTS" "$LAT_INTERVAL_MS"; fi
    done
done
