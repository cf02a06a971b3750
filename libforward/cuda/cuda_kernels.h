/* cuda_kernels.h - the kernels of libforward's CUDA backend, as C-callable
 * launchers (plain C types only, so C tests and the C backend glue can call
 * them). Pointers named d_* are device pointers; `stream` is a cudaStream_t
 * passed as void*. Every launcher returns 0 or the cudaError_t of the launch.
 *
 * Activations are f32, row-major [tokens][features]. Weights stay on the
 * device in their stored (quantized) form; apr_cuda_dequant_rows expands rows
 * of them to f32 just before a matmul (see docs/gpu.md for why f32).
 *
 * The element decoders of the dequantizer are __host__ __device__ functions:
 * apr_cuda_ref_dequant_row runs the very same code on the CPU, so the tests
 * can check it bit for bit against libquant without a GPU.
 */
#ifndef APR_CUDA_KERNELS_H
#define APR_CUDA_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- dequantization (dequant.cu) */

/* Weight dtypes the CUDA backend reads: F32, F16, BF16, Q4_0, Q4_1, Q5_0,
 * Q5_1, Q8_0, Q4_K, Q5_K, Q6_K. */
bool apr_cuda_dtype_supported(apr_dtype t);
/* CPU run of the device element decoder: n elements (a multiple of the block
 * size) of one row. Returns 0, or APR_E_UNSUPPORTED / APR_E_ARG. */
int apr_cuda_ref_dequant_row(apr_dtype t, const void *src, float *dst, int64_t n);

/* d_dst[r][c] = dequant(row rows[r] of d_w)[c] for r < nrows, c < ncols.
 * d_w holds consecutive rows of row_bytes bytes each. d_row_ids (device,
 * int32, nrows entries) selects rows (embedding lookup); NULL means rows
 * 0..nrows-1 (a weight matrix). ncols must be a multiple of the block size. */
int apr_cuda_dequant_rows(apr_dtype t, const void *d_w, uint64_t row_bytes, uint32_t ncols,
                          uint32_t nrows, const int32_t *d_row_ids, float *d_dst, void *stream);

/* ---- elementwise and per-row kernels (kernels.cu) */

/* y[r] = (x[r] * 1/sqrt(mean(x[r]^2) + eps)) * w, the sum of squares in double. */
int apr_cuda_rmsnorm(const float *d_x, const float *d_w, float *d_y, uint32_t nrows,
                     uint32_t ncols, float eps, void *stream);
/* y[r][c] += b[c] */
int apr_cuda_add_bias(float *d_y, const float *d_b, uint32_t nrows, uint32_t ncols, void *stream);
/* x[i] += y[i] */
int apr_cuda_add(float *d_x, const float *d_y, uint64_t n, void *stream);
/* y[i] = silu(g[i]) * u[i], silu(v) = v / (1 + exp(-v)) */
int apr_cuda_swiglu(const float *d_g, const float *d_u, float *d_y, uint64_t n, void *stream);

/* Rotary embedding of n_tokens rows of n_heads heads of head_dim at positions
 * pos0.. ; d_cs is the table from apr_cuda_rope_table (cos, sin pairs,
 * [pos][head_dim/2]). Pair i of a head is (2i, 2i+1) for NORM rope and
 * (i, i + hd/2) with neox; the output keeps the input's layout. Row r of the
 * output starts at d_y + r * y_row_stride (floats), so K can be written
 * straight into the KV cache; d_y == d_x (stride n_heads*hd) works in place. */
int apr_cuda_rope(const float *d_x, float *d_y, uint64_t y_row_stride, uint32_t n_tokens,
                  uint32_t n_heads, uint32_t head_dim, uint32_t pos0, const float *d_cs, bool neox,
                  void *stream);
/* Host: the rope table for positions [0, n_pos): cs[(p*(hd/2)+i)*2 + {0,1}] =
 * {cos, sin}(p * base^(-2i/hd)), theta built as ggml does (theta_scale =
 * powf(base, -2/hd), theta *= theta_scale per pair, in f32). */
void apr_cuda_rope_table(float theta_base, uint32_t head_dim, uint32_t n_pos, float *cs);

/* Causal attention with GQA. d_q: [n_tokens][n_heads*hd] (roped, interleaved
 * order); d_kc / d_vc: the layer's cache, [ctx][n_kv_heads*hd], positions
 * 0..pos0+n_tokens-1 filled; d_out: [n_tokens][n_heads*hd]. Query t sees keys
 * 0..pos0+t. One block per (head, query). */
int apr_cuda_attention(const float *d_q, const float *d_kc, const float *d_vc, float *d_out,
                       uint32_t n_tokens, uint32_t pos0, uint32_t n_heads, uint32_t n_kv_heads,
                       uint32_t head_dim, float scale, void *stream);
/* Call once before the first attention launch: raises the kernel's dynamic
 * shared memory limit for max_ctx positions (head_dim <= 512). Returns 0, -1
 * when max_ctx does not fit the device's per-block shared memory (*max_fit
 * says how many positions would), -2 when the CUDA calls failed. */
int apr_cuda_attention_prepare(uint32_t max_ctx, uint32_t *max_fit);

/* ---- statistics (kernels.cu) */

/* Raw accumulators of one traced tensor; apr_cuda_stat_finish turns them
 * into apr_stats. Min/max/sums are over finite values only. */
typedef struct apr_cuda_stat_acc {
    double sum, sumsq, min, max;
    unsigned long long n, nonfinite;
} apr_cuda_stat_acc;
#define APR_CUDA_STAT_BLOCKS 120 /* partial accumulators per reduction */

/* *d_out = statistics of d_x[0..n). d_partials: APR_CUDA_STAT_BLOCKS device
 * accumulators of scratch. Deterministic: fixed grid, fixed tree order. */
int apr_cuda_stats(const float *d_x, uint64_t n, apr_cuda_stat_acc *d_partials,
                   apr_cuda_stat_acc *d_out, void *stream);

#ifdef __cplusplus
}
#endif
#endif /* APR_CUDA_KERNELS_H */
