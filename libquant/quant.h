/* quant.h - the public header of libquant: f16/bf16 conversion, ggml block
 * quantizers (byte-identical to ggml's reference), dequantizers, dot-product
 * kernels for libforward, and llama.cpp's per-tensor type mixes.
 *
 * Types are apr_dtype (ggml numbering) from formats.h.
 */
#ifndef APR_QUANT_H
#define APR_QUANT_H

#include "formats.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- scalar conversions: round to nearest even, subnormals kept, NaN quiet */
uint16_t apr_f32_to_f16(float f);
float apr_f16_to_f32(uint16_t h);
uint16_t apr_f32_to_bf16(float f);
float apr_bf16_to_f32(uint16_t h);

/* ---- whole rows.
 * n is the number of elements; for block types it must be a multiple of the
 * block size (apr_dtype_get(t)->block_elems). Return 0 on success, negative
 * if the type is unsupported or n does not fit. */
int apr_dequantize_row(apr_dtype t, const void *src, float *dst, int64_t n);
/* F32, F16, BF16 and every block type we write. */
int apr_to_f32_row(apr_dtype t, const void *src, float *dst, int64_t n); /* alias of dequantize, any readable dtype incl. F64/ints */

/* Quantize nrows rows of ncols floats (row-major) into dst, which must hold
 * nrows * apr_dtype_row_bytes(t, ncols) bytes. imatrix: ncols importance
 * weights or NULL. Byte-identical to ggml's ggml_quantize_chunk.
 * Returns bytes written, 0 on error (unsupported type, bad ncols). */
size_t apr_quantize_chunk(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                          const float *imatrix);
/* Same, threaded over rows (n_threads <= 0: all cores). */
size_t apr_quantize_chunk_mt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                             const float *imatrix, int n_threads);
bool apr_quantize_supported(apr_dtype t);
/* The plain scalar port of ggml's reference kernels (no SIMD); the fast
 * paths above must give the same bytes. For tests and the bench. */
size_t apr_quantize_chunk_ref(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                              const float *imatrix);
/* apr_quantize_chunk_mt with a choice of kernels (ref = the scalar port). */
size_t apr_quantize_chunk_mt_opt(apr_dtype t, const float *src, void *dst, int64_t nrows, int64_t ncols,
                                 const float *imatrix, int n_threads, bool ref);
/* Online CPUs (the default thread count). */
int apr_quant_default_threads(void);
/* SIMD in use by libquant: "avx2" or "scalar". APR_NO_SIMD=1 (environment)
 * or apr_quant_force_scalar(true) selects the scalar kernels. */
const char *apr_quant_simd_name(void);
void apr_quant_force_scalar(bool on);

/* ---- dot products used by libforward.
 * The activation vector y is first converted to apr_vec_dot_type(t)
 * (Q8_K for k-quants, Q8_0 for the 32-blocks, F32 for plain types) with
 * apr_quantize_activation; then apr_vec_dot(t, n, w_row, y_converted). */
apr_dtype apr_vec_dot_type(apr_dtype t);
int apr_quantize_activation(apr_dtype vec_dot_type, const float *y, void *dst, int64_t n);
float apr_vec_dot(apr_dtype t, int64_t n, const void *w_row, const void *y_converted);
/* The scalar kernel apr_vec_dot falls back to. The SIMD kernels return the
 * same value bit for bit (integer block sums are exact; float parts keep the
 * scalar order), so results never depend on the CPU. */
float apr_vec_dot_scalar(apr_dtype t, int64_t n, const void *w_row, const void *y_converted);

#ifdef __cplusplus
}
#endif
#endif /* APR_QUANT_H */
