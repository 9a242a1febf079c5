#!/usr/bin/env bash
# Installs the system packages CSOP builds and tests against (Debian 12), and starts the
# local PostgreSQL used by the cold-tier and cluster tests. Idempotent; needs root (or sudo).
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

PACKAGES=(pkg-config libsqlite3-dev zlib1g-dev libjavascriptcoregtk-4.1-dev postgresql)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
fi

if [ "${CSOP_SKIP_POSTGRES:-0}" != "1" ]; then
    cluster=$(pg_lsclusters -h 2>/dev/null | awk 'NR==1 {print $1" "$2}')
    if [ -z "$cluster" ]; then
        $SUDO pg_createcluster 15 main >&2
        cluster="15 main"
    fi
    # shellcheck disable=SC2086
    $SUDO pg_ctlcluster $cluster start >/dev/null 2>&1 || true
    for _ in $(seq 1 50); do
        pg_isready -q -h 127.0.0.1 && break
        sleep 0.2
    done
    pg_isready -h 127.0.0.1 >&2
    if [ "$(id -u)" -eq 0 ]; then PSQL=(su postgres -c "psql -q -v ON_ERROR_STOP=1"); else PSQL=(sudo -u postgres psql -q -v ON_ERROR_STOP=1); fi
    "${PSQL[@]}" >/dev/null <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'csop') THEN
    CREATE ROLE csop LOGIN PASSWORD 'csop';
  END IF;
END $$;
SELECT 'CREATE DATABASE csop_test OWNER csop' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'csop_test')\gexec
SQL
fi
