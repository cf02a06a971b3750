/* fuzz_tok.h - what the tokenizer harnesses check when they load an encoder. */
#ifndef APR_FUZZ_TOK_H
#define APR_FUZZ_TOK_H

#include <stdlib.h>

#include "tok.h"

/* The encoder for m's tokenizer view, or NULL when the library refuses it;
 * a refusal must leave no encoder and give a message. */
static inline apr_tok *fuzz_tok_load(const apr_model *m)
{
    apr_tok *t = NULL;
    apr_err err = {0};
    if (apr_tok_load(&t, m, &err) != 0) {
        if (t || err.msg[0] == 0)
            abort();
        return NULL;
    }
    return t;
}

#endif
