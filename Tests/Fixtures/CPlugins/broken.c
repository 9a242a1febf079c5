/* Deliberately broken plugins for the loader tests; one per -D flag:
 *   -DNO_SYMBOL     exports no csop_plugin_register
 *   -DWRONG_ABI     reports ABI version 99
 *   -DFAILING_INIT  create() fails with a message
 *   -DBAD_OUTPUT    ping answers bytes that are not JSON, and an unknown status for "status"
 *   -DSMALL_OUTCOME completes with a csop_outcome whose struct_size is too small
 *   -DOLD_DESCRIPTOR a descriptor from before check_config (struct_size stops at destroy)
 *   -DREFUSE_CONFIG check_config refuses every config naming "port"
 *   -DNEVER_COMPLETE "status" is never completed
 *   -DDOUBLE_COMPLETE every call is completed twice, the second time with an error
 *   -DCRASHES       "status" dereferences NULL (SIGSEGV): for process isolation
 *   -DABORTS        "status" calls abort() (SIGABRT)
 *   -DNAME=\"x\"    serves domain x (default "broken")
 */
#define _GNU_SOURCE
#include <csop_plugin.h>
#include <stdlib.h>
#include <string.h>

#ifndef NAME
#define NAME "broken"
#endif

static const char *const operations[] = {"ping", "status"};

static int32_t create(const csop_host_api *host, const uint8_t *config, size_t config_length,
                      void **instance, csop_error *error) {
    (void)host; (void)config; (void)config_length;
#ifdef FAILING_INIT
    static const char message[] = "cannot open /nonexistent/db: no such directory";
    error->code = "INIT_FAILED";
    error->message = message;
    error->message_length = sizeof message - 1;
    error->retryable = 0;
    *instance = NULL;
    return 1;
#else
    (void)error;
    *instance = (void *)1;
    return 0;
#endif
}

static void invoke(void *instance, const csop_call *call) {
    (void)instance;
#ifdef CRASHES
    if (call->operation_index == 1) {
        volatile int *nowhere = NULL;
        *nowhere = 1;
    }
#endif
#ifdef ABORTS
    if (call->operation_index == 1) abort();
#endif
#ifdef NEVER_COMPLETE
    if (call->operation_index == 1) return;
#endif
    csop_outcome outcome = {0};
    outcome.struct_size = sizeof outcome;
#ifdef SMALL_OUTCOME
    outcome.struct_size = 8;
#endif
    outcome.status = CSOP_STATUS_OK;
#ifdef BAD_OUTPUT
    outcome.data = (const uint8_t *)"{pong";
    outcome.data_length = 5;
    if (call->operation_index == 1) outcome.status = 42;
#else
    outcome.data = (const uint8_t *)"\"pong\"";
    outcome.data_length = 6;
#endif
    call->complete(call, &outcome);
#ifdef DOUBLE_COMPLETE
    csop_outcome again = {0};
    again.struct_size = sizeof again;
    again.status = CSOP_STATUS_ERROR;
    again.error.code = "SECOND";
    again.error.message = "second completion";
    again.error.message_length = 17;
    call->complete(call, &again);
#endif
}

static void destroy(void *instance) { (void)instance; }

#ifdef REFUSE_CONFIG
static int32_t check_config(const uint8_t *config, size_t config_length, csop_error *error) {
    static const char message[] = "config.port is not supported";
    if (memmem(config, config_length, "\"port\"", 6) == NULL) return 0;
    error->code = "INVALID_PAYLOAD";
    error->message = message;
    error->message_length = sizeof message - 1;
    error->retryable = 0;
    return 1;
}
#endif

static const csop_plugin_descriptor descriptor = {
    .magic = CSOP_PLUGIN_MAGIC,
#ifdef WRONG_ABI
    .abi_version = 99,
#else
    .abi_version = CSOP_ABI_VERSION,
#endif
#ifdef OLD_DESCRIPTOR
    .struct_size = CSOP_PLUGIN_DESCRIPTOR_MIN_SIZE,
#else
    .struct_size = sizeof(csop_plugin_descriptor),
#endif
    .name = NAME,
    .version = "0.0.1",
    .operations = operations,
    .operation_count = 2,
    .create = create,
    .invoke = invoke,
    .cancel = NULL,
    .destroy = destroy,
#ifdef REFUSE_CONFIG
    .check_config = check_config,
#endif
};

#ifdef NO_SYMBOL
const csop_plugin_descriptor *some_other_function(void) { return &descriptor; }
#else
const csop_plugin_descriptor *csop_plugin_register(void) { return &descriptor; }
#endif
