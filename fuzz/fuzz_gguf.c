/* fuzz_gguf.c - libFuzzer harness for the GGUF reader.
 * Run: build-fuzz/fuzz/fuzz_gguf -max_total_time=30 [corpus_dir]
 * A good seed corpus is ../shared/fixtures/stories260K-f32.gguf. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"
#include "fuzz_check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy: ASan reports any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = apr_gguf_parse(&m, buf, size, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    free(buf);
    return 0;
}
