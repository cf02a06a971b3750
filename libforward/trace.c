/* trace.c - per-layer, per-sub-step activation statistics. */
#include "forward.h"

#include <math.h>
#include <stdlib.h>

#include "backend.h"

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

/* ---- accumulators (graph.h) */

void apr_stats_acc_init(apr_stats_acc *a)
{
    a->sum = a->sumsq = 0.0;
    a->min = INFINITY;
    a->max = -INFINITY;
    a->n = a->nonfinite = 0;
}

void apr_stats_acc_add(apr_stats_acc *a, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const double v = x[i];
        if (!isfinite(v)) {
            a->nonfinite++;
            continue;
        }
        a->sum += v;
        a->sumsq += v * v;
        if (v < a->min)
            a->min = v;
        if (v > a->max)
            a->max = v;
        a->n++;
    }
}

void apr_stats_acc_merge(apr_stats_acc *a, const apr_stats_acc *b)
{
    a->sum += b->sum;
    a->sumsq += b->sumsq;
    if (b->min < a->min)
        a->min = b->min;
    if (b->max > a->max)
        a->max = b->max;
    a->n += b->n;
    a->nonfinite += b->nonfinite;
}

void apr_stats_acc_finish(const apr_stats_acc *a, apr_stats *out)
{
    out->n = a->n;
    out->nonfinite = a->nonfinite;
    if (!a->n) {
        out->mean = out->std = out->min = out->max = 0.0;
        return;
    }
    const double mean = a->sum / (double)a->n;
    const double var = a->sumsq / (double)a->n - mean * mean;
    out->mean = mean;
    out->std = var > 0.0 ? sqrt(var) : 0.0;
    out->min = a->min;
    out->max = a->max;
}
