/* reproduce.c - verify by reproduction: is DST exactly what the quantizer
 * makes of SRC?
 *
 * Both models are seen as llama-quantize sees a model: their GGUF views
 * (names, Q/K row order and split Q/K/V of the converter; a GGUF is its own
 * view). Every tensor of DST's view is then rebuilt from the tensor of the
 * same name in SRC's view with the dtype DST stores (F32/F16/BF16 rows
 * converted, quantized rows through libquant's quantizers, which are
 * byte-identical to ggml's) and the importance-matrix entry llama-quantize
 * would have used, and compared byte for byte with DST's payload. A tensor
 * whose dtype did not change must be a copy. The first differing row of
 * every tensor that differs is kept; the report names the first.
 *
 * Memory: rows are rebuilt in slabs of at most SLAB_FLOATS values, never a
 * whole tensor at once. The reproduction needs every DST dtype to have a
 * quantizer (apr_quantize_supported); otherwise it is "unavailable" and the
 * statistical checks decide.
 */
#define _GNU_SOURCE
#include "parity.h"

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert.h"
#include "quant.h"
#include "apr_util.h"

/* 4 Mi floats (16 MiB) of f32 rows per slab, whole rows */
#define SLAB_FLOATS ((uint64_t)4 << 20)

static bool has_gguf_names(const apr_model *m)
{
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, "token_embd.weight") || !strncmp(m->tensors[i].name, "blk.", 4))
            return true;
    return false;
}

/* The GGUF view of m (m itself when it already has GGUF names), as
 * apr_quantize_file builds it. *owned is set when a view was made. */
static int gguf_view(const apr_model *m, const char *which, int n_threads, const apr_model **view,
                     apr_model **owned, apr_err *err)
{
    *owned = NULL;
    *view = m;
    if (m->format == APR_FMT_GGUF || has_gguf_names(m))
        return 0;
    apr_convert_opts co;
    apr_convert_opts_init(&co);
    co.threads = n_threads;
    apr_err e2 = {0};
    int rc = apr_convert_model((apr_model *)m, APR_FMT_GGUF, &co, owned, NULL, NULL, &e2);
    if (rc)
        return apr_err_set(err, rc, "%s: its GGUF view: %s", which, e2.msg);
    *view = *owned;
    return 0;
}

static bool file_exists(const char *p)
{
    struct stat st;
    return p && stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* The imatrix to reproduce DST with: --imatrix when given, else the file DST
 * records (quantize.imatrix.file, as the llama-quantize tool writes it) looked
 * up in SRC's directory by its base name. *needed says whether DST records
 * one; path[0] == 0 when none was found. */
static void find_imatrix(const apr_model *dst, const char *src_path, const char *given, char *path, size_t cap,
                         bool *needed, char *recorded, size_t rcap)
{
    path[0] = recorded[0] = 0;
    const char *rec = apr_kv_get_str(dst, "quantize.imatrix.file");
    *needed = rec || apr_model_kv(dst, "quantize.imatrix.entries_count");
    if (rec)
        snprintf(recorded, rcap, "%s", rec);
    if (given) {
        snprintf(path, cap, "%s", given);
        return;
    }
    if (!rec || !src_path)
        return;
    char *s = strdup(src_path), *r = strdup(rec);
    if (s && r) {
        struct stat st;
        /* SRC may be a directory (HF) or a file */
        const char *dir = stat(s, &st) == 0 && S_ISDIR(st.st_mode) ? s : dirname(s);
        char cand[4096];
        snprintf(cand, sizeof cand, "%s/%s", dir, basename(r));
        if (file_exists(cand) && strlen(cand) < cap)
            memcpy(path, cand, strlen(cand) + 1);
    }
    free(s);
    free(r);
}

static uint64_t tensor_rows(const apr_tensor *t)
{
    uint64_t rows = 1;
    for (uint32_t d = 0; d + 1 < t->ndim; d++)
        rows *= t->dims[d];
    return rows;
}

static bool same_shape(const apr_tensor *a, const apr_tensor *b)
{
    if (a->ndim != b->ndim)
        return false;
    for (uint32_t d = 0; d < a->ndim; d++)
        if (a->dims[d] != b->dims[d])
            return false;
    return true;
}

typedef struct to_f32_job {
    apr_dtype t;
    const uint8_t *src;
    uint64_t srb, cols, rows;
    float *f;
    int nth;
    _Atomic int bad;
} to_f32_job;

/* Thread i converts its contiguous share of the slab's rows (each row's
 * floats do not depend on who converts them). */
static void to_f32_worker(void *ctx, int i)
{
    to_f32_job *j = ctx;
    const uint64_t lo = j->rows * (uint64_t)i / (uint64_t)j->nth, hi = j->rows * (uint64_t)(i + 1) / (uint64_t)j->nth;
    if (hi > lo && apr_to_f32_row(j->t, j->src + lo * j->srb, j->f + lo * j->cols, (int64_t)((hi - lo) * j->cols)))
        j->bad = 1;
}

/* nr rows of SRC to f32 on n_threads threads: the conversion was half the
 * time of a slab left on one thread (an F16 SRC's rows). */
static int slab_to_f32(apr_dtype t, const uint8_t *src, uint64_t srb, uint64_t cols, uint64_t nr, float *f,
                       int n_threads)
{
    to_f32_job j = {.t = t, .src = src, .srb = srb, .cols = cols, .rows = nr, .f = f};
    j.nth = apr_threads_for(n_threads, nr);
    apr_threads_run(j.nth, to_f32_worker, &j);
    return j.bad ? -1 : 0;
}

/* Rebuild DST tensor d from SRC tensor s; *diff_row: the first row whose
 * bytes differ, -1 when none. */
static int rebuild_tensor(const apr_tensor *s, const apr_tensor *d, const float *imatrix, int n_threads,
                          int64_t *diff_row, apr_err *err)
{
    *diff_row = -1;
    const uint64_t cols = d->dims[d->ndim - 1], rows = tensor_rows(d);
    const uint64_t srb = apr_dtype_row_bytes(s->dtype, cols), drb = apr_dtype_row_bytes(d->dtype, cols);
    if (!srb || !drb || rows * drb != d->nbytes || rows * srb != s->nbytes)
        return apr_err_set(err, APR_E_FORMAT, "%s: %llu columns do not make whole %s/%s rows", d->name,
                           (unsigned long long)cols, apr_dtype_name(s->dtype), apr_dtype_name(d->dtype));
    uint64_t slab = SLAB_FLOATS / cols;
    if (slab < 1)
        slab = 1;
    if (slab > rows)
        slab = rows;
    float *f = malloc((size_t)(slab * cols) * sizeof *f);
    uint8_t *q = malloc((size_t)(slab * drb));
    int rc = 0;
    if (!f || !q) {
        rc = apr_err_set(err, APR_E_NOMEM, "%s: out of memory", d->name);
        goto out;
    }
    for (uint64_t r0 = 0; r0 < rows; r0 += slab) {
        const uint64_t nr = rows - r0 < slab ? rows - r0 : slab;
        if (slab_to_f32(s->dtype, s->data + r0 * srb, srb, cols, nr, f, n_threads)) {
            rc = apr_err_set(err, APR_E_UNSUPPORTED, "%s: cannot read %s rows", s->name, apr_dtype_name(s->dtype));
            goto out;
        }
        if (!apr_quantize_chunk_mt(d->dtype, f, q, (int64_t)nr, (int64_t)cols, imatrix, n_threads)) {
            rc = apr_err_set(err, APR_E_UNSUPPORTED, "%s: cannot make %s rows", d->name, apr_dtype_name(d->dtype));
            goto out;
        }
        const uint8_t *want = d->data + r0 * drb;
        if (memcmp(q, want, (size_t)(nr * drb))) {
            for (uint64_t r = 0; r < nr; r++)
                if (memcmp(q + r * drb, want + r * drb, (size_t)drb)) {
                    *diff_row = (int64_t)(r0 + r);
                    goto out;
                }
        }
    }
out:
    free(f);
    free(q);
    return rc;
}

static void note_differ(apr_repro *r, const char *tensor, int64_t row, const char *what)
{
    if (!r->n_differ) {
        snprintf(r->first_tensor, sizeof r->first_tensor, "%s", tensor);
        r->first_row = row;
        snprintf(r->first_what, sizeof r->first_what, "%s", what);
    }
    r->n_differ++;
}

/* The imatrix entry llama-quantize applies to tensor d (apr_quantize_file's rule). */
static const float *imatrix_for(const apr_imatrix *im, const apr_tensor *d)
{
    const apr_dtype_info *di = apr_dtype_get(d->dtype);
    if (!im || !di || !di->quantized)
        return NULL;
    const apr_imatrix_entry *e = apr_imatrix_find(im, d->name);
    return e && e->n == d->dims[d->ndim - 1] ? e->values : NULL;
}

static int compare_views(const apr_model *sv, const apr_model *dv, const apr_imatrix *im, int n_threads,
                         apr_repro *r, apr_err *err)
{
    for (uint64_t i = 0; i < dv->n_tensors; i++) {
        const apr_tensor *d = &dv->tensors[i];
        const apr_tensor *s = apr_model_tensor(sv, d->name);
        char what[96];
        r->n_tensors++;
        if (!s) {
            note_differ(r, d->name, -1, "not in SRC");
            continue;
        }
        if (!same_shape(s, d) || d->ndim == 0) {
            note_differ(r, d->name, -1, "shape differs from SRC's");
            continue;
        }
        if (s->dtype == d->dtype) {
            /* kept as it was: a copy */
            r->n_copied++;
            if (s->nbytes != d->nbytes || memcmp(s->data, d->data, (size_t)d->nbytes)) {
                const uint64_t rb = d->nbytes / tensor_rows(d);
                uint64_t row = 0;
                while (rb && row + 1 < tensor_rows(d) && !memcmp(s->data + row * rb, d->data + row * rb, rb))
                    row++;
                snprintf(what, sizeof what, "%s copy differs", apr_dtype_name(d->dtype));
                note_differ(r, d->name, (int64_t)row, what);
            }
            continue;
        }
        if (!apr_quantize_supported(d->dtype)) {
            snprintf(r->why, sizeof r->why, "DST stores %s (%s), which apr cannot make", apr_dtype_name(d->dtype),
                     d->name);
            r->status = APR_REPRO_UNAVAILABLE;
            return 0;
        }
        int64_t row;
        const float *w = imatrix_for(im, d);
        int rc = rebuild_tensor(s, d, w, n_threads, &row, err);
        if (rc)
            return rc;
        r->n_rebuilt++;
        if (row >= 0) {
            snprintf(what, sizeof what, "%s -> %s%s differs", apr_dtype_name(s->dtype), apr_dtype_name(d->dtype),
                     w ? " (imatrix)" : "");
            note_differ(r, d->name, row, what);
        }
    }
    /* a tensor SRC has and DST dropped changes the model too */
    for (uint64_t i = 0; i < sv->n_tensors; i++)
        if (!apr_model_tensor(dv, sv->tensors[i].name))
            note_differ(r, sv->tensors[i].name, -1, "missing in DST");
    r->status = r->n_differ ? APR_REPRO_DIFFERS : APR_REPRO_REPRODUCED;
    return 0;
}

int apr_reproduce(const apr_model *src, const apr_model *dst, const apr_repro_opts *o, apr_repro *r, apr_err *err)
{
    memset(r, 0, sizeof *r);
    r->first_row = -1;
    const int n_threads = o && o->n_threads > 0 ? o->n_threads : apr_quant_default_threads();
    bool needed = false;
    char recorded[256];
    find_imatrix(dst, o ? o->src_path : NULL, o ? o->imatrix_path : NULL, r->imatrix, sizeof r->imatrix, &needed,
                 recorded, sizeof recorded);
    if (needed && !r->imatrix[0]) {
        r->status = APR_REPRO_UNAVAILABLE;
        snprintf(r->why, sizeof r->why,
                 "DST was quantized with an importance matrix (%s%s) that is not in SRC's directory: pass --imatrix "
                 "FILE",
                 recorded[0] ? "quantize.imatrix.file = " : "quantize.imatrix.entries_count", recorded);
        return 0;
    }
    apr_imatrix *im = NULL;
    apr_model *sown = NULL, *down = NULL;
    const apr_model *sv, *dv;
    apr_err e2 = {0};
    int rc = 0;
    if (r->imatrix[0] && (rc = apr_imatrix_load(&im, r->imatrix, &e2))) {
        rc = apr_err_set(err, rc, "imatrix %s: %s", r->imatrix, e2.msg);
        goto out;
    }
    if ((rc = gguf_view(src, "SRC", n_threads, &sv, &sown, err)) ||
        (rc = gguf_view(dst, "DST", n_threads, &dv, &down, err)))
        goto out;
    rc = compare_views(sv, dv, im, n_threads, r, err);
out:
    apr_model_free(sown);
    apr_model_free(down);
    apr_imatrix_free(im);
    if (rc)
        r->status = APR_REPRO_NOT_RUN;
    return rc;
}

void apr_repro_describe(const apr_repro *r, char *buf, size_t cap)
{
    switch (r->status) {
    case APR_REPRO_REPRODUCED:
        snprintf(buf, cap, "reproduced: all %llu tensors are byte for byte what the quantizer makes of SRC (%llu "
                 "rebuilt, %llu copies%s%s)",
                 (unsigned long long)r->n_tensors, (unsigned long long)r->n_rebuilt, (unsigned long long)r->n_copied,
                 r->imatrix[0] ? ", imatrix " : "", r->imatrix);
        break;
    case APR_REPRO_DIFFERS:
        if (r->first_row >= 0)
            snprintf(buf, cap, "not reproduced: %llu of %llu tensors differ; first %s row %lld (%s)",
                     (unsigned long long)r->n_differ, (unsigned long long)r->n_tensors, r->first_tensor,
                     (long long)r->first_row, r->first_what);
        else
            snprintf(buf, cap, "not reproduced: %llu of %llu tensors differ; first %s (%s)",
                     (unsigned long long)r->n_differ, (unsigned long long)r->n_tensors, r->first_tensor,
                     r->first_what);
        break;
    case APR_REPRO_UNAVAILABLE:
        snprintf(buf, cap, "reproduction not possible: %s", r->why);
        break;
    default:
        snprintf(buf, cap, "reproduction not run");
        break;
    }
}
