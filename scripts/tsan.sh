#!/usr/bin/env bash
# Runs the in-process test suites under ThreadSanitizer, in a build folder of
# its own (.build-tsan; a TSan build of everything takes a long while on two
# cores). Extra arguments go to `swift test` (e.g. --filter EtcdServerTests).
# The suites that spawn processes are left out: TSan sees only this process.
#
# Locks: TSan on Linux (Swift 6.3) does not see the hand-off of a contended
# Synchronization.Mutex (the kernel's futex passes the lock), so it reported
# accesses that both hold the same Mutex as races — a correct four-thread
# program appending to a Mutex<[Int]> with a sleep inside the lock got a
# "Swift access race" too. So every module takes `Mutex` from Sources/Locks,
# and this build passes -DTSAN_LOCKS, which makes it a pthread mutex (TSan
# follows those); the normal build keeps Synchronization.Mutex. A file that
# imports Synchronization itself would bring the blind spot back, so this
# script refuses to run while one does. scripts/tsan-suppressions.txt holds
# the one other report TSan gets wrong (a continuation's resume, in the Swift
# runtime), each with its reason. Any warning left is a real race.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-packages.sh
ensure_packages liblmdb-dev protobuf-compiler libprotobuf-dev golang-etcd-server-dev
if grep -rlnE '^[^/]*import +([a-z]+ +)?Synchronization\b' Sources Tests | grep -v '^Sources/Locks/'; then
    echo "tsan.sh: the files above import Synchronization; import Locks (Sources/Locks) instead" >&2
    exit 2
fi
scratch=.build-tsan
flags=(--sanitize=thread -Xswiftc -DTSAN_LOCKS --scratch-path "$scratch")
swift build --build-tests "${flags[@]}"
spawning='^(E2ETests|EtcdClientTests|EtcdctlTests|SimulationTests)\.'
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=0 second_deadlock_stack=1} suppressions=$PWD/scripts/tsan-suppressions.txt" \
    swift test --skip-build "${flags[@]}" --disable-xctest --skip "$spawning" "$@" 2>&1 \
    | tee "$log" || status=$?
races=$(grep -c '^WARNING: ThreadSanitizer' "$log" || true)
echo "ThreadSanitizer warnings: $races"
[ "$races" -eq 0 ] || status=1
exit "$status"
