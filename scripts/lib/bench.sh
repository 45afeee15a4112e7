# Shared by the scripts/bench-*.sh scripts (sourced after `cd` to the
# repository): release builds of etcd and etcd-bench (unless NO_BUILD is
# set; SCRATCH picks the scratch path), the binaries, a scratch directory
# and the servers' pids, all cleaned up on exit.
SCRATCH=${SCRATCH:-.build-release}
if [ -z "${NO_BUILD:-}" ]; then
    swift build -c release --scratch-path "$SCRATCH" --product etcd >/dev/null
    swift build -c release --scratch-path "$SCRATCH" --product etcd-bench >/dev/null
fi
OURS=$SCRATCH/release/etcd
BENCH=$SCRATCH/release/etcd-bench
REAL=/usr/bin/etcd
ROOT=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$ROOT"' EXIT

# One line per etcd-bench run: its throughput and latency lines.
summary() { grep -E "requests/s|latency" | tr -s ' ' | paste -sd' ' -; }
