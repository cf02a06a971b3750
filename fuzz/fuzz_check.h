/* fuzz_check.h - what every reader harness checks after a parse. */
#ifndef APR_FUZZ_CHECK_H
#define APR_FUZZ_CHECK_H

#include <stdlib.h>

#include "formats.h"

/* libFuzzer's entry point, which every harness defines (declared for
 * -Wmissing-prototypes). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A successful parse: touch the first and last byte of every payload the
 * reader vouched for (ASan reports any that lie outside the input) and the
 * derived tokenizer view, then free the model. A failed one must leave no
 * model and give a message. */
static inline void fuzz_check_parse(int rc, apr_model *m, const apr_err *err)
{
    if (rc != 0) {
        if (m != NULL || err->msg[0] == 0)
            abort();
        return;
    }
    uint8_t x = 0;
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (t->nbytes)
            x ^= t->data[0] ^ t->data[t->nbytes - 1];
    }
    for (uint32_t i = 0; m->has_tok && i < m->tok.n_tokens; i++)
        x ^= (uint8_t)m->tok.tokens[i].len;
    volatile uint8_t sink = x;
    (void)sink;
    apr_model_free(m);
}

#endif
