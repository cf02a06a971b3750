/* run.c - the `apr verify` driver: both models over the same chunks of tokens,
 * as llama-perplexity's KL-divergence mode does it.
 *
 * Each chunk of ctx tokens starts from an empty KV cache, with its first token
 * replaced by BOS when the model adds one. Every position's logits are compared
 * exactly (bit identity, max |diff|, cosine); positions ctx/2 .. ctx-2 (or
 * 0 .. ctx-2 with all_positions) are scored for KLD, top-1, delta-p and
 * perplexity against the token that follows. The two models are evaluated in
 * alternating batches so that only two batches of logits are held at a time,
 * whatever the vocabulary size. The first batch of the first chunk is traced.
 * Before any of that, every weight is compared row by row (weights.c).
 */
#define _POSIX_C_SOURCE 200809L
#include "parity.h"

#include "forward.h" /* and graph.h, the model graph */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Logit buffers of at most ~64 MiB each. */
static uint32_t batch_len(uint32_t ctx, uint32_t vocab)
{
    uint64_t b = ((uint64_t)64 << 20) / ((uint64_t)vocab * sizeof(float));
    if (b < 1)
        b = 1;
    return b < ctx ? (uint32_t)b : ctx;
}

static int eval_timed(apr_fwd *f, const int32_t *tok, uint32_t n, float *logits, apr_trace *tr,
                      double *secs, const char *which, apr_err *err)
{
    apr_err e2 = {0};
    const double t0 = apr_now_s();
    int rc = apr_fwd_eval(f, tok, n, logits, tr, &e2);
    *secs += apr_now_s() - t0;
    if (rc)
        return apr_err_set(err, rc, "%s forward pass: %s", which, e2.msg);
    return 0;
}

/* The rope frequency factors the graph applies (rope_freqs.weight), compared
 * as the f32 values it uses. *oom: a graph could not be built for want of
 * memory, which says nothing about the configurations (an error, never a
 * difference). */
static bool same_rope_freqs(const apr_model *src, const apr_model *dst, char *why, size_t cap, bool *oom)
{
    apr_graph gs, gd;
    memset(&gs, 0, sizeof gs);
    memset(&gd, 0, sizeof gd);
    apr_err e2 = {0};
    bool same = false;
    if (apr_graph_build(&gs, src, &e2) || apr_graph_build(&gd, dst, &e2)) {
        *oom = e2.code == APR_E_NOMEM;
        snprintf(why, cap, "a model cannot be bound to the forward pass: %s", e2.msg);
    } else if (!gs.rope_freqs != !gd.rope_freqs) {
        snprintf(why, cap, "rope frequency factors (rope_freqs.weight) in only one model");
    } else if (gs.rope_freqs && memcmp(gs.rope_freqs, gd.rope_freqs, (size_t)(gs.cfg.head_dim / 2) * sizeof(float))) {
        snprintf(why, cap, "rope frequency factors (rope_freqs.weight) differ");
    } else {
        same = true;
    }
    apr_graph_free(&gs);
    apr_graph_free(&gd);
    return same;
}

/* noinline: inlined into a caller with a fixed-size why, GCC warns that the
 * messages may be cut (they are, by design, to cap). */
__attribute__((noinline)) static bool same_config(const apr_model *src, const apr_model *dst, char *why,
                                                  size_t cap, bool *oom)
{
    *oom = false;
    const apr_arch_config *a = &src->cfg, *b = &dst->cfg;
#define DIFF(cond, ...)                                                                            \
    do {                                                                                           \
        if (cond) {                                                                                \
            snprintf(why, cap, __VA_ARGS__);                                                       \
            return false;                                                                          \
        }                                                                                          \
    } while (0)
    DIFF(!src->has_cfg || !dst->has_cfg, "a model has no usable config");
    DIFF(strcmp(a->arch, b->arch), "architecture %s vs %s", a->arch, b->arch);
    DIFF(a->n_layers != b->n_layers || a->hidden != b->hidden || a->n_heads != b->n_heads ||
             a->n_kv_heads != b->n_kv_heads || a->head_dim != b->head_dim || a->ffn != b->ffn ||
             a->vocab != b->vocab,
         "model sizes differ");
    /* bit patterns: a recomputed theta that rounds differently is a different model */
    DIFF(memcmp(&a->rope_theta, &b->rope_theta, sizeof a->rope_theta), "rope theta %.9g vs %.9g",
         (double)a->rope_theta, (double)b->rope_theta);
    DIFF(memcmp(&a->rms_eps, &b->rms_eps, sizeof a->rms_eps), "RMS norm epsilon %.9g vs %.9g", (double)a->rms_eps,
         (double)b->rms_eps);
    DIFF(a->rope_type != b->rope_type, "rope type %d vs %d", (int)a->rope_type, (int)b->rope_type);
    DIFF(a->tied_embeddings != b->tied_embeddings, "tied output in only one model");
    DIFF(a->qkv_bias != b->qkv_bias, "QKV biases in only one model");
    DIFF(memcmp(&a->rope_freq_scale, &b->rope_freq_scale, sizeof a->rope_freq_scale),
         "rope frequency scale %.9g vs %.9g", (double)a->rope_freq_scale, (double)b->rope_freq_scale);
    DIFF(a->rope_yarn != b->rope_yarn || a->yarn_orig_ctx != b->yarn_orig_ctx ||
             memcmp(&a->yarn_beta_fast, &b->yarn_beta_fast, sizeof a->yarn_beta_fast) ||
             memcmp(&a->yarn_beta_slow, &b->yarn_beta_slow, sizeof a->yarn_beta_slow) ||
             memcmp(&a->rope_attn_factor, &b->rope_attn_factor, sizeof a->rope_attn_factor),
         "yarn rope scaling differs (original context %u vs %u, attention factor %.9g vs %.9g)", a->yarn_orig_ctx,
         b->yarn_orig_ctx, (double)a->rope_attn_factor, (double)b->rope_attn_factor);
    DIFF(a->sliding_window != b->sliding_window || a->swa_pattern != b->swa_pattern,
         "sliding window %u (pattern %u) vs %u (pattern %u)", a->sliding_window, a->swa_pattern, b->sliding_window,
         b->swa_pattern);
    DIFF(memcmp(&a->attn_scale, &b->attn_scale, sizeof a->attn_scale) ||
             memcmp(&a->attn_softcap, &b->attn_softcap, sizeof a->attn_softcap) ||
             memcmp(&a->final_softcap, &b->final_softcap, sizeof a->final_softcap),
         "attention scale / soft-capping %.9g/%.9g/%.9g vs %.9g/%.9g/%.9g", (double)a->attn_scale,
         (double)a->attn_softcap, (double)a->final_softcap, (double)b->attn_scale, (double)b->attn_softcap,
         (double)b->final_softcap);
    DIFF(strcmp(a->unsupported, b->unsupported), "unimplemented KVs differ ('%s' vs '%s')", a->unsupported,
         b->unsupported);
#undef DIFF
    /* llama3 rope scaling arrives as a tensor the weight comparison does not cover */
    if (!same_rope_freqs(src, dst, why, cap, oom))
        return false;
    if (cap)
        why[0] = 0;
    return true;
}

bool apr_parity_same_config(const apr_model *src, const apr_model *dst, char *why, size_t cap)
{
    bool oom;
    return same_config(src, dst, why, cap, &oom);
}

/* Whether a fast path decides (r->rule), from the weights, the configuration
 * and, for a quantized pair, the reproduction. */
static int choose_rule(const apr_model *src, const apr_model *dst, const apr_verify_opts *o, apr_verify_result *r,
                       apr_err *err)
{
    r->rule = APR_RULE_LOGITS;
    bool oom;
    r->same_config = same_config(src, dst, r->config_diff, sizeof r->config_diff, &oom);
    if (oom)
        return apr_err_set(err, APR_E_NOMEM, "comparing the forward-pass configurations: out of memory");
    r->same_dtypes = r->w.same_dtypes;
    if (o->fast_path == APR_EXPECT_LOSSLESS) {
        if (r->w.bit_identical && r->same_dtypes && r->same_config)
            r->rule = APR_RULE_CONSTRUCTION;
    } else if (o->fast_path == APR_EXPECT_QUANTIZED) {
        apr_repro_opts ro = o->repro;
        if (ro.n_threads <= 0)
            ro.n_threads = o->n_threads;
        int rc = apr_reproduce(src, dst, &ro, &r->rp, err);
        if (rc)
            return rc;
        if (r->rp.status == APR_REPRO_REPRODUCED && r->same_config)
            r->rule = APR_RULE_REPRODUCED;
    }
    return 0;
}

int apr_verify_models(const apr_model *src, const apr_model *dst, const int32_t *tokens,
                      size_t n_tokens, const apr_verify_opts *o, apr_verify_result *r, apr_err *err)
{
    memset(r, 0, sizeof *r);
    r->tc.first_out_layer = r->tc.first_out_step = -1;
    r->tc.first_diff_layer = r->tc.first_diff_step = -1;
    if (!src->has_cfg || !dst->has_cfg)
        return apr_err_set(err, APR_E_FORMAT, "%s has no usable model config",
                           !src->has_cfg ? "SRC" : "DST");
    int rc0;
    const uint32_t vocab = src->cfg.vocab;
    if (vocab == 0 || dst->cfg.vocab != vocab)
        return apr_err_set(err, APR_E_MISMATCH, "vocabulary sizes differ: SRC %u, DST %u",
                           src->cfg.vocab, dst->cfg.vocab);
    if (src->cfg.n_layers != dst->cfg.n_layers)
        return apr_err_set(err, APR_E_MISMATCH, "layer counts differ: SRC %u, DST %u",
                           src->cfg.n_layers, dst->cfg.n_layers);
    for (size_t i = 0; i < n_tokens; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= vocab)
            return apr_err_set(err, APR_E_ARG, "token %zu (%d) is outside the vocabulary (%u)", i,
                               tokens[i], vocab);

    /* chunk geometry */
    uint32_t model_ctx = src->cfg.ctx_len;
    if (dst->cfg.ctx_len && (!model_ctx || dst->cfg.ctx_len < model_ctx))
        model_ctx = dst->cfg.ctx_len;
    uint32_t ctx = o->ctx;
    if (ctx == 0)
        ctx = model_ctx && model_ctx < 512 ? model_ctx : 512;
    if (model_ctx && ctx > model_ctx)
        return apr_err_set(err, APR_E_ARG, "--ctx %u exceeds the models' context length %u", ctx,
                           model_ctx);
    if (n_tokens < ctx)
        ctx = (uint32_t)n_tokens; /* one short chunk: the whole prompt */
    if (ctx < 2)
        return apr_err_set(err, APR_E_ARG, "need at least 2 tokens to compare next-token predictions");
    const uint64_t avail = n_tokens / ctx;
    uint32_t chunks = o->chunks ? o->chunks : (uint32_t)(avail > 1u << 20 ? 1u << 20 : avail);
    if (chunks > avail)
        return apr_err_set(err, APR_E_ARG, "%u chunks of %u tokens need %llu tokens; only %zu given",
                           chunks, ctx, (unsigned long long)chunks * ctx, n_tokens);
    r->ctx = ctx;
    r->chunks = chunks;

    /* weights first: cheap, and it names a damaged row without the forward pass */
    double t0 = apr_now_s();
    if ((rc0 = apr_weights_compare(src, dst, o->n_threads, &r->w, err)))
        return rc0;
    r->secs_weights = apr_now_s() - t0;
    t0 = apr_now_s();
    rc0 = choose_rule(src, dst, o, r, err);
    r->secs_repro = apr_now_s() - t0;
    if (rc0) {
        apr_verify_result_free(r);
        return rc0;
    }
    if (r->rule != APR_RULE_LOGITS && !o->force_logits)
        return 0; /* decided without the forward pass */
    r->forward_run = true;
    r->n_tokens_used = (uint64_t)ctx * chunks;

    const double lo = o->band_lo > 0 ? o->band_lo : 0.5, hi = o->band_hi > 0 ? o->band_hi : 2.0;
    const uint32_t first = o->all_positions ? 0 : ctx / 2;

    apr_fwd_opts fo = {.n_threads = o->n_threads, .device = o->device, .max_ctx = ctx};
    apr_fwd *fs = NULL, *fd = NULL;
    apr_parity_acc acc;
    float *ls = NULL, *ld = NULL;
    int32_t *chunk = NULL, *next = NULL;
    bool *scored = NULL;
    int rc = 0;
    apr_err e2 = {0};
    memset(&acc, 0, sizeof acc);

    t0 = apr_now_s();
    if ((rc = apr_fwd_load(&fs, src, &fo, &e2))) {
        apr_err_set(err, rc, "SRC: %s", e2.msg);
        goto out;
    }
    if ((rc = apr_fwd_load(&fd, dst, &fo, &e2))) {
        apr_err_set(err, rc, "DST: %s", e2.msg);
        goto out;
    }
    r->secs_load = apr_now_s() - t0;
    r->dev_src = apr_fwd_device(fs);
    r->dev_dst = apr_fwd_device(fd);
    const uint32_t nb = batch_len(ctx, vocab);
    ls = malloc((size_t)nb * vocab * sizeof *ls);
    ld = malloc((size_t)nb * vocab * sizeof *ld);
    chunk = malloc((size_t)ctx * sizeof *chunk);
    next = malloc((size_t)nb * sizeof *next);
    scored = malloc((size_t)nb * sizeof *scored);
    if (!ls || !ld || !chunk || !next || !scored || apr_parity_acc_init(&acc, vocab) ||
        apr_trace_init(&r->tr_src, src->cfg.n_layers, false) ||
        apr_trace_init(&r->tr_dst, dst->cfg.n_layers, false)) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto out;
    }

    for (uint32_t c = 0; c < chunks; c++) {
        memcpy(chunk, tokens + (size_t)c * ctx, (size_t)ctx * sizeof *chunk);
        if (o->bos_id >= 0 && (uint32_t)o->bos_id < vocab)
            chunk[0] = o->bos_id;
        apr_fwd_reset(fs);
        apr_fwd_reset(fd);
        for (uint32_t b0 = 0; b0 < ctx; b0 += nb) {
            const uint32_t n = ctx - b0 < nb ? ctx - b0 : nb;
            const bool traced = c == 0 && b0 == 0;
            if ((rc = eval_timed(fs, chunk + b0, n, ls, traced ? &r->tr_src : NULL, &r->secs_src,
                                 "SRC", err)) ||
                (rc = eval_timed(fd, chunk + b0, n, ld, traced ? &r->tr_dst : NULL, &r->secs_dst,
                                 "DST", err)))
                goto out;
            for (uint32_t j = 0; j < n; j++) {
                const uint32_t pos = b0 + j;
                scored[j] = pos >= first && pos + 1 < ctx;
                /* the token that follows, as in the text (never the BOS substitute) */
                next[j] = scored[j] ? tokens[(size_t)c * ctx + pos + 1] : -1;
            }
            t0 = apr_now_s();
            rc = apr_parity_acc_add_n(&acc, ls, ld, n, scored, next, o->n_threads);
            r->secs_stats += apr_now_s() - t0;
            if (rc) {
                apr_err_set(err, rc, rc == APR_E_NOMEM ? "logit statistics: out of memory"
                                                       : "logit statistics failed");
                goto out;
            }
            if (o->on_progress)
                o->on_progress(o->progress_ctx, (uint64_t)c * ctx + b0 + n, r->n_tokens_used);
        }
    }
    if ((rc = apr_parity_summarize(&acc, &r->s))) {
        apr_err_set(err, rc, "out of memory");
        goto out;
    }
    rc = apr_trace_compare(&r->tr_src, &r->tr_dst, lo, hi, &r->tc, err);

out:
    apr_parity_acc_free(&acc);
    free(ls);
    free(ld);
    free(chunk);
    free(next);
    free(scored);
    apr_fwd_free(fs);
    apr_fwd_free(fd);
    if (rc)
        apr_verify_result_free(r);
    return rc;
}
