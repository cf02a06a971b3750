/* quantize.c - `apr quantize` as a library call: llama-quantize's output,
 * byte for byte (same tensor order, types, data, KVs plus
 * general.quantization_version and general.file_type), threaded over rows.
 *
 * Input in another format (safetensors, APR) is first turned into its GGUF
 * view by the converter (names, Q/K row order, QKV split); APR output is the
 * quantized GGUF view converted back to APR's layout (fused QKV, ROWCAT when
 * Q/K/V got different types). Provenance records the input file's tensors
 * as the sources of every output tensor, with the steps in between.
 *
 * Memory: one pass. The input is mapped; tensors that keep their type are
 * written straight from the mapping; each quantized tensor is made when the
 * writer reaches it, into the writer's one buffer (the largest tensor's
 * output), from the mapping or, when the GGUF view had to transform it
 * (permuted Q/K), from one input-sized buffer; f32 rows are converted in
 * small per-thread slabs, and the input pages a tensor was read from are
 * released once it is quantized. The writer hashes what it streamed and
 * seals the provenance record in place (formats.h, apr_write_opts.prov), so
 * peak RAM is about the largest tensor's input + output, whatever the model
 * size. */
#define _GNU_SOURCE
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "convert.h"
#include "formats.h"
#include "quant.h"
#include "apr_util.h"

/* ------------------------------------------------------------ the tensor job */

/* One tensor: convert slabs of rows to f32, check them, quantize. Workers
 * grab row ranges; the first non-finite value (lowest row) is reported. */
typedef struct tjob {
    const apr_tensor *src;
    apr_dtype to;
    int64_t nrows, ncols;
    uint64_t src_row_bytes, dst_row_bytes;
    uint8_t *dst;
    const float *imatrix;
    int64_t rows_per_grab;
    atomic_llong next;
    atomic_llong bad_row;  /* lowest row with NaN/Inf, or INT64_MAX */
    atomic_int failed;     /* conversion or quantization refused; FAILED_NOMEM: a worker had no buffer */
} tjob;

enum { FAILED_NOMEM = 2 };

/* Every thread (apr_threads_run) grabs rows until none are left. */
static void tjob_worker(void *arg, int thread)
{
    (void)thread;
    tjob *j = arg;
    float *buf = malloc((size_t)j->rows_per_grab * (size_t)j->ncols * sizeof(float));
    if (!buf) {
        atomic_store(&j->failed, FAILED_NOMEM);
        return;
    }
    for (;;) {
        const int64_t r0 = atomic_fetch_add(&j->next, j->rows_per_grab);
        if (r0 >= j->nrows)
            break;
        const int64_t nr = r0 + j->rows_per_grab <= j->nrows ? j->rows_per_grab : j->nrows - r0;
        const uint8_t *s = j->src->data + (uint64_t)r0 * j->src_row_bytes;
        if (apr_to_f32_row(j->src->dtype, s, buf, nr * j->ncols) != 0) {
            atomic_store(&j->failed, 1);
            break;
        }
        for (int64_t r = 0; r < nr; r++) {
            if (!apr_f32_all_finite(buf + r * j->ncols, j->ncols)) {
                long long cur = atomic_load(&j->bad_row);
                while (r0 + r < cur && !atomic_compare_exchange_weak(&j->bad_row, &cur, r0 + r))
                    ;
                break;
            }
        }
        if (atomic_load(&j->bad_row) != INT64_MAX)
            break;
        if (!apr_quantize_chunk(j->to, buf, j->dst + (uint64_t)r0 * j->dst_row_bytes, nr, j->ncols, j->imatrix)) {
            atomic_store(&j->failed, 1);
            break;
        }
    }
    free(buf);
}

static int run_tensor(const apr_tensor *t, apr_dtype to, const float *imatrix, uint8_t *dst, int threads,
                      apr_err *err)
{
    tjob j = {.src = t, .to = to, .dst = dst, .imatrix = imatrix};
    j.ncols = (int64_t)t->dims[t->ndim - 1];
    j.nrows = 1;
    for (uint32_t d = 0; d + 1 < t->ndim; d++)
        j.nrows *= (int64_t)t->dims[d];
    j.src_row_bytes = apr_dtype_row_bytes(t->dtype, (uint64_t)j.ncols);
    j.dst_row_bytes = apr_dtype_row_bytes(to, (uint64_t)j.ncols);
    if (!j.src_row_bytes || !j.dst_row_bytes)
        return apr_err_set(err, APR_E_FORMAT, "%s: %lld columns do not fit %s -> %s", t->name, (long long)j.ncols,
                           apr_dtype_name(t->dtype), apr_dtype_name(to));
    /* ~16k weights per grab (llama-quantize's chunk), whole rows */
    j.rows_per_grab = j.ncols >= 16384 ? 1 : (16384 + j.ncols - 1) / j.ncols;
    atomic_init(&j.next, 0);
    atomic_init(&j.bad_row, INT64_MAX);
    atomic_init(&j.failed, 0);
    int64_t chunks = (j.nrows + j.rows_per_grab - 1) / j.rows_per_grab;
    int nt = threads < chunks ? threads : (int)chunks;
    apr_threads_run(nt, tjob_worker, &j); /* the calling thread is one of them */
    apr_map_release(t->data, (size_t)t->nbytes); /* read once; keeps RSS to the output's */
    long long bad = atomic_load(&j.bad_row);
    if (bad != INT64_MAX)
        return apr_err_set(err, APR_E_FORMAT, "tensor %s: row %lld contains NaN or Inf; refusing to quantize it",
                           t->name, bad);
    if (atomic_load(&j.failed) == FAILED_NOMEM)
        return apr_err_set(err, APR_E_NOMEM, "tensor %s: converting %s -> %s: out of memory", t->name,
                           apr_dtype_name(t->dtype), apr_dtype_name(to));
    if (atomic_load(&j.failed))
        return apr_err_set(err, APR_E_NOMEM, "tensor %s: converting %s -> %s failed", t->name,
                           apr_dtype_name(t->dtype), apr_dtype_name(to));
    return 0;
}

/* ------------------------------------------------------------ planning */

typedef struct tplan {
    const apr_tensor *src;   /* tensor of the GGUF view being quantized */
    apr_dtype to;
    const float *imatrix;
    const apr_tensor *orig;  /* the tensor of the input file it came from */
    char step[32];           /* how the view made src of orig: "", "permute", "split", "convert:F16" */
} tplan;

static int cmp_plan(const void *a, const void *b)
{
    return apr_quant_tensor_cmp(((const tplan *)a)->src->name, ((const tplan *)b)->src->name);
}

/* --keep-split's order: by split, then by offset in it (llama-quantize sorts
 * its weights so, and its type rules count tensors in this order) */
static int cmp_plan_file(const void *a, const void *b)
{
    const apr_tensor *x = ((const tplan *)a)->src, *y = ((const tplan *)b)->src;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return x->file_offset < y->file_offset ? -1 : x->file_offset > y->file_offset;
}

static bool has_gguf_names(const apr_model *m)
{
    for (uint64_t i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, "token_embd.weight") || !strncmp(m->tensors[i].name, "blk.", 4))
            return true;
    return false;
}

static void kv_u32_arch(const apr_model *m, const char *arch, const char *suffix, uint32_t *out)
{
    char key[160];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    if (!apr_kv_get_u32(m, key, out))
        *out = 0;
}

/* Fills plan[] (sorted in llama-quantize's order) with each tensor's target. */
static int make_plan(const apr_model *in, const char *in_path, const apr_quantize_opts *o, const apr_imatrix *im,
                     apr_quant_tensor_type *pats, tplan *plan, apr_quant_mix *mix, apr_err *err)
{
    const char *arch = apr_kv_get_str(in, "general.architecture");
    apr_quant_mix_model mm = {.arch = arch ? arch : "", .has_imatrix = im != NULL};
    if (arch) {
        kv_u32_arch(in, arch, "block_count", &mm.n_layer);
        kv_u32_arch(in, arch, "attention.head_count", &mm.n_head);
        kv_u32_arch(in, arch, "attention.head_count_kv", &mm.n_head_kv);
        kv_u32_arch(in, arch, "expert_count", &mm.n_expert);
    }
    int rc = apr_quant_mix_init(mix, o->type, o->pure, &mm, err);
    if (rc)
        return rc;
    mix->leave_output = o->leave_output_tensor;
    mix->patterns = pats;
    mix->n_patterns = o->n_tensor_types;
    apr_dtype ot;
    if (o->output_tensor_type) {
        if ((rc = apr_quant_parse_type_option("--output-tensor-type", o->output_tensor_type, &ot, err)))
            return rc;
        mix->output_type = (int)ot;
    }
    if (o->token_embedding_type) {
        if ((rc = apr_quant_parse_type_option("--token-embedding-type", o->token_embedding_type, &ot, err)))
            return rc;
        mix->embd_type = (int)ot;
    }
    for (uint64_t i = 0; i < in->n_tensors; i++)
        plan[i].src = &in->tensors[i];
    qsort(plan, (size_t)in->n_tensors, sizeof *plan, o->keep_split ? cmp_plan_file : cmp_plan);
    for (uint64_t i = 0; i < in->n_tensors; i++)
        apr_quant_mix_scan(mix, plan[i].src->name);
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        const apr_tensor *t = plan[i].src;
        if (t->dtype == APR_DT_ROWCAT || t->ndim == 0)
            return apr_err_set(err, APR_E_UNSUPPORTED, "%s: fused tensors of mixed types cannot be quantized",
                               t->name);
        rc = apr_quant_mix_type(mix, t->name, t->ndim, t->dims, t->dtype, &plan[i].to, err);
        if (rc)
            return rc;
        const uint64_t cols = t->dims[t->ndim - 1];
        if (plan[i].to != t->dtype && cols % apr_dtype_get(plan[i].to)->block_elems != 0)
            return apr_err_set(err, APR_E_ARG, "%s: %llu columns is not a multiple of %s's block of %u (chosen by an "
                               "option: --output-tensor-type, --token-embedding-type or --tensor-type)", t->name,
                               (unsigned long long)cols, apr_dtype_name(plan[i].to),
                               apr_dtype_get(plan[i].to)->block_elems);
        if (plan[i].to == t->dtype)
            continue;
        const apr_dtype_info *di = apr_dtype_get(t->dtype);
        if (di && di->quantized && !o->allow_requantize)
            return apr_err_set(err, APR_E_ARG,
                               "%s is already quantized (tensor %s is %s); re-quantizing loses precision. "
                               "Use an F32/F16/BF16 source, or pass --allow-requantize", in_path, t->name,
                               di->name);
        if (!di || (!di->quantized && t->dtype != APR_DT_F32 && t->dtype != APR_DT_F16 &&
                    t->dtype != APR_DT_BF16 && t->dtype != APR_DT_F64))
            return apr_err_set(err, APR_E_UNSUPPORTED, "%s: cannot convert a %s tensor to %s", t->name,
                               apr_dtype_name(t->dtype), apr_dtype_name(plan[i].to));
        if (im && apr_dtype_get(plan[i].to)->quantized) {
            const apr_imatrix_entry *e = apr_imatrix_find(im, t->name);
            const uint64_t ne0 = t->dims[t->ndim - 1];
            if (e && e->n == ne0)
                plan[i].imatrix = e->values;
            else if (e && strcmp(t->name, "token_embd.weight") != 0)
                return apr_err_set(err, APR_E_FORMAT, "imatrix has %llu values for %s, the tensor has %llu columns",
                                   (unsigned long long)e->n, t->name, (unsigned long long)ne0);
        }
        if (!plan[i].imatrix && apr_quant_mix_needs_imatrix(mix, t->name, plan[i].to))
            return apr_err_set(err, APR_E_ARG,
                               "%s: %s makes %s tensors that llama.cpp refuses to quantize without an importance "
                               "matrix (the result would be garbage); pass --imatrix FILE%s", t->name, o->type,
                               apr_dtype_name(plan[i].to), im ? " with an entry for this tensor" : "");
    }
    /* a pattern that decides nothing is a typo, not a no-op */
    for (size_t k = 0; k < o->n_tensor_types; k++) {
        if (!pats[k].n_matched)
            return apr_err_set(err, APR_E_ARG,
                               "--tensor-type %s: the pattern '%s' matches no quantizable tensor of %s (or an earlier "
                               "pattern or option decided every tensor it matches)", o->tensor_types[k],
                               pats[k].pattern, in_path);
    }
    return 0;
}

/* ------------------------------------------------------------ provenance */

static bool role_is_norm(apr_role r)
{
    return r == APR_ROLE_OUTPUT_NORM || r == APR_ROLE_ATTN_NORM || r == APR_ROLE_FFN_NORM ||
           r == APR_ROLE_ATTN_Q_NORM || r == APR_ROLE_ATTN_K_NORM || r == APR_ROLE_POST_ATTN_NORM ||
           r == APR_ROLE_POST_FFN_NORM;
}

/* The input-file tensor a GGUF-view tensor came from, and the step between,
 * under the family's names (Gemma's HF post_attention_layernorm is not
 * LLaMA's ffn_norm; Phi-3's attn_qkv and ffn_up are HF's fused tensors). */
static void find_orig(const apr_model *in, const apr_model *view, tplan *p)
{
    p->step[0] = 0;
    if (view == in) {
        p->orig = p->src;
        return;
    }
    const char *arch = view->cfg.arch;
    apr_tensor_id id;
    char name[256];
    p->orig = NULL;
    if (!apr_tensor_id_parse_arch(arch, p->src->name, &id, NULL))
        return;
    if (apr_tensor_id_name_arch(arch, &id, APR_NAMING_HF, name, sizeof name))
        p->orig = apr_model_tensor(in, name);
    if (!p->orig && apr_tensor_id_name_arch(arch, &id, APR_NAMING_GGUF, name, sizeof name))
        p->orig = apr_model_tensor(in, name);
    if (p->orig) {
        /* an HF source's norms of a family that stores w for 1 + w gained the
         * offset (convert.c's "offset"); otherwise same payload: a zero-copy
         * view, same dtype but other bytes: Q/K rows permuted */
        const bool offset = in->format == APR_FMT_SAFETENSORS && view->cfg.hf_norm_offset != 0.0f &&
                            role_is_norm(id.role);
        if (p->orig->dtype != p->src->dtype)
            snprintf(p->step, sizeof p->step, "convert:%s%s", apr_dtype_name(p->src->dtype), offset ? "+offset" : "");
        else if (offset)
            snprintf(p->step, sizeof p->step, "offset");
        else if (p->orig->data != p->src->data)
            snprintf(p->step, sizeof p->step, "permute");
        return;
    }
    if (id.role == APR_ROLE_ATTN_Q || id.role == APR_ROLE_ATTN_K || id.role == APR_ROLE_ATTN_V) {
        apr_tensor_id f = id;
        f.role = APR_ROLE_ATTN_QKV;
        if (apr_tensor_id_name_arch(arch, &f, APR_NAMING_HF, name, sizeof name) &&
            (p->orig = apr_model_tensor(in, name)))
            snprintf(p->step, sizeof p->step, "split");
    }
}

/* "step+quantize:T", "quantize:T", "copy", ... for plan entry p */
static void transform_of(const tplan *p, char *buf, size_t n)
{
    const apr_dtype_info *si = apr_dtype_get(p->src->dtype);
    char q[48] = "";
    if (p->to != p->src->dtype)
        snprintf(q, sizeof q, "%s%s:%s", si && si->quantized ? "dequantize:F32+" : "",
                 apr_dtype_get(p->to)->quantized ? "quantize" : "convert", apr_dtype_name(p->to));
    if (p->step[0] && q[0])
        snprintf(buf, n, "%s+%s", p->step, q);
    else if (p->step[0] || q[0])
        snprintf(buf, n, "%s", p->step[0] ? p->step : q);
    else
        snprintf(buf, n, "copy");
}

static const tplan *plan_by_name(const tplan *plan, uint64_t n, const char *name)
{
    for (uint64_t i = 0; i < n; i++)
        if (!strcmp(plan[i].src->name, name))
            return &plan[i];
    return NULL;
}

/* Records one output tensor with the input-file tensors it came from (the
 * plan holds GGUF names, an APR output HF ones: the family's, arch). A fused
 * APR QKV tensor lists its Q, K and V sources. */
static int record_tensor(apr_prov *prov, const apr_tensor *t, const char *arch, const tplan *plan, uint64_t n,
                         apr_err *err)
{
    const tplan *parts[3] = {NULL, NULL, NULL};
    int np = 0;
    apr_tensor_id id;
    char name[256];
    const tplan *p = plan_by_name(plan, n, t->name);
    if (p) {
        parts[np++] = p;
    } else if (apr_tensor_id_parse_arch(arch, t->name, &id, NULL)) {
        if (apr_tensor_id_name_arch(arch, &id, APR_NAMING_GGUF, name, sizeof name) &&
            (p = plan_by_name(plan, n, name))) {
            parts[np++] = p;
        } else if (id.role == APR_ROLE_ATTN_QKV) {
            const apr_role roles[3] = {APR_ROLE_ATTN_Q, APR_ROLE_ATTN_K, APR_ROLE_ATTN_V};
            for (int r = 0; r < 3; r++) {
                apr_tensor_id q = id;
                q.role = roles[r];
                if (apr_tensor_id_name_arch(arch, &q, APR_NAMING_GGUF, name, sizeof name) &&
                    (p = plan_by_name(plan, n, name)))
                    parts[np++] = p;
            }
        }
    }
    const apr_tensor *srcs[3];
    uint32_t ns = 0;
    char tr[160] = "copy", one[80];
    for (int i = 0; i < np; i++) {
        if (parts[i]->orig) {
            bool dup = false; /* Q, K, V split from one fused tensor: list it once */
            for (uint32_t k = 0; k < ns; k++)
                dup |= srcs[k] == parts[i]->orig;
            if (!dup)
                srcs[ns++] = parts[i]->orig;
        }
        transform_of(parts[i], one, sizeof one);
        if (i == 0)
            snprintf(tr, sizeof tr, "%s", one);
        else if (strcmp(tr, one) != 0)
            snprintf(tr, sizeof tr, "quantize:%s", apr_dtype_name(t->dtype)); /* parts differ: name the mix */
    }
    if (np == 3) {
        size_t l = strlen(tr);
        snprintf(tr + l, sizeof tr - l, "+fuse");
    }
    return apr_prov_add_tensor(prov, t, tr, srcs, ns, err);
}

/* ------------------------------------------------------------ the file */

/* What llama-quantize (the tool) records when it used an importance matrix,
 * as its KV overrides, after general.file_type: the file name and the first
 * dataset (each cut to 127 bytes, its override buffer), the number of
 * entries and, when known, of chunks (u32: llama.cpp's integer overrides are
 * written as UINT32). `apr verify` reads them to judge the weights the way
 * an imatrix-quantized model needs (docs/verify.md). */
static int set_imatrix_kvs(apr_model *out, const char *path, const apr_imatrix *im)
{
    static const char *const keys[] = {"quantize.imatrix.file", "quantize.imatrix.dataset",
                                       "quantize.imatrix.entries_count", "quantize.imatrix.chunks_count"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        apr_model_remove_kv(out, keys[i]); /* gguf_set_val_* on an existing key moves it to the end */
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    int rc = apr_model_set_kv_str(out, "quantize.imatrix.file", buf);
    if (!rc && im->dataset) {
        snprintf(buf, sizeof buf, "%s", im->dataset);
        rc = apr_model_set_kv_str(out, "quantize.imatrix.dataset", buf);
    }
    if (!rc)
        rc = apr_model_set_kv_u32(out, "quantize.imatrix.entries_count", (uint32_t)im->n_entries);
    if (!rc && im->chunks > 0)
        rc = apr_model_set_kv_u32(out, "quantize.imatrix.chunks_count", (uint32_t)im->chunks);
    return rc;
}


/* --override-kv KEY=TYPE:VALUE (common.cpp's string_parse_kv_override): int
 * is written as UINT32 of |value| and float as F32, as llama-quantize writes
 * its overrides; str is at most 127 bytes, bool "true" or "false". With out
 * NULL it only checks the syntax. */
static int apply_kv_override(apr_model *out, const char *arg, apr_err *err)
{
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || eq - arg >= 128)
        return apr_err_set(err, APR_E_ARG, "--override-kv %s: expected KEY=TYPE:VALUE (KEY under 128 bytes)", arg);
    char key[128];
    memcpy(key, arg, (size_t)(eq - arg));
    key[eq - arg] = 0;
    const char *v = eq + 1;
    int rc = 0;
    if (!strncmp(v, "int:", 4)) {
        char *end;
        long long x = strtoll(v + 4, &end, 10);
        if (end == v + 4 || *end)
            return apr_err_set(err, APR_E_ARG, "--override-kv %s: '%s' is not an integer", arg, v + 4);
        if (out)
            rc = apr_model_set_kv_u32(out, key, (uint32_t)llabs(x));
    } else if (!strncmp(v, "float:", 6)) {
        char *end;
        double x = strtod(v + 6, &end);
        if (end == v + 6 || *end)
            return apr_err_set(err, APR_E_ARG, "--override-kv %s: '%s' is not a number", arg, v + 6);
        if (out)
            rc = apr_model_set_kv_f32(out, key, (float)x);
    } else if (!strncmp(v, "bool:", 5)) {
        if (strcmp(v + 5, "true") && strcmp(v + 5, "false"))
            return apr_err_set(err, APR_E_ARG, "--override-kv %s: a bool is true or false", arg);
        if (out)
            rc = apr_model_set_kv_bool(out, key, !strcmp(v + 5, "true"));
    } else if (!strncmp(v, "str:", 4)) {
        if (strlen(v + 4) > 127)
            return apr_err_set(err, APR_E_ARG, "--override-kv %s: the value cannot exceed 127 bytes", arg);
        if (out)
            rc = apr_model_set_kv_str(out, key, v + 4);
    } else {
        return apr_err_set(err, APR_E_ARG, "--override-kv %s: TYPE is int, float, bool or str", arg);
    }
    return rc ? apr_err_set(err, rc, "--override-kv %s: cannot set it", arg) : 0;
}

void apr_quantize_opts_init(apr_quantize_opts *o)
{
    memset(o, 0, sizeof *o);
    o->provenance = true;
    o->to = APR_FMT_UNKNOWN;
}

static void progress(bool on, uint64_t i, uint64_t n, const char *name, apr_dtype to, uint64_t done_w,
                     uint64_t total_w)
{
    if (!on)
        return;
    int pct = total_w ? (int)(100.0 * done_w / total_w) : 100;
    int bar = pct / 4;
    fprintf(stderr, "\r[%.*s%*s] %3d%% %4llu/%-4llu %-36.36s -> %-5s", bar, "=========================", 25 - bar,
            "", pct, (unsigned long long)i, (unsigned long long)n, name, apr_dtype_name(to));
    fflush(stderr);
}

/* ------------------------------------------------------------ streaming */

/* What the writer's producer needs: output tensor i is plan[i]'s. */
typedef struct qstream {
    const tplan *plan;
    uint64_t n;
    const apr_model *view;     /* the GGUF view the plan reads */
    apr_conv_stream *vstream;  /* makes the view's transformed tensors (NULL: the input is the view) */
    uint8_t *in;               /* one such tensor, when it is then quantized */
    uint64_t in_cap;
    int threads;
    bool show;
    uint64_t done_w, total_w;
    double tq;
} qstream;

/* The view tensor's bytes: its mapping, or made by the converter into q->in. */
static int view_bytes(qstream *q, const apr_tensor *t, const uint8_t **out, apr_err *err)
{
    if (t->data || !t->nbytes) {
        *out = t->data;
        return 0;
    }
    if (!q->vstream)
        return apr_err_set(err, APR_E_ARG, "tensor %s has no data", t->name);
    if (t->nbytes > q->in_cap) {
        free(q->in);
        q->in = t->nbytes <= SIZE_MAX ? malloc((size_t)t->nbytes) : NULL;
        q->in_cap = q->in ? t->nbytes : 0;
        if (!q->in)
            return apr_err_set(err, APR_E_NOMEM, "%s: out of memory (%llu bytes)", t->name,
                               (unsigned long long)t->nbytes);
    }
    *out = q->in;
    return apr_conv_produce(q->vstream, q->view, (uint64_t)(t - q->view->tensors), q->in, err);
}

/* An apr_produce_fn: output tensor i, copied or quantized. */
static int quantize_produce(void *user, const apr_model *m, uint64_t i, uint8_t *dst, apr_err *err)
{
    qstream *q = user;
    (void)m;
    if (i >= q->n)
        return apr_err_set(err, APR_E_ARG, "quantize: no tensor %llu", (unsigned long long)i);
    const tplan *p = &q->plan[i];
    const apr_tensor *t = p->src;
    progress(q->show, i + 1, q->n, t->name, p->to, q->done_w, q->total_w);
    if (p->to == t->dtype) /* only reached for a view tensor without data */
        return apr_conv_produce(q->vstream, q->view, (uint64_t)(t - q->view->tensors), dst, err);
    apr_tensor src = *t;
    int rc = view_bytes(q, t, &src.data, err);
    if (rc)
        return rc;
    const double ts = apr_now_s();
    rc = run_tensor(&src, p->to, p->imatrix, dst, q->threads, err);
    q->tq += apr_now_s() - ts;
    uint64_t ne = 0;
    apr_dims_count(t->ndim, t->dims, &ne);
    q->done_w += ne;
    return rc;
}

/* ------------------------------------------------------------ --keep-split */

typedef struct keep_split {
    uint64_t *counts; /* tensors of each output file, in plan order */
    uint32_t n;       /* files: the input's splits */
    char first_path[4096];
} keep_split;

/* llama-quantize --keep-split: one output file per input split with its
 * tensors (plan is in split order). The input must be a GGUF read as it is
 * (its splits are its files); every split after the first must hold a
 * tensor (llama.cpp has no output file for an empty one: it crashes); no
 * output file may be an input file. */
static int plan_keep_split(const apr_model *in, const char *in_path, const char *out_path, const tplan *plan,
                           keep_split *ks, apr_err *err)
{
    if (in->format != APR_FMT_GGUF)
        return apr_err_set(err, APR_E_ARG, "--keep-split keeps a split GGUF's splits; %s is %s: use --split-max-size "
                           "or --split-max-tensors to split the output", in_path,
                           in->format == APR_FMT_APR ? "APR" : "safetensors");
    ks->n = in->n_maps ? in->n_maps : 1;
    ks->counts = calloc(ks->n, sizeof *ks->counts);
    if (!ks->counts)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (uint64_t i = 0; i < in->n_tensors; i++) {
        if (plan[i].src->shard >= ks->n)
            return apr_err_set(err, APR_E_FORMAT, "%s: tensor %s has no split", in_path, plan[i].src->name);
        ks->counts[plan[i].src->shard]++;
    }
    for (uint32_t k = 1; k < ks->n; k++)
        if (!ks->counts[k])
            return apr_err_set(err, APR_E_FORMAT, "--keep-split: split %u of %u of %s holds no tensor; llama-quantize "
                               "cannot keep such a split either", k + 1, ks->n, in_path);
    for (uint32_t k = 0; k < ks->n; k++) {
        char path[4096];
        if (apr_gguf_split_path(out_path, k, ks->n, path, sizeof path))
            return apr_err_set(err, APR_E_ARG, "%s: path too long", out_path);
        if (k == 0)
            snprintf(ks->first_path, sizeof ks->first_path, "%s", path);
        for (uint32_t j = 0; j < in->n_maps; j++)
            if (in->maps[j].path && apr_same_file(in->maps[j].path, path))
                return apr_err_set(err, APR_E_ARG, "--keep-split would write %s over the input split %s; apr never "
                                   "overwrites its input (choose another OUT)", path, in->maps[j].path);
    }
    return 0;
}

int apr_quantize_file(const char *in_path, const char *out_path, const apr_quantize_opts *o,
                      apr_quantize_stats *st, apr_err *err)
{
    apr_quantize_stats st_local;
    if (!st)
        st = &st_local;
    memset(st, 0, sizeof *st);
    if (!o || !o->type)
        return apr_err_set(err, APR_E_ARG, "quantize: no target type");
    apr_format fmt = o->to != APR_FMT_UNKNOWN ? o->to
                     : apr_format_from_path(out_path) == APR_FMT_APR ? APR_FMT_APR
                                                                      : APR_FMT_GGUF;
    if (fmt != APR_FMT_GGUF && fmt != APR_FMT_APR)
        return apr_err_set(err, APR_E_ARG, "quantized output is GGUF or APR");
    if ((o->split_max_bytes || o->split_max_tensors) && fmt != APR_FMT_GGUF)
        return apr_err_set(err, APR_E_ARG, "--split-max-size / --split-max-tensors make GGUF splits; the output is APR");
    if (o->shard_max_bytes && fmt != APR_FMT_APR)
        return apr_err_set(err, APR_E_ARG, "--shard-mb makes sharded APR; a GGUF output splits with --split-max-size / "
                           "--split-max-tensors (or --keep-split)");
    if (o->keep_split && fmt != APR_FMT_GGUF)
        return apr_err_set(err, APR_E_ARG, "--keep-split writes a split GGUF (as llama-quantize does); the output is APR");
    if (o->keep_split && (o->split_max_bytes || o->split_max_tensors))
        return apr_err_set(err, APR_E_ARG, "--keep-split keeps the input's splits: it cannot be combined with "
                           "--split-max-size / --split-max-tensors");
    if (apr_same_file(in_path, out_path))
        return apr_err_set(err, APR_E_ARG, "OUT is the same file as IN; apr never overwrites its input");

    if (o->n_include_weights && o->n_exclude_weights)
        return apr_err_set(err, APR_E_ARG, "--include-weights and --exclude-weights cannot be used together");
    if ((o->n_include_weights || o->n_exclude_weights) && !o->imatrix)
        return apr_err_set(err, APR_E_ARG, "--include-weights / --exclude-weights filter an imatrix: give --imatrix");
    int rc = 0;
    for (size_t k = 0; k < o->n_kv_overrides; k++)
        if ((rc = apply_kv_override(NULL, o->kv_overrides[k], err)))
            return rc;
    apr_quant_tensor_type *pats = calloc(o->n_tensor_types ? o->n_tensor_types : 1, sizeof *pats);
    if (!pats)
        return apr_err_set(err, APR_E_NOMEM, "out of memory");
    for (size_t k = 0; k < o->n_tensor_types && !rc; k++)
        rc = apr_quant_tensor_type_parse(o->tensor_types[k], &pats[k], err);
    if (rc) {
        for (size_t k = 0; k < o->n_tensor_types; k++)
            apr_quant_tensor_type_free(&pats[k]);
        free(pats);
        return rc;
    }

    const double t0 = apr_now_s();
    apr_model *in = NULL;
    rc = apr_model_open(&in, in_path, NULL, err);
    if (rc) {
        for (size_t k = 0; k < o->n_tensor_types; k++)
            apr_quant_tensor_type_free(&pats[k]);
        free(pats);
        return rc;
    }
    apr_model *out = NULL, *gview = NULL, *aout = NULL;
    apr_conv_stream *vstream = NULL, *astream = NULL;
    apr_imatrix *im = NULL;
    tplan *plan = NULL;
    apr_prov *prov = NULL;
    char *json = NULL;
    qstream qs = {0};
    keep_split ks = {0};

    /* the tensors llama-quantize would see: the GGUF view of the input
     * (its permuted tensors made one at a time while writing) */
    apr_model *view = in;
    if (in->format != APR_FMT_GGUF && !has_gguf_names(in)) {
        apr_convert_opts co;
        apr_convert_opts_init(&co);
        co.threads = o->threads;
        if ((rc = apr_convert_model_stream(in, APR_FMT_GGUF, &co, &gview, NULL, &vstream, NULL, err)))
            goto done;
        view = gview;
    }
    if (o->imatrix && (rc = apr_imatrix_load(&im, o->imatrix, err)))
        goto done;
    if (im && (rc = apr_imatrix_filter(im, o->include_weights, o->n_include_weights, o->exclude_weights,
                                       o->n_exclude_weights, err)))
        goto done;
    plan = calloc(view->n_tensors ? view->n_tensors : 1, sizeof *plan);
    if (!plan) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    apr_quant_mix mix;
    if ((rc = make_plan(view, in_path, o, im, pats, plan, &mix, err)))
        goto done;
    for (uint64_t i = 0; i < view->n_tensors; i++)
        find_orig(in, view, &plan[i]);
    if (o->keep_split && (rc = plan_keep_split(in, in_path, out_path, plan, &ks, err)))
        goto done;

    out = apr_model_new(APR_FMT_GGUF);
    if (!out) {
        rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
        goto done;
    }
    for (uint64_t i = 0; i < view->n_kvs && !rc; i++) {
        const char *k = view->kvs[i].key;
        if (!strncmp(k, "split.", 6) || !strncmp(k, "apr.provenance", 14))
            continue; /* llama-quantize drops split keys; our provenance is rewritten below */
        rc = apr_model_set_kv(out, &view->kvs[i]);
    }
    /* llama.cpp's gguf_set_val_* drops an existing key and appends it, so
     * these two always end the copied KVs, in this order */
    apr_model_remove_kv(out, "general.quantization_version");
    apr_model_remove_kv(out, "general.file_type");
    if (!rc)
        rc = apr_model_set_kv_u32(out, "general.quantization_version", 2);
    if (!rc)
        rc = apr_model_set_kv_u32(out, "general.file_type", (uint32_t)mix.ftype);
    /* the user's overrides, then the tool's imatrix records (llama-quantize's order) */
    for (size_t k = 0; k < o->n_kv_overrides && !rc; k++) {
        const char *eq = strchr(o->kv_overrides[k], '=');
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)(eq - o->kv_overrides[k]), o->kv_overrides[k]);
        apr_model_remove_kv(out, key); /* gguf_set_val_* on an existing key moves it to the end */
        rc = apply_kv_override(out, o->kv_overrides[k], err);
    }
    if (!rc && im)
        rc = set_imatrix_kvs(out, o->imatrix, im);
    if (rc) {
        rc = rc == APR_E_NOMEM ? apr_err_set(err, rc, "copying the metadata: out of memory")
                               : apr_err_set(err, rc, "copying the metadata failed");
        goto done;
    }

    /* The output table: kept tensors borrow the view's bytes, quantized ones
     * (and kept ones the view makes on the fly) have no data: the writer
     * asks quantize_produce for them, one at a time. */
    const int threads = o->threads > 0 ? o->threads : apr_quant_default_threads();
    uint64_t qweights = 0, bytes_in = 0, bytes_out = 0, n_conv = 0;
    for (uint64_t i = 0; i < view->n_tensors && !rc; i++) {
        const apr_tensor *t = plan[i].src;
        uint64_t ne = 0, nbytes = 0;
        apr_dims_count(t->ndim, t->dims, &ne);
        bytes_in += t->nbytes;
        if (plan[i].to == t->dtype) {
            rc = apr_model_add_tensor(out, t->name, t->dtype, t->ndim, t->dims, t->data, t->nbytes, false, err);
            bytes_out += t->nbytes;
            continue;
        }
        if (!apr_dtype_tensor_bytes(plan[i].to, t->ndim, t->dims, &nbytes) || nbytes > SIZE_MAX) {
            rc = apr_err_set(err, APR_E_FORMAT, "%s: bad shape for %s", t->name, apr_dtype_name(plan[i].to));
            break;
        }
        rc = apr_model_add_tensor(out, t->name, plan[i].to, t->ndim, t->dims, NULL, nbytes, false, err);
        qweights += ne;
        n_conv++;
        bytes_out += nbytes;
    }
    if (rc)
        goto done;
    qs = (qstream){.plan = plan, .n = view->n_tensors, .view = view, .vstream = vstream, .threads = threads,
                   .show = o->progress, .total_w = qweights};

    /* APR output: APR's own layout of the quantized GGUF view, its fused
     * tensors assembled from quantize_produce's output while writing */
    apr_model *final = out;
    apr_write_opts wo = {.produce = quantize_produce, .produce_user = &qs};
    if (fmt == APR_FMT_APR) {
        apr_convert_opts co;
        apr_convert_opts_init(&co);
        co.threads = threads;
        co.src_produce = quantize_produce;
        co.src_produce_user = &qs;
        if ((rc = apr_convert_model_stream(out, APR_FMT_APR, &co, &aout, NULL, &astream, NULL, err)))
            goto done;
        final = aout;
        wo.produce = apr_conv_produce;
        wo.produce_user = astream;
    }
    wo.progress = false; /* quantize_produce draws the bar */
    wo.split_max_bytes = o->split_max_bytes;
    wo.split_max_tensors = o->split_max_tensors;
    wo.shard_max_bytes = o->shard_max_bytes;
    const char *write_path = out_path;
    if (o->keep_split) {
        wo.split_counts = ks.counts;
        wo.n_split_counts = ks.n > 1 ? ks.n : 0;
        write_path = ks.first_path; /* an unsplit input: PREFIX-00001-of-00001.gguf, one plain GGUF */
    }
    if (fmt == APR_FMT_GGUF && (rc = apr_gguf_check_split_outputs(final, write_path, &wo, in, err)))
        goto done;
    if (fmt == APR_FMT_APR && (rc = apr_apr_check_shard_outputs(final, write_path, &wo, in, err)))
        goto done;
    if (o->provenance) {
        prov = apr_prov_new("quantize", o->command_line);
        if (!prov) {
            rc = apr_err_set(err, APR_E_NOMEM, "out of memory");
            goto done;
        }
        if ((rc = apr_prov_set_source(prov, in, err)))
            goto done;
        for (uint64_t i = 0; i < final->n_tensors && !rc; i++)
            rc = record_tensor(prov, &final->tensors[i], view->cfg.arch, plan, view->n_tensors, err);
        if (!rc && fmt == APR_FMT_GGUF)
            rc = apr_gguf_record_splits(prov, final, write_path, &wo, err); /* every split, when split */
        /* hashing of the sources runs while the writer quantizes and writes */
        if (!rc)
            rc = apr_prov_start(prov, fmt, threads, &json, err);
        if (!rc)
            rc = apr_prov_attach(final, json, fmt, err);
        if (rc)
            goto done;
        wo.prov = prov;
    }
    rc = apr_model_write(final, write_path, fmt, &wo, err);
    if (qs.show)
        fprintf(stderr, "\n");
    if (rc)
        goto done;
    st->n_tensors = view->n_tensors;
    st->n_converted = n_conv;
    st->weights = qweights;
    st->bytes_in = bytes_in;
    st->bytes_out = bytes_out;
    st->n_fallback = mix.n_fallback;
    st->threads = threads;
    st->imatrix = im != NULL;
    st->format = fmt;
    st->seconds_quant = qs.tq;
    st->n_files = o->shard_max_bytes ? 0 : 1; /* APR shards: the writer's plan (its manifest names them) */
    snprintf(st->first_path, sizeof st->first_path, "%s", write_path);
    uint32_t n_splits = 0;
    if (fmt == APR_FMT_GGUF && !apr_gguf_split_count(final, &wo, &n_splits, err) && n_splits > 1) {
        st->n_files = n_splits;
        apr_gguf_split_path(write_path, 0, n_splits, st->first_path, sizeof st->first_path);
    }
    st->seconds = apr_now_s() - t0;
done:
    free(ks.counts);
    for (size_t k = 0; k < o->n_tensor_types; k++)
        apr_quant_tensor_type_free(&pats[k]);
    free(pats);
    free(json);
    apr_prov_free(prov);
    free(qs.in);
    apr_conv_stream_free(astream);
    apr_model_free(aout);
    apr_model_free(out);
    free(plan);
    apr_imatrix_free(im);
    apr_conv_stream_free(vstream);
    apr_model_free(gview);
    apr_model_free(in);
    return rc;
}
