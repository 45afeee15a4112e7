#!/usr/bin/env bash
# Builds and starts a single-member etcd on http://127.0.0.1:2379 with its data
# in ./default.etcd. Extra arguments go to etcd (e.g. --name, --data-dir).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-packages.sh
ensure_packages liblmdb-dev
swift build -c release --product etcd
exec .build/release/etcd --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 "$@"
