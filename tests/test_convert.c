/* test_convert.c - libconvert on in-memory models: names, the Q/K permutation,
 * QKV fusion/splitting (ROWCAT when dtypes differ), dtype policy, conversion
 * errors, and the provenance record of a conversion. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert.h"
#include "quant.h"
#include "test_util.h"

/* ---------------------------------------------------------------- helpers */

static apr_model *synth(const char *preset)
{
    apr_synth_config c;
    apr_err err = {0};
    assert_int_equal(apr_synth_preset(&c, preset, &err), 0);
    apr_model *m = NULL;
    if (apr_synth_model(&m, &c, &err))
        fail_msg("synth %s: %s", preset, err.msg);
    return m;
}

static apr_model *convert(apr_model *src, apr_format to, int outtype)
{
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.outtype = outtype;
    o.threads = 2;
    apr_model *out = NULL;
    apr_err err = {0};
    if (apr_convert_model(src, to, &o, &out, NULL, NULL, &err))
        fail_msg("convert %s -> %s: %s", apr_format_name(src->format), apr_format_name(to), err.msg);
    return out;
}

static const apr_tensor *need(const apr_model *m, const char *name)
{
    const apr_tensor *t = apr_model_tensor(m, name);
    if (!t)
        fail_msg("tensor %s missing", name);
    return t;
}

/* Same names, dtypes, shapes and payload bytes (order may differ). */
static void assert_same_tensors(const apr_model *a, const apr_model *b)
{
    assert_int_equal(a->n_tensors, b->n_tensors);
    for (uint64_t i = 0; i < a->n_tensors; i++) {
        const apr_tensor *x = &a->tensors[i], *y = need(b, x->name);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->ndim, y->ndim);
        assert_memory_equal(x->dims, y->dims, x->ndim * sizeof *x->dims);
        assert_int_equal(x->nbytes, y->nbytes);
        if (memcmp(x->data, y->data, x->nbytes) != 0)
            fail_msg("tensor %s: payload differs", x->name);
    }
}

/* A copy of m (format fmt) whose tensors borrow m's data; tensors named in
 * repl[] get the replacement dtype/data instead. */
typedef struct repl {
    const char *name;
    apr_dtype dt;
    void *data;
    uint64_t nbytes;
} repl;

static apr_model *clone_with(const apr_model *m, apr_format fmt, const repl *r, size_t n_repl)
{
    apr_model *c = apr_model_new(fmt);
    apr_err err = {0};
    for (uint64_t i = 0; i < m->n_kvs; i++)
        assert_int_equal(apr_model_set_kv(c, &m->kvs[i]), 0);
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        const repl *x = NULL;
        for (size_t k = 0; k < n_repl; k++)
            if (!strcmp(r[k].name, t->name))
                x = &r[k];
        int rc = x ? apr_model_add_tensor(c, t->name, x->dt, t->ndim, t->dims, x->data, x->nbytes, true, &err)
                   : apr_model_add_tensor(c, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err);
        if (rc)
            fail_msg("clone %s: %s", t->name, err.msg);
    }
    apr_model_derive(c, NULL);
    return c;
}

/* ---------------------------------------------------------------- names */

static void test_names(void **state)
{
    (void)state;
    apr_tensor_id id;
    apr_naming n;
    char buf[128];
    assert_true(apr_tensor_id_parse("blk.12.attn_q.weight", &id, &n));
    assert_int_equal(id.role, APR_ROLE_ATTN_Q);
    assert_int_equal(id.layer, 12);
    assert_false(id.bias);
    assert_int_equal(n, APR_NAMING_GGUF);
    assert_true(apr_tensor_id_name(&id, APR_NAMING_HF, buf, sizeof buf));
    assert_string_equal(buf, "model.layers.12.self_attn.q_proj.weight");

    assert_true(apr_tensor_id_parse("model.layers.0.self_attn.qkv_proj.bias", &id, &n));
    assert_int_equal(id.role, APR_ROLE_ATTN_QKV);
    assert_true(id.bias);
    assert_int_equal(n, APR_NAMING_HF);
    assert_false(apr_tensor_id_name(&id, APR_NAMING_GGUF, buf, sizeof buf)); /* no GGUF name */

    static const char *pairs[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
        {"blk.3.attn_norm.weight", "model.layers.3.input_layernorm.weight"},
        {"blk.3.attn_k.bias", "model.layers.3.self_attn.k_proj.bias"},
        {"blk.3.attn_v.weight", "model.layers.3.self_attn.v_proj.weight"},
        {"blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"},
        {"blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"},
        {"blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"},
        {"blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"},
        {"blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof *pairs; i++) {
        apr_tensor_id a, b;
        assert_true(apr_tensor_id_parse(pairs[i][0], &a, NULL));
        assert_true(apr_tensor_id_parse(pairs[i][1], &b, NULL));
        assert_memory_equal(&a, &b, sizeof a);
        assert_true(apr_tensor_id_name(&a, APR_NAMING_HF, buf, sizeof buf));
        assert_string_equal(buf, pairs[i][1]);
        assert_true(apr_tensor_id_name(&b, APR_NAMING_GGUF, buf, sizeof buf));
        assert_string_equal(buf, pairs[i][0]);
    }
    static const char *bad[] = {"blk.01.attn_q.weight", "blk.x.attn_q.weight", "blk.0.attn_qq.weight",
                                "blk.0.attn_q", "blk..attn_q.weight", "model.layers.-1.mlp.up_proj.weight",
                                "token_embd.bias.weight", "rope_freqs.weight", "blk.99999999.attn_q.weight", ""};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (apr_tensor_id_parse(bad[i], &id, NULL))
            fail_msg("'%s' parsed", bad[i]);
}

/* ---------------------------------------------------------------- permutation */

static void test_permute(void **state)
{
    (void)state;
    /* hd = 4: HF rotate-half rows (a0 a1 | b0 b1) become interleaved (a0 b0 a1 b1). */
    static const uint64_t want4[] = {0, 2, 1, 3};
    static const uint64_t want8[] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (uint64_t r = 0; r < 4; r++)
        assert_int_equal(apr_qk_perm_src_row(r, 4, false), want4[r]);
    for (uint64_t r = 0; r < 16; r++)
        assert_int_equal(apr_qk_perm_src_row(r, 8, false), 8 * (r / 8) + want8[r % 8]);

    /* Against convert_hf_to_gguf's reshape(n_head, 2, hd/2, cols).swapaxes(1, 2):
     * element [h][j][i] moves to [h][i][j]. */
    enum { NH = 3, HD = 6, COLS = 5, ROWS = NH * HD };
    float src[ROWS * COLS], dst[ROWS * COLS], back[ROWS * COLS], ref[ROWS * COLS];
    for (int i = 0; i < ROWS * COLS; i++)
        src[i] = (float)i;
    for (int h = 0; h < NH; h++)
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < HD / 2; i++)
                memcpy(&ref[(h * HD + i * 2 + j) * COLS], &src[(h * HD + j * (HD / 2) + i) * COLS], COLS * 4);
    assert_true(apr_qk_permute((uint8_t *)dst, (const uint8_t *)src, NH, HD, COLS * 4, false));
    assert_memory_equal(dst, ref, sizeof dst);
    assert_true(apr_qk_permute((uint8_t *)back, (const uint8_t *)dst, NH, HD, COLS * 4, true));
    assert_memory_equal(back, src, sizeof src);
    assert_false(apr_qk_permute((uint8_t *)dst, (const uint8_t *)src, 1, 3, 4, false)); /* odd head dim */
}

/* ---------------------------------------------------------------- llama round trips */

static void test_llama_st_gguf_apr(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-llama");
    apr_model *gg = convert(st, APR_FMT_GGUF, -1);
    const apr_arch_config *c = &st->cfg;

    /* names, order, permutation */
    assert_string_equal(gg->tensors[0].name, "token_embd.weight");
    assert_string_equal(gg->tensors[1].name, "output_norm.weight");
    assert_string_equal(gg->tensors[2].name, "output.weight");
    assert_string_equal(gg->tensors[3].name, "blk.0.attn_q.weight");
    assert_string_equal(gg->tensors[4].name, "blk.0.attn_k.weight");
    const apr_tensor *hq = need(st, "model.layers.1.self_attn.q_proj.weight");
    const apr_tensor *gq = need(gg, "blk.1.attn_q.weight");
    const apr_tensor *gk = need(gg, "blk.1.attn_k.weight");
    uint64_t rb = hq->dims[1] * 4;
    uint8_t *perm = malloc(hq->nbytes);
    assert_true(apr_qk_permute(perm, hq->data, c->n_heads, c->head_dim, rb, false));
    assert_memory_equal(perm, gq->data, hq->nbytes);
    free(perm);
    const apr_tensor *hk = need(st, "model.layers.1.self_attn.k_proj.weight");
    perm = malloc(hk->nbytes);
    assert_true(apr_qk_permute(perm, hk->data, c->n_kv_heads, c->head_dim, rb, false));
    assert_memory_equal(perm, gk->data, hk->nbytes);
    free(perm);
    /* untouched tensors are zero-copy views into the source */
    assert_ptr_equal(need(gg, "blk.1.attn_v.weight")->data, need(st, "model.layers.1.self_attn.v_proj.weight")->data);
    assert_ptr_equal(need(gg, "blk.0.ffn_down.weight")->data, need(st, "model.layers.0.mlp.down_proj.weight")->data);
    assert_int_equal(apr_model_kv(gg, "llama.block_count")->type, APR_KV_U32);
    assert_int_equal(apr_model_kv(gg, "llama.attention.layer_norm_rms_epsilon")->type, APR_KV_F32);
    assert_null(apr_model_kv(gg, "apr.qk_row_order"));

    /* GGUF -> safetensors is the exact inverse */
    apr_model *st2 = convert(gg, APR_FMT_SAFETENSORS, -1);
    assert_same_tensors(st, st2);

    /* GGUF -> APR: fused, interleaved rows; APR -> GGUF and APR -> safetensors exact */
    apr_model *ap = convert(gg, APR_FMT_APR, -1);
    assert_null(apr_model_tensor(ap, "model.layers.0.self_attn.q_proj.weight"));
    const apr_tensor *f = need(ap, "model.layers.1.self_attn.qkv_proj.weight");
    uint64_t qr = (uint64_t)c->n_heads * c->head_dim, kr = (uint64_t)c->n_kv_heads * c->head_dim;
    assert_int_equal(f->dtype, APR_DT_F32);
    assert_int_equal(f->dims[0], qr + 2 * kr);
    assert_int_equal(f->dims[1], c->hidden);
    assert_memory_equal(f->data, gq->data, gq->nbytes);
    assert_memory_equal(f->data + gq->nbytes, gk->data, gk->nbytes);
    assert_memory_equal(f->data + gq->nbytes + gk->nbytes, need(gg, "blk.1.attn_v.weight")->data, gk->nbytes);
    const char *order = apr_kv_get_str(ap, "apr.qk_row_order");
    assert_non_null(order);
    assert_string_equal(order, "interleaved");
    apr_model *gg2 = convert(ap, APR_FMT_GGUF, -1);
    assert_same_tensors(gg, gg2);
    for (uint64_t i = 0; i < gg->n_tensors; i++)
        assert_string_equal(gg->tensors[i].name, gg2->tensors[i].name); /* same order too */
    apr_model *st3 = convert(ap, APR_FMT_SAFETENSORS, -1);
    assert_same_tensors(st, st3);
    /* safetensors -> APR directly equals GGUF -> APR */
    apr_model *ap2 = convert(st, APR_FMT_APR, -1);
    assert_same_tensors(ap, ap2);

    apr_model_free(ap2);
    apr_model_free(st3);
    apr_model_free(gg2);
    apr_model_free(ap);
    apr_model_free(st2);
    apr_model_free(gg);
    apr_model_free(st);
}

/* Qwen2: no permutation, biases fused, tied embeddings stay tied. */
static void test_qwen2_bias_fusion(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-qwen2");
    apr_model *gg = convert(st, APR_FMT_GGUF, -1);
    assert_null(apr_model_tensor(gg, "output.weight"));
    assert_ptr_equal(need(gg, "blk.0.attn_q.weight")->data, need(st, "model.layers.0.self_attn.q_proj.weight")->data);
    assert_ptr_equal(need(gg, "blk.0.attn_k.bias")->data, need(st, "model.layers.0.self_attn.k_proj.bias")->data);
    /* order: each of Q, K, V followed by its bias */
    for (uint64_t i = 0; i + 1 < gg->n_tensors; i++)
        if (!strcmp(gg->tensors[i].name, "blk.1.attn_q.weight"))
            assert_string_equal(gg->tensors[i + 1].name, "blk.1.attn_q.bias");
    apr_model *ap = convert(gg, APR_FMT_APR, -1);
    const apr_tensor *b = need(ap, "model.layers.1.self_attn.qkv_proj.bias");
    const apr_tensor *bq = need(st, "model.layers.1.self_attn.q_proj.bias");
    const apr_tensor *bk = need(st, "model.layers.1.self_attn.k_proj.bias");
    const apr_tensor *bv = need(st, "model.layers.1.self_attn.v_proj.bias");
    assert_int_equal(b->ndim, 1);
    assert_int_equal(b->dims[0], bq->dims[0] + bk->dims[0] + bv->dims[0]);
    assert_memory_equal(b->data, bq->data, bq->nbytes);
    assert_memory_equal(b->data + bq->nbytes, bk->data, bk->nbytes);
    assert_memory_equal(b->data + bq->nbytes + bk->nbytes, bv->data, bv->nbytes);
    assert_null(apr_model_kv(ap, "apr.qk_row_order")); /* NEOX: no row order to state */
    apr_model *st2 = convert(ap, APR_FMT_SAFETENSORS, -1);
    assert_same_tensors(st, st2);
    assert_true(st2->cfg.tied_embeddings);
    apr_model_free(st2);
    apr_model_free(ap);
    apr_model_free(gg);
    apr_model_free(st);
}

/* ---------------------------------------------------------------- mixed dtypes */

static void *quantize(apr_dtype dt, const apr_tensor *t, uint64_t *nbytes)
{
    uint64_t rows = t->dims[0], cols = t->dims[1];
    *nbytes = rows * apr_dtype_row_bytes(dt, cols);
    void *q = malloc(*nbytes);
    assert_int_equal(apr_quantize_chunk(dt, (const float *)t->data, q, (int64_t)rows, (int64_t)cols, NULL), *nbytes);
    return q;
}

/* A GGUF-view Qwen2 whose layer-0 Q/K are Q4_K and V Q6_K (llama.cpp Q4_K_M's
 * mix) and whose layer-1 Q/K/V are all Q4_K. */
static apr_model *mixed_gguf(apr_model **keep_f32)
{
    apr_model *st = synth("tiny-qwen2");
    apr_model *gg = convert(st, APR_FMT_GGUF, -1);
    repl r[6];
    const char *names[6] = {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.attn_v.weight",
                            "blk.1.attn_q.weight", "blk.1.attn_k.weight", "blk.1.attn_v.weight"};
    for (int i = 0; i < 6; i++) {
        r[i].name = names[i];
        r[i].dt = i == 2 ? APR_DT_Q6_K : APR_DT_Q4_K;
        r[i].data = quantize(r[i].dt, need(gg, names[i]), &r[i].nbytes);
    }
    apr_model *mixed = clone_with(gg, APR_FMT_GGUF, r, 6);
    apr_model_free(gg);
    *keep_f32 = st;
    return mixed;
}

static void test_rowcat_roundtrip(void **state)
{
    (void)state;
    apr_model *st;
    apr_model *gg = mixed_gguf(&st);
    apr_model *ap = convert(gg, APR_FMT_APR, -1);
    const apr_tensor *f0 = need(ap, "model.layers.0.self_attn.qkv_proj.weight");
    const apr_tensor *f1 = need(ap, "model.layers.1.self_attn.qkv_proj.weight");
    const apr_tensor *q = need(gg, "blk.0.attn_q.weight"), *k = need(gg, "blk.0.attn_k.weight"),
                     *v = need(gg, "blk.0.attn_v.weight");
    assert_int_equal(f0->dtype, APR_DT_ROWCAT);
    assert_int_equal(f0->n_parts, 3);
    assert_int_equal(f0->parts[0].dtype, APR_DT_Q4_K);
    assert_int_equal(f0->parts[1].dtype, APR_DT_Q4_K);
    assert_int_equal(f0->parts[2].dtype, APR_DT_Q6_K);
    assert_int_equal(f0->parts[0].rows, q->dims[0]);
    assert_int_equal(f0->parts[2].rows, v->dims[0]);
    assert_int_equal(f0->nbytes, q->nbytes + k->nbytes + v->nbytes);
    assert_memory_equal(f0->data, q->data, q->nbytes);
    assert_memory_equal(f0->data + q->nbytes + k->nbytes, v->data, v->nbytes);
    assert_int_equal(f1->dtype, APR_DT_Q4_K); /* one dtype: plain concatenation */
    assert_int_equal(f1->dims[0], q->dims[0] + 2 * k->dims[0]);

    /* APR -> GGUF splits back exactly; blocks are never re-quantized */
    apr_model *gg2 = convert(ap, APR_FMT_GGUF, -1);
    assert_same_tensors(gg, gg2);
    /* the split of a mmapped fused tensor is zero-copy */
    assert_ptr_equal(need(gg2, "blk.0.attn_v.weight")->data, f0->data + q->nbytes + k->nbytes);

    /* APR -> safetensors dequantizes (F32 by default, F16 with --outtype) */
    apr_model *st2 = convert(ap, APR_FMT_SAFETENSORS, -1);
    const apr_tensor *sv = need(st2, "model.layers.0.self_attn.v_proj.weight");
    assert_int_equal(sv->dtype, APR_DT_F32);
    float *row = malloc(v->dims[1] * sizeof *row);
    uint64_t rb = apr_dtype_row_bytes(APR_DT_Q6_K, v->dims[1]);
    for (uint64_t r = 0; r < v->dims[0]; r++) {
        assert_int_equal(apr_dequantize_row(APR_DT_Q6_K, v->data + r * rb, row, (int64_t)v->dims[1]), 0);
        assert_memory_equal(row, sv->data + r * v->dims[1] * 4, v->dims[1] * 4);
    }
    free(row);
    apr_model *st3 = convert(ap, APR_FMT_SAFETENSORS, APR_DT_F16);
    assert_int_equal(need(st3, "model.layers.0.self_attn.v_proj.weight")->dtype, APR_DT_F16);
    assert_int_equal(need(st3, "model.norm.weight")->dtype, APR_DT_F32);
    assert_int_equal(need(st3, "model.layers.0.self_attn.q_proj.bias")->dtype, APR_DT_F32);

    apr_model_free(st3);
    apr_model_free(st2);
    apr_model_free(gg2);
    apr_model_free(ap);
    apr_model_free(gg);
    apr_model_free(st);
}

/* ---------------------------------------------------------------- dtypes */

static void test_outtype(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-llama");
    apr_model *gg = convert(st, APR_FMT_GGUF, APR_DT_F16);
    const apr_tensor *h = need(st, "model.layers.0.mlp.up_proj.weight");
    const apr_tensor *g = need(gg, "blk.0.ffn_up.weight");
    assert_int_equal(g->dtype, APR_DT_F16);
    const float *x = (const float *)h->data;
    for (uint64_t i = 0; i < h->nbytes / 4; i++) {
        uint16_t want = apr_f32_to_f16(x[i]), have;
        memcpy(&have, g->data + 2 * i, 2);
        if (want != have)
            fail_msg("element %llu: f16 %04x, want %04x", (unsigned long long)i, have, want);
    }
    assert_int_equal(need(gg, "blk.0.attn_norm.weight")->dtype, APR_DT_F32);
    assert_int_equal(need(gg, "output_norm.weight")->dtype, APR_DT_F32);
    /* F16 back to F32 is exact: converting the F16 GGUF to F32 safetensors and
     * to F16 again gives the same F16 bytes */
    apr_model *st32 = convert(gg, APR_FMT_SAFETENSORS, APR_DT_F32);
    apr_model *gg16 = convert(st32, APR_FMT_GGUF, APR_DT_F16);
    assert_same_tensors(gg, gg16);
    /* BF16 source kept as BF16 by default; norms become F32 for GGUF */
    apr_synth_config c;
    apr_err err = {0};
    apr_synth_preset(&c, "tiny-llama", &err);
    c.dtype = APR_DT_BF16;
    apr_model *sb = NULL;
    assert_int_equal(apr_synth_model(&sb, &c, &err), 0);
    apr_model *gb = convert(sb, APR_FMT_GGUF, -1);
    assert_int_equal(need(gb, "blk.0.ffn_up.weight")->dtype, APR_DT_BF16);
    assert_int_equal(need(gb, "blk.0.ffn_norm.weight")->dtype, APR_DT_F32);
    apr_model_free(gb);
    apr_model_free(sb);
    apr_model_free(gg16);
    apr_model_free(st32);
    apr_model_free(gg);
    apr_model_free(st);
}


/* The streamed view: transformed tensors have no data until the writer
 * asks apr_conv_produce for them; what it makes equals the in-memory view,
 * and provenance expects those digests from the writer. */
static void test_stream_view(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-llama");
    apr_model *heap = convert(st, APR_FMT_APR, -1);
    apr_model *sm = NULL;
    apr_prov *p = NULL;
    apr_conv_stream *cs = NULL;
    apr_err err = {0};
    assert_int_equal(apr_convert_model_stream(st, APR_FMT_APR, NULL, &sm, &p, &cs, NULL, &err), 0);
    assert_int_equal(sm->n_tensors, heap->n_tensors);
    uint64_t produced = 0;
    for (uint64_t i = 0; i < sm->n_tensors; i++) {
        const apr_tensor *t = &sm->tensors[i], *h = &heap->tensors[i];
        assert_string_equal(t->name, h->name);
        assert_int_equal(t->nbytes, h->nbytes);
        assert_int_equal(apr_prov_streamed(p, t->name), t->data == NULL);
        if (t->data) {
            assert_memory_equal(t->data, h->data, t->nbytes);
            continue;
        }
        uint8_t *buf = malloc(t->nbytes);
        assert_int_equal(apr_conv_produce(cs, sm, i, buf, &err), 0);
        assert_memory_equal(buf, h->data, t->nbytes);
        free(buf);
        produced++;
    }
    assert_true(produced > 0); /* the fused QKV of every layer */
    /* digests the writer never supplied: sealing refuses */
    char *json = NULL;
    assert_int_equal(apr_prov_start(p, APR_FMT_APR, 1, &json, &err), 0);
    assert_int_not_equal(apr_prov_seal(p, (uint8_t *)json, strlen(json), &err), 0);
    assert_non_null(strstr(err.msg, "no digest"));
    free(json);
    apr_prov_free(p);
    apr_conv_stream_free(cs);
    apr_model_free(sm);
    apr_model_free(heap);
    apr_model_free(st);
}

/* ---------------------------------------------------------------- errors */

static void expect_error(apr_model *m, apr_format to, const char *needle)
{
    apr_model *out = NULL;
    apr_err err = {0};
    int rc = apr_convert_model(m, to, NULL, &out, NULL, NULL, &err);
    if (rc == 0 || !strstr(err.msg, needle))
        fail_msg("expected an error containing '%s', got rc %d: '%s'", needle, rc, err.msg);
    assert_null(out);
}

static void test_errors(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-llama");
    apr_model *gg = convert(st, APR_FMT_GGUF, -1);

    apr_model *m = clone_with(gg, APR_FMT_GGUF, NULL, 0);
    apr_model_set_kv_str(m, "general.architecture", "gpt2");
    expect_error(m, APR_FMT_APR, "unknown architecture 'gpt2' (supported: llama, qwen2, qwen3, gemma2, gemma3, phi3)");
    apr_model_free(m);

    m = clone_with(gg, APR_FMT_GGUF, NULL, 0);
    apr_model_remove_kv(m, "general.architecture");
    expect_error(m, APR_FMT_APR, "no general.architecture");
    apr_model_free(m);

    m = clone_with(st, APR_FMT_SAFETENSORS, NULL, 0);
    apr_model_remove_kv(m, "general.architecture");
    expect_error(m, APR_FMT_GGUF, "missing config.json");
    apr_model_free(m);

    m = clone_with(st, APR_FMT_SAFETENSORS, NULL, 0);
    apr_model_remove_kv(m, "tokenizer.ggml.tokens");
    expect_error(m, APR_FMT_GGUF, "missing tokenizer");
    apr_model_free(m);

    /* a missing tensor: a model without blk.1.ffn_up */
    m = apr_model_new(APR_FMT_GGUF);
    apr_err err = {0};
    for (uint64_t i = 0; i < gg->n_kvs; i++)
        apr_model_set_kv(m, &gg->kvs[i]);
    for (uint64_t i = 0; i < gg->n_tensors; i++) {
        const apr_tensor *t = &gg->tensors[i];
        if (strcmp(t->name, "blk.1.ffn_up.weight"))
            assert_int_equal(apr_model_add_tensor(m, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    expect_error(m, APR_FMT_APR, "tensor 'blk.1.ffn_up.weight' is missing");
    /* a tensor of a layer the config does not have */
    const apr_tensor *n = need(gg, "blk.1.ffn_norm.weight");
    assert_int_equal(apr_model_add_tensor(m, "blk.7.ffn_up.weight", n->dtype, n->ndim, n->dims, n->data, n->nbytes, false, &err), 0);
    expect_error(m, APR_FMT_APR, "belongs to layer 7 but the config has 2 layers");
    apr_model_free(m);

    /* wrong shape: ffn_up with the rows of ffn_down */
    const apr_tensor *up = need(gg, "blk.0.ffn_up.weight"), *down = need(gg, "blk.0.ffn_down.weight");
    repl r = {"blk.0.ffn_up.weight", APR_DT_F32, malloc(down->nbytes), down->nbytes};
    memcpy(r.data, down->data, down->nbytes);
    m = apr_model_new(APR_FMT_GGUF);
    for (uint64_t i = 0; i < gg->n_kvs; i++)
        apr_model_set_kv(m, &gg->kvs[i]);
    for (uint64_t i = 0; i < gg->n_tensors; i++) {
        const apr_tensor *t = &gg->tensors[i];
        if (t == up)
            assert_int_equal(apr_model_add_tensor(m, t->name, t->dtype, 2, down->dims, r.data, r.nbytes, true, &err), 0);
        else
            assert_int_equal(apr_model_add_tensor(m, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    expect_error(m, APR_FMT_SAFETENSORS, "tensor 'blk.0.ffn_up.weight' has shape [256, 512]; the config needs [512, 256]");
    apr_model_free(m);

    /* Q/K/V row lengths that disagree */
    const apr_tensor *k = need(gg, "blk.0.attn_k.weight");
    uint64_t kd[2] = {k->dims[0], k->dims[1] * 2};
    void *kdata = calloc(1, k->nbytes * 2);
    m = apr_model_new(APR_FMT_GGUF);
    for (uint64_t i = 0; i < gg->n_kvs; i++)
        apr_model_set_kv(m, &gg->kvs[i]);
    for (uint64_t i = 0; i < gg->n_tensors; i++) {
        const apr_tensor *t = &gg->tensors[i];
        if (t == k)
            assert_int_equal(apr_model_add_tensor(m, t->name, t->dtype, 2, kd, kdata, k->nbytes * 2, true, &err), 0);
        else
            assert_int_equal(apr_model_add_tensor(m, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, &err), 0);
    }
    expect_error(m, APR_FMT_APR, "layer 0: Q/K/V row lengths disagree");
    apr_model_free(m);

    /* quantizing is not a conversion */
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.outtype = APR_DT_Q4_K;
    apr_model *out = NULL;
    assert_int_not_equal(apr_convert_model(gg, APR_FMT_APR, &o, &out, NULL, NULL, &err), 0);
    assert_non_null(strstr(err.msg, "apr quantize"));

    apr_model_free(gg);
    apr_model_free(st);
}

/* ---------------------------------------------------------------- provenance */

typedef struct seen {
    int bad;
    char last_bad[128];
} seen;

static void on_report(void *user, bool ok, const char *what, const char *msg)
{
    (void)msg;
    seen *s = user;
    if (!ok) {
        s->bad++;
        snprintf(s->last_bad, sizeof s->last_bad, "%s", what ? what : "");
    }
}

static void test_provenance_record(void **state)
{
    (void)state;
    apr_model *st = synth("tiny-llama");
    apr_convert_opts o;
    apr_convert_opts_init(&o);
    o.command_line = "apr convert a b";
    o.time_utc = "2000-01-02T03:04:05Z";
    apr_model *ap = NULL;
    apr_prov *p = NULL;
    apr_err err = {0};
    assert_int_equal(apr_convert_model(st, APR_FMT_APR, &o, &ap, &p, NULL, &err), 0);
    char *json = NULL;
    assert_int_equal(apr_prov_finish(p, APR_FMT_APR, 2, &json, &err), 0);
    assert_int_equal(apr_prov_attach(ap, json, APR_FMT_APR, &err), 0);
    apr_prov_free(p);

    json_error_t je;
    json_t *root = json_loads(json, 0, &je);
    assert_non_null(root);
    assert_string_equal(json_string_value(json_object_get(root, "tool")), "apr");
    assert_string_equal(json_string_value(json_object_get(root, "command")), "apr convert a b");
    assert_string_equal(json_string_value(json_object_get(root, "time_utc")), "2000-01-02T03:04:05Z");
    assert_string_equal(json_string_value(json_object_get(root, "output_format")), "apr");
    assert_true(json_is_null(json_object_get(root, "parent")));
    const json_t *ts = json_object_get(root, "tensors");
    assert_int_equal(json_object_size(ts), ap->n_tensors);
    const json_t *f = json_object_get(ts, "model.layers.0.self_attn.qkv_proj.weight");
    assert_string_equal(json_string_value(json_object_get(f, "transform")), "permute+fuse");
    const json_t *srcs = json_object_get(f, "sources");
    assert_int_equal(json_array_size(srcs), 3);
    const apr_tensor *hk = need(st, "model.layers.0.self_attn.k_proj.weight");
    uint8_t sha[32];
    char hex[65];
    apr_sha256(hk->data, hk->nbytes, sha);
    apr_sha256_hex(sha, hex);
    assert_string_equal(json_string_value(json_object_get(json_array_get(srcs, 1), "name")), hk->name);
    assert_string_equal(json_string_value(json_object_get(json_array_get(srcs, 1), "sha256")), hex);
    const apr_tensor *ft = need(ap, "model.layers.0.self_attn.qkv_proj.weight");
    apr_sha256(ft->data, ft->nbytes, sha);
    apr_sha256_hex(sha, hex);
    assert_string_equal(json_string_value(json_object_get(f, "sha256")), hex);
    assert_string_equal(json_string_value(json_object_get(json_object_get(ts, "model.norm.weight"), "transform")), "copy");
    json_decref(root);

    /* verification passes, then fails naming the tensor whose byte flipped */
    seen s = {0};
    apr_prov_check res;
    assert_int_equal(apr_provenance_verify(ap, NULL, 2, on_report, &s, &res, &err), 0);
    assert_int_equal(s.bad, 0);
    assert_int_equal(res.tensors_checked, ap->n_tensors);
    apr_tensor *t = (apr_tensor *)need(ap, "model.layers.1.self_attn.qkv_proj.weight");
    assert_non_null(t->owned);
    t->owned[100] ^= 1;
    assert_int_equal(apr_provenance_verify(ap, NULL, 2, on_report, &s, &res, &err), APR_E_MISMATCH);
    assert_int_equal(s.bad, 1);
    assert_string_equal(s.last_bad, "model.layers.1.self_attn.qkv_proj.weight");
    assert_int_equal(res.tensors_bad, 1);

    /* the next conversion chains this record as its parent */
    t->owned[100] ^= 1;
    apr_model *gg = NULL;
    assert_int_equal(apr_convert_model(ap, APR_FMT_GGUF, &o, &gg, &p, NULL, &err), 0);
    char *json2 = NULL;
    assert_int_equal(apr_prov_finish(p, APR_FMT_GGUF, 1, &json2, &err), 0);
    assert_int_equal(apr_prov_attach(gg, json2, APR_FMT_GGUF, &err), 0);
    root = json_loads(json2, 0, &je);
    json_t *parent = json_loads(json, 0, &je);
    assert_true(json_equal(json_object_get(root, "parent"), parent));
    assert_string_equal(json_string_value(json_object_get(json_object_get(json_object_get(root, "tensors"),
                                                                          "blk.0.attn_k.weight"), "transform")),
                        "split");
    assert_non_null(apr_kv_get_str(gg, "apr.provenance.tool"));
    json_decref(parent);
    json_decref(root);
    apr_prov_free(p);
    free(json2);
    free(json);
    apr_model_free(gg);
    apr_model_free(ap);
    apr_model_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_permute),
        cmocka_unit_test(test_llama_st_gguf_apr),
        cmocka_unit_test(test_qwen2_bias_fusion),
        cmocka_unit_test(test_rowcat_roundtrip),
        cmocka_unit_test(test_outtype),
        cmocka_unit_test(test_stream_view),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_provenance_record),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
