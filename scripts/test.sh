#!/usr/bin/env bash
# Runs the whole test suite. Installs what the tests need from Debian when it
# is missing (as root, or through sudo): LMDB, protoc and etcd's own .proto
# files for the schema check, and etcd's Go etcdctl/server for end-to-end and
# differential tests.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-packages.sh
ensure_packages liblmdb-dev protobuf-compiler libprotobuf-dev golang-etcd-server-dev etcd-client etcd-server
swift build --build-tests
swift test --skip-build
