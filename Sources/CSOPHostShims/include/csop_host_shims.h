/* Small C helpers the host needs and Swift does not offer for memory it does not own. */
#ifndef CSOP_HOST_SHIMS_H
#define CSOP_HOST_SHIMS_H

/** Atomically replaces `*slot` with `value` and returns what was there (acquire-release). */
static inline void *csop_exchange_pointer(void *volatile *slot, void *value) {
    return __atomic_exchange_n(slot, value, __ATOMIC_ACQ_REL);
}

/** Atomically reads `*slot` (acquire). */
static inline void *csop_load_pointer(void *volatile *slot) {
    return __atomic_load_n(slot, __ATOMIC_ACQUIRE);
}

#endif
