#!/usr/bin/env bash
# Installs what CSOP needs, builds it in release mode and runs the quick start on the
# embedded defaults in plugins.d: save and get a document, a fibonacci task, a custom
# JavaScript function and a broadcast to a subscriber — through one `csop run` process.
set -euo pipefail
cd "$(dirname "$0")/.."

CSOP_SKIP_POSTGRES=1 scripts/install-deps.sh
swift build -c release
CSOP=.build/release/csop

echo "== csop plugins"
$CSOP plugins

echo "== csop run (requests in, responses and events out)"
$CSOP run <<'JSONL'
{"id":"save","action":"storage.save","payload":{"key":"user:1","data":{"name":"Ada","langs":["swift","c"]}}}
{"id":"get","action":"storage.get","payload":{"key":"user:1"}}
{"id":"fib","action":"compute.execute","payload":{"task":"fibonacci","data":{"n":100}}}
{"id":"custom","action":"compute.execute","payload":{"task":"custom","data":{"fn":"return data.a * data.b","args":{"a":6,"b":7}}}}
{"id":"sub","action":"sync.subscribe","payload":{"channel":"news"}}
{"id":"bcast","action":"sync.broadcast","payload":{"channel":"news","event":"hello","data":{"text":"hi"}}}
JSONL
