/* fuzz_gguf.c - libFuzzer harness for the GGUF reader.
 * Run: build-fuzz/fuzz/fuzz_gguf -max_total_time=30 [corpus_dir]
 * A good seed corpus is ../shared/fixtures/stories260K-f32.gguf. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size heap copy: ASan reports any read past the end. */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    apr_model *m = NULL;
    apr_err err = {0};
    if (apr_gguf_parse(&m, buf, size, &err) == 0) {
        /* Touch every tensor payload the reader vouched for. */
        uint8_t x = 0;
        for (uint64_t i = 0; i < m->n_tensors; i++) {
            const apr_tensor *t = &m->tensors[i];
            if (t->nbytes)
                x ^= t->data[0] ^ t->data[t->nbytes - 1];
        }
        volatile uint8_t sink = x;
        (void)sink;
        apr_model_free(m);
    } else if (m != NULL || err.msg[0] == 0) {
        abort(); /* failure must leave no model and give a message */
    }
    free(buf);
    return 0;
}
