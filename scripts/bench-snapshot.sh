#!/usr/bin/env bash
# Snapshot save and restore of a large store, ours against the real etcd
# (Debian's etcd-server, etcd 3.4) in the same run. Each server gets KEYS
# keys of VALUE bytes (default 1,000,000 × 1 KiB, about 1 GiB); then, per
# round, the Go etcdctl saves a snapshot from each (wall time, throughput,
# the server's peak RSS), each snapshot is restored with its own system's
# tool (our etcdutl, Go's etcdctl 3.4; wall time and peak RSS). The dd line
# at the start is a rough look at the disk; scripts/bench-snapshot-disk.sh
# measures the save against it round by round.
# Release build; not part of CI (minutes, GiBs of disk).
#
#   scripts/bench-snapshot.sh [keys] [value-bytes] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${1:-1000000}
VALUE=${2:-1024}
ROUNDS=${3:-2}
. scripts/lib/bench.sh
if [ -z "${NO_BUILD:-}" ]; then swift build -c release --scratch-path "$SCRATCH" --product etcdutl >/dev/null; fi
UTL=$SCRATCH/release/etcdutl
GO=("${GO_ETCDCTL[@]}")

echo "=== disk: $(dd if=/dev/zero of="$ROOT/dd" bs=1M count=1024 conv=fdatasync 2>&1 | tail -1)"
rm -f "$ROOT/dd"
start "$OURS" ours 24900 --quota-backend-bytes 8589934592
start "$REAL" etcd 24910 --quota-backend-bytes 8589934592
for port in 24900 24910; do
    echo "fill 127.0.0.1:$port: $(fill_keys "$port" "$KEYS" "$VALUE")"
done
NAMES=(ours etcd)
PORTS=(24900 24910)
for round in $(seq "$ROUNDS"); do
    for k in 0 1; do
        i=$(( (k + round - 1) % 2 ))
        name=${NAMES[$i]} port=${PORTS[$i]} pid=${PIDS[$i]}
        file="$ROOT/$name-$round.db"
        start_time=$(seconds)
        "${GO[@]}" --endpoints="127.0.0.1:$port" snapshot save "$file" >/dev/null 2>&1
        took=$(echo "$(seconds) - $start_time" | bc)
        size=$(stat -c %s "$file")
        echo "round $round $name save: $(printf '%.2f' "$took") s, $(echo "$size / 1048576" | bc) MiB, $(echo "$size / 1048576 / $took" | bc) MiB/s, server peak RSS $(kib "$pid" VmHWM) KiB (after: $(memory "$pid"))"
        rm -rf "$ROOT/restore-$name"
        if [ "$name" = ours ]; then
            restore=("$UTL" snapshot restore "$file" --data-dir "$ROOT/restore-$name")
        else
            restore=("${GO[@]}" snapshot restore "$file" --data-dir "$ROOT/restore-$name")
        fi
        /usr/bin/time -f "%e %M" -o "$ROOT/time" "${restore[@]}" >/dev/null 2>&1
        read -r wall rss <"$ROOT/time"
        echo "round $round $name restore: $wall s, peak RSS $rss KiB"
        rm -rf "$ROOT/restore-$name" "$file"
    done
done
