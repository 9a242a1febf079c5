#!/usr/bin/env bash
# Installs what CSOP needs, builds it in release mode and runs the quick start on the
# embedded defaults in plugins.d: save and get a document, a fibonacci task, a custom
# JavaScript function and a broadcast to a subscriber — through one `csop run` process
# fed examples/requests.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

CSOP_SKIP_POSTGRES=1 CSOP_SKIP_BROWSER=1 scripts/install-deps.sh
swift build -c release
CSOP=.build/release/csop

echo "== csop check"
$CSOP check

echo "== csop plugins"
$CSOP plugins

echo "== csop run < examples/requests.jsonl (requests in, responses and events out)"
$CSOP run < examples/requests.jsonl
