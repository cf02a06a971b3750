/* imatrix.c - importance matrices from the CPU forward pass, as
 * llama-imatrix computes them (tools/imatrix/imatrix.cpp: compute_imatrix
 * cuts the tokens into chunks and IMatrixCollector::collect_imatrix sums
 * x[j]^2 per input column of every blk.* matmul, in f32, one count per
 * token). The sums come from forward.h's matmul-input hook; the files are
 * written by libconvert (apr_imatrix_write_dat / _gguf). */
#include "forward.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One accumulator per distinct matmul input of a layer. */
typedef struct im_acc {
    float *sum2;
    uint64_t cols;
    int64_t count;
} im_acc;

typedef struct im_ctx {
    im_acc *acc; /* n_layers * APR_MM_IN_COUNT */
    uint32_t n_layers;
    int bad;     /* a hook call did not fit the accumulator */
} im_ctx;

static void im_hook(void *user, uint32_t layer, apr_mm_input in, const float *x, uint32_t nt, uint64_t cols)
{
    im_ctx *c = user;
    if (layer >= c->n_layers || (unsigned)in >= APR_MM_IN_COUNT) {
        c->bad = 1;
        return;
    }
    im_acc *a = &c->acc[(uint64_t)layer * APR_MM_IN_COUNT + in];
    if (cols != a->cols) {
        c->bad = 1;
        return;
    }
    float *acc = a->sum2;
    for (uint32_t t = 0; t < nt; t++) { /* llama-imatrix's loop: acc[j] += x[j] * x[j] */
        const float *row = x + (uint64_t)t * cols;
        for (uint64_t j = 0; j < cols; j++)
            acc[j] += row[j] * row[j];
    }
    a->count += nt;
}

/* The weights fed by each input, by their GGUF names: llama.cpp's graph
 * multiplies by these tensors, so its imatrix names them. */
static const char *const im_weights[APR_MM_IN_COUNT][3] = {
    [APR_MM_IN_QKV] = {"attn_q", "attn_k", "attn_v"},
    [APR_MM_IN_O] = {"attn_output", NULL, NULL},
    [APR_MM_IN_GATE_UP] = {"ffn_gate", "ffn_up", NULL},
    [APR_MM_IN_DOWN] = {"ffn_down", NULL, NULL},
};
/* Families whose GGUF keeps HF's fusions (Phi-3: attn_qkv, and ffn_up
 * holding gate then up): one matmul, one entry per input. */
static const char *const im_weights_fused[APR_MM_IN_COUNT][3] = {
    [APR_MM_IN_QKV] = {"attn_qkv", NULL, NULL},
    [APR_MM_IN_O] = {"attn_output", NULL, NULL},
    [APR_MM_IN_GATE_UP] = {"ffn_up", NULL, NULL},
    [APR_MM_IN_DOWN] = {"ffn_down", NULL, NULL},
};

static int im_add_entry(apr_imatrix_stats *out, uint32_t layer, const char *w, const im_acc *a, apr_err *err)
{
    apr_imatrix_stat *e = &out->e[out->n_entries];
    char name[64];
    snprintf(name, sizeof name, "blk.%u.%s.weight", layer, w);
    e->name = strdup(name);
    e->sum2 = malloc((size_t)a->cols * sizeof *e->sum2);
    if (!e->name || !e->sum2) {
        free(e->name);
        free(e->sum2);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    memcpy(e->sum2, a->sum2, (size_t)a->cols * sizeof *e->sum2);
    e->n = a->cols;
    e->count = a->count;
    out->n_entries++;
    return 0;
}

static int im_collect(const im_ctx *c, uint32_t ctx, bool fused, apr_imatrix_stats *out, apr_err *err)
{
    const char *const(*names)[3] = fused ? im_weights_fused : im_weights;
    *out = (apr_imatrix_stats){.chunk_size = ctx};
    out->e = calloc((size_t)c->n_layers * 7, sizeof *out->e);
    if (!out->e)
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    int64_t max_count = 0;
    int rc = 0;
    for (uint32_t il = 0; il < c->n_layers && !rc; il++)
        for (int in = 0; in < APR_MM_IN_COUNT && !rc; in++) {
            const im_acc *a = &c->acc[(uint64_t)il * APR_MM_IN_COUNT + in];
            if (a->count > max_count)
                max_count = a->count;
            for (int k = 0; k < 3 && names[in][k] && !rc; k++)
                rc = im_add_entry(out, il, names[in][k], a, err);
        }
    out->chunks = (uint32_t)(max_count / ctx); /* m_last_chunk */
    if (rc) { /* apr_imatrix_stats_free is libconvert's: not linked here */
        for (uint64_t i = 0; i < out->n_entries; i++) {
            free(out->e[i].name);
            free(out->e[i].sum2);
        }
        free(out->e);
        *out = (apr_imatrix_stats){0};
    }
    return rc;
}

static int im_run(apr_fwd *f, const int32_t *tokens, uint32_t n_chunk, const apr_imatrix_opts *o, apr_err *err)
{
    int32_t *buf = malloc((size_t)o->ctx * sizeof *buf);
    if (!buf)
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    const uint64_t total = (uint64_t)n_chunk * o->ctx;
    int rc = 0;
    for (uint32_t i = 0; i < n_chunk && !rc; i++) {
        memcpy(buf, tokens + (uint64_t)i * o->ctx, (size_t)o->ctx * sizeof *buf);
        if (o->bos >= 0) /* "add BOS token for the first batch of each chunk" */
            buf[0] = o->bos;
        apr_fwd_reset(f);
        rc = apr_fwd_eval(f, buf, o->ctx, NULL, NULL, err);
        if (!rc && o->progress)
            o->progress(o->progress_ctx, (uint64_t)(i + 1) * o->ctx, total);
    }
    free(buf);
    return rc;
}

int apr_fwd_imatrix(apr_fwd *f, const int32_t *tokens, size_t n_tokens, const apr_imatrix_opts *o,
                    apr_imatrix_stats *out, apr_err *err)
{
    *out = (apr_imatrix_stats){0};
    const apr_arch_config *cfg = apr_fwd_config(f);
    if (!o->ctx)
        return apr_err_set(err, APR_E_ARG, "imatrix: the chunk size (--ctx) must be > 0");
    if (o->ctx > apr_fwd_max_ctx(f))
        return apr_err_set(err, APR_E_ARG, "imatrix: chunks of %u tokens exceed the %u-position KV cache", o->ctx,
                           apr_fwd_max_ctx(f));
    if (n_tokens / 2 < o->ctx)
        return apr_err_set(err, APR_E_ARG,
                           "imatrix: the text tokenizes to only %zu tokens; chunks of %u need at least %llu "
                           "(as llama-imatrix asks)", n_tokens, o->ctx, 2ull * o->ctx);
    if (o->bos >= 0 && (uint32_t)o->bos >= cfg->vocab)
        return apr_err_set(err, APR_E_ARG, "imatrix: BOS id %d is outside the vocabulary (%u)", o->bos, cfg->vocab);
    uint64_t n_chunk = n_tokens / o->ctx;
    if (o->chunks && o->chunks < n_chunk)
        n_chunk = o->chunks;

    const uint64_t qd = (uint64_t)cfg->n_heads * cfg->head_dim;
    const uint64_t cols[APR_MM_IN_COUNT] = {cfg->hidden, qd, cfg->hidden, cfg->ffn};
    im_ctx c = {.n_layers = cfg->n_layers};
    c.acc = calloc((size_t)cfg->n_layers * APR_MM_IN_COUNT + 1, sizeof *c.acc);
    int rc = c.acc ? 0 : apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    for (uint64_t i = 0; i < (uint64_t)cfg->n_layers * APR_MM_IN_COUNT && !rc; i++) {
        c.acc[i].cols = cols[i % APR_MM_IN_COUNT];
        if (!(c.acc[i].sum2 = calloc((size_t)c.acc[i].cols, sizeof(float))))
            rc = apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    if (!rc)
        rc = apr_fwd_set_mm_hook(f, im_hook, &c, err);
    if (!rc) {
        rc = im_run(f, tokens, (uint32_t)n_chunk, o, err);
        apr_fwd_set_mm_hook(f, NULL, NULL, NULL);
        apr_fwd_reset(f);
    }
    if (!rc && c.bad)
        rc = apr_err_set(err, APR_E_FORMAT, "imatrix: a matmul input did not have the model's shape");
    if (!rc)
        rc = im_collect(&c, o->ctx, cfg->fused_qkv_gate_up, out, err);
    for (uint64_t i = 0; c.acc && i < (uint64_t)cfg->n_layers * APR_MM_IN_COUNT; i++)
        free(c.acc[i].sum2);
    free(c.acc);
    return rc;
}
