/* imatrix.c - importance matrices from the CPU forward pass, as
 * llama-imatrix computes them (tools/imatrix/imatrix.cpp: compute_imatrix
 * cuts the tokens into chunks and IMatrixCollector::collect_imatrix sums
 * x[j]^2 per input column of every blk.* matmul, in f32, one count per
 * token; --process-output adds output.weight; with --in-file the sums go on
 * from the loaded ones; the perplexity of each chunk's second half is
 * printed as it goes). The sums come from forward.h's matmul-input hook; the
 * files are written by libconvert (apr_imatrix_write_dat / _gguf). */
#include "forward.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One distinct matmul input and the weights it feeds: Q, K and V share an
 * input but llama-imatrix keeps an accumulator per weight, each continuing
 * from its own loaded sums. */
typedef struct im_acc {
    uint64_t cols;
    int n;            /* weights fed (0: not collected) */
    char *name[3];    /* their GGUF names */
    float *sum2[3];
    int64_t count[3];
} im_acc;

typedef struct im_ctx {
    im_acc *acc; /* n_layers * APR_MM_IN_COUNT, then the output matrix's */
    uint32_t n_layers;
    int bad;     /* a hook call did not fit the accumulator */
} im_ctx;

static void im_hook(void *user, uint32_t layer, apr_mm_input in, const float *x, uint32_t nt, uint64_t cols)
{
    im_ctx *c = user;
    im_acc *a;
    if (layer == c->n_layers && in == APR_MM_IN_OUTPUT)
        a = &c->acc[(uint64_t)c->n_layers * APR_MM_IN_COUNT];
    else if (layer < c->n_layers && (unsigned)in < APR_MM_IN_COUNT)
        a = &c->acc[(uint64_t)layer * APR_MM_IN_COUNT + in];
    else {
        c->bad = 1;
        return;
    }
    if (!a->n)
        return;
    if (cols != a->cols) {
        c->bad = 1;
        return;
    }
    for (uint32_t t = 0; t < nt; t++) { /* llama-imatrix's loop: acc[j] += x[j] * x[j] */
        const float *row = x + (uint64_t)t * cols;
        for (int k = 0; k < a->n; k++) {
            float *acc = a->sum2[k];
            for (uint64_t j = 0; j < cols; j++)
                acc[j] += row[j] * row[j];
        }
    }
    for (int k = 0; k < a->n; k++)
        a->count[k] += nt;
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

static const apr_imatrix_stat *start_find(const apr_imatrix_stats *s, const char *name)
{
    for (uint64_t i = 0; s && i < s->n_entries; i++)
        if (!strcmp(s->e[i].name, name))
            return &s->e[i];
    return NULL;
}

/* One weight of an accumulator: zero sums, or the loaded ones to go on from. */
static int acc_add(im_acc *a, const char *name, const apr_imatrix_stats *start, apr_err *err)
{
    const int k = a->n;
    a->name[k] = strdup(name);
    a->sum2[k] = calloc((size_t)a->cols, sizeof(float));
    if (!a->name[k] || !a->sum2[k]) {
        free(a->name[k]);
        free(a->sum2[k]);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    a->n++;
    const apr_imatrix_stat *s = start_find(start, name);
    if (s && s->n != a->cols)
        return apr_err_set(err, APR_E_ARG, "imatrix: the loaded entry %s has %llu values but the model's weight has "
                           "%llu input columns", name, (unsigned long long)s->n, (unsigned long long)a->cols);
    if (s) {
        memcpy(a->sum2[k], s->sum2, (size_t)a->cols * sizeof(float));
        a->count[k] = s->count;
    }
    return 0;
}

static int im_setup(im_ctx *c, const apr_arch_config *cfg, bool output, const apr_imatrix_opts *o, apr_err *err)
{
    const uint64_t qd = (uint64_t)cfg->n_heads * cfg->head_dim;
    const uint64_t cols[APR_MM_IN_COUNT] = {cfg->hidden, qd, cfg->hidden, cfg->ffn};
    const char *const(*names)[3] = cfg->fused_qkv_gate_up ? im_weights_fused : im_weights;
    const uint64_t n_acc = (uint64_t)cfg->n_layers * APR_MM_IN_COUNT;
    c->n_layers = cfg->n_layers;
    if (!(c->acc = calloc((size_t)n_acc + 1, sizeof *c->acc)))
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    int rc = 0;
    for (uint64_t i = 0; i < n_acc && !rc; i++) {
        im_acc *a = &c->acc[i];
        a->cols = cols[i % APR_MM_IN_COUNT];
        for (int k = 0; k < 3 && names[i % APR_MM_IN_COUNT][k] && !rc; k++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%llu.%s.weight", (unsigned long long)(i / APR_MM_IN_COUNT),
                     names[i % APR_MM_IN_COUNT][k]);
            rc = acc_add(a, name, o->start, err);
        }
    }
    if (!rc && output) {
        c->acc[n_acc].cols = cfg->hidden;
        rc = acc_add(&c->acc[n_acc], "output.weight", o->start, err);
    }
    return rc;
}

static void im_free(im_ctx *c)
{
    for (uint64_t i = 0; c->acc && i <= (uint64_t)c->n_layers * APR_MM_IN_COUNT; i++)
        for (int k = 0; k < c->acc[i].n; k++) {
            free(c->acc[i].name[k]);
            free(c->acc[i].sum2[k]);
        }
    free(c->acc);
}

static void stats_free(apr_imatrix_stats *out) /* apr_imatrix_stats_free is libconvert's: not linked here */
{
    for (uint64_t i = 0; i < out->n_entries; i++) {
        free(out->e[i].name);
        free(out->e[i].sum2);
    }
    free(out->e);
    *out = (apr_imatrix_stats){0};
}

static int stat_put(apr_imatrix_stats *out, const char *name, const float *sum2, uint64_t n, int64_t count,
                    apr_err *err)
{
    apr_imatrix_stat *e = &out->e[out->n_entries];
    e->name = strdup(name);
    e->sum2 = malloc((size_t)n * sizeof *e->sum2);
    if (!e->name || !e->sum2) {
        free(e->name);
        free(e->sum2);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    }
    memcpy(e->sum2, sum2, (size_t)n * sizeof *e->sum2);
    e->n = n;
    e->count = count;
    out->n_entries++;
    return 0;
}

/* The accumulated entries, then the loaded ones the model did not feed
 * (llama-imatrix saves every entry it holds); the chunk count is its
 * m_last_chunk: the largest count / chunk size. */
static int im_collect(im_ctx *c, uint32_t ctx, const apr_imatrix_stats *start, apr_imatrix_stats *out,
                      apr_err *err)
{
    const uint64_t n_acc = (uint64_t)c->n_layers * APR_MM_IN_COUNT + 1;
    *out = (apr_imatrix_stats){.chunk_size = ctx};
    out->e = calloc((size_t)(n_acc * 3 + (start ? start->n_entries : 0)) + 1, sizeof *out->e);
    if (!out->e)
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory");
    int64_t max_count = 0;
    int rc = 0;
    for (uint64_t i = 0; i < n_acc && !rc; i++)
        for (int k = 0; k < c->acc[i].n && !rc; k++) {
            const im_acc *a = &c->acc[i];
            if (a->count[k] > max_count)
                max_count = a->count[k];
            rc = stat_put(out, a->name[k], a->sum2[k], a->cols, a->count[k], err);
        }
    for (uint64_t i = 0; start && i < start->n_entries && !rc; i++) {
        const apr_imatrix_stat *s = &start->e[i];
        bool fed = false;
        for (uint64_t j = 0; j < n_acc && !fed; j++)
            for (int k = 0; k < c->acc[j].n && !fed; k++)
                fed = !strcmp(c->acc[j].name[k], s->name);
        if (fed)
            continue;
        if (s->count > max_count)
            max_count = s->count;
        rc = stat_put(out, s->name, s->sum2, s->n, s->count, err);
    }
    out->chunks = (uint32_t)(max_count / ctx);
    if (rc)
        stats_free(out);
    return rc;
}

/* llama-imatrix's log_softmax: -log p(tok) */
static double neg_log_prob(const float *logits, uint32_t n_vocab, int32_t tok)
{
    float max_logit = logits[0];
    for (uint32_t i = 1; i < n_vocab; ++i)
        max_logit = logits[i] > max_logit ? logits[i] : max_logit;
    double sum_exp = 0.0;
    for (uint32_t i = 0; i < n_vocab; ++i)
        sum_exp += expf(logits[i] - max_logit);
    return -(logits[tok] - max_logit - log(sum_exp));
}

/* process_logits over the chunk's second half: position p predicts the
 * text's token p + 1, for p in [ctx / 2, ctx - 1) */
static void chunk_nll(const float *logits, uint32_t n_vocab, const int32_t *tokens, uint32_t ctx,
                      apr_imatrix_ppl *p)
{
    for (uint32_t i = ctx / 2; i + 1 < ctx; i++) {
        const double v = neg_log_prob(logits + (uint64_t)i * n_vocab, n_vocab, tokens[i + 1]);
        p->nll += v;
        p->nll2 += v * v;
        p->count++;
    }
}

static int im_run(apr_fwd *f, const int32_t *tokens, uint32_t n_chunk, bool logits_wanted, const apr_imatrix_opts *o,
                  apr_err *err)
{
    const uint32_t n_vocab = apr_fwd_config(f)->vocab;
    int32_t *buf = malloc((size_t)o->ctx * sizeof *buf);
    float *logits = logits_wanted ? malloc((size_t)o->ctx * n_vocab * sizeof *logits) : NULL;
    if (!buf || (logits_wanted && !logits)) {
        free(buf);
        free(logits);
        return apr_err_set(err, APR_E_NOMEM, "imatrix: out of memory (%u x %u logits)", o->ctx, n_vocab);
    }
    const uint64_t total = (uint64_t)n_chunk * o->ctx;
    int rc = 0;
    for (uint32_t i = 0; i < n_chunk && !rc; i++) {
        const int32_t *chunk = tokens + (uint64_t)i * o->ctx;
        memcpy(buf, chunk, (size_t)o->ctx * sizeof *buf);
        if (o->bos >= 0) /* "add BOS token for the first batch of each chunk" */
            buf[0] = o->bos;
        apr_fwd_reset(f);
        rc = apr_fwd_eval(f, buf, o->ctx, logits, NULL, err);
        if (!rc && o->ppl) {
            chunk_nll(logits, n_vocab, chunk, o->ctx, o->ppl);
            if (o->on_chunk)
                o->on_chunk(o->chunk_ctx, i + 1, exp(o->ppl->nll / (double)o->ppl->count));
        }
        if (!rc && o->progress)
            o->progress(o->progress_ctx, (uint64_t)(i + 1) * o->ctx, total);
    }
    free(logits);
    free(buf);
    return rc;
}

void apr_imatrix_ppl_final(const apr_imatrix_ppl *p, double *ppl, double *err)
{
    /* compute_imatrix's final estimate */
    const double nll = p->nll / (double)p->count;
    double nll2 = p->nll2 / (double)p->count - nll * nll;
    *ppl = exp(nll);
    *err = nll2 > 0 && p->count > 1 ? sqrt(nll2 / (double)(p->count - 1)) * *ppl : NAN;
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
    for (size_t i = 0; o->ppl && i < n_tokens; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= cfg->vocab)
            return apr_err_set(err, APR_E_ARG, "imatrix: token %zu (id %d) is outside the vocabulary", i, tokens[i]);
    uint64_t n_chunk = n_tokens / o->ctx;
    if (o->chunks && o->chunks < n_chunk)
        n_chunk = o->chunks;
    /* llama-imatrix collects output.weight only: a tied output multiplies
     * by token_embd.weight, which it leaves out */
    const bool output = o->process_output && !apr_fwd_output_tied(f);

    im_ctx c = {0};
    int rc = im_setup(&c, cfg, output, o, err);
    if (!rc)
        rc = apr_fwd_set_mm_hook(f, im_hook, &c, err);
    if (!rc) {
        rc = im_run(f, tokens, (uint32_t)n_chunk, output || o->ppl, o, err);
        apr_fwd_set_mm_hook(f, NULL, NULL, NULL);
        apr_fwd_reset(f);
    }
    if (!rc && c.bad)
        rc = apr_err_set(err, APR_E_FORMAT, "imatrix: a matmul input did not have the model's shape");
    if (!rc)
        rc = im_collect(&c, o->ctx, o->start, out, err);
    im_free(&c);
    return rc;
}
