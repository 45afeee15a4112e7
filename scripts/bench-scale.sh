#!/usr/bin/env bash
# #23's scale check, ours against the real etcd (Debian's etcd-server), a
# fresh single member for each load:
#   watchers: WATCHERS watchers on distinct keys over 16 streams, then
#             WATCHERS puts going round the keys (one event each);
#   leases:   LEASES leases granted by 256 clients, then LEASES keep-alives
#             going round them.
# Each line gives the load's result and the server's resident memory
# before, at its peak, and (leases) while the leases are still held.
# Release build; every load is bounded.
#
#   scripts/bench-scale.sh [watchers] [leases]
set -euo pipefail
cd "$(dirname "$0")/.."
WATCHERS=${1:-10000}
LEASES=${2:-100000}
. scripts/lib/bench.sh


port=24940
for who in ours etcd; do
    if [ "$who" = ours ]; then binary=$OURS; else binary=$REAL; fi
    start "$binary" "$who-watch" $port
    base=$(kib "$PID" VmRSS)
    out=$("$BENCH" watch --endpoints "127.0.0.1:$port" --conns 16 --streams 16 --watchers "$WATCHERS" --distinct-keys \
        --puts "$WATCHERS" --put-interval-ms 0 | grep -E "watch:|events/s|put→event" -A1 | grep -E "watch:|events/s|latency" | head -3 | tr -s ' ' | paste -sd' ' -)
    echo "$who watchers: $out; RSS KiB: start $base, peak $(kib "$PID" VmHWM)"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    port=$((port + 4))

    start "$binary" "$who-lease" $port
    base=$(kib "$PID" VmRSS)
    out=$("$BENCH" lease-keepalive --endpoints "127.0.0.1:$port" --conns 16 --clients 256 --leases "$LEASES" --total "$LEASES" \
        | grep -E "granted|requests/s|latency" | tr -s ' ' | paste -sd' ' -)
    echo "$who leases: $out; RSS KiB: start $base, peak $(kib "$PID" VmHWM), holding $(kib "$PID" VmRSS)"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    port=$((port + 4))
done
