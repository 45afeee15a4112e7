#!/usr/bin/env bash
# txn-put with 256 clients on 16 connections against a fresh single member,
# N times, ours then the real etcd (Debian etcd-server) each round: looks for
# the one-second stall of issue 23 (p99/max per run). Release build in BIN;
# every run is bounded by --total.
#
#   scripts/bench-txn-fresh.sh [runs]   env: BIN (.build/release) TOTAL (40000)
set -u
cd "$(dirname "$0")/.."
BIN=${BIN:-.build/release}
N=${1:-5}; TOTAL=${TOTAL:-40000}
for i in $(seq $N); do
  for who in ours etcd; do
    d=$(mktemp -d); port=$((24960 + i * 4))
    if [ $who = ours ]; then exe=$BIN/etcd; else exe=/usr/bin/etcd; port=$((port+100)); fi
    $exe --name m --data-dir $d/m --listen-client-urls http://127.0.0.1:$port --advertise-client-urls http://127.0.0.1:$port \
      --listen-peer-urls http://127.0.0.1:$((port+1)) --initial-advertise-peer-urls http://127.0.0.1:$((port+1)) \
      --initial-cluster m=http://127.0.0.1:$((port+1)) --log-level warn 2>$d/log &
    pid=$!
    for _ in $(seq 100); do ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$port endpoint health >/dev/null 2>&1 && break; sleep 0.1; done
    out=$($BIN/etcd-bench txn-put --endpoints 127.0.0.1:$port --conns 16 --clients 256 --total $TOTAL)
    echo "$who run $i: $(echo "$out" | grep -E 'requests/s|latency' | tr -s ' ' | paste -sd' ')"
    kill $pid; wait $pid 2>/dev/null; rm -rf $d
  done
done
