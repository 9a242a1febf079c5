#!/usr/bin/env bash
# Runs every test: installs system packages, starts PostgreSQL on loopback (TLS on), builds the
# package (plugins, csop, tests), runs the whole suite (the embedding example and the browser
# client in headless Chromium included) and the browser client's unit tests (Node), then
# installs the build into a temporary prefix and runs it with the Swift toolchain hidden
# (scripts/check-installed.sh), and fuzzes every parser for CSOP_FUZZ_SECONDS (default 60) per
# target (scripts/fuzz.sh), and last builds csop with the OTLP trait and checks its span export
# against a collector on loopback (scripts/otlp-test.sh). No test is skipped: the PostgreSQL tests fail if the server is
# unreachable.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
source scripts/test-env.sh

swift build --build-tests
# A hang fails the run in bounded time instead of holding CI to its limit (the suite takes
# 2 minutes here).
timeout --kill-after=30 1800 swift test --skip-build
node Clients/js/test/unit.mjs

CSOP_CONFIGURATION=debug CSOP_SKIP_BUILD=1 scripts/check-installed.sh
scripts/fuzz.sh "${CSOP_FUZZ_SECONDS:-60}"
# Last: it rebuilds csop and csop-serve in .build with the OTLP trait.
scripts/otlp-test.sh
