/* trace_cmp.c - compare two traced forward passes layer by layer.
 *
 * The std of each sub-step's activations is a cheap fingerprint of where a
 * model goes wrong: quantization noise moves it by a few per cent, a zeroed
 * or scrambled tensor moves it by a large factor at the layer that holds it
 * (and everything after). The first (layer, step) whose DST/SRC std ratio
 * leaves the band names the culprit. For lossless conversions a finer test
 * applies: the statistics must be bit-identical, so the first step that
 * differs at all is reported too.
 */
#include "parity.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool stats_same(const apr_stats *a, const apr_stats *b)
{
    return memcmp(&a->mean, &b->mean, sizeof a->mean) == 0 &&
           memcmp(&a->std, &b->std, sizeof a->std) == 0 &&
           memcmp(&a->min, &b->min, sizeof a->min) == 0 &&
           memcmp(&a->max, &b->max, sizeof a->max) == 0 && a->n == b->n &&
           a->nonfinite == b->nonfinite;
}

static double std_ratio(const apr_stats *src, const apr_stats *dst)
{
    if (src->std == 0)
        return dst->std == 0 ? 1.0 : INFINITY;
    return dst->std / src->std;
}

int apr_trace_compare(const apr_trace *src, const apr_trace *dst, double lo, double hi,
                      apr_trace_cmp *out, apr_err *err)
{
    memset(out, 0, sizeof *out);
    out->first_out_layer = out->first_out_step = -1;
    out->first_diff_layer = out->first_diff_step = -1;
    if (!src->s || !dst->s)
        return apr_err_set(err, APR_E_ARG, "trace compare: a trace holds no statistics");
    if (src->n_layers != dst->n_layers)
        return apr_err_set(err, APR_E_MISMATCH, "trace compare: %u layers in SRC, %u in DST",
                           src->n_layers, dst->n_layers);
    if (!(lo > 0) || !(hi >= lo))
        return apr_err_set(err, APR_E_ARG, "trace compare: bad band [%g, %g]", lo, hi);
    const size_t n = (size_t)src->n_layers * APR_TR_COUNT;
    out->n_layers = src->n_layers;
    out->lo = lo;
    out->hi = hi;
    out->ratio = calloc(n ? n : 1, sizeof *out->ratio);
    out->out = calloc(n ? n : 1, sizeof *out->out);
    out->same = calloc(n ? n : 1, sizeof *out->same);
    if (!out->ratio || !out->out || !out->same) {
        apr_trace_cmp_free(out);
        return apr_err_set(err, APR_E_NOMEM, "trace compare: out of memory");
    }
    for (uint32_t l = 0; l < src->n_layers; l++) {
        for (int st = 0; st < APR_TR_COUNT; st++) {
            const size_t i = (size_t)l * APR_TR_COUNT + st;
            const apr_stats *a = &src->s[i], *b = &dst->s[i];
            const double r = std_ratio(a, b);
            out->ratio[i] = r;
            /* NaN fails the comparison and so counts as outside the band */
            out->out[i] = !(r >= lo && r <= hi) || b->nonfinite > a->nonfinite;
            out->same[i] = stats_same(a, b);
            if (out->out[i] && out->first_out_layer < 0) {
                out->first_out_layer = (int)l;
                out->first_out_step = st;
            }
            if (!out->same[i] && out->first_diff_layer < 0) {
                out->first_diff_layer = (int)l;
                out->first_diff_step = st;
            }
        }
    }
    return 0;
}

void apr_trace_cmp_free(apr_trace_cmp *c)
{
    free(c->ratio);
    free(c->out);
    free(c->same);
    c->ratio = NULL;
    c->out = NULL;
    c->same = NULL;
}
