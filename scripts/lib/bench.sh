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

TICK=$(getconf CLK_TCK)
# CPU ticks (user + system, 1/TICK s each) process PID has used so far.
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Microseconds of CPU per request: ticks BEFORE AFTER over REQUESTS.
cpu_us_per() { awk -v b="$1" -v a="$2" -v n="$3" -v t="$TICK" 'BEGIN {printf "%.1f", (a - b) * 1e6 / t / n}'; }

# kib PID FIELD: a /proc/PID/status field in KiB (VmHWM, VmRSS, RssAnon...).
kib() { grep "^$2:" "/proc/$1/status" | awk '{print $2}'; }
# memory PID: peak and current resident memory, the current split into
# anonymous (heap, stacks) and file-backed (code, libraries, the mapped database).
memory() { grep -E "^(VmHWM|VmRSS|RssAnon|RssFile):" "/proc/$1/status" | awk '{printf "%s %s KiB  ", $1, $2}'; }

# One line per etcd-bench run: its throughput and latency lines.
summary() { grep -E "requests/s|latency" | tr -s ' ' | paste -sd' ' -; }

# Wall-clock seconds, for differences (bc).
seconds() { date +%s.%N; }
# Go's etcdctl (Debian's etcd-client, 3.4) with timeouts fit for whole-store calls.
GO_ETCDCTL=(env ETCDCTL_API=3 /usr/bin/etcdctl --dial-timeout=5s --command-timeout=600s)
# fill_keys PORT KEYS VALUE: KEYS sequential keys of VALUE bytes into the
# member on client port PORT; prints the run's summary line.
fill_keys() {
    "$BENCH" put --endpoints "127.0.0.1:$1" --conns 16 --clients 256 --total "$2" \
        --key-space-size "$2" --sequential-keys --val-size "$3" | summary
}

# start BINARY NAME PORT [FLAGS...]: a single member NAME on client port PORT
# (peer port PORT+1) with its data under $ROOT, extra FLAGS appended; waits
# until it answers a health check. Sets PID and adds it to PIDS.
start() {
    local binary=$1 name=$2 port=$3
    shift 3
    "$binary" --name "$name" --data-dir "$ROOT/$name" \
        --listen-client-urls "http://127.0.0.1:$port" --advertise-client-urls "http://127.0.0.1:$port" \
        --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
        --initial-cluster "$name=http://127.0.0.1:$((port + 1))" --log-level warn "$@" 2>"$ROOT/$name.log" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$port" endpoint health >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "$name did not start" >&2
    exit 1
}
