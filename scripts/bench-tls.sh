#!/usr/bin/env bash
# Mutual TLS on the client port: ours against the real etcd (Debian's
# etcd-server) with the same openssl-made certificates, in the same run,
# and ours over plaintext for the cost of TLS. Put with 256 clients on 16
# connections and linearizable range with 256 clients, ROUNDS rounds in
# alternating order (ours first, then etcd first). Release build; every
# load is bounded by --total.
#
#   scripts/bench-tls.sh [total-puts] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
TOTAL=${1:-40000}
ROUNDS=${2:-2}
. scripts/lib/bench.sh

# Certificates: a CA, a server certificate for 127.0.0.1, a client certificate.
printf '[server]\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n[client]\nextendedKeyUsage=clientAuth\n' >"$ROOT/ext.cnf"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ROOT/ca-key.pem" -out "$ROOT/ca.pem" -days 2 -subj /CN=bench-ca 2>/dev/null
for name in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ROOT/$name-key.pem" -out "$ROOT/$name.csr" -subj "/CN=$name" 2>/dev/null
    openssl x509 -req -in "$ROOT/$name.csr" -CA "$ROOT/ca.pem" -CAkey "$ROOT/ca-key.pem" -CAcreateserial -out "$ROOT/$name.pem" -days 2 \
        -extfile "$ROOT/ext.cnf" -extensions "$name" 2>/dev/null
done
CLIENT_TLS=(--cacert "$ROOT/ca.pem" --cert "$ROOT/client.pem" --key "$ROOT/client-key.pem")

# start BINARY NAME PORT SCHEME
start() {
    local tls=()
    [ "$4" = https ] && tls=(--cert-file "$ROOT/server.pem" --key-file "$ROOT/server-key.pem" --trusted-ca-file "$ROOT/ca.pem" --client-cert-auth)
    "$1" --name "$2" --data-dir "$ROOT/$2" \
        --listen-client-urls "$4://127.0.0.1:$3" --advertise-client-urls "$4://127.0.0.1:$3" \
        --listen-peer-urls "http://127.0.0.1:$(($3 + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$(($3 + 1))" \
        --initial-cluster "$2=http://127.0.0.1:$(($3 + 1))" --log-level warn "${tls[@]}" 2>"$ROOT/$2.log" &
    PIDS+=($!)
    for _ in $(seq 100); do
        ETCDCTL_API=3 etcdctl --endpoints="$4://127.0.0.1:$3" "${CLIENT_TLS[@]}" endpoint health >/dev/null 2>&1 && return
        sleep 0.1
    done
    echo "$2 did not start" >&2; exit 1
}

# run LABEL PORT SCHEME
run() {
    local ep=127.0.0.1:$2 tls=()
    [ "$3" = https ] && tls=("${CLIENT_TLS[@]}")
    echo "$1 put 256 clients:     $("$BENCH" put --endpoints "$ep" "${tls[@]}" --conns 16 --clients 256 --total "$TOTAL" | summary)"
    echo "$1 range l 256 clients: $("$BENCH" range --endpoints "$ep" "${tls[@]}" --conns 16 --clients 256 --total $((TOTAL * 2)) --consistency l | summary)"
}

start "$OURS" ours-tls 24800 https
start "$REAL" etcd-tls 25800 https
start "$OURS" ours-plain 26800 http
for round in $(seq "$ROUNDS"); do
    echo "=== round $round"
    if [ $((round % 2)) = 1 ]; then
        run "ours mTLS " 24800 https; run "etcd mTLS " 25800 https
    else
        run "etcd mTLS " 25800 https; run "ours mTLS " 24800 https
    fi
    run "ours plain" 26800 http
done
