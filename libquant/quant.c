/* quant.c - ggml_quantize_chunk's contract (apr_quantize_chunk), the same
 * through the plain reference kernels (apr_quantize_chunk_ref), and the
 * row-threaded driver (apr_quantize_chunk_mt). */
#include "quant_internal.h"
#include "apr_util.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

bool apr_quantize_supported(apr_dtype t)
{
    switch (t) {
    case APR_DT_F32: case APR_DT_F16: case APR_DT_BF16:
    case APR_DT_Q8_0: case APR_DT_Q4_0: case APR_DT_Q4_1: case APR_DT_Q5_0: case APR_DT_Q5_1:
    case APR_DT_Q2_K: case APR_DT_Q3_K: case APR_DT_Q4_K: case APR_DT_Q5_K: case APR_DT_Q6_K:
    case APR_DT_IQ4_NL: case APR_DT_IQ4_XS:
        return true;
    default:
        return false;
    }
}

/* Row size, or 0 when t/ncols do not make a valid row. */
static uint64_t chunk_row_bytes(apr_dtype t, int64_t nrows, int64_t ncols)
{
    if (!apr_quantize_supported(t) || nrows < 0 || ncols <= 0)
        return 0;
    const uint64_t rb = apr_dtype_row_bytes(t, (uint64_t)ncols);
    if (!rb || (nrows && rb > SIZE_MAX / (uint64_t)nrows))
        return 0;
    return rb;
}

/* Plain float types (ggml converts with round-to-nearest-even). */
static void rows_plain(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols)
{
    const float *x = src + r0 * ncols;
    const int64_t n = (r1 - r0) * ncols;
    if (t == APR_DT_F32) {
        memcpy(dst + (size_t)r0 * ncols * 4, x, (size_t)n * 4);
        return;
    }
    uint8_t *y = dst + (size_t)r0 * ncols * 2;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = t == APR_DT_F16 ? apr_f32_to_f16(x[i]) : apr_f32_to_bf16(x[i]);
        memcpy(y + 2 * i, &h, 2);
    }
}

static bool rows_any(apr_dtype t, const float *src, uint8_t *dst, int64_t r0, int64_t r1, int64_t ncols,
                     const float *imatrix, bool ref)
{
    if (t == APR_DT_F32 || t == APR_DT_F16 || t == APR_DT_BF16) {
        rows_plain(t, src, dst, r0, r1, ncols);
        return true;
    }
    return ref ? aprq_chunk_rows_ref(t, src, dst, r0, r1, ncols, imatrix)
               : aprq_chunk_rows_fast(t, src, dst, r0, r1, ncols, imatrix);
}

size_t apr_quantize_chunk(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                          const float *imatrix)
{
    const uint64_t rb = chunk_row_bytes(t, nrows, ncols);
    if (!rb || !rows_any(t, src, dst, 0, nrows, ncols, imatrix, false))
        return 0;
    return (size_t)(rb * (uint64_t)nrows);
}

size_t apr_quantize_chunk_ref(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                              const float *imatrix)
{
    const uint64_t rb = chunk_row_bytes(t, nrows, ncols);
    if (!rb || !rows_any(t, src, dst, 0, nrows, ncols, imatrix, true))
        return 0;
    return (size_t)(rb * (uint64_t)nrows);
}

/* ------------------------------------------------------------ threads */

typedef struct mt_job {
    apr_dtype t;
    const float *src;
    uint8_t *dst;
    int64_t nrows, ncols, rows_per_grab;
    const float *imatrix;
    bool ref;
    atomic_llong next;
} mt_job;

/* Every thread (apr_threads_run) grabs rows until none are left. */
static void mt_worker(void *arg, int thread)
{
    (void)thread;
    mt_job *j = arg;
    for (;;) {
        const int64_t r0 = atomic_fetch_add(&j->next, j->rows_per_grab);
        if (r0 >= j->nrows)
            break;
        const int64_t r1 = r0 + j->rows_per_grab < j->nrows ? r0 + j->rows_per_grab : j->nrows;
        rows_any(j->t, j->src, j->dst, r0, r1, j->ncols, j->imatrix, j->ref);
    }
}

int apr_quant_default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 512 ? 512 : n) : 1;
}

size_t apr_quantize_chunk_mt_opt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                                 const float *imatrix, int n_threads, bool ref)
{
    const uint64_t rb = chunk_row_bytes(t, nrows, ncols);
    if (!rb)
        return 0;
    if (n_threads <= 0)
        n_threads = apr_quant_default_threads();
    /* grab about 16k weights at a time (llama-quantize's chunk size), whole rows */
    int64_t per = ncols >= 16384 ? 1 : (16384 + ncols - 1) / ncols;
    int64_t nchunks = (nrows + per - 1) / per;
    if (n_threads > nchunks)
        n_threads = (int)(nchunks > 0 ? nchunks : 1);
    if (n_threads <= 1) {
        if (!rows_any(t, src, dst, 0, nrows, ncols, imatrix, ref))
            return 0;
        return (size_t)(rb * (uint64_t)nrows);
    }
    mt_job job = {.t = t, .src = src, .dst = dst, .nrows = nrows, .ncols = ncols, .rows_per_grab = per,
                  .imatrix = imatrix, .ref = ref};
    atomic_init(&job.next, 0);
    apr_threads_run(n_threads, mt_worker, &job); /* the calling thread is one of them */
    return (size_t)(rb * (uint64_t)nrows);
}

size_t apr_quantize_chunk_mt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                             const float *imatrix, int n_threads)
{
    return apr_quantize_chunk_mt_opt(t, src, dst, nrows, ncols, imatrix, n_threads, false);
}
