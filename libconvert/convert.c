/* convert.c - safetensors <-> GGUF <-> APR on the apr_model view.
 *
 * A conversion is planned tensor by tensor. Every output tensor is a list of
 * "parts" (one, or Q, K, V for APR's fused attention), each a row range of a
 * source tensor with an input dtype, an output dtype and an optional Q/K row
 * permutation. An output whose parts need no change and sit back to back in
 * the source mapping is a zero-copy view of it; any other output gets an
 * owned buffer, filled on a thread pool before the writer runs (the writers
 * take a data pointer, so transformed tensors are materialized; their total is
 * stats.owned_bytes).
 *
 * Layouts (see convert.h): GGUF and APR hold LLaMA Q/K rows interleaved, HF
 * safetensors in rotate-half order; APR fuses Q, K, V (ROWCAT when dtypes
 * differ). Everything is checked against the architecture config before any
 * byte is produced: missing tensors, shapes, Q/K/V column agreement.
 */
#define _GNU_SOURCE
#include "convert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "quant.h"

#define QK_ROW_ORDER_KEY "apr.qk_row_order"
#define MAX_OUT_PARTS 3

void apr_convert_opts_init(apr_convert_opts *o)
{
    memset(o, 0, sizeof *o);
    o->to = APR_FMT_UNKNOWN;
    o->outtype = -1;
}

/* ---------------------------------------------------------------- plan */

typedef struct part {
    const apr_tensor *src;  /* the source tensor this part is read from */
    const uint8_t *data;    /* first byte of the part's first row */
    apr_dtype in_dt, out_dt;
    uint64_t rows, cols;    /* a 1-D tensor is rows = elements, cols = 1 */
    int perm;               /* 0 none, +1 rotate-half -> interleaved, -1 the inverse */
    uint64_t hd;            /* head dim when perm != 0 */
    bool sliced;            /* a row range of a bigger (fused) source tensor */
    uint64_t off;           /* byte offset of data in src's payload */
    float shift;            /* added to every element (Gemma norms between HF's w and llama.cpp's 1 + w), 0 none */
} part;

typedef struct plan {
    char name[128];
    uint32_t ndim;
    uint64_t dims[2];
    part parts[MAX_OUT_PARTS];
    uint32_t n_parts;
    bool rowcat;            /* parts keep different output dtypes (APR_DT_ROWCAT) */
    apr_dtype dtype;        /* output dtype when !rowcat */
    /* result */
    const uint8_t *data;    /* a zero-copy view's bytes; NULL: made by produce() while writing */
    uint64_t nbytes;
    char transform[96];
} plan;

typedef struct conv {
    apr_model *src;
    apr_format from, to;
    const apr_convert_opts *o;
    const apr_arch_config *c;
    /* source tensor table by id */
    const apr_tensor *glob[3][2];     /* [role][bias] */
    const apr_tensor *(*layer)[APR_ROLE_COUNT][2];
    const apr_tensor **extra;         /* unknown names, carried as they are */
    size_t n_extra;
    int perm;                         /* direction for Q/K, 0 none */
    plan *plans;
    size_t n_plans, cap_plans;
    apr_err *err;
} conv;

static uint64_t part_in_row_bytes(const part *p) { return apr_dtype_row_bytes(p->in_dt, p->cols); }
static uint64_t part_out_row_bytes(const part *p) { return apr_dtype_row_bytes(p->out_dt, p->cols); }

/* Rows and columns of a source tensor as the converter sees it. */
static int tensor_rows_cols(const apr_tensor *t, uint64_t *rows, uint64_t *cols, apr_err *err)
{
    if (t->ndim == 1) {
        *rows = t->dims[0];
        *cols = 1;
        return 0;
    }
    if (t->ndim == 2) {
        *rows = t->dims[0];
        *cols = t->dims[1];
        return 0;
    }
    return apr_err_set(err, APR_E_FORMAT, "tensor '%s' has %u dims (expected 1 or 2)", t->name, t->ndim);
}

/* ---------------------------------------------------------------- output dtype policy */

static apr_dtype out_dtype_for(const conv *cv, apr_dtype in, bool one_d)
{
    const apr_dtype_info *di = apr_dtype_get(in);
    bool quantized = di && di->quantized;
    if (cv->o->outtype >= 0)
        return one_d ? APR_DT_F32 : (apr_dtype)cv->o->outtype;
    if (quantized && cv->to == APR_FMT_SAFETENSORS)
        return APR_DT_F32; /* safetensors has no block types: dequantize */
    if (one_d && cv->from == APR_FMT_SAFETENSORS && cv->to == APR_FMT_GGUF)
        return APR_DT_F32; /* convert_hf_to_gguf keeps norms and 1-D tensors F32 */
    return in;
}

/* ---------------------------------------------------------------- source table */

static int classify_sources(conv *cv)
{
    apr_model *m = cv->src;
    uint32_t L = cv->c->n_layers;
    cv->layer = calloc(L, sizeof *cv->layer);
    cv->extra = calloc(m->n_tensors ? m->n_tensors : 1, sizeof *cv->extra);
    if (!cv->layer || !cv->extra)
        return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        const apr_tensor *t = &m->tensors[i];
        apr_tensor_id id;
        if (!apr_tensor_id_parse_arch(cv->c->arch, t->name, &id, NULL)) {
            size_t n = strlen(t->name);
            if (n > 20 && strcmp(t->name + n - 20, "rotary_emb.inv_freq") == 0)
                continue; /* recomputed by every runtime; llama.cpp's converter drops it too */
            cv->extra[cv->n_extra++] = t;
            continue;
        }
        const apr_tensor **slot;
        if (apr_role_per_layer(id.role)) {
            if (id.layer >= L)
                return apr_err_set(cv->err, APR_E_FORMAT,
                                   "tensor '%s' belongs to layer %u but the config has %u layers", t->name,
                                   id.layer, L);
            slot = &cv->layer[id.layer][id.role][id.bias];
        } else {
            slot = &cv->glob[id.role][id.bias];
        }
        if (*slot)
            return apr_err_set(cv->err, APR_E_FORMAT, "tensors '%s' and '%s' are the same tensor under two names",
                               (*slot)->name, t->name);
        *slot = t;
    }
    return 0;
}

/* dims must be exactly {d0} (d1 == 0) or {d0, d1}. */
static int expect_shape(conv *cv, const apr_tensor *t, uint64_t d0, uint64_t d1)
{
    uint32_t nd = d1 ? 2 : 1;
    if (t->ndim == nd && t->dims[0] == d0 && (nd == 1 || t->dims[1] == d1))
        return 0;
    char have[96] = "", want[64];
    size_t o = 0;
    for (uint32_t d = 0; d < t->ndim && d < APR_MAX_DIMS; d++)
        o += (size_t)snprintf(have + o, sizeof have - o, "%s%llu", d ? ", " : "", (unsigned long long)t->dims[d]);
    if (d1)
        snprintf(want, sizeof want, "%llu, %llu", (unsigned long long)d0, (unsigned long long)d1);
    else
        snprintf(want, sizeof want, "%llu", (unsigned long long)d0);
    return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' has shape [%s]; the config needs [%s]", t->name, have,
                       want);
}

static int need_tensor(conv *cv, const apr_tensor *t, apr_role role, uint32_t layer, bool bias)
{
    if (t)
        return 0;
    char name[128];
    apr_tensor_id id = {role, layer, bias};
    apr_tensor_id_name_arch(cv->c->arch, &id, cv->from == APR_FMT_GGUF ? APR_NAMING_GGUF : APR_NAMING_HF, name,
                            sizeof name);
    if (apr_role_per_layer(role))
        return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' is missing (the config has %u layers)", name,
                           cv->c->n_layers);
    return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' is missing", name);
}

static int validate_sources(conv *cv)
{
    const apr_arch_config *c = cv->c;
    uint64_t H = c->hidden, F = c->ffn, qr = (uint64_t)c->n_heads * c->head_dim,
             kr = (uint64_t)c->n_kv_heads * c->head_dim;
    int rc;
    const apr_tensor *emb = cv->glob[APR_ROLE_TOKEN_EMBD][0];
    if ((rc = need_tensor(cv, emb, APR_ROLE_TOKEN_EMBD, 0, false)))
        return rc;
    if (emb->ndim != 2 || emb->dims[1] != H)
        return expect_shape(cv, emb, c->vocab ? c->vocab : (emb->ndim ? emb->dims[0] : 0), H);
    uint64_t V = emb->dims[0];
    if (c->vocab && c->vocab != V)
        return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' has %llu rows but the config says vocab %u", emb->name,
                           (unsigned long long)V, c->vocab);
    if ((rc = need_tensor(cv, cv->glob[APR_ROLE_OUTPUT_NORM][0], APR_ROLE_OUTPUT_NORM, 0, false)) ||
        (rc = expect_shape(cv, cv->glob[APR_ROLE_OUTPUT_NORM][0], H, 0)))
        return rc;
    if (cv->glob[APR_ROLE_OUTPUT][0] && (rc = expect_shape(cv, cv->glob[APR_ROLE_OUTPUT][0], V, H)))
        return rc;
    for (int r = 0; r < 3; r++)
        if (cv->glob[r][1])
            return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': biases are not supported there",
                               cv->glob[r][1]->name);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const apr_tensor *(*t)[2] = cv->layer[l];
        static const apr_role need[] = {APR_ROLE_ATTN_NORM, APR_ROLE_ATTN_OUT, APR_ROLE_FFN_NORM, APR_ROLE_FFN_DOWN};
        for (size_t i = 0; i < sizeof need / sizeof *need; i++)
            if ((rc = need_tensor(cv, t[need[i]][0], need[i], l, false)))
                return rc;
        if (c->fused_qkv_gate_up) { /* Phi-3: gate and up in one */
            if ((rc = need_tensor(cv, t[APR_ROLE_FFN_GATE_UP][0], APR_ROLE_FFN_GATE_UP, l, false)) ||
                (rc = expect_shape(cv, t[APR_ROLE_FFN_GATE_UP][0], 2 * F, H)))
                return rc;
        } else {
            if ((rc = need_tensor(cv, t[APR_ROLE_FFN_GATE][0], APR_ROLE_FFN_GATE, l, false)) ||
                (rc = need_tensor(cv, t[APR_ROLE_FFN_UP][0], APR_ROLE_FFN_UP, l, false)) ||
                (rc = expect_shape(cv, t[APR_ROLE_FFN_GATE][0], F, H)) ||
                (rc = expect_shape(cv, t[APR_ROLE_FFN_UP][0], F, H)))
                return rc;
            if (t[APR_ROLE_FFN_GATE_UP][0])
                return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' is not expected for architecture %s",
                                   t[APR_ROLE_FFN_GATE_UP][0]->name, c->arch);
        }
        const apr_tensor *q = t[APR_ROLE_ATTN_Q][0], *k = t[APR_ROLE_ATTN_K][0], *v = t[APR_ROLE_ATTN_V][0];
        const apr_tensor *qkv = t[APR_ROLE_ATTN_QKV][0];
        if (qkv && (q || k || v))
            return apr_err_set(cv->err, APR_E_FORMAT, "layer %u has both a fused '%s' and separate Q/K/V tensors", l,
                               qkv->name);
        if (qkv) {
            if ((rc = expect_shape(cv, qkv, qr + 2 * kr, H)))
                return rc;
        } else {
            if ((rc = need_tensor(cv, q, APR_ROLE_ATTN_Q, l, false)) ||
                (rc = need_tensor(cv, k, APR_ROLE_ATTN_K, l, false)) ||
                (rc = need_tensor(cv, v, APR_ROLE_ATTN_V, l, false)))
                return rc;
            uint64_t cq = q->ndim == 2 ? q->dims[1] : 0, ck = k->ndim == 2 ? k->dims[1] : 0,
                     cvv = v->ndim == 2 ? v->dims[1] : 0;
            if (cq != ck || cq != cvv)
                return apr_err_set(cv->err, APR_E_FORMAT,
                                   "layer %u: Q/K/V row lengths disagree ('%s' %llu, '%s' %llu, '%s' %llu columns)", l,
                                   q->name, (unsigned long long)cq, k->name, (unsigned long long)ck, v->name,
                                   (unsigned long long)cvv);
            if ((rc = expect_shape(cv, q, qr, H)) || (rc = expect_shape(cv, k, kr, H)) ||
                (rc = expect_shape(cv, v, kr, H)))
                return rc;
            if (q->dtype == APR_DT_ROWCAT || k->dtype == APR_DT_ROWCAT || v->dtype == APR_DT_ROWCAT)
                return apr_err_set(cv->err, APR_E_FORMAT, "layer %u: only a fused QKV tensor may be ROWCAT", l);
        }
        const apr_tensor *bq = t[APR_ROLE_ATTN_Q][1], *bk = t[APR_ROLE_ATTN_K][1], *bv = t[APR_ROLE_ATTN_V][1];
        const apr_tensor *bqkv = t[APR_ROLE_ATTN_QKV][1];
        if (bqkv) {
            if (bq || bk || bv || !qkv)
                return apr_err_set(cv->err, APR_E_FORMAT, "layer %u: fused bias '%s' needs a fused weight and no "
                                   "separate biases", l, bqkv->name);
            if ((rc = expect_shape(cv, bqkv, qr + 2 * kr, 0)))
                return rc;
        } else if (bq || bk || bv) {
            if (!bq || !bk || !bv)
                return apr_err_set(cv->err, APR_E_FORMAT, "layer %u: Q/K/V biases must come together (have %s%s%s)", l,
                                   bq ? "q " : "", bk ? "k " : "", bv ? "v" : "");
            if (qkv)
                return apr_err_set(cv->err, APR_E_FORMAT, "layer %u: separate Q/K/V biases with a fused weight", l);
            if ((rc = expect_shape(cv, bq, qr, 0)) || (rc = expect_shape(cv, bk, kr, 0)) ||
                (rc = expect_shape(cv, bv, kr, 0)))
                return rc;
        }
        for (int r = 0; r < APR_ROLE_COUNT; r++)
            if (t[r][1] && r != APR_ROLE_ATTN_Q && r != APR_ROLE_ATTN_K && r != APR_ROLE_ATTN_V &&
                r != APR_ROLE_ATTN_QKV)
                return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': this bias is not supported",
                                   t[r][1]->name);
        const bool qk_norm = cv->c->qk_norm;
        for (int r = APR_ROLE_POST_ATTN_NORM; r <= APR_ROLE_POST_FFN_NORM; r++) {
            if (cv->c->post_norms && (rc = need_tensor(cv, t[r][0], (apr_role)r, l, false)))
                return rc;
            if (!cv->c->post_norms && t[r][0])
                return apr_err_set(cv->err, APR_E_FORMAT, "tensor '%s' is not expected for architecture %s",
                                   t[r][0]->name, cv->c->arch);
            if (t[r][0] && (rc = expect_shape(cv, t[r][0], H, 0)))
                return rc;
        }
        if (qk_norm != (t[APR_ROLE_ATTN_Q_NORM][0] != NULL) || qk_norm != (t[APR_ROLE_ATTN_K_NORM][0] != NULL))
            return apr_err_set(cv->err, APR_E_FORMAT, "layer %u: Q/K norm tensors are %s for architecture %s", l,
                               qk_norm ? "missing" : "not expected", cv->c->arch);
        if (qk_norm && ((rc = expect_shape(cv, t[APR_ROLE_ATTN_Q_NORM][0], cv->c->head_dim, 0)) ||
                        (rc = expect_shape(cv, t[APR_ROLE_ATTN_K_NORM][0], cv->c->head_dim, 0))))
            return rc;
        if ((rc = expect_shape(cv, t[APR_ROLE_ATTN_NORM][0], H, 0)) ||
            (rc = expect_shape(cv, t[APR_ROLE_FFN_NORM][0], H, 0)) ||
            (rc = expect_shape(cv, t[APR_ROLE_ATTN_OUT][0], H, qr)) ||
            (rc = expect_shape(cv, t[APR_ROLE_FFN_DOWN][0], H, F)))
            return rc;
    }
    return 0;
}

/* ---------------------------------------------------------------- building plans */

static plan *new_plan(conv *cv)
{
    if (cv->n_plans == cv->cap_plans) {
        size_t nc = cv->cap_plans ? cv->cap_plans * 2 : 64;
        plan *np = realloc(cv->plans, nc * sizeof *np);
        if (!np)
            return NULL;
        cv->plans = np;
        cv->cap_plans = nc;
    }
    plan *p = &cv->plans[cv->n_plans++];
    memset(p, 0, sizeof *p);
    return p;
}

/* The whole of tensor t as one part. */
static int whole_part(conv *cv, const apr_tensor *t, part *p)
{
    memset(p, 0, sizeof *p);
    int rc = tensor_rows_cols(t, &p->rows, &p->cols, cv->err);
    if (rc)
        return rc;
    if (t->dtype == APR_DT_ROWCAT)
        return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s' is ROWCAT but is not a fused QKV tensor", t->name);
    p->src = t;
    p->data = t->data; /* NULL: an upstream producer makes src (apr_convert_opts.src_produce) */
    p->in_dt = t->dtype;
    p->out_dt = out_dtype_for(cv, t->dtype, t->ndim == 1);
    if (!part_in_row_bytes(p) && p->rows)
        return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': dtype %s cannot be converted here", t->name,
                           apr_dtype_name(t->dtype));
    return 0;
}

/* Rows [row0, row0 + rows) of fused tensor t (plain or ROWCAT) as one part. */
static int slice_part(conv *cv, const apr_tensor *t, uint64_t row0, uint64_t rows, part *p)
{
    memset(p, 0, sizeof *p);
    uint64_t trows = 0, cols = 0;
    int rc = tensor_rows_cols(t, &trows, &cols, cv->err);
    if (rc)
        return rc;
    p->src = t;
    p->rows = rows;
    p->cols = cols;
    p->sliced = true;
    if (t->dtype != APR_DT_ROWCAT) {
        uint64_t rb = apr_dtype_row_bytes(t->dtype, cols);
        if (!rb)
            return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': dtype %s cannot be split", t->name,
                               apr_dtype_name(t->dtype));
        p->in_dt = t->dtype;
        p->off = row0 * rb;
    } else {
        /* The slice must lie inside one part: a ROWCAT part boundary never
         * falls inside Q, K or V when our writer made it. */
        uint64_t r = 0, off = 0;
        uint32_t i;
        for (i = 0; i < t->n_parts; i++) {
            if (row0 >= r && row0 + rows <= r + t->parts[i].rows)
                break;
            r += t->parts[i].rows;
            off += t->parts[i].nbytes;
        }
        if (i == t->n_parts)
            return apr_err_set(cv->err, APR_E_FORMAT,
                               "ROWCAT tensor '%s': rows %llu..%llu span two parts; cannot split it into Q, K, V",
                               t->name, (unsigned long long)row0, (unsigned long long)(row0 + rows));
        p->in_dt = t->parts[i].dtype;
        uint64_t rb = apr_dtype_row_bytes(p->in_dt, cols);
        if (!rb)
            return apr_err_set(cv->err, APR_E_FORMAT, "ROWCAT tensor '%s': part %u has dtype %s", t->name, i,
                               apr_dtype_name(p->in_dt));
        p->off = off + (row0 - r) * rb;
    }
    p->data = t->data ? t->data + p->off : NULL;
    p->out_dt = out_dtype_for(cv, p->in_dt, t->ndim == 1);
    return 0;
}

static bool set_name(conv *cv, plan *p, apr_role role, uint32_t layer, bool bias)
{
    apr_tensor_id id = {role, layer, bias};
    apr_naming n = cv->to == APR_FMT_GGUF ? APR_NAMING_GGUF : APR_NAMING_HF;
    return apr_tensor_id_name_arch(cv->c->arch, &id, n, p->name, sizeof p->name);
}

static bool role_is_norm(apr_role r)
{
    return r == APR_ROLE_OUTPUT_NORM || r == APR_ROLE_ATTN_NORM || r == APR_ROLE_FFN_NORM ||
           r == APR_ROLE_ATTN_Q_NORM || r == APR_ROLE_ATTN_K_NORM || r == APR_ROLE_POST_ATTN_NORM ||
           r == APR_ROLE_POST_FFN_NORM;
}

/* What a norm weight gains on its way: HF stores Gemma's norms as w for a
 * multiplier 1 + w, GGUF and APR as llama.cpp's converter does (1 + w). */
static float norm_shift(const conv *cv, apr_role r)
{
    const float off = cv->c->hf_norm_offset;
    const bool from_hf = cv->from == APR_FMT_SAFETENSORS, to_hf = cv->to == APR_FMT_SAFETENSORS;
    if (off == 0.0f || !role_is_norm(r) || from_hf == to_hf)
        return 0.0f;
    return from_hf ? off : -off;
}

static int plan_simple(conv *cv, const apr_tensor *t, apr_role role, uint32_t layer, bool bias)
{
    plan *p = new_plan(cv);
    if (!p)
        return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
    if (!set_name(cv, p, role, layer, bias))
        return apr_err_set(cv->err, APR_E_ARG, "tensor name too long");
    p->n_parts = 1;
    int rc = whole_part(cv, t, &p->parts[0]);
    if (rc)
        return rc;
    p->parts[0].shift = bias ? 0.0f : norm_shift(cv, role);
    if (p->parts[0].shift != 0.0f)
        p->parts[0].out_dt = APR_DT_F32; /* w + 1 in BF16/F16 would round: keep the f32 sum */
    if (p->parts[0].shift != 0.0f && p->parts[0].in_dt != APR_DT_F32 && p->parts[0].in_dt != APR_DT_F16 &&
        p->parts[0].in_dt != APR_DT_BF16)
        return apr_err_set(cv->err, APR_E_UNSUPPORTED, "norm tensor '%s' of dtype %s cannot be offset", t->name,
                           apr_dtype_name(p->parts[0].in_dt));
    return 0;
}

/* Q, K, V parts of layer l (weights or biases) from separate or fused sources. */
static int qkv_parts(conv *cv, uint32_t l, bool bias, part out[3], bool *present)
{
    const apr_tensor *(*t)[2] = cv->layer[l];
    const apr_arch_config *c = cv->c;
    uint64_t qr = (uint64_t)c->n_heads * c->head_dim, kr = (uint64_t)c->n_kv_heads * c->head_dim;
    int rc;
    *present = true;
    if (t[APR_ROLE_ATTN_QKV][bias]) {
        const apr_tensor *f = t[APR_ROLE_ATTN_QKV][bias];
        if ((rc = slice_part(cv, f, 0, qr, &out[0])) || (rc = slice_part(cv, f, qr, kr, &out[1])) ||
            (rc = slice_part(cv, f, qr + kr, kr, &out[2])))
            return rc;
    } else if (t[APR_ROLE_ATTN_Q][bias]) {
        if ((rc = whole_part(cv, t[APR_ROLE_ATTN_Q][bias], &out[0])) ||
            (rc = whole_part(cv, t[APR_ROLE_ATTN_K][bias], &out[1])) ||
            (rc = whole_part(cv, t[APR_ROLE_ATTN_V][bias], &out[2])))
            return rc;
    } else {
        *present = false;
        return 0;
    }
    if (cv->perm) {
        for (int i = 0; i < 2; i++) {
            out[i].perm = cv->perm;
            out[i].hd = c->head_dim;
        }
    }
    return 0;
}

static int plan_attention(conv *cv, uint32_t l)
{
    static const apr_role roles[3] = {APR_ROLE_ATTN_Q, APR_ROLE_ATTN_K, APR_ROLE_ATTN_V};
    part parts[2][3];
    bool present[2];
    int rc;
    for (int bias = 0; bias < 2; bias++)
        if ((rc = qkv_parts(cv, l, bias, parts[bias], &present[bias])))
            return rc;
    /* fused: APR always; Phi-3 in every format (its own files keep them so) */
    if (cv->to == APR_FMT_APR || cv->c->fused_qkv_gate_up) {
        for (int bias = 0; bias < 2; bias++) {
            if (!present[bias])
                continue;
            plan *p = new_plan(cv);
            if (!p)
                return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
            set_name(cv, p, APR_ROLE_ATTN_QKV, l, bias);
            p->n_parts = 3;
            memcpy(p->parts, parts[bias], sizeof parts[bias]);
        }
        return 0;
    }
    /* split: each of Q, K, V with its bias right after it */
    for (int i = 0; i < 3; i++) {
        for (int bias = 0; bias < 2; bias++) {
            if (!present[bias])
                continue;
            plan *p = new_plan(cv);
            if (!p)
                return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
            set_name(cv, p, roles[i], l, bias);
            p->n_parts = 1;
            p->parts[0] = parts[bias][i];
        }
    }
    return 0;
}

/* Output dtypes of a plan: one dtype, or ROWCAT for a fused weight whose parts
 * differ; a fused bias whose parts differ becomes F32 (lossless for every
 * plain type a bias has). */
static void settle_dtype(plan *p)
{
    p->dtype = p->parts[0].out_dt;
    p->rowcat = false;
    for (uint32_t i = 1; i < p->n_parts; i++)
        if (p->parts[i].out_dt != p->dtype)
            p->rowcat = true;
    if (p->rowcat && p->parts[0].cols == 1) {
        for (uint32_t i = 0; i < p->n_parts; i++)
            p->parts[i].out_dt = APR_DT_F32;
        p->dtype = APR_DT_F32;
        p->rowcat = false;
    }
    if (p->rowcat)
        p->dtype = APR_DT_ROWCAT;
    uint64_t rows = 0;
    for (uint32_t i = 0; i < p->n_parts; i++)
        rows += p->parts[i].rows;
    if (p->parts[0].cols == 1 && p->parts[0].src->ndim == 1) {
        p->ndim = 1;
        p->dims[0] = rows;
    } else {
        p->ndim = 2;
        p->dims[0] = rows;
        p->dims[1] = p->parts[0].cols;
    }
}

static void transform_label(plan *p)
{
    bool split = false, fuse = false, perm = false, unperm = false, shift = false;
    char conv_steps[64] = "";
    for (uint32_t i = 0; i < p->n_parts; i++) {
        const part *q = &p->parts[i];
        split |= q->sliced && p->n_parts == 1;
        fuse |= i > 0 && q->src != p->parts[0].src;
        perm |= q->perm > 0;
        unperm |= q->perm < 0;
        shift |= q->shift != 0.0f;
        if (q->in_dt != q->out_dt) {
            const apr_dtype_info *di = apr_dtype_get(q->in_dt);
            char step[32];
            snprintf(step, sizeof step, "%s:%s", di && di->quantized ? "dequantize" : "convert",
                     apr_dtype_name(q->out_dt));
            if (!strstr(conv_steps, step)) {
                size_t n = strlen(conv_steps);
                snprintf(conv_steps + n, sizeof conv_steps - n, "%s%s", n ? "+" : "", step);
            }
        }
    }
    char *s = p->transform;
    size_t cap = sizeof p->transform, n = 0;
    s[0] = 0;
#define STEP(cond, txt)                                                             \
    if (cond)                                                                       \
        n += (size_t)snprintf(s + n, n < cap ? cap - n : 0, "%s%s", n ? "+" : "", txt)
    STEP(split, "split");
    STEP(conv_steps[0], conv_steps);
    STEP(perm, "permute");
    STEP(unperm, "unpermute");
    STEP(shift, "offset");
    STEP(fuse, "fuse");
#undef STEP
    if (!s[0])
        snprintf(s, cap, "copy");
}

static int build_plans(conv *cv)
{
    int rc;
    if ((rc = plan_simple(cv, cv->glob[APR_ROLE_TOKEN_EMBD][0], APR_ROLE_TOKEN_EMBD, 0, false)) ||
        (rc = plan_simple(cv, cv->glob[APR_ROLE_OUTPUT_NORM][0], APR_ROLE_OUTPUT_NORM, 0, false)))
        return rc;
    if (cv->glob[APR_ROLE_OUTPUT][0] && (rc = plan_simple(cv, cv->glob[APR_ROLE_OUTPUT][0], APR_ROLE_OUTPUT, 0, false)))
        return rc;
    /* llama.cpp's (convert-llama2c / the fixture's) per-layer order */
    static const apr_role after[] = {APR_ROLE_ATTN_Q_NORM, APR_ROLE_ATTN_K_NORM, APR_ROLE_ATTN_OUT,
                                     APR_ROLE_ATTN_NORM,   APR_ROLE_POST_ATTN_NORM, APR_ROLE_FFN_GATE,
                                     APR_ROLE_FFN_DOWN,    APR_ROLE_FFN_UP,      APR_ROLE_FFN_GATE_UP,
                                     APR_ROLE_FFN_NORM,    APR_ROLE_POST_FFN_NORM};
    for (uint32_t l = 0; l < cv->c->n_layers; l++) {
        if ((rc = plan_attention(cv, l)))
            return rc;
        for (size_t i = 0; i < sizeof after / sizeof *after; i++)
            if (cv->layer[l][after[i]][0] && /* Q/K norms are optional (validate_sources) */
                (rc = plan_simple(cv, cv->layer[l][after[i]][0], after[i], l, false)))
                return rc;
    }
    for (size_t i = 0; i < cv->n_extra; i++) {
        plan *p = new_plan(cv);
        if (!p)
            return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
        if (strlen(cv->extra[i]->name) >= sizeof p->name)
            return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor name '%.60s...' is too long", cv->extra[i]->name);
        snprintf(p->name, sizeof p->name, "%s", cv->extra[i]->name);
        p->n_parts = 1;
        if ((rc = whole_part(cv, cv->extra[i], &p->parts[0])))
            return rc;
    }
    for (size_t i = 0; i < cv->n_plans; i++) {
        plan *p = &cv->plans[i];
        settle_dtype(p);
        transform_label(p);
        for (uint32_t k = 0; k < p->n_parts; k++) {
            const part *q = &p->parts[k];
            if (q->rows && !part_out_row_bytes(q))
                return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': cannot store %llu columns as %s", p->name,
                                   (unsigned long long)q->cols, apr_dtype_name(q->out_dt));
            if (q->in_dt != q->out_dt) {
                const apr_dtype_info *oi = apr_dtype_get(q->out_dt);
                if (!oi || oi->quantized || (q->out_dt != APR_DT_F32 && q->out_dt != APR_DT_F16 &&
                                             q->out_dt != APR_DT_BF16))
                    return apr_err_set(cv->err, APR_E_UNSUPPORTED, "tensor '%s': cannot convert %s to %s", p->name,
                                       apr_dtype_name(q->in_dt), apr_dtype_name(q->out_dt));
            }
            p->nbytes += q->rows * part_out_row_bytes(q);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- producing bytes */

static bool plan_is_view(const plan *p)
{
    for (uint32_t i = 0; i < p->n_parts; i++) {
        const part *q = &p->parts[i];
        if (q->perm || q->in_dt != q->out_dt || q->shift != 0.0f)
            return false;
        if (i && (!q->data || !p->parts[i - 1].data))
            return false;
        if (i && q->data != p->parts[i - 1].data + p->parts[i - 1].rows * part_in_row_bytes(&p->parts[i - 1]))
            return false;
    }
    return true;
}

static void store_row(apr_dtype dt, const float *x, uint8_t *dst, uint64_t n)
{
    if (dt == APR_DT_F32) {
        memcpy(dst, x, (size_t)n * 4);
    } else if (dt == APR_DT_F16) {
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = apr_f32_to_f16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    } else { /* BF16 (checked when planning) */
        for (uint64_t i = 0; i < n; i++) {
            uint16_t h = apr_f32_to_bf16(x[i]);
            memcpy(dst + 2 * i, &h, 2);
        }
    }
}

/* ---------------------------------------------------------------- producing while the writer writes */

struct apr_conv_stream {
    plan *plans;            /* one per output tensor, in output order */
    size_t n_plans;
    const apr_model *src;
    apr_produce_fn src_produce; /* makes the source tensors that have no data */
    void *src_user;
    float *tmp;             /* one row as f32 */
    uint64_t tmp_cap;
    uint8_t *in;            /* a produced source tensor */
    uint64_t in_cap;
};

static int grow_buf(void **p, uint64_t *cap, uint64_t n, apr_err *err)
{
    if (n <= *cap)
        return 0;
    free(*p);
    *p = n <= SIZE_MAX ? malloc((size_t)n) : NULL;
    *cap = *p ? n : 0;
    return *p ? 0 : apr_err_set(err, APR_E_NOMEM, "out of memory (%llu bytes)", (unsigned long long)n);
}

/* The source bytes of part q: its mapping, or the source tensor made by the
 * upstream producer into s->in (or straight into dst when the part is the
 * whole source unchanged: *done). */
static int part_source(apr_conv_stream *s, const part *q, uint8_t *dst, const uint8_t **out, bool *done, apr_err *err)
{
    *done = false;
    if (q->data) {
        *out = q->data;
        return 0;
    }
    const apr_tensor *t = q->src;
    if (!s->src_produce || t < s->src->tensors || t >= s->src->tensors + s->src->n_tensors)
        return apr_err_set(err, APR_E_ARG, "source tensor '%s' has no data", t->name);
    uint64_t idx = (uint64_t)(t - s->src->tensors);
    if (!q->sliced && !q->perm && q->in_dt == q->out_dt && q->shift == 0.0f) {
        *done = true;
        return s->src_produce(s->src_user, s->src, idx, dst, err);
    }
    int rc = grow_buf((void **)&s->in, &s->in_cap, t->nbytes, err);
    if (rc || (rc = s->src_produce(s->src_user, s->src, idx, s->in, err)))
        return rc;
    *out = s->in + q->off;
    return 0;
}

/* x + shift for every element of a plain 1-D part, in f32 (llama.cpp's
 * converter adds 1 to the checkpoint's tensor read as float32: a BF16 norm
 * becomes f32(w) + 1), stored as out_dt. tmp: room for q->rows floats. */
static int shift_elements(const part *q, const uint8_t *src, float *tmp, uint8_t *dst, const char *name, apr_err *err)
{
    if (apr_to_f32_row(q->in_dt, src, tmp, (int64_t)q->rows) != 0)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': cannot read %s data", name, apr_dtype_name(q->in_dt));
    for (uint64_t i = 0; i < q->rows; i++)
        tmp[i] = tmp[i] + q->shift;
    store_row(q->out_dt, tmp, dst, q->rows);
    return 0;
}

/* Makes output tensor i (an apr_produce_fn; user is the stream). */
int apr_conv_produce(void *user, const apr_model *m, uint64_t i, uint8_t *dst, apr_err *err)
{
    apr_conv_stream *s = user;
    (void)m;
    if (i >= s->n_plans)
        return apr_err_set(err, APR_E_ARG, "convert: no tensor %llu", (unsigned long long)i);
    const plan *p = &s->plans[i];
    for (uint32_t k = 0; k < p->n_parts; k++) {
        const part *q = &p->parts[k];
        uint64_t irb = part_in_row_bytes(q), orb = part_out_row_bytes(q);
        const uint8_t *base = NULL;
        bool done = false;
        int rc = part_source(s, q, dst, &base, &done, err);
        if (rc)
            return rc;
        if (done) {
            dst += q->rows * orb;
            continue;
        }
        if ((q->in_dt != q->out_dt || q->shift != 0.0f) &&
            (rc = grow_buf((void **)&s->tmp, &s->tmp_cap, q->cols * sizeof(float), err)))
            return rc;
        if (q->shift != 0.0f) { /* a 1-D tensor: rows are its elements */
            if ((rc = grow_buf((void **)&s->tmp, &s->tmp_cap, q->rows * sizeof(float), err)) ||
                (rc = shift_elements(q, base, s->tmp, dst, p->name, err)))
                return rc;
            dst += q->rows * orb;
            continue;
        }
        for (uint64_t r = 0; r < q->rows; r++) {
            uint64_t sr = q->perm ? apr_qk_perm_src_row(r, q->hd, q->perm < 0) : r;
            const uint8_t *src = base + sr * irb;
            if (q->in_dt == q->out_dt) {
                memcpy(dst, src, (size_t)irb);
            } else {
                if (apr_to_f32_row(q->in_dt, src, s->tmp, (int64_t)q->cols) != 0)
                    return apr_err_set(err, APR_E_UNSUPPORTED, "tensor '%s': cannot read %s data", p->name,
                                       apr_dtype_name(q->in_dt));
                store_row(q->out_dt, s->tmp, dst, q->cols);
            }
            dst += orb;
        }
        if (q->data)
            apr_map_release(q->data, (size_t)(q->rows * irb)); /* read once: drop the source pages */
    }
    return 0;
}

void apr_conv_stream_free(apr_conv_stream *s)
{
    if (!s)
        return;
    free(s->plans);
    free(s->tmp);
    free(s->in);
    free(s);
}

static void settle_views(conv *cv, apr_convert_stats *st)
{
    for (size_t i = 0; i < cv->n_plans; i++) {
        plan *p = &cv->plans[i];
        p->data = plan_is_view(p) ? p->parts[0].data : NULL;
        if (!plan_is_view(p))
            st->n_transformed++;
    }
}

/* ---------------------------------------------------------------- KVs */

/* llama.cpp reads these with strict types (formats.md). */
static const char *const u32_keys[] = {"context_length", "embedding_length", "block_count", "feed_forward_length",
                                       "attention.head_count", "attention.head_count_kv", "attention.key_length",
                                       "attention.value_length", "rope.dimension_count", "vocab_size"};
static const char *const f32_keys[] = {"rope.freq_base", "attention.layer_norm_rms_epsilon", "rope.scaling.factor"};
static const char *const tok_u32_keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                                           "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                                           "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.eot_token_id"};

static int retype_u32(apr_model *m, const char *key, apr_err *err)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv || kv->type == APR_KV_U32)
        return 0;
    uint32_t v;
    if (!apr_kv_get_u32(m, key, &v))
        return apr_err_set(err, APR_E_FORMAT, "%s (%s) does not fit the u32 llama.cpp requires", key,
                           apr_kv_type_name(kv->type));
    return apr_model_set_kv_u32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int retype_f32(apr_model *m, const char *key, apr_err *err)
{
    const apr_kv *kv = apr_model_kv(m, key);
    if (!kv || kv->type == APR_KV_F32)
        return 0;
    float v;
    if (!apr_kv_get_f32(m, key, &v))
        return apr_err_set(err, APR_E_FORMAT, "%s (%s) is not a number", key, apr_kv_type_name(kv->type));
    return apr_model_set_kv_f32(m, key, v) ? apr_err_set(err, APR_E_NOMEM, "out of memory") : 0;
}

static int strict_gguf_types(apr_model *m, const char *arch, apr_err *err)
{
    char key[160];
    int rc;
    for (size_t i = 0; i < sizeof u32_keys / sizeof *u32_keys; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, u32_keys[i]);
        if ((rc = retype_u32(m, key, err)))
            return rc;
    }
    for (size_t i = 0; i < sizeof f32_keys / sizeof *f32_keys; i++) {
        snprintf(key, sizeof key, "%s.%s", arch, f32_keys[i]);
        if ((rc = retype_f32(m, key, err)))
            return rc;
    }
    for (size_t i = 0; i < sizeof tok_u32_keys / sizeof *tok_u32_keys; i++)
        if ((rc = retype_u32(m, tok_u32_keys[i], err)))
            return rc;
    return retype_u32(m, "general.alignment", err);
}

/* llama.cpp's LLAMA_FTYPE for an all-plain output: F32 0, F16 1, BF16 32. */
static int update_file_type(apr_model *m, const conv *cv, apr_err *err)
{
    bool changed = false, quantized = false;
    int dominant = -1;
    for (size_t i = 0; i < cv->n_plans; i++) {
        const plan *p = &cv->plans[i];
        for (uint32_t k = 0; k < p->n_parts; k++) {
            const apr_dtype_info *di = apr_dtype_get(p->parts[k].out_dt);
            changed |= p->parts[k].in_dt != p->parts[k].out_dt;
            quantized |= di && di->quantized;
        }
        if (p->ndim == 2 && !p->rowcat)
            dominant = dominant < 0 || dominant == (int)p->dtype ? (int)p->dtype : -2;
    }
    if (!changed || quantized)
        return 0;
    apr_model_remove_kv(m, "general.quantization_version");
    if (!apr_model_kv(m, "general.file_type"))
        return 0;
    int ft = dominant == APR_DT_F32 ? 0 : dominant == APR_DT_F16 ? 1 : dominant == APR_DT_BF16 ? 32 : -1;
    if (ft < 0)
        return apr_model_remove_kv(m, "general.file_type") == 0 ? 0 : apr_err_set(err, APR_E_NOMEM, "out of memory");
    return apr_model_set_kv_u32(m, "general.file_type", (uint32_t)ft) ? apr_err_set(err, APR_E_NOMEM, "out of memory")
                                                                       : 0;
}

static int copy_kvs(conv *cv, apr_model *out)
{
    const apr_model *m = cv->src;
    for (uint64_t i = 0; i < m->n_kvs; i++) {
        const char *k = m->kvs[i].key;
        if (strncmp(k, "apr.provenance.", 15) == 0 || strcmp(k, QK_ROW_ORDER_KEY) == 0)
            continue; /* the source record becomes the parent; the row order is re-stated below */
        if (apr_model_set_kv(out, &m->kvs[i]))
            return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
    }
    int rc;
    if (cv->to == APR_FMT_APR && cv->c->rope_type == APR_ROPE_NORM &&
        apr_model_set_kv_str(out, QK_ROW_ORDER_KEY, "interleaved"))
        return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
    if (cv->to == APR_FMT_GGUF && (rc = strict_gguf_types(out, cv->c->arch, cv->err)))
        return rc;
    return update_file_type(out, cv, cv->err);
}

/* ---------------------------------------------------------------- tensor order

 * A conversion back to the format the source itself came from (GGUF -> APR
 * -> GGUF, safetensors -> APR -> safetensors) restores that file's tensor
 * order: the source's provenance records, for each of its tensors, the
 * position of the tensors it was made from ("index"). Used only when every
 * output tensor is found there; otherwise the canonical order stays. */

typedef struct order_key {
    int64_t index;
    size_t plan;
} order_key;

static int cmp_order(const void *a, const void *b)
{
    const order_key *x = a, *y = b;
    if (x->index != y->index)
        return x->index < y->index ? -1 : 1;
    return x->plan < y->plan ? -1 : x->plan > y->plan;
}

static int restore_order(conv *cv)
{
    if (!cv->src->provenance_json || cv->n_plans < 2)
        return 0;
    int rc = 0;
    json_error_t je;
    unsigned long failures = apr_json_alloc_failures();
    json_t *root = json_loads(cv->src->provenance_json, 0, &je);
    /* out of memory is an error, never the canonical order instead: the
     * output would differ from a run that had the memory */
    if (!root && apr_json_alloc_failures() != failures)
        return apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
    const char *fmt = json_string_value(json_object_get(json_object_get(root, "source"), "format"));
    const json_t *tensors = json_object_get(root, "tensors");
    order_key *keys = NULL;
    plan *tmp = NULL;
    if (!fmt || strcmp(fmt, apr_format_name(cv->to)) != 0 || !json_is_object(tensors))
        goto done;
    json_t *where = json_object(); /* source-of-source name -> index */
    bool oom = !where;
    const char *name;
    json_t *rec;
    json_object_foreach((json_t *)tensors, name, rec) {
        const json_t *ss = json_object_get(rec, "sources");
        for (size_t i = 0; i < json_array_size(ss); i++) {
            const json_t *sn = json_object_get(json_array_get(ss, i), "name");
            const json_t *ix = json_object_get(json_array_get(ss, i), "index");
            if (json_is_string(sn) && json_is_integer(ix) && !oom)
                oom = json_object_set(where, json_string_value(sn), (json_t *)ix) != 0;
        }
    }
    keys = malloc(cv->n_plans * sizeof *keys);
    tmp = malloc(cv->n_plans * sizeof *tmp);
    if (oom || !keys || !tmp) {
        json_decref(where);
        rc = apr_err_set(cv->err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    bool all = true;
    for (size_t i = 0; all && i < cv->n_plans; i++) {
        const json_t *ix = json_object_get(where, cv->plans[i].name);
        all = ix != NULL;
        if (all)
            keys[i] = (order_key){json_integer_value(ix), i};
    }
    json_decref(where);
    if (!all)
        goto done;
    qsort(keys, cv->n_plans, sizeof *keys, cmp_order);
    memcpy(tmp, cv->plans, cv->n_plans * sizeof *tmp);
    for (size_t i = 0; i < cv->n_plans; i++)
        cv->plans[i] = tmp[keys[i].plan];
done:
    free(keys);
    free(tmp);
    json_decref(root);
    return rc;
}

/* ---------------------------------------------------------------- the conversion */

static int check_source(apr_model *src, apr_err *err)
{
    apr_err derr = {0};
    int drc = apr_model_derive(src, &derr);
    const char *arch = apr_kv_get_str(src, "general.architecture");
    if (!arch) {
        if (src->format == APR_FMT_SAFETENSORS)
            return apr_err_set(err, APR_E_FORMAT,
                               "%s: missing config.json (no architecture; a HF model needs config.json beside "
                               "its .safetensors)", src->path ? src->path : "source");
        return apr_err_set(err, APR_E_FORMAT, "%s: no general.architecture in the metadata (supported: %s)",
                           src->path ? src->path : "source", apr_arch_list());
    }
    if (!apr_arch_known(arch))
        return apr_err_set(err, APR_E_UNSUPPORTED, "unknown architecture '%s' (supported: %s)", arch, apr_arch_list());
    if (drc || !src->has_cfg)
        return apr_err_set(err, APR_E_FORMAT, "%s: %s", src->path ? src->path : "source",
                           drc ? derr.msg : "no usable architecture config");
    if (src->format == APR_FMT_SAFETENSORS && !src->has_tok)
        return apr_err_set(err, APR_E_FORMAT,
                           "%s: missing tokenizer (tokenizer.json or tokenizer.model beside the model)",
                           src->path ? src->path : "source");
    return 0;
}

static bool source_interleaved(const apr_model *m)
{
    const char *o = apr_kv_get_str(m, QK_ROW_ORDER_KEY);
    if (o)
        return strcmp(o, "rotate_half") != 0;
    return m->format != APR_FMT_SAFETENSORS;
}

static void conv_free(conv *cv)
{
    free(cv->plans);
    free(cv->layer);
    free(cv->extra);
}

/* Records every output tensor of m (tensors still without data are the
 * writer's to hash: apr_prov_set_digest). */
static int record_provenance(const conv *cv, const apr_model *src, const apr_model *m, const apr_convert_opts *o,
                             apr_prov **prov, apr_err *err)
{
    apr_prov *p = apr_prov_new("convert", o->command_line);
    if (!p)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    if (o->time_utc)
        apr_prov_set_time(p, o->time_utc);
    int rc = apr_prov_set_source(p, src, err);
    for (size_t i = 0; i < cv->n_plans && !rc; i++) {
        const plan *pl = &cv->plans[i];
        const apr_tensor *srcs[MAX_OUT_PARTS];
        uint32_t ns = 0;
        for (uint32_t k = 0; k < pl->n_parts; k++) {
            bool seen = false;
            for (uint32_t j = 0; j < ns; j++)
                seen |= srcs[j] == pl->parts[k].src;
            if (!seen)
                srcs[ns++] = pl->parts[k].src;
        }
        rc = apr_prov_add_tensor(p, &m->tensors[i], pl->transform, srcs, ns, err);
    }
    if (rc) {
        apr_prov_free(p);
        return rc;
    }
    *prov = p;
    return 0;
}

/* Gives every produced tensor of m an owned buffer (the in-memory view). */
static int materialize(apr_model *m, apr_conv_stream *cs, apr_convert_stats *st, apr_err *err)
{
    for (uint64_t i = 0; i < m->n_tensors; i++) {
        apr_tensor *t = &m->tensors[i];
        if (t->data || !t->nbytes)
            continue;
        if (t->nbytes > SIZE_MAX || !(t->owned = malloc((size_t)t->nbytes)))
            return apr_err_set(err, APR_E_NOMEM, "out of memory for tensor '%s' (%llu bytes)", t->name,
                               (unsigned long long)t->nbytes);
        t->data = t->owned;
        st->owned_bytes += t->nbytes;
        int rc = apr_conv_produce(cs, m, i, t->owned, err);
        if (rc)
            return rc;
    }
    return 0;
}

static int convert_build(apr_model *src, apr_format to, const apr_convert_opts *o, apr_model **out, apr_prov **prov,
                         apr_conv_stream **stream, apr_convert_stats *st, apr_err *err)
{
    apr_convert_opts dflt;
    apr_convert_stats st_local;
    if (!o) {
        apr_convert_opts_init(&dflt);
        o = &dflt;
    }
    if (!st)
        st = &st_local;
    memset(st, 0, sizeof *st);
    *out = NULL;
    if (prov)
        *prov = NULL;
    if (stream)
        *stream = NULL;
    if (to != APR_FMT_GGUF && to != APR_FMT_APR && to != APR_FMT_SAFETENSORS)
        return apr_err_set(err, APR_E_ARG, "unknown output format");
    if (o->outtype >= 0 && o->outtype != APR_DT_F32 && o->outtype != APR_DT_F16 && o->outtype != APR_DT_BF16)
        return apr_err_set(err, APR_E_ARG, "--outtype must be f32, f16 or bf16 (quantizing is `apr quantize`)");
    int rc = check_source(src, err);
    if (rc)
        return rc;
    double t0 = apr_now_s();
    conv cv = {.src = src, .from = src->format, .to = to, .o = o, .c = &src->cfg, .err = err};
    bool want_il = to != APR_FMT_SAFETENSORS;
    if (cv.c->rope_type == APR_ROPE_NORM && source_interleaved(src) != want_il)
        cv.perm = want_il ? 1 : -1;
    apr_model *m = NULL;
    apr_conv_stream *cs = NULL;
    if ((rc = classify_sources(&cv)) || (rc = validate_sources(&cv)) || (rc = build_plans(&cv)) ||
        (rc = restore_order(&cv)))
        goto fail;
    settle_views(&cv, st);
    m = apr_model_new(to);
    cs = calloc(1, sizeof *cs);
    if (!m || !cs) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < cv.n_plans; i++) {
        plan *pl = &cv.plans[i];
        if (pl->rowcat) {
            apr_tensor_part parts[MAX_OUT_PARTS];
            for (uint32_t k = 0; k < pl->n_parts; k++) {
                parts[k].dtype = pl->parts[k].out_dt;
                parts[k].rows = pl->parts[k].rows;
                parts[k].nbytes = pl->parts[k].rows * part_out_row_bytes(&pl->parts[k]);
            }
            rc = apr_model_add_rowcat_tensor(m, pl->name, pl->dims[1], parts, pl->n_parts, pl->data, false, err);
        } else {
            rc = apr_model_add_tensor(m, pl->name, pl->dtype, pl->ndim, pl->dims, pl->data, pl->nbytes, false, err);
        }
        if (rc)
            goto fail;
        st->bytes_out += pl->nbytes;
    }
    for (uint64_t i = 0; i < src->n_tensors; i++)
        st->bytes_in += src->tensors[i].nbytes;
    st->n_tensors = m->n_tensors;
    if ((rc = copy_kvs(&cv, m)))
        goto fail;
    m->alignment = to == APR_FMT_APR ? 64 : 0;
    {
        apr_err derr = {0};
        if (apr_model_derive(m, &derr) || !m->has_cfg) {
            rc = apr_err_set(err, APR_E_FORMAT, "the converted metadata does not derive a config: %s", derr.msg);
            goto fail;
        }
    }
    cs->plans = cv.plans;
    cs->n_plans = cv.n_plans;
    cs->src = src;
    cs->src_produce = o->src_produce;
    cs->src_user = o->src_produce_user;
    cv.plans = NULL;
    if (!stream && (rc = materialize(m, cs, st, err)))
        goto fail;
    /* (cv.plans moved to cs: recording reads them there) */
    cv.plans = cs->plans;
    if (prov)
        rc = record_provenance(&cv, src, m, o, prov, err);
    cv.plans = NULL;
    if (rc)
        goto fail;
    st->t_build = apr_now_s() - t0;
    conv_free(&cv);
    if (stream)
        *stream = cs;
    else
        apr_conv_stream_free(cs);
    *out = m;
    return 0;
fail:
    apr_conv_stream_free(cs);
    apr_model_free(m);
    conv_free(&cv);
    return rc ? rc : APR_E_ARG;
}

int apr_convert_model(apr_model *src, apr_format to, const apr_convert_opts *o, apr_model **out, apr_prov **prov,
                      apr_convert_stats *st, apr_err *err)
{
    return convert_build(src, to, o, out, prov, NULL, st, err);
}

int apr_convert_model_stream(apr_model *src, apr_format to, const apr_convert_opts *o, apr_model **out,
                             apr_prov **prov, apr_conv_stream **stream, apr_convert_stats *st, apr_err *err)
{
    return convert_build(src, to, o, out, prov, stream, st, err);
}

/* ---------------------------------------------------------------- files */

static bool is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* The directory a file lives in (malloc'd). */
static char *dir_of(const char *path)
{
    char *t = strdup(path);
    if (!t)
        return NULL;
    char *d = strdup(dirname(t));
    free(t);
    return d;
}

/* Refuses outputs that would overwrite (or be) one of the source's files. */
static int check_output_path(const apr_model *src, const char *in_path, const char *out_path, apr_format to,
                             apr_err *err)
{
    if (strcmp(in_path, out_path) == 0 || apr_same_file(in_path, out_path))
        return apr_err_set(err, APR_E_ARG, "output %s is the input; choose another path", out_path);
    for (uint32_t i = 0; i < src->n_maps; i++)
        if (apr_same_file(src->maps[i].path, out_path))
            return apr_err_set(err, APR_E_ARG, "output %s is one of the input's files", out_path);
    bool out_is_dir_target = to == APR_FMT_SAFETENSORS && !ends_with(out_path, ".safetensors");
    if (out_is_dir_target && is_dir(out_path)) {
        /* a directory output gets model*.safetensors, config.json, ...: it
         * must not be the directory the input files are in */
        for (uint32_t i = 0; i < src->n_maps; i++) {
            char *d = dir_of(src->maps[i].path);
            bool same = d && apr_same_file(d, out_path);
            free(d);
            if (same)
                return apr_err_set(err, APR_E_ARG, "output directory %s holds the input; choose another directory",
                                   out_path);
        }
        if (is_dir(in_path) && apr_same_file(in_path, out_path))
            return apr_err_set(err, APR_E_ARG, "output directory %s is the input directory", out_path);
    }
    return 0;
}

int apr_convert_file(const char *in_path, const char *out_path, const apr_convert_opts *o, apr_convert_stats *st,
                     apr_err *err)
{
    apr_convert_opts dflt;
    apr_convert_stats st_local;
    if (!o) {
        apr_convert_opts_init(&dflt);
        o = &dflt;
    }
    if (!st)
        st = &st_local;
    memset(st, 0, sizeof *st);
    if (strcmp(in_path, out_path) == 0 || apr_same_file(in_path, out_path))
        return apr_err_set(err, APR_E_ARG, "output %s is the input; choose another path", out_path);
    apr_format to = o->to != APR_FMT_UNKNOWN ? o->to : apr_format_from_path(out_path);
    if (to == APR_FMT_UNKNOWN)
        return apr_err_set(err, APR_E_ARG,
                           "%s: cannot tell the output format (use .gguf, .apr, .safetensors, a directory or --to)",
                           out_path);
    if ((o->split_max_bytes || o->split_max_tensors) && to != APR_FMT_GGUF)
        return apr_err_set(err, APR_E_ARG, "--split-max-size / --split-max-tensors make GGUF splits; %s is not GGUF",
                           out_path);
    double t0 = apr_now_s();
    apr_model *src = NULL, *m = NULL;
    apr_prov *prov = NULL;
    apr_conv_stream *cs = NULL;
    char *json = NULL;
    apr_open_opts oo = {.skip_footer_crc = false};
    int rc = apr_model_open(&src, in_path, &oo, err);
    if (rc)
        return rc;
    st->t_open = apr_now_s() - t0;
    if ((rc = check_output_path(src, in_path, out_path, to, err)))
        goto done;
    double t_open = st->t_open;
    rc = apr_convert_model_stream(src, to, o, &m, &prov, &cs, st, err);
    st->t_open = t_open;
    if (rc)
        goto done;
    /* One pass: hashing runs on background threads while the writer
     * streams the tensors (producing the transformed ones as it goes); the
     * writer seals the record into its metadata in place before renaming. */
    apr_write_opts wo = {.shard_max_bytes = o->shard_max_bytes, .progress = o->progress,
                         .produce = apr_conv_produce, .produce_user = cs, .prov = prov,
                         .split_max_bytes = o->split_max_bytes, .split_max_tensors = o->split_max_tensors};
    /* a split GGUF: the record lists every split (the later ones with the sha256 the writer computes) */
    if (to == APR_FMT_GGUF && ((rc = apr_gguf_check_split_outputs(m, out_path, &wo, src, err)) ||
                               (rc = apr_gguf_record_splits(prov, m, out_path, &wo, err))))
        goto done;
    if (to == APR_FMT_APR && (rc = apr_apr_check_shard_outputs(m, out_path, &wo, src, err)))
        goto done;
    apr_prov_hash_work(prov, &st->hashed_bytes, &st->largest_hash);
    if ((rc = apr_prov_start(prov, to, o->threads, &json, err)) || (rc = apr_prov_attach(m, json, to, err)))
        goto done;
    double t2 = apr_now_s();
    rc = apr_model_write(m, out_path, to, &wo, err);
    st->t_write = apr_now_s() - t2;
done:
    free(json);
    apr_prov_free(prov);
    apr_conv_stream_free(cs);
    apr_model_free(m);
    apr_model_free(src);
    return rc;
}
