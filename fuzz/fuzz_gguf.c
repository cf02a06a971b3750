/* fuzz_gguf.c - libFuzzer harness for the GGUF reader.
 * Run: build-fuzz/fuzz/fuzz_gguf -max_total_time=30 [corpus_dir]
 * A good seed corpus is ../shared/fixtures/stories260K-f32.gguf. */
#include <stdint.h>
#include <stdlib.h>

#include "formats.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_parse_copy(apr_gguf_parse, data, size);
    return 0;
}
