/* test_forward.c - the CPU forward pass on the stories260K fixture: the known
 * greedy text, bit-identical logits across thread counts, batching, fused QKV
 * and HF (rotate-half) layouts, traces that name a corrupted layer, quantized
 * weights, and clear errors for broken graphs. */
#include "test_util.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "tok.h"
#include "backend.h" /* the trace accumulator */
#include "quant.h"

#define FIXTURE "fixtures/stories260K-f32.gguf"

/* ---------------------------------------------------------------- helpers */

static apr_model *open_fixture(const char *path)
{
    apr_err err = {0};
    apr_model *m = NULL;
    if (apr_model_open(&m, path, NULL, &err))
        fail_msg("open %s: %s", path, err.msg);
    assert_true(m->has_cfg);
    return m;
}


static float *eval_all(const apr_model *m, const int32_t *ids, uint32_t n, int threads, uint32_t step,
                       apr_trace *tr)
{
    apr_err err = {0};
    apr_fwd *f = NULL;
    apr_fwd_opts o = {.n_threads = threads, .device = APR_DEV_CPU};
    if (apr_fwd_load(&f, m, &o, &err))
        fail_msg("apr_fwd_load: %s", err.msg);
    const uint32_t vocab = apr_fwd_config(f)->vocab;
    float *lg = malloc((size_t)n * vocab * sizeof *lg);
    assert_non_null(lg);
    if (!step)
        step = n;
    for (uint32_t i = 0; i < n; i += step) {
        const uint32_t k = n - i < step ? n - i : step;
        if (apr_fwd_eval(f, ids + i, k, lg + (size_t)i * vocab, tr, &err))
            fail_msg("apr_fwd_eval: %s", err.msg);
    }
    apr_fwd_free(f);
    return lg;
}

static const int32_t PROMPT[] = {1, 403, 407, 261, 378, 45, 411, 366, 302, 333, 259, 280, 395, 326, 265,
                                 310, 50, 294, 267, 342, 263, 370, 351, 274, 315, 296, 300, 322, 321, 278};
#define NPROMPT ((uint32_t)(sizeof PROMPT / sizeof *PROMPT))

/* Tensor name transforms for in-memory copies of the fixture. */
typedef struct clone_spec {
    apr_format fmt;
    bool hf_names;        /* HF names (model.layers.N...) */
    bool fused;           /* APR fused qkv_proj */
    bool unpermute;       /* Q/K rows to HF rotate-half order */
    const char *zero_tensor; /* GGUF name of a tensor with one row zeroed */
    uint64_t zero_row;
    apr_dtype quant;      /* quantize 2-D weights whose cols allow it (F32: no) */
    const char *quant_skip; /* ... except tensors whose name contains this */
} clone_spec;

static const char *hf_name(const char *g, char *buf, size_t cap)
{
    static const char *const map[][2] = {
        {"attn_norm.weight", "input_layernorm.weight"}, {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},  {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},   {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"}};
    if (!strcmp(g, "token_embd.weight"))
        return "model.embed_tokens.weight";
    if (!strcmp(g, "output_norm.weight"))
        return "model.norm.weight";
    if (!strcmp(g, "output.weight"))
        return "lm_head.weight";
    unsigned layer;
    int off = 0;
    if (sscanf(g, "blk.%u.%n", &layer, &off) == 1 && off > 0)
        for (size_t i = 0; i < sizeof map / sizeof *map; i++)
            if (!strcmp(g + off, map[i][0])) {
                snprintf(buf, cap, "model.layers.%u.%s", layer, map[i][1]);
                return buf;
            }
    fail_msg("no HF name for %s", g);
    return NULL;
}

/* HF rotate-half row order from GGUF's interleaved: HF row j*hd/2+i = GGUF row 2i+j. */
static void unpermute_rows(uint8_t *dst, const uint8_t *src, uint64_t rows, uint64_t row_bytes, uint32_t hd)
{
    for (uint64_t r = 0; r < rows; r++) {
        const uint64_t h = r / hd, w = r % hd, i = w / 2, j = w % 2;
        memcpy(dst + (h * hd + j * (hd / 2) + i) * row_bytes, src + r * row_bytes, row_bytes);
    }
}

static apr_model *clone_fixture(const apr_model *src, const clone_spec *cs)
{
    apr_err err = {0};
    apr_model *m = apr_model_new(cs->fmt);
    assert_non_null(m);
    for (uint64_t i = 0; i < src->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(m, &src->kvs[i]), 0);
    const apr_arch_config *c = &src->cfg;
    for (uint64_t i = 0; i < src->n_tensors; i++) {
        const apr_tensor *t = &src->tensors[i];
        char nb[160];
        const bool is_q = strstr(t->name, ".attn_q.") != NULL, is_k = strstr(t->name, ".attn_k.") != NULL,
                   is_v = strstr(t->name, ".attn_v.") != NULL;
        uint8_t *data = malloc(t->nbytes);
        assert_non_null(data);
        if (cs->unpermute && (is_q || is_k))
            unpermute_rows(data, t->data, t->dims[0], t->nbytes / t->dims[0], c->head_dim);
        else
            memcpy(data, t->data, t->nbytes);
        if (cs->zero_tensor && !strcmp(cs->zero_tensor, t->name)) {
            const uint64_t rb = t->nbytes / t->dims[0];
            memset(data + cs->zero_row * rb, 0, rb);
        }
        apr_dtype dt = t->dtype;
        uint64_t nbytes = t->nbytes;
        if (cs->quant != APR_DT_F32 && t->ndim == 2 && t->dtype == APR_DT_F32 &&
            apr_dtype_row_bytes(cs->quant, t->dims[1]) && !(cs->quant_skip && strstr(t->name, cs->quant_skip))) {
            nbytes = t->dims[0] * apr_dtype_row_bytes(cs->quant, t->dims[1]);
            uint8_t *q = malloc(nbytes);
            assert_non_null(q);
            assert_int_equal(apr_quantize_chunk(cs->quant, (const float *)data, q, (int64_t)t->dims[0],
                                                (int64_t)t->dims[1], NULL),
                             nbytes);
            free(data);
            data = q;
            dt = cs->quant;
        }
        if (cs->fused && (is_q || is_k || is_v)) {
            unsigned layer;
            assert_int_equal(sscanf(t->name, "blk.%u.", &layer), 1);
            if (!is_q) { /* fused when Q is seen: K and V are appended then */
                free(data);
                continue;
            }
            char kn[64], vn[64];
            snprintf(kn, sizeof kn, "blk.%u.attn_k.weight", layer);
            snprintf(vn, sizeof vn, "blk.%u.attn_v.weight", layer);
            const apr_tensor *k = apr_model_tensor(src, kn), *v = apr_model_tensor(src, vn);
            assert_non_null(k);
            assert_non_null(v);
            assert_int_equal(dt, APR_DT_F32); /* fused clones are F32 here */
            uint8_t *f = malloc(nbytes + k->nbytes + v->nbytes);
            assert_non_null(f);
            memcpy(f, data, nbytes);
            memcpy(f + nbytes, k->data, k->nbytes);
            memcpy(f + nbytes + k->nbytes, v->data, v->nbytes);
            free(data);
            uint64_t dims[2] = {t->dims[0] + k->dims[0] + v->dims[0], t->dims[1]};
            snprintf(nb, sizeof nb, "model.layers.%u.self_attn.qkv_proj.weight", layer);
            if (apr_model_add_tensor(m, nb, APR_DT_F32, 2, dims, f, nbytes + k->nbytes + v->nbytes, true, &err))
                fail_msg("add %s: %s", nb, err.msg);
            continue;
        }
        const char *name = cs->hf_names ? hf_name(t->name, nb, sizeof nb) : t->name;
        if (apr_model_add_tensor(m, name, dt, t->ndim, t->dims, data, nbytes, true, &err))
            fail_msg("add %s: %s", name, err.msg);
    }
    if (apr_model_derive(m, &err))
        fail_msg("derive: %s", err.msg);
    assert_true(m->has_cfg);
    return m;
}

/* ---------------------------------------------------------------- tests */

static void test_greedy_text(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    char *want = tu_fixture_greedy_text();
    assert_non_null(want);
    apr_model *m = open_fixture(path);
    apr_err err = {0};
    apr_tok *tok = NULL;
    if (apr_tok_load(&tok, m, &err))
        fail_msg("tok: %s", err.msg);
    int32_t *ids;
    size_t n;
    assert_int_equal(apr_tok_encode(tok, "Once upon a time", true, &ids, &n, &err), 0);
    assert_true(n >= 2);
    assert_int_equal(ids[0], apr_tok_bos(tok));

    apr_fwd *f = NULL;
    apr_fwd_opts o = {.n_threads = 2, .device = APR_DEV_CPU};
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
    const uint32_t vocab = apr_fwd_config(f)->vocab;
    float *lg = malloc(vocab * sizeof *lg);
    assert_int_equal(apr_fwd_eval_last(f, ids, (uint32_t)n, lg, NULL, &err), 0);
    /* llama.cpp's output: the prompt's pieces (BOS prints nothing, the SPM
     * prefix space is kept) followed by the greedy continuation */
    char text[4096];
    size_t len = 0;
    for (size_t i = 0; i < n; i++)
        len += apr_tok_decode(tok, APR_TOK_CONTINUE, ids[i], text + len, sizeof text - len);
    while (len < strlen(want) && len < sizeof text - 64) {
        int32_t best = 0;
        for (uint32_t i = 1; i < vocab; i++)
            if (lg[i] > lg[best])
                best = (int32_t)i;
        if (best == apr_tok_eos(tok))
            break;
        len += apr_tok_decode(tok, APR_TOK_CONTINUE, best, text + len, sizeof text - len);
        assert_int_equal(apr_fwd_eval_last(f, &best, 1, lg, NULL, &err), 0);
    }
    text[len] = 0;
    print_message("greedy: '%s'\n", text);
    if (strncmp(text, want, strlen(want)))
        fail_msg("greedy text differs:\n got: '%s'\nwant: '%s'", text, want);
    free(lg);
    free(ids);
    free(want);
    apr_fwd_free(f);
    apr_tok_free(tok);
    apr_model_free(m);
}

static void test_threads_and_batching_bit_identical(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    const size_t bytes = (size_t)NPROMPT * m->cfg.vocab * sizeof(float);
    float *a = eval_all(m, PROMPT, NPROMPT, 1, 0, NULL);
    float *b = eval_all(m, PROMPT, NPROMPT, 2, 0, NULL);
    float *c = eval_all(m, PROMPT, NPROMPT, 3, 0, NULL);
    float *d = eval_all(m, PROMPT, NPROMPT, 3, 1, NULL); /* token by token */
    float *e = eval_all(m, PROMPT, NPROMPT, 2, 7, NULL); /* uneven batches */
    assert_memory_equal(a, b, bytes);
    assert_memory_equal(a, c, bytes);
    assert_memory_equal(a, d, bytes);
    assert_memory_equal(a, e, bytes);
    for (size_t i = 0; i < (size_t)NPROMPT * m->cfg.vocab; i++)
        assert_true(isfinite(a[i]));
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
    apr_model_free(m);
}

/* apr_fwd_eval_last prunes the last layer to the final token (and skips it
 * for all but the last 64-token batch): the logits it gives must be the
 * all-positions run's last row, bit for bit, in one call or several. */
static void test_last_logits_pruned_bit_identical(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    enum { N = 3 * NPROMPT }; /* over one CPU batch */
    int32_t ids[N];
    for (uint32_t i = 0; i < N; i++)
        ids[i] = PROMPT[i % NPROMPT];
    const size_t V = m->cfg.vocab;
    float *all = eval_all(m, ids, N, 2, 0, NULL);
    float *last = malloc(V * sizeof *last);
    assert_non_null(last);
    const uint32_t steps[] = {N, 7, 1};
    for (size_t si = 0; si < sizeof steps / sizeof *steps; si++) {
        apr_err err = {0};
        apr_fwd *f = NULL;
        apr_fwd_opts o = {.n_threads = 2, .device = APR_DEV_CPU};
        if (apr_fwd_load(&f, m, &o, &err))
            fail_msg("apr_fwd_load: %s", err.msg);
        for (uint32_t i = 0; i < N; i += steps[si]) {
            const uint32_t k = N - i < steps[si] ? N - i : steps[si];
            if (apr_fwd_eval_last(f, ids + i, k, last, NULL, &err))
                fail_msg("apr_fwd_eval_last: %s", err.msg);
        }
        apr_fwd_free(f);
        assert_memory_equal(last, all + (size_t)(N - 1) * V, V * sizeof *last);
    }
    free(last);
    free(all);
    apr_model_free(m);
}

static void test_fused_qkv_bit_identical(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    clone_spec cs = {.fmt = APR_FMT_APR, .hf_names = true, .fused = true, .quant = APR_DT_F32};
    apr_model *fm = clone_fixture(m, &cs);
    assert_non_null(apr_model_tensor(fm, "model.layers.0.self_attn.qkv_proj.weight"));
    assert_null(apr_model_tensor(fm, "model.layers.0.self_attn.q_proj.weight"));
    float *a = eval_all(m, PROMPT, NPROMPT, 2, 0, NULL);
    float *b = eval_all(fm, PROMPT, NPROMPT, 3, 0, NULL);
    assert_memory_equal(a, b, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
    free(a);
    free(b);
    apr_model_free(fm);
    apr_model_free(m);
}

/* APR's mixed-dtype fused QKV (APR_DT_ROWCAT: Q and K in Q8_0, V in F32, as
 * parts) against the split model with the same dtypes. */
static void test_rowcat_qkv_bit_identical(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    clone_spec cs = {.fmt = APR_FMT_GGUF, .quant = APR_DT_Q8_0, .quant_skip = ".attn_v."};
    apr_model *split = clone_fixture(m, &cs);
    apr_model *fused = apr_model_new(APR_FMT_APR);
    apr_err err = {0};
    for (uint64_t i = 0; i < split->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(fused, &split->kvs[i]), 0);
    for (uint64_t i = 0; i < split->n_tensors; i++) {
        const apr_tensor *t = &split->tensors[i];
        if (strstr(t->name, ".attn_k.") || strstr(t->name, ".attn_v."))
            continue;
        if (!strstr(t->name, ".attn_q.")) {
            assert_int_equal(apr_model_add_tensor(fused, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes,
                                                  false, &err), 0);
            continue;
        }
        unsigned layer;
        assert_int_equal(sscanf(t->name, "blk.%u.", &layer), 1);
        char kn[64], vn[64], fn[96];
        snprintf(kn, sizeof kn, "blk.%u.attn_k.weight", layer);
        snprintf(vn, sizeof vn, "blk.%u.attn_v.weight", layer);
        const apr_tensor *k = apr_model_tensor(split, kn), *v = apr_model_tensor(split, vn);
        assert_int_equal(t->dtype, APR_DT_Q8_0);
        assert_int_equal(k->dtype, APR_DT_Q8_0);
        assert_int_equal(v->dtype, APR_DT_F32);
        /* layer 0: Q and K as one Q8_0 part; others: three parts */
        apr_tensor_part parts[3];
        uint32_t np = 0;
        if (layer == 0) {
            parts[np++] = (apr_tensor_part){APR_DT_Q8_0, t->dims[0] + k->dims[0], t->nbytes + k->nbytes};
        } else {
            parts[np++] = (apr_tensor_part){APR_DT_Q8_0, t->dims[0], t->nbytes};
            parts[np++] = (apr_tensor_part){APR_DT_Q8_0, k->dims[0], k->nbytes};
        }
        parts[np++] = (apr_tensor_part){APR_DT_F32, v->dims[0], v->nbytes};
        uint8_t *data = malloc(t->nbytes + k->nbytes + v->nbytes);
        memcpy(data, t->data, t->nbytes);
        memcpy(data + t->nbytes, k->data, k->nbytes);
        memcpy(data + t->nbytes + k->nbytes, v->data, v->nbytes);
        snprintf(fn, sizeof fn, "model.layers.%u.self_attn.qkv_proj.weight", layer);
        if (apr_model_add_rowcat_tensor(fused, fn, t->dims[1], parts, np, data, true, &err))
            fail_msg("rowcat %s: %s", fn, err.msg);
    }
    assert_int_equal(apr_model_derive(fused, &err), 0);
    assert_int_equal(apr_model_tensor(fused, "model.layers.1.self_attn.qkv_proj.weight")->dtype, APR_DT_ROWCAT);
    float *a = eval_all(split, PROMPT, NPROMPT, 2, 0, NULL);
    float *b = eval_all(fused, PROMPT, NPROMPT, 3, 0, NULL);
    assert_memory_equal(a, b, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
    free(a);
    free(b);
    apr_model_free(fused);
    apr_model_free(split);
    apr_model_free(m);
}

static void test_hf_rotate_half_bit_identical(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    clone_spec cs = {.fmt = APR_FMT_SAFETENSORS, .hf_names = true, .unpermute = true, .quant = APR_DT_F32};
    apr_model *hm = clone_fixture(m, &cs);
    float *a = eval_all(m, PROMPT, NPROMPT, 2, 0, NULL);
    float *b = eval_all(hm, PROMPT, NPROMPT, 2, 0, NULL);
    assert_memory_equal(a, b, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
    free(b);
    apr_model_free(hm);

    /* The same HF rows read as interleaved (a wrong row order) must differ:
     * the test would be vacuous otherwise. */
    clone_spec wrong = cs;
    wrong.fmt = APR_FMT_GGUF;
    apr_model *wm = clone_fixture(m, &wrong);
    float *w = eval_all(wm, PROMPT, NPROMPT, 2, 0, NULL);
    assert_memory_not_equal(a, w, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
    free(w);
    apr_model_free(wm);

    /* An explicit KV overrides the container's default order. */
    clone_spec kv = cs;
    kv.fmt = APR_FMT_GGUF;
    apr_model *km = clone_fixture(m, &kv);
    assert_int_equal(apr_model_set_kv_str(km, "apr.qk_row_order", "rotate_half"), 0);
    float *k = eval_all(km, PROMPT, NPROMPT, 1, 0, NULL);
    assert_memory_equal(a, k, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
    free(k);
    apr_model_free(km);
    free(a);
    apr_model_free(m);
}

static void test_trace_names_corrupted_layer(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    const uint32_t L = m->cfg.n_layers;
    clone_spec cs = {.fmt = APR_FMT_GGUF, .zero_tensor = "blk.2.ffn_up.weight", .zero_row = 5,
                     .quant = APR_DT_F32};
    apr_model *zm = clone_fixture(m, &cs);
    for (int last_only = 0; last_only < 2; last_only++) {
        apr_trace ta, tb;
        assert_int_equal(apr_trace_init(&ta, L, last_only), 0);
        assert_int_equal(apr_trace_init(&tb, L, last_only), 0);
        float *a = eval_all(m, PROMPT, NPROMPT, 2, 0, &ta);
        float *b = eval_all(zm, PROMPT, NPROMPT, 2, 0, &tb);
        /* first (layer, step) whose statistics differ */
        int first = -1;
        for (uint32_t i = 0; i < L * APR_TR_COUNT && first < 0; i++)
            if (memcmp(&ta.s[i], &tb.s[i], sizeof ta.s[i]))
                first = (int)i;
        assert_int_equal(first, 2 * APR_TR_COUNT + APR_TR_UP);
        const uint64_t per_tok = last_only ? 1 : NPROMPT;
        assert_int_equal(ta.s[0].n, per_tok * m->cfg.hidden);
        assert_int_equal(ta.s[APR_TR_GATE].n, per_tok * m->cfg.ffn);
        for (uint32_t i = 0; i < L * APR_TR_COUNT; i++) {
            assert_int_equal(ta.s[i].nonfinite, 0);
            assert_true(ta.s[i].std > 0.0);
            assert_true(ta.s[i].min <= ta.s[i].mean && ta.s[i].mean <= ta.s[i].max);
        }
        assert_memory_not_equal(a, b, (size_t)NPROMPT * m->cfg.vocab * sizeof(float));
        free(a);
        free(b);
        apr_trace_free(&ta);
        apr_trace_free(&tb);
    }
    apr_model_free(zm);
    apr_model_free(m);
}

static void test_trace_stats_values(void **state)
{
    (void)state;
    /* the accumulator on known values */
    apr_stats_acc acc;
    apr_stats st;
    const float v[] = {1.0f, 2.0f, NAN, 3.0f, INFINITY};
    apr_stats_acc_init(&acc);
    apr_stats_acc_add(&acc, v, 5);
    apr_stats_acc_finish(&acc, &st);
    assert_int_equal(st.n, 3);
    assert_int_equal(st.nonfinite, 2);
    assert_true(fabs(st.mean - 2.0) < 1e-12 && fabs(st.std - sqrt(2.0 / 3.0)) < 1e-12);
    assert_true(st.min == 1.0 && st.max == 3.0);

    /* layer 0's attn_norm for one token, against a direct RMSNorm of its embedding row */
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    const uint32_t H = m->cfg.hidden;
    const apr_tensor *e = apr_model_tensor(m, "token_embd.weight"), *w = apr_model_tensor(m, "blk.0.attn_norm.weight");
    assert_int_equal(e->dtype, APR_DT_F32);
    const int32_t tok = 42;
    const float *x = (const float *)e->data + (size_t)tok * H, *g = (const float *)w->data;
    double ss = 0;
    for (uint32_t i = 0; i < H; i++)
        ss += (double)x[i] * x[i];
    const double scale = 1.0 / sqrt(ss / H + m->cfg.rms_eps);
    double sum = 0, sum2 = 0;
    for (uint32_t i = 0; i < H; i++) {
        const double y = x[i] * scale * g[i];
        sum += y;
        sum2 += y * y;
    }
    const double mean = sum / H, sd = sqrt(sum2 / H - mean * mean);
    apr_trace t;
    assert_int_equal(apr_trace_init(&t, m->cfg.n_layers, false), 0);
    float *lg = eval_all(m, &tok, 1, 1, 0, &t);
    print_message("attn_norm[0]: mean %.6g (direct %.6g), std %.6g (direct %.6g)\n", t.s[0].mean, mean, t.s[0].std, sd);
    assert_int_equal(t.s[0].n, H);
    assert_true(fabs(t.s[0].mean - mean) <= 1e-5 * sd);
    assert_true(fabs(t.s[0].std - sd) <= 1e-5 * sd);
    free(lg);
    apr_trace_free(&t);
    apr_model_free(m);
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return ab / sqrt(aa * bb);
}

static void test_quantized_q8_0_close(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    clone_spec cs = {.fmt = APR_FMT_GGUF, .quant = APR_DT_Q8_0};
    apr_model *qm = clone_fixture(m, &cs);
    assert_int_equal(apr_model_tensor(qm, "blk.0.attn_q.weight")->dtype, APR_DT_Q8_0);
    assert_int_equal(apr_model_tensor(qm, "blk.0.ffn_down.weight")->dtype, APR_DT_F32); /* 172 cols */
    const uint32_t V = m->cfg.vocab;
    float *a = eval_all(m, PROMPT, NPROMPT, 2, 0, NULL);
    float *b = eval_all(qm, PROMPT, NPROMPT, 3, 0, NULL);
    float *b1 = eval_all(qm, PROMPT, NPROMPT, 1, 5, NULL);
    assert_memory_equal(b, b1, (size_t)NPROMPT * V * sizeof(float)); /* deterministic too */
    uint32_t same_top = 0;
    double maxdiff = 0, mincos = 1;
    for (uint32_t p = 0; p < NPROMPT; p++) {
        const float *x = a + (size_t)p * V, *y = b + (size_t)p * V;
        uint32_t ta = 0, tb = 0;
        for (uint32_t i = 0; i < V; i++) {
            if (x[i] > x[ta])
                ta = i;
            if (y[i] > y[tb])
                tb = i;
            const double d = fabs((double)x[i] - y[i]);
            if (d > maxdiff)
                maxdiff = d;
        }
        same_top += ta == tb;
        const double cs2 = cosine(x, y, V);
        if (cs2 < mincos)
            mincos = cs2;
    }
    print_message("Q8_0 vs F32: top-1 %u/%u, min cosine %.6f, max |diff| %.4f\n", same_top, NPROMPT, mincos, maxdiff);
    assert_true(maxdiff > 0.0);             /* really quantized */
    assert_true(mincos > 0.999);
    assert_true(same_top >= NPROMPT - 2);
    free(a);
    free(b);
    free(b1);
    apr_model_free(qm);
    apr_model_free(m);
}

/* A copy of m (same format and names) with its 2-D F32 weights converted to
 * dt (those whose row length dt cannot take stay F32), and optionally the
 * tensors whose name contains zero_match zeroed. */
static apr_model *requant(const apr_model *m, apr_dtype dt, const char *zero_match)
{
    apr_err err = {0};
    apr_model *c = apr_model_new(m->format);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(c, &m->kvs[i]), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        assert_int_equal(t->dtype, APR_DT_F32);
        const uint64_t rows = t->ndim == 2 ? t->dims[0] : 1, cols = t->dims[t->ndim - 1];
        const uint64_t rb = apr_dtype_row_bytes(dt, cols);
        const bool conv = t->ndim == 2 && dt != APR_DT_F32 && rb;
        const uint64_t nbytes = conv ? rows * rb : t->nbytes;
        uint8_t *data = malloc(nbytes);
        assert_non_null(data);
        const float *src = (const float *)t->data;
        float *zeros = NULL;
        if (zero_match && strstr(t->name, zero_match)) {
            zeros = calloc(rows * cols, sizeof *zeros);
            src = zeros;
        }
        if (!conv)
            memcpy(data, src, nbytes);
        else if (dt == APR_DT_F16 || dt == APR_DT_BF16)
            for (uint64_t e = 0; e < rows * cols; e++) {
                const uint16_t h = dt == APR_DT_F16 ? apr_f32_to_f16(src[e]) : apr_f32_to_bf16(src[e]);
                memcpy(data + 2 * e, &h, 2);
            }
        else
            assert_int_equal(apr_quantize_chunk(dt, src, data, (int64_t)rows, (int64_t)cols, NULL), nbytes);
        free(zeros);
        if (apr_model_add_tensor(c, t->name, conv ? dt : APR_DT_F32, t->ndim, t->dims, data, nbytes, true, &err))
            fail_msg("add %s: %s", t->name, err.msg);
    }
    assert_int_equal(apr_model_derive(c, &err), 0);
    return c;
}

static apr_model *synth(const char *preset)
{
    apr_synth_config sc;
    apr_err err = {0};
    assert_int_equal(apr_synth_preset(&sc, preset, &err), 0);
    apr_model *m = NULL;
    if (apr_synth_model(&m, &sc, &err))
        fail_msg("synth %s: %s", preset, err.msg);
    return m;
}

/* The F32 model of q's weights dequantized (the reference for in-place matmuls). */
static apr_model *dequantized(const apr_model *q)
{
    apr_err err = {0};
    apr_model *c = apr_model_new(q->format);
    for (uint64_t i = 0; i < q->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(c, &q->kvs[i]), 0);
    for (uint64_t i = 0; i < q->n_tensors; i++) {
        const apr_tensor *t = &q->tensors[i];
        const uint64_t rows = t->ndim == 2 ? t->dims[0] : 1, cols = t->dims[t->ndim - 1];
        float *f = malloc(rows * cols * sizeof *f);
        const uint64_t rb = apr_dtype_row_bytes(t->dtype, cols);
        for (uint64_t r = 0; r < rows; r++)
            assert_int_equal(apr_to_f32_row(t->dtype, t->data + r * rb, f + r * cols, (int64_t)cols), 0);
        if (apr_model_add_tensor(c, t->name, APR_DT_F32, t->ndim, t->dims, f, rows * cols * sizeof *f, true, &err))
            fail_msg("add %s: %s", t->name, err.msg);
    }
    assert_int_equal(apr_model_derive(c, &err), 0);
    return c;
}

/* Every weight dtype runs in place (k-quants need rows of 256: the tiny
 * synthetic LLaMA has them). The reference is the same model with its
 * weights dequantized to F32, so what differs is only the activation
 * rounding of the quantized dot products (Q8_0 / Q8_K activations). */
static void test_synth_every_dtype(void **state)
{
    (void)state;
    apr_model *m = synth("tiny-llama");
    const uint32_t V = m->cfg.vocab, N = 12;
    int32_t ids[12];
    for (uint32_t i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 97 + 5) % V);
    static const apr_dtype types[] = {APR_DT_F16, APR_DT_BF16, APR_DT_Q8_0, APR_DT_Q6_K, APR_DT_Q5_K, APR_DT_Q5_0,
                                      APR_DT_Q5_1, APR_DT_Q4_K, APR_DT_Q4_0, APR_DT_Q4_1, APR_DT_Q3_K, APR_DT_Q2_K};
    float *f32 = eval_all(m, ids, N, 2, 0, NULL);
    for (size_t k = 0; k < sizeof types / sizeof *types; k++) {
        apr_model *q = requant(m, types[k], NULL);
        assert_int_equal(apr_model_tensor(q, "model.layers.0.mlp.down_proj.weight")->dtype, types[k]);
        apr_model *d = dequantized(q);
        float *lq = eval_all(q, ids, N, 3, 5, NULL);
        float *ld = eval_all(d, ids, N, 2, 0, NULL);
        double worst = 1.0;
        uint32_t same_top = 0;
        for (uint32_t p = 0; p < N; p++) {
            const float *x = ld + (size_t)p * V, *y = lq + (size_t)p * V;
            const double c = cosine(x, y, V);
            if (c < worst)
                worst = c;
            uint32_t ta = 0, tb = 0;
            for (uint32_t i = 1; i < V; i++) {
                ta = x[i] > x[ta] ? i : ta;
                tb = y[i] > y[tb] ? i : tb;
            }
            same_top += ta == tb;
        }
        print_message("%-5s in place vs dequantized F32: min cosine %.7f, top-1 %u/%u\n", apr_dtype_name(types[k]),
                      worst, same_top, N);
        /* plain types use F32 activations: the same arithmetic as the F32 model */
        if (types[k] == APR_DT_F16 || types[k] == APR_DT_BF16)
            assert_memory_equal(lq, ld, (size_t)N * V * sizeof(float));
        /* A wrong kernel gives a cosine near 0; activation rounding alone
         * measured 0.984..0.9995 on this random (error-amplifying) model. */
        assert_true(worst >= 0.98);
        assert_true(same_top + 3 >= N);
        assert_memory_not_equal(f32, lq, (size_t)N * V * sizeof(float)); /* really converted */
        free(lq);
        free(ld);
        apr_model_free(d);
        apr_model_free(q);
    }
    free(f32);
    apr_model_free(m);
}

/* Qwen2: NEOX rope and QKV biases; HF names (safetensors order) and GGUF
 * names give the same logits (NEOX rows are never permuted), and the biases
 * are really applied. */
static void test_synth_qwen2(void **state)
{
    (void)state;
    apr_model *m = synth("tiny-qwen2");
    assert_string_equal(m->cfg.arch, "qwen2");
    assert_true(m->cfg.qkv_bias);
    assert_true(m->cfg.tied_embeddings);
    const uint32_t V = m->cfg.vocab, N = 9;
    int32_t ids[9];
    for (uint32_t i = 0; i < N; i++)
        ids[i] = (int32_t)((i * 131 + 7) % V);
    float *a = eval_all(m, ids, N, 2, 0, NULL);
    apr_model *g = requant(m, APR_DT_F32, NULL);
    g->format = APR_FMT_GGUF; /* as a GGUF would present it: order must not matter for NEOX */
    float *b = eval_all(g, ids, N, 1, 4, NULL);
    assert_memory_equal(a, b, (size_t)N * V * sizeof(float));
    apr_model *nb = requant(m, APR_DT_F32, "self_attn.k_proj.bias");
    float *c = eval_all(nb, ids, N, 2, 0, NULL);
    assert_memory_not_equal(a, c, (size_t)N * V * sizeof(float));
    /* without its biases the model is refused (the config says Qwen2 has them) */
    apr_model *nob = apr_model_new(APR_FMT_SAFETENSORS);
    apr_err err = {0};
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(nob, &m->kvs[i]), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (!strstr(t->name, ".bias"))
            assert_int_equal(apr_model_add_tensor(nob, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    assert_int_equal(apr_model_derive(nob, &err), 0);
    nob->cfg.qkv_bias = true;
    apr_fwd *f = NULL;
    assert_int_not_equal(apr_fwd_load(&f, nob, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "bias"));
    apr_model_free(nob);
    free(a);
    free(b);
    free(c);
    apr_model_free(nb);
    apr_model_free(g);
    apr_model_free(m);
}

static void test_graph_errors(void **state)
{
    (void)state;
    TU_REQUIRE_SHARED(path, FIXTURE);
    apr_model *m = open_fixture(path);
    apr_err err = {0};
    apr_fwd *f = NULL;

    /* a missing tensor is named */
    apr_model *c = apr_model_new(APR_FMT_GGUF);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(c, &m->kvs[i]), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        if (!strcmp(t->name, "blk.3.ffn_gate.weight"))
            continue;
        assert_int_equal(apr_model_add_tensor(c, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    assert_int_equal(apr_model_derive(c, &err), 0);
    assert_int_not_equal(apr_fwd_load(&f, c, NULL, &err), 0);
    assert_null(f);
    assert_non_null(strstr(err.msg, "blk.3.ffn_gate.weight"));
    apr_model_free(c);

    /* a wrong shape is named (ffn_up with its dims swapped) */
    c = apr_model_new(APR_FMT_GGUF);
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(c, &m->kvs[i]), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        uint64_t d[2] = {t->dims[0], t->ndim > 1 ? t->dims[1] : 0};
        if (!strcmp(t->name, "blk.1.ffn_up.weight")) {
            d[0] = t->dims[1];
            d[1] = t->dims[0];
        }
        assert_int_equal(apr_model_add_tensor(c, t->name, t->dtype, t->ndim, d, t->data, t->nbytes, false, &err), 0);
    }
    assert_int_equal(apr_model_derive(c, &err), 0);
    assert_int_not_equal(apr_fwd_load(&f, c, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "blk.1.ffn_up.weight"));
    apr_model_free(c);

    /* bad tokens and context overflow are errors, not crashes */
    apr_fwd_opts o = {.n_threads = 1, .device = APR_DEV_CPU, .max_ctx = 4};
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
    int32_t bad = (int32_t)m->cfg.vocab;
    assert_int_not_equal(apr_fwd_eval(f, &bad, 1, NULL, NULL, &err), 0);
    bad = -1;
    assert_int_not_equal(apr_fwd_eval(f, &bad, 1, NULL, NULL, &err), 0);
    assert_int_equal(apr_fwd_eval(f, PROMPT, 4, NULL, NULL, &err), 0);
    assert_int_equal(apr_fwd_pos(f), 4);
    assert_int_not_equal(apr_fwd_eval(f, PROMPT, 1, NULL, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "context"));
    apr_fwd_reset(f);
    assert_int_equal(apr_fwd_pos(f), 0);
    apr_trace wrong;
    assert_int_equal(apr_trace_init(&wrong, m->cfg.n_layers + 1, true), 0);
    assert_int_not_equal(apr_fwd_eval(f, PROMPT, 1, NULL, &wrong, &err), 0);
    apr_trace_free(&wrong);
    apr_fwd_free(f);

    /* a CUDA request fails cleanly when the backend is absent; AUTO falls back */
#ifndef APR_HAVE_CUDA
    o.device = APR_DEV_CUDA;
    assert_int_not_equal(apr_fwd_load(&f, m, &o, &err), 0);
    assert_null(f);
#endif
    o.device = APR_DEV_AUTO;
    assert_int_equal(apr_fwd_load(&f, m, &o, &err), 0);
#ifndef APR_HAVE_CUDA
    assert_int_equal(apr_fwd_device(f), APR_DEV_CPU);
#endif
    apr_fwd_free(f);
    apr_model_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_text),
        cmocka_unit_test(test_threads_and_batching_bit_identical),
        cmocka_unit_test(test_last_logits_pruned_bit_identical),
        cmocka_unit_test(test_fused_qkv_bit_identical),
        cmocka_unit_test(test_rowcat_qkv_bit_identical),
        cmocka_unit_test(test_hf_rotate_half_bit_identical),
        cmocka_unit_test(test_trace_names_corrupted_layer),
        cmocka_unit_test(test_trace_stats_values),
        cmocka_unit_test(test_quantized_q8_0_close),
        cmocka_unit_test(test_synth_every_dtype),
        cmocka_unit_test(test_synth_qwen2),
        cmocka_unit_test(test_graph_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
