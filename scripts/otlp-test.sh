#!/usr/bin/env bash
# The OTLP exporter, end to end: builds csop and csop-serve with the OTLP package trait
# (`swift build --traits OTLP`, into .build like any debug build: the next plain `swift build`
# builds them back without it), starts a small OTLP/HTTP collector on loopback (Python's
# http.server, recording what it is sent), and checks that
#   - `csop serve --otlp-endpoint` exports, as protobuf, csop.dispatch (a child of the
#     request's traceparent header), csop.attempt and the compute plugin's compute.job;
#   - `csop run --otlp-endpoint --otlp-protocol json` exports the same tree for a request's
#     `trace` field, flushed at exit, under the --service-name given;
#   - a collector that is not there costs no answer: csop run answers and exits 0;
#   - a malformed --otlp-endpoint is a usage error (exit 64) naming the flag.
# Prints `ok - ...` / `not ok - ...` per check and `N passed, M failed`; exits 1 when one failed.
# CSOP_SKIP_BUILD=1 uses the binaries .build/debug holds (already built with the trait).
set -euo pipefail
cd "$(dirname "$0")/.."

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); printf 'ok - %s\n' "$1"; }
fail() { # description [details]
    FAILED=$((FAILED + 1))
    printf 'not ok - %s\n' "$1"
    if [ -n "${2:-}" ]; then printf '%s\n' "$2" | head -n 40 | sed 's/^/#   /'; fi
}

if [ "${CSOP_SKIP_BUILD:-0}" != "1" ]; then
    swift build --traits OTLP --product csop
    swift build --traits OTLP --product csop-serve
    swift build --product csop-compute
    swift build --product csop-diag
fi
BIN=$(swift build --show-bin-path)

TMP=$(mktemp -d "${TMPDIR:-/tmp}/csop-otlp.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT

# Plugins: diag and compute, found beside the binaries.
mkdir -p "$TMP/plugins.d" "$TMP/received"
printf 'library = "libcsop-diag.so"\n' >"$TMP/plugins.d/00-diag.conf"
printf 'library = "libcsop-compute.so"\n[config]\nworkers = 1\n' >"$TMP/plugins.d/20-compute.conf"
chmod 644 "$TMP/plugins.d"/*.conf

# The collector: every POST body is saved as received/N.<json|bin> with its path; it answers
# an empty export response in the request's own encoding.
cat >"$TMP/collector.py" <<'PY'
import http.server, itertools, os, sys
out, counter = sys.argv[1], itertools.count()
class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        kind = "json" if self.headers.get("Content-Type", "").startswith("application/json") else "bin"
        n = next(counter)
        with open(os.path.join(out, f"{n}.{kind}.tmp"), "wb") as f:
            f.write(self.path.encode() + b"\n" + body)
        os.rename(os.path.join(out, f"{n}.{kind}.tmp"), os.path.join(out, f"{n}.{kind}"))
        reply = b"{}" if kind == "json" else b""
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if kind == "json" else "application/x-protobuf")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
with open(os.path.join(out, "port.tmp"), "w") as f:
    f.write(str(server.server_address[1]))
os.rename(os.path.join(out, "port.tmp"), os.path.join(out, "port"))
server.serve_forever()
PY
mkdir -p "$TMP/collector"
python3 "$TMP/collector.py" "$TMP/collector" &
PIDS+=($!)
for _ in $(seq 1 100); do [ -f "$TMP/collector/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/collector/port")
ENDPOINT="http://127.0.0.1:$PORT"

received() { # pattern: the bodies received so far, one file per POST
    find "$TMP/collector" -name "$1" -type f | sort
}

# --- csop serve, protobuf, traceparent header ------------------------------------------------
TRACE1=4bf92f3577b34da6a3ce929d0e0e4736
PARENT1=00f067aa0ba902b7
timeout 120 "$BIN/csop" serve --plugins-dir "$TMP/plugins.d" --listen 127.0.0.1:0 --no-watch-plugins \
    --otlp-endpoint "$ENDPOINT" 2>"$TMP/serve.err" &
SERVE=$!
PIDS+=($SERVE)
LISTEN=""
for _ in $(seq 1 300); do
    LISTEN=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$TMP/serve.err" | head -n 1)
    [ -n "$LISTEN" ] && break
    sleep 0.1
done
if [ -z "$LISTEN" ]; then
    fail "csop serve --otlp-endpoint starts" "$(cat "$TMP/serve.err")"
else
    ANSWER=$(curl -s --max-time 30 -X POST "$LISTEN/v1/dispatch" -H "traceparent: 00-$TRACE1-$PARENT1-01" \
        -d '{"action":"compute.execute","payload":{"task":"fibonacci","data":{"n":20}}}')
    case "$ANSWER" in
    *'"status":"ok"'*) pass "csop serve with --otlp-endpoint answers" ;;
    *) fail "csop serve with --otlp-endpoint answers" "$ANSWER" ;;
    esac
    kill -TERM "$SERVE"
    wait "$SERVE" || true
    python3 - "$TRACE1" "$PARENT1" $(received '*.bin') >"$TMP/check1" 2>&1 <<'PY' && pass "csop serve exports csop.dispatch (child of the traceparent header), csop.attempt and compute.job as OTLP protobuf to /v1/traces" || fail "csop serve exports its spans as OTLP protobuf" "$(cat "$TMP/check1"; cat "$TMP/serve.err")"
import sys
trace, parent, files = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2]), sys.argv[3:]
assert files, "the collector received nothing"
bodies = [open(f, "rb").read() for f in files]
assert all(b.startswith(b"/v1/traces\n") for b in bodies), [b[:40] for b in bodies]
data = b"".join(bodies)
for needed in (b"csop.dispatch", b"csop.attempt", b"compute.job", b"compute.execute", trace, parent, b"service.name", b"csop"):
    assert needed in data, f"{needed!r} is not in what was exported"
print("ok")
PY
fi

# --- csop run, JSON, the request's trace field, flushed at exit ------------------------------
TRACE2=0af7651916cd43dd8448eb211c80319c
PARENT2=b7ad6b7169203331
BEFORE=$(received '*.json' | wc -l)
OUT=$(printf '{"id":"1","action":"compute.execute","payload":{"task":"fibonacci","data":{"n":30}},"trace":"00-%s-%s-01"}\n' "$TRACE2" "$PARENT2" |
    timeout 120 env OTEL_BSP_SCHEDULE_DELAY=600000 "$BIN/csop" run --plugins-dir "$TMP/plugins.d" --no-watch-plugins \
        --otlp-endpoint "$ENDPOINT/" --otlp-protocol json --service-name csop-otlp-test 2>"$TMP/run.err") || true
case "$OUT" in
*'"status":"ok"'*) pass "csop run with --otlp-endpoint answers" ;;
*) fail "csop run with --otlp-endpoint answers" "$OUT$(cat "$TMP/run.err")" ;;
esac
python3 - "$TRACE2" "$PARENT2" "$BEFORE" $(received '*.json') >"$TMP/check2" 2>&1 <<'PY' && pass "csop run flushes its spans at exit as OTLP JSON: one tree under the request's trace field, with the service name given" || fail "csop run exports its spans as OTLP JSON at exit" "$(cat "$TMP/check2"; cat "$TMP/run.err")"
import base64, json, sys
def hexid(value):  # OTLP JSON's ids: hex by the specification, base64 as protobuf's JSON mapping writes bytes
    return value.lower() if len(value) in (16, 32) and all(c in "0123456789abcdefABCDEF" for c in value) else base64.b64decode(value).hex()
trace, parent, before, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
assert len(files) > before, "the collector received nothing from csop run (the 10-minute schedule delay leaves only the flush at exit)"
spans, services = {}, set()
for f in files:
    path, body = open(f, "rb").read().split(b"\n", 1)
    assert path == b"/v1/traces", path
    for resource in json.loads(body)["resourceSpans"]:
        for attribute in resource["resource"]["attributes"]:
            if attribute["key"] == "service.name":
                services.add(attribute["value"]["stringValue"])
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                assert hexid(span["traceId"]) == trace, span
                spans[span["name"]] = span
assert "csop-otlp-test" in services, services
dispatch, attempt, job = spans["csop.dispatch"], spans["csop.attempt"], spans["compute.job"]
assert hexid(dispatch["parentSpanId"]) == parent, dispatch
assert attempt["parentSpanId"] == dispatch["spanId"], (attempt, dispatch)
assert job["parentSpanId"] == attempt["spanId"], (job, attempt)
attributes = {a["key"]: a["value"] for a in dispatch["attributes"]}
assert attributes["csop.action"]["stringValue"] == "compute.execute", attributes
print("ok")
PY

# --- no collector: answers anyway -------------------------------------------------------------
DEAD=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OUT=$(printf '{"id":"1","action":"diag.echo","payload":{"x":1}}\n' |
    timeout 120 "$BIN/csop" run --plugins-dir "$TMP/plugins.d" --no-watch-plugins --otlp-endpoint "http://127.0.0.1:$DEAD" 2>"$TMP/dead.err")
RC=$?
case "$RC:$OUT" in
0:*'"status":"ok"'*) pass "with no collector listening, csop run still answers and exits 0" ;;
*) fail "with no collector listening, csop run still answers and exits 0" "rc=$RC $OUT$(cat "$TMP/dead.err")" ;;
esac

# --- a malformed endpoint ---------------------------------------------------------------------
set +e
"$BIN/csop" run --plugins-dir "$TMP/plugins.d" --otlp-endpoint "127.0.0.1:4318" </dev/null >/dev/null 2>"$TMP/bad.err"
RC=$?
set -e
if [ "$RC" = 64 ] && grep -q -- "--otlp-endpoint" "$TMP/bad.err"; then
    pass "a URL without http:// is a usage error naming --otlp-endpoint"
else
    fail "a URL without http:// is a usage error naming --otlp-endpoint" "rc=$RC $(cat "$TMP/bad.err")"
fi

printf '%d passed, %d failed\n' "$PASSED" "$FAILED"
[ "$FAILED" -eq 0 ]
