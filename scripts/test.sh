#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need from Debian when it
# is missing (as root, or through sudo): LMDB, protoc and etcd's own .proto
# files for the schema check, and etcd's Go etcdctl/server for end-to-end and
# differential tests. All tests use Swift Testing.
#
# The suites that spawn servers (ours, the real etcd, the Go etcdctl) run in
# phases of their own after the in-process tests: on two cores, dozens of
# processes starting at once starve each other's timeouts.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-packages.sh
ensure_packages liblmdb-dev protobuf-compiler libprotobuf-dev golang-etcd-server-dev etcd-client etcd-server openssl prometheus python3-etcd3 python3-etcd3gw
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
# Test ids start with the test target's name: E2ETests.GoEtcdctlTests/...
spawning='^(E2ETests|EtcdClientTests|EtcdctlTests|SimulationTests)\.'
# GRPCWireTests run alone too: their raw-socket tests block a thread and
# the frame fuzzer keeps both cores busy for ~20 s.
# The in-process suites run in two phases: those that start members,
# clusters and peer transports and wait on elections and timers, apart from
# the CPU-bound ones (raft, checkers, the bbolt fuzzer, the stores), which
# otherwise hold both cores while an election's timeout runs out.
timed='^(EtcdServerTests|ClusterTests|PeerTransportTests|EtcdAPITests)\.'
swift test --skip-build --disable-xctest --skip "$spawning" --skip '^GRPCWireTests\.' --skip "$timed" 2>&1 | tee -a "$log" || status=$?
swift test --skip-build --disable-xctest --filter "$timed" 2>&1 | tee -a "$log" || status=$?
swift test --skip-build --disable-xctest --filter '^GRPCWireTests\.' 2>&1 | tee -a "$log" || status=$?
# The cluster suite (three-member clusters, a fault loop) runs alone.
swift test --skip-build --disable-xctest --filter '^E2ETests\.' --skip '^E2ETests\.ClusterE2ETests' 2>&1 | tee -a "$log" || status=$?
# The simulation (etcd-sim, a process that keeps a core busy for minutes)
# also runs on its own, so the in-process suites' timeouts keep both cores.
for phase in E2ETests.ClusterE2ETests EtcdClientTests EtcdctlTests SimulationTests; do
    swift test --skip-build --disable-xctest --filter "^$phase" 2>&1 | tee -a "$log" || status=$?
done
# One closing line with the counts, whatever the runner printed.
passed=$(grep -v '^✔ Test run with' "$log" | grep -c '^✔ Test .* passed after' || true)
failed=$(grep -v '^✘ Test run with' "$log" | grep -c '^✘ Test .* failed after' || true)
echo "tests: $passed passed, $failed failed"
exit "$status"
