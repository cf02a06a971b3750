/* fuzz_check.h - what every reader harness checks after a parse. */
#ifndef APR_FUZZ_CHECK_H
#define APR_FUZZ_CHECK_H

#include <stdlib.h>
#include <string.h>

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

/* An exact-size heap copy of the input, so ASan reports any read past its
 * end (libFuzzer's own buffer may have slack). NULL when out of memory. */
static inline uint8_t *fuzz_copy(const uint8_t *data, size_t size)
{
    uint8_t *buf = malloc(size ? size : 1);
    if (buf && size)
        memcpy(buf, data, size);
    return buf;
}

/* The whole harness of a buffer reader: parse a copy, check, free. */
typedef int (*fuzz_parse_fn)(apr_model **m, const uint8_t *p, uint64_t n, apr_err *err);

static inline void fuzz_parse_copy(fuzz_parse_fn parse, const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_copy(data, size);
    if (!buf)
        return;
    apr_model *m = NULL;
    apr_err err = {0};
    int rc = parse(&m, buf, size, &err); /* before reading m */
    fuzz_check_parse(rc, m, &err);
    free(buf);
}

#endif
