#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need from Debian when it
# is missing (as root, or through sudo): LMDB, protoc and etcd's own .proto
# files for the schema check, and etcd's Go etcdctl/server for end-to-end and
# differential tests. All tests use Swift Testing.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-packages.sh
ensure_packages liblmdb-dev protobuf-compiler libprotobuf-dev golang-etcd-server-dev etcd-client etcd-server
swift build --build-tests
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
swift test --skip-build --disable-xctest 2>&1 | tee "$log" || status=$?
# One closing line with the counts, whatever the runner printed.
passed=$(grep -v '^✔ Test run with' "$log" | grep -c '^✔ Test .* passed after' || true)
failed=$(grep -v '^✘ Test run with' "$log" | grep -c '^✘ Test .* failed after' || true)
echo "tests: $passed passed, $failed failed"
exit "$status"
