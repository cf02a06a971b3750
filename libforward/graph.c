/* graph.c - resolve an apr_model's tensors into the apr_graph (graph.h):
 * GGUF names, HF names and APR's fused QKV; every shape checked against the
 * config; weights viewed in place, 1-D tensors copied to f32. */
#include "graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quant.h"

/* ---------------------------------------------------------------- names */

/* A tensor by role, under the family table's names (formats/core/family.c:
 * GGUF first, then HF/APR); nm gets the name for messages. */
#define FIND(m, role, layer, bias) apr_model_role_tensor((m), g->cfg.arch, (role), (layer), (bias), nm, sizeof nm)
/* llama3 rope scaling: a GGUF-only tensor (the HF reader derives it from
 * config.json under this name), not a family convention */
#define ROPE_FREQS "rope_freqs.weight"

/* ---------------------------------------------------------------- views */

static bool matmul_dtype_ok(apr_dtype t)
{
    switch (t) {
    case APR_DT_F32: case APR_DT_F16: case APR_DT_BF16:
    case APR_DT_Q4_0: case APR_DT_Q4_1: case APR_DT_Q5_0: case APR_DT_Q5_1: case APR_DT_Q8_0:
    case APR_DT_Q2_K: case APR_DT_Q3_K: case APR_DT_Q4_K: case APR_DT_Q5_K: case APR_DT_Q6_K:
        return true;
    default:
        return false;
    }
}

/* View a 2-D tensor as a matrix of exactly rows x cols. */
static int view_matrix(apr_wmat *w, const apr_tensor *t, uint64_t rows, uint64_t cols, apr_err *err)
{
    memset(w, 0, sizeof *w);
    w->name = t->name;
    if (t->ndim != 2 || t->dims[0] != rows || t->dims[1] != cols)
        return apr_err_set(err, APR_E_FORMAT,
                           "tensor %s: shape [%llu, %llu] (ndim %u) does not match the config's [%llu, %llu]",
                           t->name, (unsigned long long)(t->ndim > 0 ? t->dims[0] : 0),
                           (unsigned long long)(t->ndim > 1 ? t->dims[1] : 0), t->ndim,
                           (unsigned long long)rows, (unsigned long long)cols);
    if (!t->data || !rows || !cols)
        return apr_err_set(err, APR_E_FORMAT, "tensor %s is empty", t->name);
    w->rows = rows;
    w->cols = cols;
    if (t->dtype == APR_DT_ROWCAT) {
        if (t->n_parts < 1 || t->n_parts > APR_MAX_PARTS)
            return apr_err_set(err, APR_E_FORMAT, "tensor %s: %u row parts", t->name, t->n_parts);
        uint64_t r = 0, off = 0;
        for (uint32_t i = 0; i < t->n_parts; i++) {
            const apr_tensor_part *p = &t->parts[i];
            const uint64_t rb = apr_dtype_row_bytes(p->dtype, cols);
            if (!matmul_dtype_ok(p->dtype) || !rb)
                return apr_err_set(err, APR_E_UNSUPPORTED, "tensor %s: part %u has dtype %s (cols %llu), not usable for a matmul",
                                   t->name, i, apr_dtype_name(p->dtype), (unsigned long long)cols);
            if (p->rows > rows - r || p->rows * rb != p->nbytes || p->nbytes > t->nbytes - off)
                return apr_err_set(err, APR_E_FORMAT, "tensor %s: part %u (%llu rows, %llu bytes) is inconsistent",
                                   t->name, i, (unsigned long long)p->rows, (unsigned long long)p->nbytes);
            w->seg[i] = (apr_wseg){t->data + off, p->dtype, p->rows, rb};
            r += p->rows;
            off += p->nbytes;
        }
        if (r != rows || off != t->nbytes)
            return apr_err_set(err, APR_E_FORMAT, "tensor %s: parts cover %llu of %llu rows", t->name,
                               (unsigned long long)r, (unsigned long long)rows);
        w->n_seg = t->n_parts;
        return 0;
    }
    const uint64_t rb = apr_dtype_row_bytes(t->dtype, cols);
    if (!matmul_dtype_ok(t->dtype) || !rb)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor %s: dtype %s with %llu columns is not usable for a matmul",
                           t->name, apr_dtype_name(t->dtype), (unsigned long long)cols);
    if (rb > t->nbytes / rows || rb * rows != t->nbytes)
        return apr_err_set(err, APR_E_FORMAT, "tensor %s: %llu bytes, expected %llu x %llu", t->name,
                           (unsigned long long)t->nbytes, (unsigned long long)rows, (unsigned long long)rb);
    w->n_seg = 1;
    w->seg[0] = (apr_wseg){t->data, t->dtype, rows, rb};
    return 0;
}

/* Rows [r0, r0 + n) of a matrix (segments cut accordingly). */
static void slice_rows(apr_wmat *dst, const apr_wmat *src, uint64_t r0, uint64_t n)
{
    memset(dst, 0, sizeof *dst);
    dst->name = src->name;
    dst->cols = src->cols;
    dst->rows = n;
    uint64_t base = 0;
    for (uint32_t s = 0; s < src->n_seg && n; s++) {
        const apr_wseg *g = &src->seg[s];
        const uint64_t lo = base, hi = base + g->rows;
        base = hi;
        if (r0 >= hi)
            continue;
        const uint64_t start = r0 - lo, take = (g->rows - start < n) ? g->rows - start : n;
        dst->seg[dst->n_seg++] = (apr_wseg){g->data + start * g->row_bytes, g->dtype, take, g->row_bytes};
        r0 += take;
        n -= take;
    }
}

/* A 1-D tensor of n elements as an owned f32 array. */
static int load_vec(float **out, const apr_tensor *t, uint64_t n, apr_err *err)
{
    *out = NULL;
    uint64_t cnt = 0;
    if (!apr_dims_count(t->ndim, t->dims, &cnt) || cnt != n || (t->ndim != 1 && !(t->ndim == 2 && t->dims[0] == 1)))
        return apr_err_set(err, APR_E_FORMAT, "tensor %s: shape does not match the config's [%llu]", t->name,
                           (unsigned long long)n);
    if (t->dtype != APR_DT_F32 && t->dtype != APR_DT_F16 && t->dtype != APR_DT_BF16)
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor %s: 1-D tensor of dtype %s (F32, F16 or BF16 expected)",
                           t->name, apr_dtype_name(t->dtype));
    if (!t->data || t->nbytes != apr_dtype_row_bytes(t->dtype, n))
        return apr_err_set(err, APR_E_FORMAT, "tensor %s: %llu bytes for %llu elements", t->name,
                           (unsigned long long)t->nbytes, (unsigned long long)n);
    float *v = malloc((size_t)n * sizeof *v);
    if (!v)
        return apr_err_set(err, APR_E_NOMEM, "out of memory (tensor %s)", t->name);
    if (apr_to_f32_row(t->dtype, t->data, v, (int64_t)n) != 0) {
        free(v);
        return apr_err_set(err, APR_E_UNSUPPORTED, "tensor %s: cannot convert %s to f32", t->name,
                           apr_dtype_name(t->dtype));
    }
    *out = v;
    return 0;
}

/* An RMSNorm weight: the stored vector, plus the offset a safetensors source
 * of a family with hf_norm_offset leaves out (HF Gemma computes 1 + w in
 * f32, as here). */
static int load_norm(float **out, const apr_tensor *t, uint64_t n, const apr_graph *g, apr_err *err)
{
    int rc = load_vec(out, t, n, err);
    const float off = g->cfg.hf_norm_offset;
    if (rc || off == 0.0f || g->model->format != APR_FMT_SAFETENSORS)
        return rc;
    for (uint64_t i = 0; i < n; i++)
        (*out)[i] = off + (*out)[i];
    return 0;
}

/* Reorder a rotate-half bias of n_heads heads into logical (interleaved) order. */
static int permute_bias(float *b, uint32_t n_heads, uint32_t hd)
{
    float *tmp = malloc((size_t)hd * sizeof *tmp);
    if (!tmp)
        return APR_E_NOMEM;
    apr_wmat pm = {.perm_hd = hd};
    for (uint32_t h = 0; h < n_heads; h++) {
        float *head = b + (size_t)h * hd;
        for (uint32_t r = 0; r < hd; r++)
            tmp[r] = head[apr_wmat_phys_row(&pm, r)];
        memcpy(head, tmp, (size_t)hd * sizeof *tmp);
    }
    free(tmp);
    return 0;
}

/* ---------------------------------------------------------------- build */

static bool source_rotate_half(const apr_model *m)
{
    const char *o = apr_kv_get_str(m, "apr.qk_row_order");
    if (o)
        return strcmp(o, "rotate_half") == 0;
    return m->format == APR_FMT_SAFETENSORS;
}

#define NEED(var, role, layer)                                                                  \
    do {                                                                                        \
        var = FIND(m, (role), (layer), false);                                                  \
        if (!var) {                                                                             \
            rc = apr_err_set(err, APR_E_FORMAT, "tensor %s (or its HF name) is missing", nm);   \
            goto fail;                                                                          \
        }                                                                                       \
    } while (0)

static int build_layer(apr_graph *g, const apr_model *m, uint32_t il, apr_err *err)
{
    const apr_arch_config *c = &g->cfg;
    apr_layer *L = &g->layers[il];
    const uint64_t hd = c->head_dim, qr = (uint64_t)c->n_heads * hd, kr = (uint64_t)c->n_kv_heads * hd;
    char nm[160];
    const apr_tensor *t;
    int rc;

    NEED(t, APR_ROLE_ATTN_NORM, il);
    if ((rc = load_norm(&L->attn_norm, t, c->hidden, g, err)))
        goto fail;
    NEED(t, APR_ROLE_FFN_NORM, il);
    if ((rc = load_norm(&L->ffn_norm, t, c->hidden, g, err)))
        goto fail;
    if (c->post_norms) {
        NEED(t, APR_ROLE_POST_ATTN_NORM, il);
        if ((rc = load_norm(&L->post_attn_norm, t, c->hidden, g, err)))
            goto fail;
        NEED(t, APR_ROLE_POST_FFN_NORM, il);
        if ((rc = load_norm(&L->post_ffn_norm, t, c->hidden, g, err)))
            goto fail;
    }
    L->sliding = c->sliding_window &&
                 (c->swa_pattern == 0 || il % c->swa_pattern < c->swa_pattern - 1);

    const apr_tensor *fused = FIND(m, APR_ROLE_ATTN_QKV, il, false);
    if (fused) {
        L->qkv_fused = true;
        if ((rc = view_matrix(&L->qkv, fused, qr + 2 * kr, c->hidden, err)))
            goto fail;
        slice_rows(&L->q, &L->qkv, 0, qr);
        slice_rows(&L->k, &L->qkv, qr, kr);
        slice_rows(&L->v, &L->qkv, qr + kr, kr);
        const apr_tensor *b = FIND(m, APR_ROLE_ATTN_QKV, il, true);
        if (b) {
            float *all;
            if ((rc = load_vec(&all, b, qr + 2 * kr, err)))
                goto fail;
            L->bq = malloc((size_t)qr * sizeof(float));
            L->bk = malloc((size_t)kr * sizeof(float));
            L->bv = malloc((size_t)kr * sizeof(float));
            if (!L->bq || !L->bk || !L->bv) {
                free(all);
                rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
                goto fail;
            }
            memcpy(L->bq, all, (size_t)qr * sizeof(float));
            memcpy(L->bk, all + qr, (size_t)kr * sizeof(float));
            memcpy(L->bv, all + qr + kr, (size_t)kr * sizeof(float));
            free(all);
        }
    } else {
        NEED(t, APR_ROLE_ATTN_Q, il);
        if ((rc = view_matrix(&L->q, t, qr, c->hidden, err)))
            goto fail;
        NEED(t, APR_ROLE_ATTN_K, il);
        if ((rc = view_matrix(&L->k, t, kr, c->hidden, err)))
            goto fail;
        NEED(t, APR_ROLE_ATTN_V, il);
        if ((rc = view_matrix(&L->v, t, kr, c->hidden, err)))
            goto fail;
        const apr_role br[3] = {APR_ROLE_ATTN_Q, APR_ROLE_ATTN_K, APR_ROLE_ATTN_V};
        float **bd[3] = {&L->bq, &L->bk, &L->bv};
        const uint64_t bn[3] = {qr, kr, kr};
        for (int i = 0; i < 3; i++) {
            const apr_tensor *b = FIND(m, br[i], il, true);
            if (b && (rc = load_vec(bd[i], b, bn[i], err)))
                goto fail;
        }
    }
    if (c->qkv_bias && (!L->bq || !L->bk || !L->bv)) {
        rc = apr_err_set(err, APR_E_FORMAT, "layer %u: the config says Q/K/V biases but the model lacks them", il);
        goto fail;
    }
    if (g->qk_rotate_half_rows) {
        L->q.perm_hd = L->k.perm_hd = c->head_dim;
        if ((L->bq && permute_bias(L->bq, c->n_heads, c->head_dim)) ||
            (L->bk && permute_bias(L->bk, c->n_kv_heads, c->head_dim))) {
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    if (c->qk_norm) {
        NEED(t, APR_ROLE_ATTN_Q_NORM, il);
        if ((rc = load_norm(&L->q_norm, t, hd, g, err)))
            goto fail;
        NEED(t, APR_ROLE_ATTN_K_NORM, il);
        if ((rc = load_norm(&L->k_norm, t, hd, g, err)))
            goto fail;
        g->cpu_only = "per-head Q/K norms";
    }
    NEED(t, APR_ROLE_ATTN_OUT, il);
    if ((rc = view_matrix(&L->o, t, c->hidden, qr, err)))
        goto fail;
    if (c->fused_qkv_gate_up) {
        apr_wmat gu;
        NEED(t, APR_ROLE_FFN_GATE_UP, il);
        if ((rc = view_matrix(&gu, t, 2ull * c->ffn, c->hidden, err)))
            goto fail;
        slice_rows(&L->gate, &gu, 0, c->ffn);
        slice_rows(&L->up, &gu, c->ffn, c->ffn);
    } else {
        NEED(t, APR_ROLE_FFN_GATE, il);
        if ((rc = view_matrix(&L->gate, t, c->ffn, c->hidden, err)))
            goto fail;
        NEED(t, APR_ROLE_FFN_UP, il);
        if ((rc = view_matrix(&L->up, t, c->ffn, c->hidden, err)))
            goto fail;
    }
    NEED(t, APR_ROLE_FFN_DOWN, il);
    if ((rc = view_matrix(&L->down, t, c->hidden, c->ffn, err)))
        goto fail;
    return 0;
fail:
    return rc;
}

int apr_graph_build(apr_graph *g, const apr_model *m, apr_err *err)
{
    memset(g, 0, sizeof *g);
    if (!m || !m->has_cfg)
        return apr_err_set(err, APR_E_ARG, "the model has no architecture config");
    g->model = m;
    g->cfg = m->cfg;
    apr_arch_config *c = &g->cfg;
    char nm[160];
    const apr_tensor *t;
    int rc;

    if (!apr_arch_known(c->arch)) {
        rc = apr_err_set(err, APR_E_UNSUPPORTED, "architecture '%s' is not supported (%s)", c->arch, apr_arch_list());
        goto fail;
    }
    if (c->unsupported[0]) {
        rc = apr_err_set(err, APR_E_UNSUPPORTED, "%s: %s", c->arch, c->unsupported);
        goto fail;
    }
    if (!(c->rope_freq_scale > 0.0f))
        c->rope_freq_scale = 1.0f; /* a config not made by apr_model_derive */
    if (c->rope_freq_scale != 1.0f)
        g->cpu_only = "linear rope scaling";
    if (c->rope_yarn)
        g->cpu_only = "yarn rope scaling";
    if (c->sliding_window)
        g->cpu_only = "sliding-window attention";
    if (c->ffn_act != APR_ACT_SILU || c->embed_scale || c->post_norms || c->attn_softcap > 0.0f ||
        c->final_softcap > 0.0f || c->attn_scale > 0.0f || c->rope_theta_swa > 0.0f)
        g->cpu_only = "the Gemma forward pass (GELU, scaled embeddings, post norms, soft-capping)";
    /* Bound every dimension so that products below cannot overflow and a
     * lying header cannot make us allocate absurd buffers. */
    if (!c->n_layers || c->n_layers > 4096 || !c->hidden || c->hidden > (1u << 20) || !c->n_heads ||
        c->n_heads > 4096 || !c->n_kv_heads || c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads ||
        !c->ffn || c->ffn > (1u << 22) || c->vocab > (1u << 24) || c->head_dim > 4096) {
        rc = apr_err_set(err, APR_E_FORMAT,
                         "implausible config: layers %u hidden %u heads %u kv_heads %u head_dim %u ffn %u vocab %u",
                         c->n_layers, c->hidden, c->n_heads, c->n_kv_heads, c->head_dim, c->ffn, c->vocab);
        goto fail;
    }
    if (!(c->rms_eps > 0.0f) || !(c->rope_theta > 0.0f)) {
        rc = apr_err_set(err, APR_E_FORMAT, "config: rms eps %g and rope theta %g must be positive",
                         (double)c->rms_eps, (double)c->rope_theta);
        goto fail;
    }
    /* head_dim: the recorded one; when the config has none, the Q rows say it. */
    if (!c->head_dim) {
        const apr_tensor *q = FIND(m, APR_ROLE_ATTN_Q, 0, false);
        const apr_tensor *f = FIND(m, APR_ROLE_ATTN_QKV, 0, false);
        uint64_t hd = 0;
        if (q && q->ndim == 2 && q->dims[0] % c->n_heads == 0)
            hd = q->dims[0] / c->n_heads;
        else if (f && f->ndim == 2 && f->dims[0] % (c->n_heads + 2ull * c->n_kv_heads) == 0)
            hd = f->dims[0] / (c->n_heads + 2ull * c->n_kv_heads);
        if (!hd || hd > 4096) {
            rc = apr_err_set(err, APR_E_FORMAT, "config has no head_dim and the Q weight does not determine it");
            goto fail;
        }
        c->head_dim = (uint32_t)hd;
    }
    if (c->head_dim % 2) {
        rc = apr_err_set(err, APR_E_FORMAT, "head_dim %u is odd (rope needs pairs)", c->head_dim);
        goto fail;
    }
    g->rope = c->rope_type == APR_ROPE_NEOX ? APR_ROPE_NEOX : APR_ROPE_NORM;
    g->qk_rotate_half_rows = g->rope == APR_ROPE_NORM && source_rotate_half(m);

    snprintf(nm, sizeof nm, "%s", ROPE_FREQS);
    t = apr_model_tensor(m, ROPE_FREQS);
    if (t) {
        if ((rc = load_vec(&g->rope_freqs, t, c->head_dim / 2, err)))
            goto fail;
        for (uint32_t i = 0; i < c->head_dim / 2; i++)
            if (!(g->rope_freqs[i] > 0.0f) || g->rope_freqs[i] > 1e30f) {
                rc = apr_err_set(err, APR_E_FORMAT, "tensor %s: entry %u is %g (must be > 0)", nm, i,
                                 (double)g->rope_freqs[i]);
                goto fail;
            }
        g->cpu_only = "rope frequency factors (rope_freqs.weight)";
    }

    NEED(t, APR_ROLE_TOKEN_EMBD, 0);
    if (!c->vocab && t->ndim == 2 && t->dims[0] <= (1u << 24))
        c->vocab = (uint32_t)t->dims[0];
    if ((rc = view_matrix(&g->token_embd, t, c->vocab, c->hidden, err)))
        goto fail;
    NEED(t, APR_ROLE_OUTPUT_NORM, 0);
    if ((rc = load_norm(&g->output_norm, t, c->hidden, g, err)))
        goto fail;
    t = FIND(m, APR_ROLE_OUTPUT, 0, false);
    if (t) {
        if ((rc = view_matrix(&g->output, t, c->vocab, c->hidden, err)))
            goto fail;
    } else {
        g->output = g->token_embd;
        g->output_tied = true;
    }

    g->layers = calloc(c->n_layers, sizeof *g->layers);
    if (!g->layers) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t il = 0; il < c->n_layers; il++)
        if ((rc = build_layer(g, m, il, err)))
            goto fail;
    return 0;
fail:
    apr_graph_free(g);
    return rc;
}

void apr_graph_free(apr_graph *g)
{
    if (g->layers) {
        for (uint32_t il = 0; il < g->cfg.n_layers; il++) {
            apr_layer *L = &g->layers[il];
            free(L->attn_norm);
            free(L->ffn_norm);
            free(L->bq);
            free(L->bk);
            free(L->bv);
            free(L->q_norm);
            free(L->k_norm);
            free(L->post_attn_norm);
            free(L->post_ffn_norm);
        }
        free(g->layers);
    }
    free(g->output_norm);
    free(g->rope_freqs);
    memset(g, 0, sizeof *g);
}
