#!/usr/bin/env bash
# Runs every test: installs system packages, starts PostgreSQL on loopback (TLS on), builds the
# package (plugins, csop, tests), runs the whole suite (the embedding example included), then
# installs the build into a temporary prefix and runs it with the Swift toolchain hidden
# (scripts/check-installed.sh), and fuzzes every parser for CSOP_FUZZ_SECONDS (default 60) per
# target (scripts/fuzz.sh). No test is skipped: the PostgreSQL tests fail if the server is
# unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."

export CSOP_TEST_TLS_DIR="${CSOP_TEST_TLS_DIR:-/var/lib/postgresql/csop-test-tls}"
scripts/install-deps.sh
export CSOP_TEST_POSTGRES_URL="${CSOP_TEST_POSTGRES_URL:-postgres://csop:csop@127.0.0.1:5432/csop_test}"
# The test PKI install-deps.sh made: the server's CA, an unrelated CA, and a client certificate.
export CSOP_TEST_POSTGRES_CA="${CSOP_TEST_POSTGRES_CA:-$CSOP_TEST_TLS_DIR/ca.crt}"
export CSOP_TEST_POSTGRES_WRONG_CA="${CSOP_TEST_POSTGRES_WRONG_CA:-$CSOP_TEST_TLS_DIR/wrong-ca.crt}"
export CSOP_TEST_POSTGRES_CLIENT_CERT="${CSOP_TEST_POSTGRES_CLIENT_CERT:-$CSOP_TEST_TLS_DIR/client.crt}"
export CSOP_TEST_POSTGRES_CLIENT_KEY="${CSOP_TEST_POSTGRES_CLIENT_KEY:-$CSOP_TEST_TLS_DIR/client.key}"

swift build --build-tests
swift test --skip-build
CSOP_CONFIGURATION=debug CSOP_SKIP_BUILD=1 scripts/check-installed.sh
scripts/fuzz.sh "${CSOP_FUZZ_SECONDS:-60}"
