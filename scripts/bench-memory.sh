#!/usr/bin/env bash
# #23's memory comparison, ours against the real etcd (Debian's etcd-server)
# with the same data: each gets KEYS distinct keys of VALUE bytes (default
# 1,000,000 × 256 B), written once each by 256 clients. Reports each
# server's resident memory at its peak during the fill, after the fill, and
# after a restart on the filled data (the index rebuilt from disk), split
# into anonymous (heap, stacks) and file-backed (code, libraries, the mapped
# database). Release build; not part of CI (minutes, a GiB of disk).
#
#   scripts/bench-memory.sh [keys] [value-bytes]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
VALUE=${2:-256}
. scripts/lib/bench.sh


port=24920
for who in ours etcd; do
    if [ "$who" = ours ]; then binary=$OURS; else binary=$REAL; fi
    start "$binary" "$who" $port --quota-backend-bytes 8589934592
    echo "$who fill: $("$BENCH" put --endpoints "127.0.0.1:$port" --conns 16 --clients 256 --total "$KEYS" \
        --key-space-size "$KEYS" --sequential-keys --val-size "$VALUE" | summary)"
    echo "$who after the fill: $(memory "$PID")"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    start "$binary" "$who" $port --quota-backend-bytes 8589934592
    echo "$who restarted on the data: $(memory "$PID")"
    echo "$who database file: $(du -k "$ROOT/$who/member/snap/db" | awk '{print $1}') KiB"
    kill "$PID"; wait "$PID" 2>/dev/null || true
    port=$((port + 4))
done
