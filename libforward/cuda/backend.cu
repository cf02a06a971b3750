/* backend.cu - libforward's CUDA backend (graph.h's apr_backend vtable).
 *
 * Memory plan: every weight matrix is uploaded once in its stored form
 * (quantized blocks stay quantized); a matmul expands rows of it to f32 into
 * one reusable scratch buffer (at most APR_CUDA_SCRATCH_ELEMS floats, the
 * weight taken in row chunks when larger) and runs a cuBLAS GEMM with f32
 * inputs, output and accumulation. VRAM ~ model size + KV cache (f32) +
 * one scratch + activations of one sub-batch of APR_CUDA_UBATCH tokens.
 *
 * Determinism: a single stream, fixed launch shapes, tree reductions in fixed
 * order and cuBLAS (bit-reproducible on one GPU model with one stream) make
 * two evaluations of the same tokens give the same bits. Q, K and V always
 * run as three GEMMs (even from APR's fused QKV), and HF rotate-half Q/K rows
 * are permuted into logical order at upload, so the same weights in GGUF,
 * APR or safetensors give bit-identical logits (apr verify's lossless check).
 */
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apr_cuda.h"
#include "cuda_kernels.h"
#include "backend.h"

#define APR_CUDA_UBATCH 512u                  /* tokens per internal sub-batch */
#define APR_CUDA_SCRATCH_ELEMS (64ull << 20)  /* f32 elements of dequant scratch (256 MiB) */
#define MIB(x) ((double)(x) / (1024.0 * 1024.0))

static_assert(sizeof(apr_cuda_stat_acc) == sizeof(apr_stats_acc), "stat accumulator layouts differ");

static uint64_t g_bytes_in_use; /* all live backends; single-threaded use like the rest of libforward */

/* ---------------------------------------------------------------- types */

typedef struct dev_seg {
    const void *d;        /* device rows */
    apr_dtype dtype;
    uint64_t rows, row_bytes;
} dev_seg;

typedef struct dev_mat {
    uint64_t rows, cols;
    uint32_t n_seg;
    dev_seg seg[APR_MAX_PARTS];
} dev_mat;

typedef struct dev_layer {
    float *attn_norm, *ffn_norm, *bq, *bk, *bv;
    dev_mat q, k, v, o, gate, up, down;
    float *kc, *vc;       /* KV cache [max_ctx][kv_dim] */
} dev_layer;

typedef struct upload_rec { /* dedupe of identical host ranges (tied embeddings) */
    const uint8_t *host;
    uint64_t bytes;
    void *d;
} upload_rec;

typedef struct cuda_backend {
    apr_backend base;
    const apr_graph *g;
    uint32_t max_ctx, ubatch;
    uint32_t q_dim, kv_dim;
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasComputeType_t compute;

    void **allocs;        /* every cudaMalloc, freed in apr_cuda_free */
    size_t n_allocs, cap_allocs;
    uint64_t bytes;
    uint64_t max_bytes;   /* APR_CUDA_MAX_MB cap; 0 = none */
    upload_rec *ups;
    size_t n_ups, cap_ups;

    dev_mat embd, output;
    float *output_norm;
    dev_layer *layers;
    float *rope_cs;       /* [max_ctx][hd/2][2] */

    float *scratch;       /* dequantized weight rows */
    uint64_t scratch_elems;
    int32_t *tok;         /* [ubatch] */
    float *x, *xn, *q, *k, *att, *tmp, *gbuf, *ubuf, *logits; /* activations */
    apr_cuda_stat_acc *st_partials, *st_acc; /* [STAT_BLOCKS], [n_layers * APR_TR_COUNT] */
    apr_stats_acc *host_acc;                 /* merged over sub-batches */
} cuda_backend;

/* ---------------------------------------------------------------- errors */

static int cuda_fail(apr_err *err, cudaError_t e, const char *what)
{
    int code = e == cudaErrorMemoryAllocation ? APR_E_NOMEM : APR_E_IO;
    return apr_err_set(err, code, "CUDA: %s failed: %s (%s)", what, cudaGetErrorString(e),
                       cudaGetErrorName(e));
}

static const char *blas_status_name(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "execution failed";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "not supported";
    default: return "error";
    }
}

/* Launchers return a cudaError_t as int. */
#define LAUNCH(call, what)                                                                     \
    do {                                                                                       \
        int rc_ = (call);                                                                      \
        if (rc_ != 0)                                                                          \
            return cuda_fail(err, (cudaError_t)rc_, what);                                     \
    } while (0)

#define CUDA_TRY(call, what)                                                                   \
    do {                                                                                       \
        cudaError_t e_ = (call);                                                               \
        if (e_ != cudaSuccess)                                                                 \
            return cuda_fail(err, e_, what);                                                   \
    } while (0)

/* ---------------------------------------------------------------- probe */

extern "C" int apr_cuda_probe(apr_cuda_info *info, apr_err *err)
{
    memset(info, 0, sizeof *info);
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess)
        return apr_err_set(err, APR_E_UNSUPPORTED, "no CUDA device: %s (%s)", cudaGetErrorString(e),
                           cudaGetErrorName(e));
    if (n <= 0)
        return apr_err_set(err, APR_E_UNSUPPORTED, "no CUDA device: the driver reports 0 devices");
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, 0);
    if (e != cudaSuccess)
        return apr_err_set(err, APR_E_UNSUPPORTED, "no usable CUDA device: %s", cudaGetErrorString(e));
    info->n_devices = n;
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->n_sms = p.multiProcessorCount;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        info->free_bytes = fr;
        info->total_bytes = tot;
    } else {
        info->total_bytes = p.totalGlobalMem;
    }
    return 0;
}

typedef struct math_mode {
    const char *name;
    cublasComputeType_t compute;
} math_mode;

static math_mode math_from_env(void)
{
    static const math_mode modes[] = {{"f32", CUBLAS_COMPUTE_32F},
                                      {"tf32", CUBLAS_COMPUTE_32F_FAST_TF32},
                                      {"f16", CUBLAS_COMPUTE_32F_FAST_16F},
                                      {"bf16", CUBLAS_COMPUTE_32F_FAST_16BF}};
    const char *s = getenv("APR_CUDA_MATH");
    for (size_t i = 0; s && i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(s, modes[i].name) == 0)
            return modes[i];
    return modes[0];
}

extern "C" const char *apr_cuda_math_name(void)
{
    return math_from_env().name;
}

extern "C" uint64_t apr_cuda_bytes_in_use(void)
{
    return g_bytes_in_use;
}

/* ---------------------------------------------------------------- allocation */

static int dev_alloc(cuda_backend *b, void **out, uint64_t bytes, const char *what, apr_err *err)
{
    *out = NULL;
    if (b->n_allocs == b->cap_allocs) {
        size_t cap = b->cap_allocs ? 2 * b->cap_allocs : 64;
        void **p = (void **)realloc(b->allocs, cap * sizeof *p);
        if (!p)
            return apr_err_set(err, APR_E_NOMEM, "out of host memory");
        b->allocs = p;
        b->cap_allocs = cap;
    }
    cudaError_t e = b->max_bytes && bytes > b->max_bytes - b->bytes
                        ? cudaErrorMemoryAllocation /* over the user's cap: same report */
                        : cudaMalloc(out, bytes ? bytes : 1);
    if (e != cudaSuccess && e != cudaErrorMemoryAllocation) {
        cudaGetLastError();
        return cuda_fail(err, e, "cudaMalloc");
    }
    if (e != cudaSuccess) {
        size_t fr = 0, tot = 0;
        cudaGetLastError(); /* clear it: allocation failures are not sticky */
        cudaMemGetInfo(&fr, &tot);
        char capmsg[96] = "";
        if (b->max_bytes)
            snprintf(capmsg, sizeof capmsg, "; APR_CUDA_MAX_MB caps this model at %.0f MiB",
                     MIB(b->max_bytes));
        return apr_err_set(err, APR_E_NOMEM,
                           "CUDA out of memory: %.1f MiB for %s (%.1f MiB already held by this "
                           "model, %.1f of %.1f MiB free on the device%s): %s",
                           MIB(bytes), what, MIB(b->bytes), MIB(fr), MIB(tot), capmsg,
                           cudaGetErrorString(e));
    }
    b->allocs[b->n_allocs++] = *out;
    b->bytes += bytes;
    g_bytes_in_use += bytes;
    return 0;
}

static int dev_floats(cuda_backend *b, float **out, uint64_t n, const char *what, apr_err *err)
{
    return dev_alloc(b, (void **)out, n * sizeof(float), what, err);
}

/* Upload host bytes (once per distinct host range). */
static int upload(cuda_backend *b, const void **out, const uint8_t *host, uint64_t bytes,
                  const char *what, apr_err *err)
{
    for (size_t i = 0; i < b->n_ups; i++)
        if (b->ups[i].host == host && b->ups[i].bytes == bytes) {
            *out = b->ups[i].d;
            return 0;
        }
    void *d;
    int rc = dev_alloc(b, &d, bytes, what, err);
    if (rc)
        return rc;
    CUDA_TRY(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice), "upload of a weight");
    if (b->n_ups == b->cap_ups) {
        size_t cap = b->cap_ups ? 2 * b->cap_ups : 64;
        upload_rec *p = (upload_rec *)realloc(b->ups, cap * sizeof *p);
        if (!p)
            return apr_err_set(err, APR_E_NOMEM, "out of host memory");
        b->ups = p;
        b->cap_ups = cap;
    }
    b->ups[b->n_ups++] = (upload_rec){host, bytes, d};
    *out = d;
    return 0;
}

static int upload_f32(cuda_backend *b, float **out, const float *host, uint64_t n, const char *what,
                      apr_err *err)
{
    *out = NULL;
    if (!host)
        return 0;
    const void *d = NULL;
    int rc = upload(b, &d, (const uint8_t *)host, n * sizeof(float), what, err);
    *out = (float *)d;
    return rc;
}

/* A weight matrix to the device: each segment as stored, or, for HF
 * rotate-half Q/K (perm_hd != 0), the rows gathered into logical order on
 * the host first (graph.h allows permuting at upload). */
static int upload_mat(cuda_backend *b, dev_mat *dm, const apr_wmat *w, apr_err *err)
{
    memset(dm, 0, sizeof *dm);
    dm->rows = w->rows;
    dm->cols = w->cols;
    for (uint32_t s = 0; s < w->n_seg; s++)
        if (!apr_cuda_dtype_supported(w->seg[s].dtype))
            return apr_err_set(err, APR_E_UNSUPPORTED,
                               "the CUDA backend has no %s kernels (tensor %s); use --device cpu",
                               apr_dtype_name(w->seg[s].dtype), w->name ? w->name : "?");
    if (!w->perm_hd) {
        dm->n_seg = w->n_seg;
        for (uint32_t s = 0; s < w->n_seg; s++) {
            const apr_wseg *ws = &w->seg[s];
            dm->seg[s].dtype = ws->dtype;
            dm->seg[s].rows = ws->rows;
            dm->seg[s].row_bytes = ws->row_bytes;
            int rc = upload(b, &dm->seg[s].d, ws->data, ws->rows * ws->row_bytes,
                            w->name ? w->name : "a weight", err);
            if (rc)
                return rc;
        }
        return 0;
    }
    for (uint32_t s = 1; s < w->n_seg; s++)
        if (w->seg[s].dtype != w->seg[0].dtype)
            return apr_err_set(err, APR_E_UNSUPPORTED,
                               "tensor %s: rotate-half Q/K rows with mixed dtypes are not supported "
                               "by the CUDA backend", w->name ? w->name : "?");
    const uint64_t rb = w->seg[0].row_bytes;
    uint8_t *stage = (uint8_t *)malloc(rb * w->rows);
    if (!stage)
        return apr_err_set(err, APR_E_NOMEM, "out of host memory staging %s", w->name);
    for (uint64_t r = 0; r < w->rows; r++) {
        apr_dtype dt;
        const uint8_t *src = apr_wmat_row(w, apr_wmat_phys_row(w, r), &dt);
        memcpy(stage + r * rb, src, rb);
    }
    void *d;
    int rc = dev_alloc(b, &d, rb * w->rows, w->name ? w->name : "a weight", err);
    if (!rc) {
        cudaError_t e = cudaMemcpy(d, stage, rb * w->rows, cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            rc = cuda_fail(err, e, "upload of a permuted Q/K weight");
    }
    free(stage);
    if (rc)
        return rc;
    dm->n_seg = 1;
    dm->seg[0] = (dev_seg){d, w->seg[0].dtype, w->rows, rb};
    return 0;
}

/* ---------------------------------------------------------------- compute helpers */

/* y[t][r] = sum_c w[r][c] * x[t][c] for t < n, r < w->rows; row t of y starts
 * at y + t * ldy. Quantized rows are expanded into the scratch in chunks. */
static int matmul(cuda_backend *b, const dev_mat *w, const float *x, uint32_t n, float *y,
                  uint64_t ldy, apr_err *err)
{
    const float one = 1.0f, zero = 0.0f;
    uint64_t row0 = 0;
    for (uint32_t s = 0; s < w->n_seg; s++) {
        const dev_seg *sg = &w->seg[s];
        uint64_t chunk = sg->dtype == APR_DT_F32 ? sg->rows : b->scratch_elems / w->cols;
        for (uint64_t r = 0; r < sg->rows; r += chunk) {
            uint64_t nr = sg->rows - r < chunk ? sg->rows - r : chunk;
            const uint8_t *src = (const uint8_t *)sg->d + r * sg->row_bytes;
            const float *a;
            if (sg->dtype == APR_DT_F32) {
                a = (const float *)src;
            } else {
                LAUNCH(apr_cuda_dequant_rows(sg->dtype, src, sg->row_bytes, (uint32_t)w->cols,
                                             (uint32_t)nr, NULL, b->scratch, b->stream),
                       "dequantize kernel");
                a = b->scratch;
            }
            /* column-major view: A = W^T chunk (cols x nr), B = X (cols x n) */
            cublasStatus_t st = cublasGemmEx(
                b->blas, CUBLAS_OP_T, CUBLAS_OP_N, (int)nr, (int)n, (int)w->cols, &one, a,
                CUDA_R_32F, (int)w->cols, x, CUDA_R_32F, (int)w->cols, &zero, y + row0 + r,
                CUDA_R_32F, (int)ldy, b->compute, CUBLAS_GEMM_DEFAULT);
            if (st != CUBLAS_STATUS_SUCCESS)
                return apr_err_set(err, APR_E_IO, "cuBLAS GEMM (%llu x %u x %llu) failed: %s",
                                   (unsigned long long)nr, n, (unsigned long long)w->cols,
                                   blas_status_name(st));
        }
        row0 += sg->rows;
    }
    return 0;
}

/* Statistics of a traced tensor of n rows x width (the last row only when
 * the trace asks for the last token) into slot idx of the device table. */
static int trace_step(cuda_backend *b, const apr_trace *tr, bool active, uint32_t layer,
                      apr_trace_step step, const float *t, uint32_t n, uint64_t width, uint64_t ld,
                      apr_err *err)
{
    if (!tr || !active)
        return 0;
    apr_cuda_stat_acc *dst = b->st_acc + (size_t)layer * APR_TR_COUNT + step;
    if (tr->last_token_only || n == 1) {
        LAUNCH(apr_cuda_stats(t + (uint64_t)(n - 1) * ld, width, b->st_partials, dst, b->stream),
               "statistics kernel");
    } else if (ld == width) {
        LAUNCH(apr_cuda_stats(t, (uint64_t)n * width, b->st_partials, dst, b->stream),
               "statistics kernel");
    } else {
        return apr_err_set(err, APR_E_ARG, "internal: strided trace of %s",
                           apr_trace_step_name(step));
    }
    return 0;
}

/* ---------------------------------------------------------------- eval */

/* One sub-batch of n <= ubatch tokens at position pos. */
static int eval_ubatch(cuda_backend *b, const int32_t *tokens, uint32_t n, uint32_t pos,
                       bool want_logits_all, bool want_logits_last, float *logits_out,
                       apr_trace *tr, bool trace_here, apr_err *err)
{
    const apr_graph *g = b->g;
    const apr_arch_config *c = &g->cfg;
    const uint32_t H = c->hidden, hd = c->head_dim, F = c->ffn, V = c->vocab;
    const uint32_t qd = b->q_dim, kvd = b->kv_dim;
    const bool neox = g->rope == APR_ROPE_NEOX;
    const float kq_scale = 1.0f / sqrtf((float)hd);
    cudaStream_t st = b->stream;

    CUDA_TRY(cudaMemcpyAsync(b->tok, tokens, n * sizeof(int32_t), cudaMemcpyHostToDevice, st),
             "token upload");
    LAUNCH(apr_cuda_dequant_rows(b->embd.seg[0].dtype, b->embd.seg[0].d, b->embd.seg[0].row_bytes,
                                 H, n, b->tok, b->x, st),
           "embedding lookup");

    for (uint32_t l = 0; l < c->n_layers; l++) {
        dev_layer *L = &b->layers[l];
        float *kc = L->kc + (uint64_t)pos * kvd, *vc = L->vc + (uint64_t)pos * kvd;
        int rc;
#define TR(step, ptr, width, ld)                                                                \
    do {                                                                                        \
        if ((rc = trace_step(b, tr, trace_here, l, step, ptr, n, width, ld, err)))              \
            return rc;                                                                          \
    } while (0)
#define MM(w, in, out, ld)                                                                      \
    do {                                                                                        \
        if ((rc = matmul(b, w, in, n, out, ld, err)))                                           \
            return rc;                                                                          \
    } while (0)

        LAUNCH(apr_cuda_rmsnorm(b->x, L->attn_norm, b->xn, n, H, c->rms_eps, st), "rmsnorm");
        TR(APR_TR_ATTN_NORM, b->xn, H, H);

        MM(&L->q, b->xn, b->q, qd);
        if (L->bq)
            LAUNCH(apr_cuda_add_bias(b->q, L->bq, n, qd, st), "bias");
        TR(APR_TR_Q, b->q, qd, qd);
        MM(&L->k, b->xn, b->k, kvd);
        if (L->bk)
            LAUNCH(apr_cuda_add_bias(b->k, L->bk, n, kvd, st), "bias");
        TR(APR_TR_K, b->k, kvd, kvd);
        MM(&L->v, b->xn, vc, kvd); /* V straight into the cache */
        if (L->bv)
            LAUNCH(apr_cuda_add_bias(vc, L->bv, n, kvd, st), "bias");
        TR(APR_TR_V, vc, kvd, kvd);

        LAUNCH(apr_cuda_rope(b->q, b->q, qd, n, c->n_heads, hd, pos, b->rope_cs, neox, st), "rope");
        LAUNCH(apr_cuda_rope(b->k, kc, kvd, n, c->n_kv_heads, hd, pos, b->rope_cs, neox, st),
               "rope");
        LAUNCH(apr_cuda_attention(b->q, L->kc, L->vc, b->att, n, pos, c->n_heads, c->n_kv_heads, hd,
                                  kq_scale, st),
               "attention");
        TR(APR_TR_ATTN_OUT, b->att, qd, qd);

        MM(&L->o, b->att, b->tmp, H);
        TR(APR_TR_O_PROJ, b->tmp, H, H);
        LAUNCH(apr_cuda_add(b->x, b->tmp, (uint64_t)n * H, st), "residual add");
        TR(APR_TR_RESID1, b->x, H, H);

        LAUNCH(apr_cuda_rmsnorm(b->x, L->ffn_norm, b->xn, n, H, c->rms_eps, st), "rmsnorm");
        TR(APR_TR_FFN_NORM, b->xn, H, H);
        MM(&L->gate, b->xn, b->gbuf, F);
        TR(APR_TR_GATE, b->gbuf, F, F);
        MM(&L->up, b->xn, b->ubuf, F);
        TR(APR_TR_UP, b->ubuf, F, F);
        LAUNCH(apr_cuda_swiglu(b->gbuf, b->ubuf, b->gbuf, (uint64_t)n * F, st), "swiglu");
        TR(APR_TR_SWIGLU, b->gbuf, F, F);
        MM(&L->down, b->gbuf, b->tmp, H);
        TR(APR_TR_DOWN, b->tmp, H, H);
        LAUNCH(apr_cuda_add(b->x, b->tmp, (uint64_t)n * H, st), "residual add");
        TR(APR_TR_RESID2, b->x, H, H);
#undef TR
#undef MM
    }

    if (want_logits_all || want_logits_last) {
        /* LAST: only the last row goes through the final norm and the output matmul */
        uint32_t first = want_logits_all ? 0 : n - 1, m = n - first;
        const float *xs = b->x + (uint64_t)first * H;
        LAUNCH(apr_cuda_rmsnorm(xs, b->output_norm, b->xn, m, H, c->rms_eps, st), "rmsnorm");
        int rc = matmul(b, &b->output, b->xn, m, b->logits, V, err);
        if (rc)
            return rc;
        CUDA_TRY(cudaMemcpyAsync(logits_out, b->logits, (uint64_t)m * V * sizeof(float),
                                 cudaMemcpyDeviceToHost, st),
                 "logits download");
    }
    if (tr && trace_here) {
        size_t ns = (size_t)c->n_layers * APR_TR_COUNT;
        CUDA_TRY(cudaMemcpyAsync(b->host_acc + ns, b->st_acc, ns * sizeof(apr_stats_acc),
                                 cudaMemcpyDeviceToHost, st),
                 "trace download");
    }
    CUDA_TRY(cudaStreamSynchronize(st), "forward pass");
    if (tr && trace_here) {
        size_t ns = (size_t)c->n_layers * APR_TR_COUNT;
        for (size_t i = 0; i < ns; i++)
            apr_stats_acc_merge(&b->host_acc[i], &b->host_acc[ns + i]);
    }
    return 0;
}

static int cuda_eval(apr_backend *base, const int32_t *tokens, uint32_t n, uint32_t pos,
                     float *logits, apr_logits_mode mode, apr_trace *trace, apr_err *err)
{
    cuda_backend *b = (cuda_backend *)base;
    const apr_arch_config *c = &b->g->cfg;
    if (n == 0)
        return 0;
    if ((uint64_t)pos + n > b->max_ctx)
        return apr_err_set(err, APR_E_ARG, "positions %u..%u exceed the context of %u", pos,
                           pos + n - 1, b->max_ctx);
    for (uint32_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= c->vocab)
            return apr_err_set(err, APR_E_ARG, "token id %d at index %u is outside the vocabulary (%u)",
                               tokens[i], i, c->vocab);
    if (mode != APR_LOGITS_NONE && !logits)
        return apr_err_set(err, APR_E_ARG, "logits requested without a buffer");
    if (trace && trace->n_layers != c->n_layers)
        return apr_err_set(err, APR_E_ARG, "trace has %u layers, the model %u", trace->n_layers,
                           c->n_layers);
    size_t ns = (size_t)c->n_layers * APR_TR_COUNT;
    if (trace)
        for (size_t i = 0; i < ns; i++)
            apr_stats_acc_init(&b->host_acc[i]);

    for (uint32_t b0 = 0; b0 < n; b0 += b->ubatch) {
        uint32_t m = n - b0 < b->ubatch ? n - b0 : b->ubatch;
        bool last = b0 + m == n;
        bool trace_here = trace && (!trace->last_token_only || last);
        float *out = NULL;
        if (mode == APR_LOGITS_ALL)
            out = logits + (uint64_t)b0 * c->vocab;
        else if (mode == APR_LOGITS_LAST && last)
            out = logits;
        int rc = eval_ubatch(b, tokens + b0, m, pos + b0, mode == APR_LOGITS_ALL,
                             mode == APR_LOGITS_LAST && last, out, trace, trace_here, err);
        if (rc)
            return rc;
    }
    if (trace)
        for (size_t i = 0; i < ns; i++)
            apr_stats_acc_finish(&b->host_acc[i], &trace->s[i]);
    return 0;
}

/* ---------------------------------------------------------------- load / free */

static void cuda_free(apr_backend *base)
{
    cuda_backend *b = (cuda_backend *)base;
    if (!b)
        return;
    if (b->stream)
        cudaStreamSynchronize(b->stream);
    for (size_t i = 0; i < b->n_allocs; i++)
        cudaFree(b->allocs[i]);
    g_bytes_in_use -= b->bytes;
    if (b->blas)
        cublasDestroy(b->blas);
    if (b->stream)
        cudaStreamDestroy(b->stream);
    free(b->allocs);
    free(b->ups);
    free(b->layers);
    free(b->host_acc);
    free(b);
}

static const apr_backend_ops cuda_ops = {"cuda", cuda_eval, cuda_free};

static uint64_t mat_elems(const apr_wmat *w)
{
    return w->rows * w->cols;
}

static int create(cuda_backend *b, const apr_graph *g, uint32_t max_ctx, apr_err *err)
{
    const apr_arch_config *c = &g->cfg;
    int rc;
    if (c->head_dim == 0 || c->head_dim % 2 || c->n_kv_heads == 0 || c->n_heads % c->n_kv_heads)
        return apr_err_set(err, APR_E_FORMAT, "CUDA backend: bad head layout (%u heads, %u kv heads, head_dim %u)",
                           c->n_heads, c->n_kv_heads, c->head_dim);
    if (g->token_embd.n_seg != 1)
        return apr_err_set(err, APR_E_UNSUPPORTED, "CUDA backend: token embedding %s is split in %u dtype parts",
                           g->token_embd.name, g->token_embd.n_seg);
    b->q_dim = c->n_heads * c->head_dim;
    b->kv_dim = c->n_kv_heads * c->head_dim;
    b->ubatch = max_ctx < APR_CUDA_UBATCH ? max_ctx : APR_CUDA_UBATCH;

    if (c->head_dim > 512)
        return apr_err_set(err, APR_E_UNSUPPORTED, "CUDA backend: head_dim %u is above its attention kernel's 512",
                           c->head_dim);
    uint32_t fit = 0;
    int prc = apr_cuda_attention_prepare(max_ctx, &fit);
    if (prc == -2)
        return apr_err_set(err, APR_E_IO, "CUDA: querying the device's shared memory failed: %s",
                           cudaGetErrorString(cudaGetLastError()));
    if (prc)
        return apr_err_set(err, APR_E_UNSUPPORTED,
                           "CUDA backend: a context of %u positions exceeds what its attention "
                           "kernel holds in shared memory (%u); use a smaller --ctx or --device cpu",
                           max_ctx, fit);

    math_mode mm = math_from_env();
    b->compute = mm.compute;
    CUDA_TRY(cudaStreamCreateWithFlags(&b->stream, cudaStreamNonBlocking), "stream creation");
    cublasStatus_t bs = cublasCreate(&b->blas);
    if (bs != CUBLAS_STATUS_SUCCESS) {
        b->blas = NULL;
        return apr_err_set(err, bs == CUBLAS_STATUS_ALLOC_FAILED ? APR_E_NOMEM : APR_E_IO,
                           "cuBLAS initialisation failed: %s", blas_status_name(bs));
    }
    cublasSetStream(b->blas, b->stream);
    /* DEFAULT math: no TF32 unless the compute type asks for it */
    cublasSetMathMode(b->blas, CUBLAS_DEFAULT_MATH);

    /* weights */
    uint64_t max_elems = 0;
    if ((rc = upload_mat(b, &b->embd, &g->token_embd, err)) ||
        (rc = upload_mat(b, &b->output, &g->output, err)) ||
        (rc = upload_f32(b, &b->output_norm, g->output_norm, c->hidden, "output_norm", err)))
        return rc;
    max_elems = mat_elems(&g->output);
    b->layers = (dev_layer *)calloc(c->n_layers ? c->n_layers : 1, sizeof *b->layers);
    if (!b->layers)
        return apr_err_set(err, APR_E_NOMEM, "out of host memory");
    for (uint32_t l = 0; l < c->n_layers; l++) {
        const apr_layer *gl = &g->layers[l];
        dev_layer *L = &b->layers[l];
        const apr_wmat *ws[7] = {&gl->q, &gl->k, &gl->v, &gl->o, &gl->gate, &gl->up, &gl->down};
        dev_mat *ds[7] = {&L->q, &L->k, &L->v, &L->o, &L->gate, &L->up, &L->down};
        for (int i = 0; i < 7; i++) {
            if ((rc = upload_mat(b, ds[i], ws[i], err)))
                return rc;
            if (mat_elems(ws[i]) > max_elems)
                max_elems = mat_elems(ws[i]);
        }
        if ((rc = upload_f32(b, &L->attn_norm, gl->attn_norm, c->hidden, "attn_norm", err)) ||
            (rc = upload_f32(b, &L->ffn_norm, gl->ffn_norm, c->hidden, "ffn_norm", err)) ||
            (rc = upload_f32(b, &L->bq, gl->bq, b->q_dim, "q bias", err)) ||
            (rc = upload_f32(b, &L->bk, gl->bk, b->kv_dim, "k bias", err)) ||
            (rc = upload_f32(b, &L->bv, gl->bv, b->kv_dim, "v bias", err)))
            return rc;
        if ((rc = dev_floats(b, &L->kc, (uint64_t)max_ctx * b->kv_dim, "the K cache", err)) ||
            (rc = dev_floats(b, &L->vc, (uint64_t)max_ctx * b->kv_dim, "the V cache", err)))
            return rc;
    }

    /* scratch: the largest weight, capped (matmul takes bigger ones in row chunks) */
    uint64_t widest = c->hidden > c->ffn ? c->hidden : c->ffn;
    if (b->q_dim > widest)
        widest = b->q_dim;
    b->scratch_elems = max_elems < APR_CUDA_SCRATCH_ELEMS ? max_elems : APR_CUDA_SCRATCH_ELEMS;
    if (b->scratch_elems < widest)
        b->scratch_elems = widest;
    if ((rc = dev_floats(b, &b->scratch, b->scratch_elems, "the dequantization scratch", err)))
        return rc;

    /* activations of one sub-batch */
    const uint64_t u = b->ubatch;
    if ((rc = dev_alloc(b, (void **)&b->tok, u * sizeof(int32_t), "token ids", err)) ||
        (rc = dev_floats(b, &b->x, u * c->hidden, "activations", err)) ||
        (rc = dev_floats(b, &b->xn, u * c->hidden, "activations", err)) ||
        (rc = dev_floats(b, &b->tmp, u * c->hidden, "activations", err)) ||
        (rc = dev_floats(b, &b->q, u * b->q_dim, "activations", err)) ||
        (rc = dev_floats(b, &b->att, u * b->q_dim, "activations", err)) ||
        (rc = dev_floats(b, &b->k, u * b->kv_dim, "activations", err)) ||
        (rc = dev_floats(b, &b->gbuf, u * c->ffn, "activations", err)) ||
        (rc = dev_floats(b, &b->ubuf, u * c->ffn, "activations", err)) ||
        (rc = dev_floats(b, &b->logits, u * c->vocab, "logits", err)))
        return rc;

    /* rope table, statistics */
    size_t cs_n = (size_t)max_ctx * (c->head_dim / 2) * 2;
    float *cs = (float *)malloc(cs_n * sizeof(float));
    if (!cs)
        return apr_err_set(err, APR_E_NOMEM, "out of host memory");
    apr_cuda_rope_table(c->rope_theta, c->head_dim, max_ctx, cs);
    rc = dev_floats(b, &b->rope_cs, cs_n, "the rope table", err);
    if (!rc) {
        cudaError_t e = cudaMemcpy(b->rope_cs, cs, cs_n * sizeof(float), cudaMemcpyHostToDevice);
        if (e != cudaSuccess)
            rc = cuda_fail(err, e, "rope table upload");
    }
    free(cs);
    if (rc)
        return rc;
    size_t ns = (size_t)c->n_layers * APR_TR_COUNT;
    if ((rc = dev_alloc(b, (void **)&b->st_partials, APR_CUDA_STAT_BLOCKS * sizeof(apr_cuda_stat_acc),
                        "statistics", err)) ||
        (rc = dev_alloc(b, (void **)&b->st_acc, (ns ? ns : 1) * sizeof(apr_cuda_stat_acc),
                        "statistics", err)))
        return rc;
    b->host_acc = (apr_stats_acc *)calloc(2 * ns + 1, sizeof *b->host_acc);
    if (!b->host_acc)
        return apr_err_set(err, APR_E_NOMEM, "out of host memory");
    CUDA_TRY(cudaDeviceSynchronize(), "backend setup");
    return 0;
}

extern "C" int apr_cuda_backend_create(apr_backend **out, const apr_graph *g, uint32_t max_ctx,
                                       apr_err *err)
{
    *out = NULL;
    apr_cuda_info info;
    int rc = apr_cuda_probe(&info, err);
    if (rc)
        return rc;
    if (max_ctx == 0)
        return apr_err_set(err, APR_E_ARG, "CUDA backend: a context of 0 positions");
    cuda_backend *b = (cuda_backend *)calloc(1, sizeof *b);
    if (!b)
        return apr_err_set(err, APR_E_NOMEM, "out of host memory");
    b->base.ops = &cuda_ops;
    b->g = g;
    b->max_ctx = max_ctx;
    const char *cap = getenv("APR_CUDA_MAX_MB");
    if (cap && *cap) {
        char *end;
        unsigned long long mb = strtoull(cap, &end, 10);
        if (*end || mb == 0 || mb > (UINT64_MAX >> 20)) {
            free(b);
            return apr_err_set(err, APR_E_ARG, "APR_CUDA_MAX_MB=%s is not a positive number of MiB", cap);
        }
        b->max_bytes = mb << 20;
    }
    rc = create(b, g, max_ctx, err);
    if (rc) {
        cuda_free(&b->base);
        return rc;
    }
    *out = &b->base;
    return 0;
}
