/* weights.c - weight-level parity: every weight of DST against SRC's, row by
 * row, without the forward pass.
 *
 * Both models are bound with libforward's graph (graph.h), so a weight's rows
 * come in the LOGICAL order whatever the file layout (fused APR QKV, split
 * GGUF Q/K/V, HF rotate-half Q/K rows, ROWCAT parts of several dtypes). Each
 * row is dequantized from both files into two cols-float buffers (nothing
 * larger than a row is ever materialized per thread), and per row we keep
 * ||DST - SRC||^2 and ||SRC||^2 in double plus whether the floats are
 * bit-identical. Rows are spread over threads; the per-row numbers are stored
 * and reduced in row order afterwards, so the results do not depend on the
 * thread count.
 *
 * Verdict inputs: a lossless pair needs every float identical; a quantized
 * pair needs each row's relative error under the limit of that row's DST dtype
 * (apr_weights_row_limit, measured: docs/verify.md). A row whose SRC norm is
 * 0 reports its absolute error and is judged against the limit times the
 * tensor's RMS row norm (quantizing a zero row gives exactly zero).
 */
#define _POSIX_C_SOURCE 200809L
#include "parity.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h" /* and graph.h, the model graph */
#include "quant.h"
#include "apr_util.h"

/* ---------------------------------------------------------------- limits */

/* Worst-row relative error limits per DST dtype. The worst rows measured
 * (F32 sources: synthetic llama/qwen2 models at hidden 256 and 512, and the
 * trained stories260K fixture, quantized by `apr quantize`) are in
 * docs/verify.md; each limit is about 2.3x the worst measurement and at most
 * 0.45, under half of what a zeroed row (1.0) or a row holding another row's
 * values (~1.4) gives. F32 rows must be exact: only copies and exact widenings
 * (F16/BF16/dequantized values to F32) write F32 into a quantized DST. */
double apr_weights_row_limit(apr_dtype t)
{
    switch (t) {
    case APR_DT_F32: return 1e-6;
    case APR_DT_F16: return 0.002;  /* worst 0.00043 (f16 rounding: <= 2^-11 per value) */
    case APR_DT_BF16: return 0.01;  /* worst 0.0035 (<= 2^-8) */
    case APR_DT_Q8_0: return 0.04;  /* worst 0.0148 */
    case APR_DT_Q6_K: return 0.1;   /* worst 0.042 */
    case APR_DT_Q5_K: return 0.15;  /* worst 0.064 */
    case APR_DT_Q5_1: return 0.15;  /* worst 0.068 */
    case APR_DT_Q5_0: return 0.25;  /* worst 0.109 */
    case APR_DT_Q4_K: return 0.3;   /* worst 0.129 */
    case APR_DT_Q4_1: return 0.35;  /* worst 0.151 */
    case APR_DT_Q4_0: return 0.45;  /* worst 0.195 */
    default: return -1.0;
    }
}

/* Quantized with an importance matrix, a row is fitted to the columns the
 * matrix weights most, and the columns it calls unimportant may be rounded
 * coarsely or clipped: unweighted row errors of 0.5-0.75 were measured on
 * legitimate Q4_0..Q6_K rows (importance spread over 4-8 orders of
 * magnitude; docs/verify.md), above the plain limits. Such rows are judged
 * for gross damage only: a relative error over IMATRIX_ROW_LIMIT (a row
 * holding another row's values gives ~1.4, a sign flip 2) or a row zeroed
 * outright. Q8_0 and the float types ignore the matrix and keep their limits. */
#define IMATRIX_ROW_LIMIT 1.2

static double row_limit(apr_dtype t, bool imatrix)
{
    const double lim = apr_weights_row_limit(t);
    const apr_dtype_info *di = apr_dtype_get(t);
    if (imatrix && lim > 0 && di && di->quantized && t != APR_DT_Q8_0)
        return IMATRIX_ROW_LIMIT;
    return lim;
}

/* ---------------------------------------------------------------- names of 1-D tensors */

/* The graph keeps norms and biases as f32 copies; their names and dtypes in
 * the file come from the family table (formats/core/family.c): the role's
 * GGUF or HF name, and for a Q/K/V bias the fused QKV bias (APR, Phi-3).
 * name gets the tensor's name, or its GGUF name when it is absent. */
static const apr_tensor *find_vec(const apr_model *m, apr_role role, bool bias, uint32_t layer, char *name,
                                  size_t cap)
{
    const char *arch = m->cfg.arch;
    const apr_tensor *t = apr_model_role_tensor(m, arch, role, layer, bias, name, cap);
    if (!t && bias && (role == APR_ROLE_ATTN_Q || role == APR_ROLE_ATTN_K || role == APR_ROLE_ATTN_V))
        t = apr_model_role_tensor(m, arch, APR_ROLE_ATTN_QKV, layer, true, NULL, 0);
    if (t)
        snprintf(name, cap, "%s", t->name);
    return t;
}

/* ---------------------------------------------------------------- one comparison unit */

/* A weight of SRC and DST seen the same way: a matrix (wmat) or a vector of
 * n floats (one row). */
typedef struct wunit {
    const char *role;
    int32_t layer;
    const apr_wmat *ms, *md;      /* matrices, or NULL */
    const float *vs, *vd;         /* vectors, or NULL */
    uint64_t n;                   /* vector length */
    apr_dtype vdt;                /* DST dtype of a vector */
    const char *vname;            /* DST name of a vector */
    uint64_t file_row0;           /* first row of this role in DST's tensor (fused QKV) */
    bool imatrix;                 /* DST was quantized with an importance matrix */
} wunit;

typedef struct rowjob {
    const apr_wmat *s, *d;
    uint64_t r0, r1;
    double *err2, *src2;
    uint8_t *same;
    int rc;
} rowjob;

/* apr_threads_run's item k: jobs[k]'s rows. */
static void row_worker(void *jobs, int k)
{
    rowjob *j = (rowjob *)jobs + k;
    const uint64_t cols = j->s->cols;
    float *a = malloc((size_t)cols * sizeof *a), *b = malloc((size_t)cols * sizeof *b);
    if (!a || !b) {
        j->rc = APR_E_NOMEM;
        goto out;
    }
    for (uint64_t r = j->r0; r < j->r1; r++) {
        apr_dtype ts, td;
        const uint8_t *ps = apr_wmat_row(j->s, apr_wmat_phys_row(j->s, r), &ts);
        const uint8_t *pd = apr_wmat_row(j->d, apr_wmat_phys_row(j->d, r), &td);
        if (apr_to_f32_row(ts, ps, a, (int64_t)cols) || apr_to_f32_row(td, pd, b, (int64_t)cols)) {
            j->rc = APR_E_UNSUPPORTED;
            goto out;
        }
        double e2 = 0, s2 = 0;
        for (uint64_t i = 0; i < cols; i++) {
            const double d = (double)b[i] - (double)a[i];
            e2 += d * d;
            s2 += (double)a[i] * (double)a[i];
        }
        j->err2[r] = e2;
        j->src2[r] = s2;
        j->same[r] = memcmp(a, b, (size_t)cols * sizeof *a) == 0;
    }
out:
    free(a);
    free(b);
}

/* Per-row numbers of a matrix pair, threaded over rows when it is large. */
static int rows_compare(const apr_wmat *s, const apr_wmat *d, int n_threads, double *err2, double *src2,
                        uint8_t *same)
{
    const uint64_t rows = s->rows;
    /* below ~64k elements a thread costs more than it saves */
    const int nt = rows * s->cols < (1u << 16) ? 1 : apr_threads_for(n_threads, rows);
    rowjob *jobs = calloc((size_t)nt, sizeof *jobs);
    if (!jobs)
        return APR_E_NOMEM;
    for (int i = 0; i < nt; i++)
        jobs[i] = (rowjob){s, d, rows * (uint64_t)i / (uint64_t)nt, rows * (uint64_t)(i + 1) / (uint64_t)nt,
                           err2, src2, same, 0};
    apr_threads_run(nt, row_worker, jobs);
    int rc = 0;
    for (int i = 0; i < nt && !rc; i++)
        rc = jobs[i].rc;
    free(jobs);
    return rc;
}

/* The dtype label of a DST matrix: one name, or the parts' names joined by '+'. */
static void wmat_dtype_label(const apr_wmat *m, char *buf, size_t cap)
{
    buf[0] = 0;
    for (uint32_t s = 0; s < m->n_seg; s++) {
        const char *n = apr_dtype_name(m->seg[s].dtype);
        if (strstr(buf, n))
            continue;
        const size_t l = strlen(buf);
        snprintf(buf + l, cap - l, "%s%s", l ? "+" : "", n);
    }
}

/* Reduce the per-row numbers of one unit into its tensor entry. */
static void finish_unit(const wunit *u, const double *err2, const double *src2, const uint8_t *same,
                        uint64_t rows, apr_weight_tensor *t)
{
    double se = 0, ss = 0;
    for (uint64_t r = 0; r < rows; r++) {
        se += err2[r];
        ss += src2[r];
    }
    const double rms_row = sqrt(ss / (double)rows); /* RMS of SRC row norms */
    t->rel_rmse = ss > 0 ? sqrt(se / ss) : sqrt(se / (double)(rows * t->cols));
    t->rmse_absolute = !(ss > 0);
    t->bit_identical = true;
    t->first_diff_row = -1;
    t->worst_row = -1;
    t->worst_score = -1;
    t->worst_limit = NAN;
    for (uint64_t r = 0; r < rows; r++) {
        if (!same[r] && t->bit_identical) {
            t->bit_identical = false;
            t->first_diff_row = (int64_t)r;
        }
        apr_dtype dt = u->vdt;
        if (u->md)
            (void)apr_wmat_row(u->md, apr_wmat_phys_row(u->md, r), &dt);
        const double lim = row_limit(dt, u->imatrix);
        const bool abs_err = !(src2[r] > 0);
        const double e = abs_err ? sqrt(err2[r]) : sqrt(err2[r] / src2[r]);
        /* DST row all zero: its squared error is SRC's squared norm exactly */
        const bool zeroed = u->imatrix && lim == IMATRIX_ROW_LIMIT && src2[r] > 0 && err2[r] == src2[r];
        /* a zero SRC row is judged against the tensor's typical row norm */
        const double scale = abs_err ? (rms_row > 0 ? rms_row : 1.0) : 1.0;
        double score;
        if (lim > 0) {
            score = zeroed ? INFINITY : e / (lim * scale);
            if (!(score == score))
                score = INFINITY; /* NaN in DST or SRC: as bad as it gets */
            if (score > 1.0)
                t->n_rows_over++;
        } else {
            score = -1; /* no limit for this dtype: reported, not judged */
            t->unjudged = true;
        }
        const bool better = t->worst_row < 0 || score > t->worst_score ||
                            (score == t->worst_score && lim <= 0 && e > t->worst_row_err);
        if (better) {
            t->worst_row = (int64_t)r;
            t->worst_row_err = e == e ? e : INFINITY;
            t->worst_row_abs = abs_err;
            t->worst_zeroed = zeroed;
            t->worst_score = score;
            t->worst_dtype = dt;
            t->worst_limit = lim > 0 ? lim : NAN;
        }
    }
    t->worst_file_row = u->md ? u->file_row0 + apr_wmat_phys_row(u->md, (uint64_t)t->worst_row) : 0;
    t->first_diff_file_row =
        t->first_diff_row < 0 ? -1
        : u->md               ? (int64_t)(u->file_row0 + apr_wmat_phys_row(u->md, (uint64_t)t->first_diff_row))
                              : 0;
}

static int compare_unit(const wunit *u, int n_threads, apr_weight_tensor *t)
{
    memset(t, 0, sizeof *t);
    t->layer = u->layer;
    snprintf(t->role, sizeof t->role, "%s", u->role);
    uint64_t rows;
    if (u->md) {
        snprintf(t->name, sizeof t->name, "%s", u->md->name ? u->md->name : "?");
        wmat_dtype_label(u->md, t->dtype, sizeof t->dtype);
        wmat_dtype_label(u->ms, t->src_dtype, sizeof t->src_dtype);
        rows = u->md->rows;
        t->cols = u->md->cols;
    } else {
        snprintf(t->name, sizeof t->name, "%s", u->vname);
        snprintf(t->dtype, sizeof t->dtype, "%s", apr_dtype_name(u->vdt));
        /* the graph holds vectors as f32 copies: their file dtype never reaches a kernel */
        snprintf(t->src_dtype, sizeof t->src_dtype, "%s", t->dtype);
        rows = 1;
        t->cols = u->n;
    }
    t->rows = rows;
    double *err2 = malloc((size_t)rows * sizeof *err2), *src2 = malloc((size_t)rows * sizeof *src2);
    uint8_t *same = malloc((size_t)rows);
    int rc = 0;
    if (!err2 || !src2 || !same) {
        rc = APR_E_NOMEM;
        goto out;
    }
    if (u->md) {
        rc = rows_compare(u->ms, u->md, n_threads, err2, src2, same);
    } else {
        double e2 = 0, s2 = 0;
        for (uint64_t i = 0; i < u->n; i++) {
            const double d = (double)u->vd[i] - (double)u->vs[i];
            e2 += d * d;
            s2 += (double)u->vs[i] * (double)u->vs[i];
        }
        err2[0] = e2;
        src2[0] = s2;
        same[0] = memcmp(u->vs, u->vd, (size_t)u->n * sizeof(float)) == 0;
    }
    if (!rc)
        finish_unit(u, err2, src2, same, rows, t);
out:
    free(err2);
    free(src2);
    free(same);
    return rc;
}

/* ---------------------------------------------------------------- the pair */

static int check_shapes(const apr_graph *a, const apr_graph *b, apr_err *err)
{
    const apr_arch_config *x = &a->cfg, *y = &b->cfg;
    if (strcmp(x->arch, y->arch) || x->n_layers != y->n_layers || x->hidden != y->hidden ||
        x->n_heads != y->n_heads || x->n_kv_heads != y->n_kv_heads || x->head_dim != y->head_dim ||
        x->ffn != y->ffn || x->vocab != y->vocab || a->rope != b->rope)
        return apr_err_set(err, APR_E_MISMATCH,
                           "the models' shapes differ: SRC %s layers %u hidden %u heads %u/%u head_dim %u "
                           "ffn %u vocab %u rope %d; DST %s layers %u hidden %u heads %u/%u head_dim %u ffn "
                           "%u vocab %u rope %d",
                           x->arch, x->n_layers, x->hidden, x->n_heads, x->n_kv_heads, x->head_dim, x->ffn,
                           x->vocab, (int)a->rope, y->arch, y->n_layers, y->hidden, y->n_heads,
                           y->n_kv_heads, y->head_dim, y->ffn, y->vocab, (int)b->rope);
    for (uint32_t l = 0; l < x->n_layers; l++) {
        const apr_layer *p = &a->layers[l], *q = &b->layers[l];
        if (!p->bq != !q->bq || !p->bk != !q->bk || !p->bv != !q->bv)
            return apr_err_set(err, APR_E_MISMATCH, "layer %u: Q/K/V biases in only one of the models", l);
    }
    return 0;
}

/* Append one unit's entry. */
static int add_unit(apr_weights_cmp *w, const wunit *u, int n_threads, uint32_t cap, apr_err *err)
{
    if (w->n_tensors >= cap)
        return apr_err_set(err, APR_E_NOMEM, "weights: too many tensors");
    int rc = compare_unit(u, n_threads, &w->t[w->n_tensors]);
    if (rc == APR_E_UNSUPPORTED)
        return apr_err_set(err, rc, "weights: %s: cannot dequantize a row", u->md ? u->md->name : u->vname);
    if (rc)
        return apr_err_set(err, rc, "weights: out of memory");
    w->n_tensors++;
    return 0;
}

static void summarize(apr_weights_cmp *w)
{
    w->bit_identical = true;
    w->same_dtypes = true;
    w->first_diff = w->worst = -1;
    for (uint32_t i = 0; i < w->n_tensors; i++) {
        const apr_weight_tensor *t = &w->t[i];
        w->same_dtypes &= !strcmp(t->dtype, t->src_dtype);
        if (!t->bit_identical && w->bit_identical) {
            w->bit_identical = false;
            w->first_diff = (int32_t)i;
        }
        w->n_rows_over += t->n_rows_over;
        w->n_tensors_over += t->n_rows_over > 0;
        if (t->unjudged) {
            char d[sizeof t->dtype];
            snprintf(d, sizeof d, "%s", t->dtype);
            /* collect the dtypes without a limit once each */
            char *save = NULL;
            for (char *tok = strtok_r(d, "+", &save); tok; tok = strtok_r(NULL, "+", &save)) {
                const int code = apr_dtype_from_name(tok);
                if (code >= 0 && apr_weights_row_limit((apr_dtype)code) > 0)
                    continue;
                if (!strstr(w->unjudged_dtypes, tok)) {
                    const size_t l = strlen(w->unjudged_dtypes);
                    snprintf(w->unjudged_dtypes + l, sizeof w->unjudged_dtypes - l, "%s%s", l ? " " : "", tok);
                }
            }
        }
        if (t->worst_row < 0)
            continue;
        if (w->worst < 0) {
            w->worst = (int32_t)i;
            continue;
        }
        const apr_weight_tensor *b = &w->t[w->worst];
        /* judged rows rank by error / limit; unjudged ones only among themselves */
        if (t->worst_score > b->worst_score ||
            (t->worst_score < 0 && b->worst_score < 0 && t->worst_row_err > b->worst_row_err))
            w->worst = (int32_t)i;
    }
}

int apr_weights_compare(const apr_model *src, const apr_model *dst, int n_threads, apr_weights_cmp *w,
                        apr_err *err)
{
    memset(w, 0, sizeof *w);
    w->first_diff = w->worst = -1;
    /* what the llama-quantize tool (and apr quantize) record after using one */
    w->imatrix = apr_model_kv(dst, "quantize.imatrix.file") || apr_model_kv(dst, "quantize.imatrix.entries_count");
    apr_graph gs, gd;
    memset(&gs, 0, sizeof gs);
    memset(&gd, 0, sizeof gd);
    apr_err e2 = {0};
    int rc;
    if ((rc = apr_graph_build(&gs, src, &e2)))
        return apr_err_set(err, rc, "SRC: %s", e2.msg);
    if ((rc = apr_graph_build(&gd, dst, &e2))) {
        apr_graph_free(&gs);
        return apr_err_set(err, rc, "DST: %s", e2.msg);
    }
    if ((rc = check_shapes(&gs, &gd, err)))
        goto out;
    if (n_threads <= 0)
        n_threads = apr_quant_default_threads();
    const apr_arch_config *c = &gd.cfg;
    const uint32_t cap = 3 + 16 * c->n_layers;
    w->t = calloc(cap, sizeof *w->t);
    if (!w->t) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto out;
    }
    const uint64_t qr = (uint64_t)c->n_heads * c->head_dim, kr = (uint64_t)c->n_kv_heads * c->head_dim;
    char nm[160];
    const apr_tensor *t;
#define MAT(ROLE, LAYER, S, D, ROW0)                                                                   \
    do {                                                                                               \
        wunit u = {.role = (ROLE), .layer = (LAYER), .ms = (S), .md = (D), .file_row0 = (ROW0),        \
                   .imatrix = w->imatrix};                                                             \
        if ((rc = add_unit(w, &u, n_threads, cap, err)))                                               \
            goto out;                                                                                  \
    } while (0)
#define VEC(ROLE, LAYER, FROLE, BIAS, S, D, N)                                                         \
    do {                                                                                               \
        t = find_vec(dst, (FROLE), (BIAS), (uint32_t)((LAYER) < 0 ? 0 : (LAYER)), nm, sizeof nm);     \
        wunit u = {.role = (ROLE), .layer = (LAYER), .vs = (S), .vd = (D), .n = (N),                   \
                   .vdt = t ? t->dtype : APR_DT_F32, .vname = nm, .imatrix = w->imatrix};              \
        if ((rc = add_unit(w, &u, n_threads, cap, err)))                                               \
            goto out;                                                                                  \
    } while (0)

    MAT("token_embd", -1, &gs.token_embd, &gd.token_embd, 0);
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const apr_layer *a = &gs.layers[l], *b = &gd.layers[l];
        const int32_t il = (int32_t)l;
        VEC("attn_norm", il, APR_ROLE_ATTN_NORM, false, a->attn_norm, b->attn_norm, c->hidden);
        MAT("attn_q", il, &a->q, &b->q, 0);
        MAT("attn_k", il, &a->k, &b->k, b->qkv_fused ? qr : 0);
        MAT("attn_v", il, &a->v, &b->v, b->qkv_fused ? qr + kr : 0);
        if (b->bq) {
            VEC("attn_q_bias", il, APR_ROLE_ATTN_Q, true, a->bq, b->bq, qr);
            VEC("attn_k_bias", il, APR_ROLE_ATTN_K, true, a->bk, b->bk, kr);
            VEC("attn_v_bias", il, APR_ROLE_ATTN_V, true, a->bv, b->bv, kr);
        }
        if (a->q_norm && b->q_norm) {
            VEC("attn_q_norm", il, APR_ROLE_ATTN_Q_NORM, false, a->q_norm, b->q_norm, c->head_dim);
            VEC("attn_k_norm", il, APR_ROLE_ATTN_K_NORM, false, a->k_norm, b->k_norm, c->head_dim);
        }
        MAT("attn_output", il, &a->o, &b->o, 0);
        if (a->post_attn_norm && b->post_attn_norm) {
            VEC("post_attention_norm", il, APR_ROLE_POST_ATTN_NORM, false, a->post_attn_norm, b->post_attn_norm,
                c->hidden);
            VEC("ffn_norm", il, APR_ROLE_FFN_NORM, false, a->ffn_norm, b->ffn_norm, c->hidden);
            VEC("post_ffw_norm", il, APR_ROLE_POST_FFN_NORM, false, a->post_ffn_norm, b->post_ffn_norm, c->hidden);
        } else {
            VEC("ffn_norm", il, APR_ROLE_FFN_NORM, false, a->ffn_norm, b->ffn_norm, c->hidden);
        }
        MAT("ffn_gate", il, &a->gate, &b->gate, 0);
        MAT("ffn_up", il, &a->up, &b->up, 0);
        MAT("ffn_down", il, &a->down, &b->down, 0);
    }
    VEC("output_norm", -1, APR_ROLE_OUTPUT_NORM, false, gs.output_norm, gd.output_norm, c->hidden);
    /* a tied output is the embedding matrix again: compare it only when
     * either side has its own */
    if (!gs.output_tied || !gd.output_tied)
        MAT("output", -1, &gs.output, &gd.output, 0);
#undef MAT
#undef VEC
    summarize(w);
out:
    apr_graph_free(&gs);
    apr_graph_free(&gd);
    if (rc)
        apr_weights_cmp_free(w);
    return rc;
}

void apr_weights_cmp_free(apr_weights_cmp *w)
{
    free(w->t);
    memset(w, 0, sizeof *w);
    w->first_diff = w->worst = -1;
}

/* "blk.3.attn_q.weight row 17 (layer 3 attn_q)"; the logical row is added
 * when the file row differs (HF rotate-half Q/K, fused QKV). */
void apr_weights_describe_row(const apr_weight_tensor *t, int64_t logical_row, int64_t file_row, char *buf,
                              size_t cap)
{
    char where[64];
    if (t->layer >= 0)
        snprintf(where, sizeof where, "layer %d %s", t->layer, t->role);
    else
        snprintf(where, sizeof where, "%s", t->role);
    if (file_row == logical_row)
        snprintf(buf, cap, "%s row %lld (%s)", t->name, (long long)file_row, where);
    else
        snprintf(buf, cap, "%s row %lld (%s, logical row %lld)", t->name, (long long)file_row, where,
                 (long long)logical_row);
}
