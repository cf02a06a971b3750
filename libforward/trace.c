/* trace.c - per-layer, per-sub-step activation statistics. */
#include "forward.h"

#include <stdlib.h>

const char *apr_trace_step_name(apr_trace_step s)
{
    static const char *names[APR_TR_COUNT] = {
        "attn_norm", "q", "k", "v", "attn_out", "o_proj", "resid1",
        "ffn_norm", "gate", "up", "swiglu", "down", "resid2"};
    return (unsigned)s < APR_TR_COUNT ? names[s] : "?";
}

int apr_trace_init(apr_trace *t, uint32_t n_layers, bool last_token_only)
{
    t->last_token_only = last_token_only;
    t->n_layers = n_layers;
    t->s = calloc((size_t)n_layers * APR_TR_COUNT + 1, sizeof *t->s);
    return t->s ? 0 : APR_E_NOMEM;
}

void apr_trace_free(apr_trace *t)
{
    free(t->s);
    t->s = NULL;
    t->n_layers = 0;
}
