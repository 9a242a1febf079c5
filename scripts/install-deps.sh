#!/usr/bin/env bash
# Installs the system packages CSOP builds and tests against (Debian 12), and starts the
# local PostgreSQL used by the cold-tier and cluster tests, with TLS on (a test CA, a server
# certificate for localhost and 127.0.0.1, a client certificate and an unrelated second CA, in
# $CSOP_TEST_TLS_DIR), and Chromium, Node and wrk for the browser tests and the gateway benchmark
# (CSOP_SKIP_BROWSER=1 leaves them out). Idempotent; needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# curl and python3: scripts/otlp-test.sh's requests and its stand-in OpenTelemetry collector.
PACKAGES=(pkg-config libsqlite3-dev zlib1g-dev libjavascriptcoregtk-4.1-dev postgresql openssl curl python3)
# The browser client's tests run in headless Chromium (and its unit tests in Node); the
# gateway benchmark drives wrk.
if [ "${CSOP_SKIP_BROWSER:-0}" != "1" ]; then PACKAGES+=(chromium nodejs wrk); fi
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

TLS_DIR="${CSOP_TEST_TLS_DIR:-/var/lib/postgresql/csop-test-tls}"
TLS_LISTEN="localhost,127.0.0.2"
MAX_CONNECTIONS=300
tls_changed=0

wait_for_postgres() {
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 && break
        sleep 0.2
    done
    pg_isready -h 127.0.0.1 >&2
}

# Writes $2 to file $1 (as root) only when it differs, and records the change.
write_if_changed() {
    if ! cmp -s <(printf '%s' "$2") "$1" 2>/dev/null; then
        printf '%s' "$2" | $SUDO tee "$1" >/dev/null
        tls_changed=1
    fi
}

# The test PKI: ca (signs the server and client certificates), wrong-ca (signs nothing the
# server uses), a server certificate for localhost and 127.0.0.1 but not 127.0.0.2 (so a
# host-name mismatch can be tested on loopback), and a client certificate for user csop.
# Regenerated only when a file is missing, does not verify, or expires within 30 days.
generate_test_tls() {
    local dir=$1
    if $SUDO test -s "$dir/server.key" && $SUDO test -s "$dir/client.key" && $SUDO test -s "$dir/wrong-ca.crt" \
        && $SUDO openssl verify -CAfile "$dir/ca.crt" "$dir/server.crt" "$dir/client.crt" >/dev/null 2>&1 \
        && $SUDO openssl x509 -checkend 2592000 -noout -in "$dir/server.crt" >/dev/null 2>&1 \
        && $SUDO openssl x509 -checkend 2592000 -noout -in "$dir/client.crt" >/dev/null 2>&1; then
        return 0
    fi
    echo "generating the test TLS certificates in $dir" >&2
    local work
    work=$(mktemp -d)
    (
        cd "$work"
        for ca in ca wrong-ca; do
            openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout "$ca.key" -out "$ca.crt" \
                -subj "/CN=CSOP test $ca" -addext "basicConstraints=critical,CA:TRUE" \
                -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
        done
        openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
            "extendedKeyUsage=serverAuth" "subjectAltName=DNS:localhost,IP:127.0.0.1" >server.ext
        openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile server.ext \
            -out server.crt 2>/dev/null
        openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=csop" 2>/dev/null
        printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature" "extendedKeyUsage=clientAuth" >client.ext
        openssl x509 -req -in client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext \
            -out client.crt 2>/dev/null
    )
    $SUDO mkdir -p "$dir"
    # The server key and the CA keys are the server's alone; the rest is for the tests to read
    # (the client key is a throwaway test key, readable so tests run as any user).
    $SUDO install -o postgres -g postgres -m 0600 "$work/server.key" "$work/ca.key" "$work/wrong-ca.key" "$dir/"
    $SUDO install -o postgres -g postgres -m 0644 "$work/server.crt" "$work/ca.crt" "$work/wrong-ca.crt" \
        "$work/client.crt" "$work/client.key" "$dir/"
    rm -rf "$work"
    tls_changed=1
}

# TLS on (plain connections still work: ssl = on only offers it), the test PKI as the server's
# certificate and client CA, 127.0.0.2 listened on and allowed (TLS only) for the host-name test.
setup_test_tls() {
    local confdir=$1
    $SUDO mkdir -p "$TLS_DIR"
    $SUDO chown postgres:postgres "$TLS_DIR"
    $SUDO chmod 0755 "$TLS_DIR"
    generate_test_tls "$TLS_DIR"
    write_if_changed "$confdir/conf.d/csop-test-tls.conf" "# Written by CSOP's scripts/install-deps.sh for the TLS tests.
ssl = on
ssl_cert_file = '$TLS_DIR/server.crt'
ssl_key_file = '$TLS_DIR/server.key'
ssl_ca_file = '$TLS_DIR/ca.crt'
listen_addresses = '$TLS_LISTEN'
# The full test suite runs many hosts at once, each with its own sessions.
max_connections = $MAX_CONNECTIONS
"
    if ! $SUDO grep -q "csop-test-tls" "$confdir/pg_hba.conf"; then
        printf '%s\n' "hostssl all all 127.0.0.0/8 scram-sha-256 # csop-test-tls: the TLS tests connect to 127.0.0.2" \
            | $SUDO tee -a "$confdir/pg_hba.conf" >/dev/null
        tls_changed=1
    fi
}

if [ "${CSOP_SKIP_POSTGRES:-0}" != "1" ]; then
    cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
    if [ -z "$cluster" ]; then
        $SUDO pg_createcluster 15 main >&2
        cluster="15 main"
    fi
    setup_test_tls "/etc/postgresql/${cluster// //}"
    # shellcheck disable=SC2086
    $SUDO pg_ctlcluster $cluster start >/dev/null 2>&1 || true
    wait_for_postgres
    if [ "$(id -u)" -eq 0 ]; then PSQL=(runuser -u postgres -- psql -q -v ON_ERROR_STOP=1); else PSQL=(sudo -u postgres psql -q -v ON_ERROR_STOP=1); fi
    # A changed conf.d or pg_hba.conf needs a reload; listen_addresses needs a restart.
    if [ "$tls_changed" = 1 ]; then
        # shellcheck disable=SC2086
        $SUDO pg_ctlcluster $cluster reload >&2
    fi
    if [ "$("${PSQL[@]}" -Atc "SHOW listen_addresses")" != "$TLS_LISTEN" ] || [ "$("${PSQL[@]}" -Atc "SHOW max_connections")" != "$MAX_CONNECTIONS" ]; then
        echo "restarting PostgreSQL to listen on $TLS_LISTEN with max_connections = $MAX_CONNECTIONS" >&2
        # shellcheck disable=SC2086
        $SUDO pg_ctlcluster $cluster restart >&2
        wait_for_postgres
    fi
    if [ "$("${PSQL[@]}" -Atc "SHOW ssl")" != "on" ]; then
        echo "PostgreSQL did not turn TLS on; see /var/log/postgresql/" >&2
        exit 1
    fi
    "${PSQL[@]}" >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'csop') THEN
    CREATE ROLE csop LOGIN PASSWORD 'csop';
  END IF;
END $$;
SELECT 'CREATE DATABASE csop_test OWNER csop' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'csop_test')\gexec
SQL
fi
