# Sourced by scripts/test.sh and scripts/sanitize.sh after scripts/install-deps.sh: where the
# tests find the local PostgreSQL and the test PKI that install-deps.sh made (the server's CA,
# an unrelated CA, a client certificate). Each can be overridden from the environment.
export CSOP_TEST_TLS_DIR="${CSOP_TEST_TLS_DIR:-/var/lib/postgresql/csop-test-tls}"
export CSOP_TEST_POSTGRES_URL="${CSOP_TEST_POSTGRES_URL:-postgres://csop:csop@127.0.0.1:5432/csop_test}"
export CSOP_TEST_POSTGRES_CA="${CSOP_TEST_POSTGRES_CA:-$CSOP_TEST_TLS_DIR/ca.crt}"
export CSOP_TEST_POSTGRES_WRONG_CA="${CSOP_TEST_POSTGRES_WRONG_CA:-$CSOP_TEST_TLS_DIR/wrong-ca.crt}"
export CSOP_TEST_POSTGRES_CLIENT_CERT="${CSOP_TEST_POSTGRES_CLIENT_CERT:-$CSOP_TEST_TLS_DIR/client.crt}"
export CSOP_TEST_POSTGRES_CLIENT_KEY="${CSOP_TEST_POSTGRES_CLIENT_KEY:-$CSOP_TEST_TLS_DIR/client.key}"
# Tests run at once: 4 per core. swift-testing otherwise starts all ~480 together, and on a
# 2-core machine their tasks then queued up to 20 s behind each other at the suite's start,
# past the few seconds some tests allow for an answer. Limited, the longest wait measured
# 0.7-3 s, for ~10% more time in all.
export SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH="${SWT_EXPERIMENTAL_MAXIMUM_PARALLELIZATION_WIDTH:-$(( $(nproc) * 4 ))}"
