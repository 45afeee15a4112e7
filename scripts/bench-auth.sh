#!/usr/bin/env bash
# The cost of auth: ours without auth, ours with auth and the real etcd
# (Debian's etcd-server) with auth, in the same run. Auth is enabled with a
# non-root user `bench` whose role may read and write every key (root would
# skip the permission check); etcd-bench authenticates once per connection
# and sends the simple token with every request. Put with 256 clients on 16
# connections and linearizable range with 256 clients, ROUNDS rounds with
# the servers' order rotating. Release build; every load is bounded by --total.
#
#   scripts/bench-auth.sh [total-puts] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-40000}
ROUNDS=${2:-2}
. scripts/lib/bench.sh


# enable_auth PORT: root, and `bench` with read-write on every key.
enable_auth() {
    local ctl=(env ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$1")
    "${ctl[@]}" user add root:root >/dev/null
    "${ctl[@]}" role add all >/dev/null
    "${ctl[@]}" role grant-permission all readwrite --from-key '' >/dev/null
    "${ctl[@]}" user add bench:bench >/dev/null
    "${ctl[@]}" user grant-role bench all >/dev/null
    "${ctl[@]}" auth enable >/dev/null
}

start "$OURS" ours 24800
start "$OURS" ours-auth 24810
start "$REAL" etcd-auth 24820
enable_auth 24810
enable_auth 24820
NAMES=("ours" "ours auth" "etcd auth")
PORTS=(24800 24810 24820)
USERS=("" "--user=bench:bench" "--user=bench:bench")
for round in $(seq "$ROUNDS"); do
    for k in 0 1 2; do
        i=$(( (k + round - 1) % 3 ))
        ep=127.0.0.1:${PORTS[$i]}
        # shellcheck disable=SC2086
        echo "round $round ${NAMES[$i]} put 256:     $("$BENCH" put --endpoints "$ep" --conns 16 --clients 256 --total "$TOTAL" ${USERS[$i]} | summary)"
        # shellcheck disable=SC2086
        echo "round $round ${NAMES[$i]} range l 256: $("$BENCH" range --endpoints "$ep" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency l ${USERS[$i]} | summary)"
    done
done
