/*
 * csop_plugin.h — the whole contract between the CSOP host and a capability plugin.
 *
 * A plugin is a shared library that exports one function:
 *
 *     const csop_plugin_descriptor *csop_plugin_register(void);
 *
 * It must return a pointer to static, immutable data that lives as long as the library
 * is loaded. The host reads `magic`, `abi_version` and `struct_size` before it touches any
 * other field or calls any other plugin code, and refuses the library on a mismatch.
 *
 * Data crosses the boundary as UTF-8 JSON bytes (never NUL-terminated unless said so).
 *
 * Ownership rules, in one place:
 *  - Every pointer the host passes to a plugin (config, payload, operation name, the
 *    caller's tenant, subject and actions, the host API table) is owned by the host. Config,
 *    payload and caller bytes are valid only until the call that received them returns;
 *    copy what you need to keep. The csop_host_api table stays valid until `destroy`
 *    returns.
 *  - Every pointer a plugin passes to the host (a completion's data or error, an event, a
 *    log message) is owned by the plugin. The host copies it before the host function
 *    returns, so the plugin may free or reuse it right after.
 *
 * Structs only ever grow at the end; each starts with its size so both sides can tell
 * which fields the other knows about.
 */
#ifndef CSOP_PLUGIN_H
#define CSOP_PLUGIN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** "CSOP" in ASCII: identifies a CSOP plugin descriptor. */
#define CSOP_PLUGIN_MAGIC 0x43534F50u
/** Bumped on any incompatible change. The host loads only plugins built for this version. */
#define CSOP_ABI_VERSION 1u
/** Name of the registration function every plugin exports. */
#define CSOP_PLUGIN_REGISTER_SYMBOL "csop_plugin_register"

/** Log levels for csop_host_api.log. */
typedef enum csop_log_level {
    CSOP_LOG_TRACE = 0,
    CSOP_LOG_DEBUG = 1,
    CSOP_LOG_INFO = 2,
    CSOP_LOG_WARNING = 3,
    CSOP_LOG_ERROR = 4
} csop_log_level;

/** Services the host offers a plugin, handed over at `create`. Thread-safe: callable from any thread. */
typedef struct csop_host_api {
    /** sizeof(csop_host_api) as the host compiled it. */
    uint32_t struct_size;
    /** CSOP_ABI_VERSION of the host. */
    uint32_t abi_version;
    /** Opaque; pass it back as the first argument of every function below. */
    void *host_context;
    /** Writes a log line through the host's logger (stderr in the CLI). `message` is `length` UTF-8 bytes. */
    void (*log)(void *host_context, int32_t level, const char *message, size_t length);
    /**
     * Pushes an event (a JSON object, `length` bytes) to everyone listening to this host:
     * `csop run` prints it as a line, the embedding API yields it from its event stream.
     * The host forwards the object unchanged (it must be a JSON object), tagged out of band
     * with the emitting plugin's name.
     */
    void (*emit_event)(void *host_context, const uint8_t *json, size_t length);
} csop_host_api;

/** What a plugin reports when an operation or `create` fails. */
typedef struct csop_error {
    /** A stable code such as "INVALID_PAYLOAD": NUL-terminated, ASCII, at most 63 bytes. */
    const char *code;
    /** A message saying what went wrong and how to fix it: `message_length` UTF-8 bytes. */
    const char *message;
    size_t message_length;
    /** Non-zero when trying the same request again may succeed. */
    int32_t retryable;
} csop_error;

/** Completion status. */
enum {
    CSOP_STATUS_OK = 0,
    CSOP_STATUS_ERROR = 1
};

/** The result of an operation, handed to csop_call.complete. */
typedef struct csop_outcome {
    /** sizeof(csop_outcome) as the plugin compiled it. */
    uint32_t struct_size;
    /** CSOP_STATUS_OK or CSOP_STATUS_ERROR. */
    int32_t status;
    /** With CSOP_STATUS_OK: the result, one JSON value of `data_length` bytes (NULL/0 means `null`). */
    const uint8_t *data;
    size_t data_length;
    /** With CSOP_STATUS_ERROR: the error. */
    csop_error error;
} csop_outcome;

/** The least `csop_outcome.struct_size` the host accepts: an outcome with every field above. */
#define CSOP_OUTCOME_MIN_SIZE (sizeof(csop_outcome))
/** The least `csop_host_api.struct_size` a plugin may rely on: a table with `log` and `emit_event`. */
#define CSOP_HOST_API_MIN_SIZE (offsetof(csop_host_api, emit_event) + sizeof(void (*)(void)))

typedef struct csop_call csop_call;

/**
 * Finishes a call. Must be called exactly once per `invoke`, from any thread, before or
 * after `invoke` returns, even after `cancel` (the host then discards the outcome).
 */
typedef void (*csop_complete_fn)(const csop_call *call, const csop_outcome *outcome);

/**
 * Marks the point of no return of a call: see csop_call.begin_commit. Returns 1 when the call
 * is still wanted, 0 when the host has already abandoned it.
 */
typedef int32_t (*csop_begin_commit_fn)(const csop_call *call);

/** Writes a log line about a call: see csop_call.log. */
typedef void (*csop_call_log_fn)(const csop_call *call, int32_t level, const char *message, size_t length);

/** Records a span of a call: see csop_call.record_span. */
typedef void (*csop_call_record_span_fn)(const csop_call *call, const uint8_t *json, size_t length);

/** One operation request. Valid until `complete` is called for it. */
struct csop_call {
    /** sizeof(csop_call) as the host compiled it. */
    uint32_t struct_size;
    uint32_t reserved;
    /** Unique per host process; `cancel` names a call by it. */
    uint64_t call_id;
    /** The operation (the part after the dot), `operation_length` bytes, also NUL-terminated. */
    const char *operation;
    size_t operation_length;
    /** Index of the operation in the descriptor's `operations` array. */
    uint32_t operation_index;
    uint32_t reserved2;
    /** The request payload: a JSON object of `payload_length` bytes. Valid only during `invoke`. */
    const uint8_t *payload;
    size_t payload_length;
    /** Milliseconds the host gives this attempt before it times out and cancels it. */
    double timeout_ms;
    /** Finishes the call. */
    csop_complete_fn complete;
    /** Owned by the host; do not touch. */
    void *host_reserved;

    /* Added after the first release of ABI version 1: use the fields below only when
     * `struct_size` covers them (CSOP_CALL_HAS_BEGIN_COMMIT), since an older host omits them. */

    /**
     * Call it right before an effect that cannot be undone (a COMMIT, a NOTIFY, a payment),
     * at most once per call, before `complete` and never at the same time as it.
     *
     * Returns 1: the call is still wanted, and the host no longer abandons it: a timeout
     * that passes from now on waits for the completion, whose outcome is the answer (a
     * commit that never completes is answered TIMEOUT, not retryable, saying the effect may
     * have happened). Make the effect, then complete.
     * Returns 0: the host has already answered the call (it timed out and was cancelled), so
     * the caller was told it did not happen: do not make the effect (roll back), and complete
     * the call with any error (the host discards it).
     *
     * Without it, a timeout could answer TIMEOUT while the plugin commits anyway, and a
     * client that retries writes twice.
     */
    csop_begin_commit_fn begin_commit;

    /* Added after the first release of ABI version 1, after `begin_commit`: use the fields
     * below only when `struct_size` covers them (CSOP_CALL_HAS_CALLER), since an older host
     * omits them; a plugin then serves the call as the local owner's. */

    /**
     * Who the request runs for, when it came through an authenticating front end (a gateway
     * that checked a token). `tenant == NULL` means the local owner (`csop run`, embedding):
     * everything is allowed and there is no tenant, and `subject` and `actions` are NULL too.
     * Otherwise all three are set: `tenant` is whose data the call may see (keep every
     * tenant's keys, functions, channels and presence apart), `subject` who is calling (the
     * token's `sub`; 1-128 bytes, no control characters, as is `tenant`), and `actions` the
     * comma-separated action patterns the token allows (`*`, `domain.*`, `domain.operation`;
     * the host has already refused the call if they do not allow it).
     *
     * Each is `*_length` UTF-8 bytes and also NUL-terminated. Owned by the host and valid only
     * during `invoke`, like the payload: copy what you keep for later work.
     */
    const char *tenant;
    size_t tenant_length;
    const char *subject;
    size_t subject_length;
    const char *actions;
    size_t actions_length;

    /* Added after the first release of ABI version 1, after `actions_length`: use the fields
     * below only when `struct_size` covers them (CSOP_CALL_HAS_TRACE). */

    /**
     * The W3C trace context the call runs in (https://www.w3.org/TR/trace-context/), so that
     * spans the plugin records (a query, a job, a publish) join the caller's trace: `traceparent`
     * is the host's span for this attempt when the host traces, else the caller's own, as
     * "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>" (55 bytes); NULL when the request
     * came without one and the host does not trace. `tracestate` is the vendors' list that
     * travels with it, or NULL. Each is `*_length` bytes and also NUL-terminated, owned by the
     * host and valid only during `invoke`.
     */
    const char *traceparent;
    size_t traceparent_length;
    const char *tracestate;
    size_t tracestate_length;

    /**
     * Writes a log line (`level` a csop_log_level, `message` `length` UTF-8 bytes) about this
     * call through the host's logger, tagged with the request's id and trace id, which
     * `--log-format json` shows as `requestId` and `traceId`. Any thread, before `complete`
     * and never at the same time as it (after it, the line is logged without the tags). Read
     * it only when CSOP_CALL_HAS_LOG(call).
     */
    csop_call_log_fn log;

    /**
     * Records a span the plugin measured while serving this call (a query, a job, a publish)
     * as a child of the host's span for the call, so it reaches whatever tracer the host
     * exports to; without a tracer the host drops it. `json` (`length` bytes, copied) is an
     * object: {"name": 1-128 bytes, "start": and "end": nanoseconds since the Unix epoch
     * (end >= start), "attributes": {name: string, number or bool}? (at most 32),
     * "error": a code such as "QUERY_FAILED"?}. A malformed one is logged and dropped. Any
     * thread, before `complete` and never at the same time as it. Read it only when
     * CSOP_CALL_HAS_RECORD_SPAN(call).
     */
    csop_call_record_span_fn record_span;
};

/** Whether `call` (a `const csop_call *`) carries a usable `begin_commit`. */
#define CSOP_CALL_HAS_BEGIN_COMMIT(call) \
    ((call)->struct_size >= offsetof(csop_call, begin_commit) + sizeof(csop_begin_commit_fn) && (call)->begin_commit != NULL)

/** Whether `call` (a `const csop_call *`) carries the caller fields; `tenant` may still be NULL (the local owner). */
#define CSOP_CALL_HAS_CALLER(call) \
    ((call)->struct_size >= offsetof(csop_call, actions_length) + sizeof(size_t))

/** Whether `call` (a `const csop_call *`) carries the trace fields; `traceparent` may still be NULL. */
#define CSOP_CALL_HAS_TRACE(call) \
    ((call)->struct_size >= offsetof(csop_call, tracestate_length) + sizeof(size_t))

/** Whether `call` (a `const csop_call *`) carries a usable `log`. */
#define CSOP_CALL_HAS_LOG(call) \
    ((call)->struct_size >= offsetof(csop_call, log) + sizeof(csop_call_log_fn) && (call)->log != NULL)

/** Whether `call` (a `const csop_call *`) carries a usable `record_span`. */
#define CSOP_CALL_HAS_RECORD_SPAN(call) \
    ((call)->struct_size >= offsetof(csop_call, record_span) + sizeof(csop_call_record_span_fn) && (call)->record_span != NULL)

/** Returned by csop_plugin_register. Static and immutable. */
typedef struct csop_plugin_descriptor {
    /** CSOP_PLUGIN_MAGIC. */
    uint32_t magic;
    /** CSOP_ABI_VERSION the plugin was built against. */
    uint32_t abi_version;
    /** sizeof(csop_plugin_descriptor) as the plugin compiled it. */
    uint32_t struct_size;
    uint32_t reserved;
    /** The capability (domain) this plugin serves, e.g. "storage": NUL-terminated. */
    const char *name;
    /** The plugin's own version, e.g. "1.2.0": NUL-terminated. */
    const char *version;
    /** Operation names, e.g. "save": `operation_count` NUL-terminated strings. */
    const char *const *operations;
    size_t operation_count;

    /**
     * Creates an instance from its config (a JSON object, `config_length` bytes). On
     * success stores the instance in `*instance` and returns 0. On failure returns non-zero
     * and may fill `*error`. The host copies the error's strings as soon as `create` returns,
     * on the same thread, before it calls into the plugin again: they need to stay valid only
     * until then (static strings, or a per-thread buffer reused by the next failure).
     */
    int32_t (*create)(const csop_host_api *host, const uint8_t *config, size_t config_length,
                      void **instance, csop_error *error);
    /** Starts an operation. Must not block for long: do slow work elsewhere and complete later. */
    void (*invoke)(void *instance, const csop_call *call);
    /**
     * Asks the plugin to stop a call that the host has abandoned (a timeout). Best effort;
     * the plugin still calls `complete` for it. May be NULL.
     */
    void (*cancel)(void *instance, uint64_t call_id);
    /** Releases the instance. Called once, after every call has completed. */
    void (*destroy)(void *instance);

    /* Added after the first release of ABI version 1: the host reads the fields below only
     * when `struct_size` covers them, so descriptors built against the older header still load. */

    /**
     * Checks a config (as `create` would get it) without creating an instance or touching
     * any resource: no files opened, no connections made (`csop check` calls it). Returns 0
     * when the config is valid; otherwise non-zero and may fill `*error` as `create` does.
     * May be NULL: the host then checks only that the config is a JSON object.
     */
    int32_t (*check_config)(const uint8_t *config, size_t config_length, csop_error *error);

    /* Added after the first release of ABI version 1, after `check_config`: the host reads it
     * only when `struct_size` covers it (CSOP_DESCRIPTOR_HAS_WRITE_METRICS). */

    /**
     * Writes the instance's own metrics (a pool's queue depth, a store's bytes) in Prometheus's
     * text exposition format, version 0.0.4: `# HELP` and `# TYPE` lines and samples, each line
     * ending in "\n". Every metric name must start with "csop_" followed by the plugin's `name`
     * and "_" (`csop_storage_bytes`); the host drops lines that do not, so that plugins never
     * overwrite each other's series or the host's. The host adds each request's count and
     * duration by action itself: do not count requests here.
     *
     * Calls `write(context, text, length)` any number of times, on the calling thread, before
     * it returns; the host copies the bytes. Called on any thread, at any time between `create`
     * and `destroy` while calls run (when a scraper asks): read counters, do not block.
     * May be NULL: the plugin has no metrics of its own.
     */
    void (*write_metrics)(void *instance, void *context, void (*write)(void *context, const uint8_t *text, size_t length));
} csop_plugin_descriptor;

/** Whether `descriptor` (a `const csop_plugin_descriptor *`) carries a usable `write_metrics`. */
#define CSOP_DESCRIPTOR_HAS_WRITE_METRICS(descriptor) \
    ((descriptor)->struct_size >= offsetof(csop_plugin_descriptor, write_metrics) + sizeof(void (*)(void)) && \
     (descriptor)->write_metrics != NULL)

/** The size of a version 1 descriptor before `check_config` was added: the least the host accepts. */
#define CSOP_PLUGIN_DESCRIPTOR_MIN_SIZE (offsetof(csop_plugin_descriptor, check_config))

/** The signature of the registration symbol. */
typedef const csop_plugin_descriptor *(*csop_plugin_register_fn)(void);

#ifdef __cplusplus
}
#endif

#endif /* CSOP_PLUGIN_H */
