#include <stddef.h>
#include <stdint.h>

/// libFuzzer's driver, linked in by `-sanitize=fuzzer` only: csop-fuzz calls it from its own
/// `main` (SwiftPM names the executable's entry point, so libFuzzer's `main` is not used).
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
