/* A complete CSOP plugin in plain C: the "hello" capability.
 *   hello.greet  -> {"greeting":"hello from C","payloadBytes":N}, a log line about the call, and
 *                   when the host traces, a span "hello.compose" and a malformed one it must drop
 *   hello.echo   -> the payload, unchanged, and an event {"type":"hello.echoed"}
 *   hello.fail   -> error HELLO_FAILED (not retryable)
 *   hello.commit -> {"committed":1}: asks the host before an irreversible effect (begin_commit)
 *   hello.whoami -> {"tenant":…,"subject":…,"actions":…} from the call's caller fields, or
 *                   {"owner":true} for the local owner (tests pass names that need no escaping)
 *   hello.trace  -> {"traceparent":…,"tracestate":…} from the call's trace fields (null when absent)
 * Metrics (write_metrics): csop_hello_greetings_total, in two writes that split a line, and
 * lines the host must drop: another plugin's name, a name without the prefix, a sample line
 * with no name. Tests check that only the first survives.
 * Build: cc -shared -fPIC -I Sources/CSOPPluginABI/include hello.c -o libhello.so
 * Reload tests build versions of it: -DHELLO_VERSION='"1.0.2"', and -DHELLO_NAME='"extra"'
 * for a second domain served by the same code.
 */
#include <csop_plugin.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#ifndef HELLO_VERSION
#define HELLO_VERSION "1.0.0"
#endif
#ifndef HELLO_NAME
#define HELLO_NAME "hello"
#endif

static const char *const operations[] = {"greet", "echo", "fail", "commit", "whoami", "trace"};

static int32_t create(const csop_host_api *host, const uint8_t *config, size_t config_length,
                      void **instance, csop_error *error) {
    (void)config; (void)config_length; (void)error;
    const char *message = "hello plugin created";
    host->log(host->host_context, CSOP_LOG_INFO, message, strlen(message));
    *instance = (void *)host; /* The host table lives until destroy. */
    return 0;
}

static atomic_long greetings;

static void invoke(void *instance, const csop_call *call) {
    const csop_host_api *host = instance;
    csop_outcome outcome = {0};
    outcome.struct_size = sizeof outcome;
    char buffer[512];
    if (strcmp(call->operation, "greet") == 0) {
        atomic_fetch_add(&greetings, 1);
        if (CSOP_CALL_HAS_LOG(call)) call->log(call, CSOP_LOG_INFO, "greeting a caller", 17);
        if (CSOP_CALL_HAS_RECORD_SPAN(call)) {
            static const char span[] =
                "{\"name\":\"hello.compose\",\"start\":1700000000000000000,\"end\":1700000000000500000,"
                "\"attributes\":{\"words\":3,\"language\":\"en\"}}";
            call->record_span(call, (const uint8_t *)span, sizeof span - 1);
            static const char bad[] = "{\"name\":\"hello.bad\",\"start\":5,\"end\":4}";
            call->record_span(call, (const uint8_t *)bad, sizeof bad - 1);
        }
        int n = snprintf(buffer, sizeof buffer, "{\"greeting\":\"hello from C\",\"payloadBytes\":%zu}",
                         call->payload_length);
        outcome.status = CSOP_STATUS_OK;
        outcome.data = (const uint8_t *)buffer;
        outcome.data_length = (size_t)n;
    } else if (strcmp(call->operation, "echo") == 0) {
        static const char event[] = "{\"type\":\"hello.echoed\"}";
        host->emit_event(host->host_context, (const uint8_t *)event, sizeof event - 1);
        outcome.status = CSOP_STATUS_OK;
        outcome.data = call->payload;
        outcome.data_length = call->payload_length;
    } else if (strcmp(call->operation, "commit") == 0) {
        /* A host older than begin_commit cannot say: -1. Otherwise 1 (make the effect) or 0
         * (the call was answered already: do not). */
        int committed = CSOP_CALL_HAS_BEGIN_COMMIT(call) ? call->begin_commit(call) : -1;
        int n = snprintf(buffer, sizeof buffer, "{\"committed\":%d}", committed);
        outcome.status = CSOP_STATUS_OK;
        outcome.data = (const uint8_t *)buffer;
        outcome.data_length = (size_t)n;
    } else if (strcmp(call->operation, "trace") == 0) {
        /* tracestate is printable ASCII without quotes in the tests. */
        int has = CSOP_CALL_HAS_TRACE(call);
        const char *parent = has ? call->traceparent : NULL, *state = has ? call->tracestate : NULL;
        int n = snprintf(buffer, sizeof buffer, "{\"traceparent\":%s%s%s,\"tracestate\":%s%s%s}",
                         parent ? "\"" : "", parent ? parent : "null", parent ? "\"" : "",
                         state ? "\"" : "", state ? state : "null", state ? "\"" : "");
        outcome.status = CSOP_STATUS_OK;
        outcome.data = (const uint8_t *)buffer;
        outcome.data_length = (size_t)n;
    } else if (strcmp(call->operation, "whoami") == 0) {
        /* A host older than the caller fields, or no caller: the local owner. */
        int n = CSOP_CALL_HAS_CALLER(call) && call->tenant != NULL
                    ? snprintf(buffer, sizeof buffer, "{\"tenant\":\"%s\",\"subject\":\"%s\",\"actions\":\"%s\"}",
                               call->tenant, call->subject, call->actions)
                    : snprintf(buffer, sizeof buffer, "{\"owner\":true}");
        outcome.status = CSOP_STATUS_OK;
        outcome.data = (const uint8_t *)buffer;
        outcome.data_length = (size_t)n;
    } else {
        static const char message[] = "hello.fail always fails";
        outcome.status = CSOP_STATUS_ERROR;
        outcome.error.code = "HELLO_FAILED";
        outcome.error.message = message;
        outcome.error.message_length = sizeof message - 1;
        outcome.error.retryable = 0;
    }
    call->complete(call, &outcome);
}

static void destroy(void *instance) { (void)instance; }

static void write_metrics(void *instance, void *context, void (*write)(void *context, const uint8_t *text, size_t length)) {
    (void)instance;
    char buffer[512];
    int n = snprintf(buffer, sizeof buffer,
                     "# HELP csop_" HELLO_NAME "_greetings_total Greetings answered.\n"
                     "# TYPE csop_" HELLO_NAME "_greetings_total counter\n"
                     "csop_" HELLO_NAME "_greetings_total %ld\n",
                     atomic_load(&greetings));
    write(context, (const uint8_t *)buffer, 20); /* a line split across writes */
    write(context, (const uint8_t *)buffer + 20, (size_t)n - 20);
    static const char dropped[] = "# TYPE csop_storage_bytes gauge\ncsop_storage_bytes 7\nhello_other 1\n {} 3\n";
    write(context, (const uint8_t *)dropped, sizeof dropped - 1);
}

static const csop_plugin_descriptor descriptor = {
    .magic = CSOP_PLUGIN_MAGIC,
    .abi_version = CSOP_ABI_VERSION,
    .struct_size = sizeof(csop_plugin_descriptor),
    .name = HELLO_NAME,
    .version = HELLO_VERSION,
    .operations = operations,
    .operation_count = 6,
    .create = create,
    .invoke = invoke,
    .cancel = NULL,
    .destroy = destroy,
    .check_config = NULL,
    .write_metrics = write_metrics,
};

const csop_plugin_descriptor *csop_plugin_register(void) { return &descriptor; }
